"""`db.query.summary` from SQL text (opt-in: db_query_summary): semconv's examples, and no
literal ever in a summary. Summaries recorded on a real database: tests/unit/test_db_extras.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_kit._instrumentation._sql import MAX_SUMMARY, OTHER, query_summary


@pytest.mark.parametrize(
    ("statement", "summary"),
    [
        # semconv's examples ("Generating a summary of the query text")
        ("SELECT *\nFROM   wuser_table\nWHERE  username = ?", "SELECT wuser_table"),
        (
            "INSERT INTO shipping_details (order_id, address)"
            " SELECT order_id, address FROM orders WHERE order_id = ?",
            "INSERT shipping_details SELECT orders",
        ),
        ("SELECT * FROM songs, artists WHERE songs.artist_id == artists.id",
         "SELECT songs artists"),
        (
            "SELECT order_date FROM (SELECT * FROM orders o"
            " JOIN customers c ON o.customer_id = c.customer_id)",
            "SELECT SELECT orders customers",
        ),
        # a quoted name as written; a '...' string is a literal in SQL, never a name
        ("SELECT * FROM \"song list\", 'artists'", 'SELECT "song list"'),
        # schemas, aliases, function calls, CTEs, clauses that are not operations
        ("select a from public.users u left join \"Orders\" o on o.uid = u.id",
         'SELECT public.users "Orders"'),
        ("SELECT g FROM generate_series(1, 3) g, other WHERE x IN (1, 2)",
         "SELECT generate_series other"),
        ("WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b USING (id)", "SELECT a SELECT x b"),
        ("UPDATE items SET name = %(name)s WHERE items.id = %(id_1)s", "UPDATE items"),
        ("DELETE FROM items WHERE id = 3", "DELETE items"),
        ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", "INSERT t"),
        ("SELECT * FROM t FOR UPDATE", "SELECT t"),
        ("SELECT * FROM a UNION SELECT * FROM b", "SELECT a SELECT b"),
        ("CREATE TABLE IF NOT EXISTS items (id INTEGER REFERENCES p (id) ON DELETE CASCADE)",
         "CREATE items"),
        ("TRUNCATE TABLE x", "TRUNCATE x"),
        ("SELECT * FROM t WHERE s = 'FROM secret'", "SELECT t"),
        ("COMMIT", "COMMIT"),
        ("SELECT 1", "SELECT"),
        ("SELEC 1", OTHER),
        ("", OTHER),
    ],
)  # fmt: skip
def test_query_summary(statement: str, summary: str) -> None:
    assert query_summary(statement) == summary


def test_a_long_summary_ends_at_its_last_whole_part() -> None:
    tables = [f"table_{i:03}" for i in range(40)]  # 10 characters each
    summary = query_summary(f"SELECT * FROM {', '.join(tables)}")
    assert summary == "SELECT " + " ".join(tables[:24])  # 246 characters; 25 tables: 257
    assert len(summary) <= MAX_SUMMARY


@given(st.text(), st.sampled_from(["'", "$$", "$tag$"]))
def test_literals_never_reach_a_summary(text: str, quote: str) -> None:
    if quote == "'":
        literal = "'" + text.replace("'", "''") + "'"
    else:
        literal = quote + text.replace(quote, "") + quote
    summary = query_summary(f"SELECT * FROM t WHERE a = {literal} AND b IN (SELECT c FROM u)")
    assert summary == "SELECT t SELECT u"
