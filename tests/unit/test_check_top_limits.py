"""`otel-kit check` and `otel-kit top` read untrusted expositions safely (issue 20's probe).

Against a real HTTP server on loopback: an endless answer, a gzip bomb and slow drips stop
with a clear error and bounded memory; escape sequences in scraped names never reach the
terminal; credentials from the environment go only where the service listens; a password
in the URL is never printed. And the label-value rules cost at most linear time.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import typer
from typer.testing import CliRunner, Result

from otel_kit._setting_rules import redact_url
from otel_kit.cli import _lint, check, top
from otel_kit.cli._exposition import DEFAULT_MAX_BYTES, parse, printable
from tests.integration.processes import http_server

MIB = 1024 * 1024
DRIP_SECONDS = 0.2
# A drip ends by itself after this many bytes (60 s): without a deadline the test then fails
# on the message instead of hanging.
DRIP_MAX = 300
ESCAPES = "\x1b]0;pwned\x07\x1b[2J"
EXPOSITION = (
    "# HELP logins_total Logins.\n# TYPE logins_total counter\n"
    'logins_total{user="ann@example.com"} 1\n'
)
# The label value holds a newline too (`\\n` in the text format).
HOSTILE = (
    f"# HELP logins_total Logins{ESCAPES}.\n# TYPE logins_total counter\n"
    f'logins_total{{user="ann@example.com\\nerror   forged{ESCAPES}"}} 1\n'
)
ROUTE = f"/x{ESCAPES}[link=http://evil.example]y[/link]"
_SERIES = (
    f'http_server_request_duration_seconds_{{}}{{{{http_request_method="GET",http_route="{ROUTE}"'
)
HOSTILE_TOP = (
    "".join(_SERIES.format("bucket") + f',le="{le}"}} 1\n' for le in ("0.1", "+Inf"))
    + _SERIES.format("count")
    + "} 1\n"
    + _SERIES.format("sum")
    + "} 0.05\n"
)


def gzip_bomb(size: int) -> bytes:
    """`size` bytes of exposition-looking text, gzipped (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"#" * MIB
    return b"".join(compressor.compress(block) for _ in range(size // MIB)) + compressor.flush()


BOMB = gzip_bomb(256 * MIB)


class Handler(BaseHTTPRequestHandler):
    """/text, /protected (401 without credentials), /endless, /bomb, /corrupt, /brotli,
    /drip-body, /drip-head, /hostile, /hostile-top; else 404. Records each Authorization."""

    authorizations: ClassVar[list[str | None]] = []
    stop = threading.Event()  # set at teardown: ends the endless and dripping answers

    def do_GET(self) -> None:
        path = urlsplit(self.path).path  # an absolute URL when we are the proxy
        self.authorizations.append(self.headers.get("Authorization"))
        try:
            if path == "/drip-head":
                self._drip(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                return
            if path == "/protected" and not self.headers.get("Authorization"):
                return self._answer(401, b"unauthorized")
            bodies = {"/text": EXPOSITION, "/protected": EXPOSITION, "/hostile": HOSTILE}
            bodies["/hostile-top"] = HOSTILE_TOP
            if path in bodies:
                return self._answer(200, bodies[path].encode())
            if path == "/bomb":
                return self._answer(200, BOMB, {"Content-Encoding": "gzip"})
            if path in ("/corrupt", "/brotli"):
                encoding = "gzip" if path == "/corrupt" else "br"
                return self._answer(200, b"\x1f\x8bnot gzip", {"Content-Encoding": encoding})
            if path not in ("/endless", "/drip-body"):
                return self._answer(404, b"not found")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            if path == "/endless":
                chunk = b"# more\n" * 10_000
                while not self.stop.is_set():
                    self.wfile.write(chunk)
            elif path == "/drip-body":
                self._drip(EXPOSITION.encode())

        except (BrokenPipeError, ConnectionResetError):  # the client gave up: the point
            pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, start: bytes) -> None:
        data = (start + EXPOSITION.encode() * DRIP_MAX)[:DRIP_MAX]
        for i in range(DRIP_MAX):
            if self.stop.wait(DRIP_SECONDS):
                return
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    Handler.stop.clear()
    Handler.authorizations.clear()
    with http_server(Handler) as url:
        try:
            yield url
        finally:
            Handler.stop.set()


def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    check.register(app)
    top.register(app)
    return app


def run(*args: str, env: dict[str, str | None] | None = None, stdin: str | None = None) -> Result:
    # No proxy from the shell running pytest unless a test sets one.
    proxy: dict[str, str | None] = {
        name: None for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
    }
    environment = {"COLUMNS": "200", **proxy, **(env or {})}
    return CliRunner().invoke(cli(), list(args), env=environment, input=stdin)


COMMANDS = [["check"], ["top", "--once", "--interval", "0.1"]]


def invoke(command: list[str], url: str, *options: str, **kwargs: Any) -> Result:
    return run(command[0], url, *command[1:], *options, **kwargs)


# --- 2. what a fetch may cost ----------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=["check", "top"])
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/endless", "the answer is over --max-bytes 1048576; raise --max-bytes to read it"),
        (
            "/bomb",
            "the answer is over --max-bytes 1048576 once decompressed; raise --max-bytes to "
            "read it",
        ),
    ],
)
def test_endless_answer_and_gzip_bomb_stop_at_max_bytes(
    web: str, command: list[str], path: str, message: str
) -> None:
    url = web + path
    tracemalloc.start()
    try:
        result = invoke(command, url, "--max-bytes", "1MiB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    assert result.output == f"otel-kit {command[0]}: {url}: {message}\n"
    # What was held: the cap (1 MiB) and one network read, not the 256 MiB of the bomb.
    assert peak < 3 * MIB, peak


def test_an_announced_length_over_max_bytes_is_refused_before_reading(web: str) -> None:
    result = run("check", f"{web}/bomb", "--max-bytes", "1KiB")
    assert result.exit_code == 2
    assert result.output == (
        f"otel-kit check: {web}/bomb: the answer is over --max-bytes 1024 "
        f"(it announces {len(BOMB)} bytes); raise --max-bytes to read it\n"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/corrupt", "the gzip body is corrupt (Error -3 while decompressing data: unknown "
         "compression method)"),
        ("/brotli", "unsupported Content-Encoding 'br' (asked for gzip)"),
    ],
)  # fmt: skip
def test_bad_encodings_exit_2(web: str, path: str, message: str) -> None:
    result = run("check", web + path)
    assert (result.exit_code, result.output) == (2, f"otel-kit check: {web}{path}: {message}\n")


@pytest.mark.parametrize("command", COMMANDS, ids=["check", "top"])
@pytest.mark.parametrize("path", ["/drip-body", "/drip-head"])
def test_a_slow_drip_stops_at_timeout(web: str, command: list[str], path: str) -> None:
    url = web + path
    result = invoke(command, url, "--timeout", "1")
    assert result.exit_code == 2, result.output
    assert (
        result.output == f"otel-kit {command[0]}: {url}: no complete answer within --timeout 1 s\n"
    )
    # Cut at the deadline: a drip ends by itself after 60 s, which would read as a complete
    # answer (another message). And top's failed first scrape ends it: one request.
    assert len(Handler.authorizations) == 1


def test_max_bytes_default_and_bad_values() -> None:
    assert DEFAULT_MAX_BYTES == 64 * MIB
    for bad in ("10MB", "0", "-1", "lots"):
        result = run("check", "-", "--max-bytes", bad, stdin=EXPOSITION)
        assert result.exit_code == 2
        assert "Invalid value for '--max-bytes'" in result.output, result.output
        assert "KiB, MiB or GiB" in result.output


def test_files_and_stdin_are_capped_too(tmp_path: Path) -> None:
    big = tmp_path / "big.prom"
    big.write_text(EXPOSITION * 100)  # 9.5 KB
    result = run("check", str(big), "--max-bytes", "2KiB")
    assert (result.exit_code, result.output) == (
        2,
        f"otel-kit check: {big} is over --max-bytes 2048; raise --max-bytes to read it\n",
    )
    result = run("check", "-", "--max-bytes", "2KiB", stdin=EXPOSITION * 100)
    assert (
        result.output
        == "otel-kit check: stdin is over --max-bytes 2048; raise --max-bytes to read it\n"
    )
    assert run("check", str(big), "--json").exit_code == 1  # under the default: read, one finding


# --- 3. escape sequences from the exposition -------------------------------------------------


def test_check_prints_no_control_characters_from_the_exposition(web: str) -> None:
    parsed = parse(HOSTILE, openmetrics=False)
    assert ESCAPES in parsed.families[0].documentation  # the parser passes them through
    human = run("check", f"{web}/hostile")
    assert human.exit_code == 1
    assert "\x1b" not in human.output and "\x07" not in human.output
    # The example, cut at 40 characters: a newline cannot forge a line of the report either.
    assert 'e.g. user="ann@example.com\\x0aerror   forged\\x1b]0;pwned…"' in human.output
    assert not any(line.startswith("error   forged") for line in human.output.splitlines())
    document = run("check", f"{web}/hostile", "--json").output
    assert "\x1b" not in document and "\x07" not in document
    example = json.loads(document)["findings"][0]["example"]
    assert example == "ann@example.com\nerror   forged\x1b]0;pwned…"  # JSON keeps the value


def test_error_messages_quoting_the_input_are_escaped() -> None:
    result = run("check", "-", stdin=f"metric{ESCAPES} 1\n")
    assert result.exit_code == 2
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert result.output.startswith("otel-kit check: stdin is not valid Prometheus text")


def test_top_prints_no_control_characters_or_markup_from_the_exposition(web: str) -> None:
    result = run("top", f"{web}/hostile-top", "--once", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    route = printable(ROUTE)
    assert route == "/x\\x1b]0;pwned\\x07\\x1b[2J[link=http://evil.example]y[/link]"
    assert f"GET {route}" in result.output  # the markup is text, not a hyperlink


def test_printable_escapes_c0_del_and_c1() -> None:
    assert printable("a\tb\nc\x00d\x7fe\x9bf\u00a0g") == "a\\x09b\\x0ac\\x00d\\x7fe\\x9bf\u00a0g"


# --- 4. credentials ------------------------------------------------------------------------


def proxied(web: str) -> dict[str, str | None]:
    """Requests for any host go to our server: a host name that is not loopback, on loopback."""
    return {"http_proxy": web, "HTTP_PROXY": web, "no_proxy": None, "NO_PROXY": None}


def test_environment_token_goes_to_loopback_only(web: str) -> None:
    env: dict[str, str | None] = {"OTEL_KIT_METRICS_BEARER_TOKEN": "env-secret"}
    assert run("check", f"{web}/text", env=env).exit_code == 1
    assert (
        run("check", "http://metrics.example.com/text", env={**env, **proxied(web)}).exit_code == 1
    )
    assert Handler.authorizations == ["Bearer env-secret", None]


def test_explicit_token_goes_to_the_url_given(web: str) -> None:
    env = {"OTEL_KIT_METRICS_BEARER_TOKEN": "env-secret", **proxied(web)}
    result = run("check", "http://metrics.example.com/text", "--bearer-token", "given", env=env)
    assert result.exit_code == 1, result.output
    result = run("check", "http://metrics.example.com/text", "--basic-auth", "u:p", env=env)
    assert result.exit_code == 1, result.output
    basic = "Basic " + base64.b64encode(b"u:p").decode()
    assert Handler.authorizations == ["Bearer given", basic]


def test_environment_credentials_go_to_the_configured_prometheus_host(web: str) -> None:
    env = {
        "OTEL_KIT_METRICS_BASIC_AUTH": "prom:pw",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "Metrics.Internal",
        **proxied(web),
    }
    assert run("check", "http://metrics.internal/text", env=env).exit_code == 1
    assert (
        run("top", "http://other.internal/text", "--once", "--interval", "0.1", env=env).exit_code
        == 0
    )
    assert Handler.authorizations[0] == "Basic " + base64.b64encode(b"prom:pw").decode()
    assert Handler.authorizations[1:] == [None, None]  # top scrapes twice


def test_a_withheld_environment_token_is_explained(web: str) -> None:
    env = {"OTEL_KIT_METRICS_BEARER_TOKEN": "env-secret", **proxied(web)}
    result = run("check", "http://metrics.example.com/protected", env=env)
    assert result.exit_code == 2
    assert result.output == (
        "otel-kit check: http://metrics.example.com/protected answered HTTP 401 "
        "($OTEL_KIT_METRICS_* are sent only to a loopback host or "
        "$OTEL_EXPORTER_PROMETHEUS_HOST: give --bearer-token or --basic-auth)\n"
    )
    assert Handler.authorizations == [None]


@pytest.mark.parametrize("as_json", [True, False])
def test_a_password_in_the_url_is_never_printed(web: str, as_json: bool) -> None:
    url = web.replace("http://", "http://ann:hunter2@") + "/text"
    shown = web.replace("http://", "http://ann:***@") + "/text"
    result = run("check", url, *(["--json"] if as_json else []))
    assert result.exit_code == 1, result.output
    assert "hunter2" not in result.output
    if as_json:
        assert json.loads(result.output)["source"] == shown
    else:
        assert result.output.startswith(f"{shown}: prometheus, 1 family, 1 series")
    # The password was still used: as basic auth, as the user wrote it.
    assert Handler.authorizations == ["Basic " + base64.b64encode(b"ann:hunter2").decode()]


def test_a_password_in_the_url_is_not_in_errors_or_top(web: str) -> None:
    base = web.replace("http://", "http://ann:hunter2@")
    failed = run("check", f"{base}/missing")
    assert (
        failed.output
        == f"otel-kit check: {redact_url(base)}/missing answered HTTP 404, expected 200\n"
    )
    screen = run("top", f"{base}/text", "--once", "--interval", "0.1")
    assert screen.exit_code == 0, screen.output
    assert "hunter2" not in screen.output + failed.output
    assert f"otel-kit top {redact_url(base)}/text" in screen.output


def test_redact() -> None:
    assert redact_url("http://u:p@h:1/m?x=@") == "http://u:***@h:1/m?x=@"
    assert redact_url("https://u:p:q@h/") == "https://u:***@h/"
    assert redact_url("http://u@h/") == "http://u@h/"  # no password: nothing to hide
    assert redact_url("http://h/a@b") == "http://h/a@b"
    assert redact_url("file.prom") == "file.prom"


# --- 1. label values: linear rules, and a cap on what they read ------------------------------


def test_the_value_rules_read_at_most_value_max_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    classify = _lint._classify

    def recording(value: str) -> str | None:
        seen.append(len(value))
        return classify(value)

    monkeypatch.setattr(_lint, "_classify", recording)
    huge = "ann@example.com " + "a" * MIB
    exposition = parse(f'logins_total{{user="{huge}"}} 1\nlogins_total{{user="x"}} 1\n', False)
    report = _lint.lint(exposition, cardinality_threshold=100, max_series=None)
    assert seen == [_lint.VALUE_MAX, 1]
    emails = [f.example for f in report.findings if f.rule == "label-looks-like-email"]
    assert emails == ["ann@example.com " + "a" * 23 + "…"]


def test_the_value_rules_are_linear_on_adversarial_values() -> None:
    """Each value uncapped, in a child process: the deadline fails the test instead of
    hanging it (the old e-mail pattern took ~15 s for 64 KB and hours for 1 MB)."""
    values = [
        "'a' * n", "'a@' * (n // 2)", "'a@a.' * (n // 4)", "'x@' + 'a-' * (n // 2)",
        "'x@' + 'a.' * (n // 2)", "'/' + 'a' * n", "'1' * n + 'a'", "'ab' + '1' * n",
    ]  # fmt: skip
    code = (
        "from otel_kit.cli._lint import _classify\n"
        f"for n in (64 * 1024, 1024 * 1024):\n"
        f"    print([_classify(v) for v in ({', '.join(values)})])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    id_, path = "label-looks-like-id", "label-looks-like-path"
    expected = [id_, None, None, None, None, path, id_, id_]
    assert result.stdout.splitlines() == [repr(expected)] * 2


def test_an_email_is_still_found_anywhere_in_a_value() -> None:
    assert _lint._classify("user=ann.lee+x@mail.example.com;x") == "label-looks-like-email"
    assert _lint._classify("@example.com") is None  # no local part
    assert _lint._classify("ann@localhost") is None  # no top-level domain
