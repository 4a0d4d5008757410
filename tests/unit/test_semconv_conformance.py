"""What otel-kit emits against the OpenTelemetry semantic conventions as the installed
`opentelemetry-semantic-conventions` package states them (issue 15), and the OTel -> Prometheus
unit table of docs/conformance.md against the implementation.

The conventions are read from the package: its metric and attribute name constants
(`opentelemetry.semconv[._incubating].{metrics,attributes}`), their docstrings (`Instrument:`,
`Unit:`, `Deprecated: ...`), its enums of well-known values and its metric helpers
(`create_<metric>(meter)`), called on a throwaway meter. No convention is typed in here: a
semconv bump (the SDK pins the package) fails these tests with what changed. What otel-kit does
differently on purpose is in the named allow-lists below, each checked to be still needed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.dialects
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.semconv import attributes as stable_attributes
from opentelemetry.semconv import metrics as stable_metrics
from opentelemetry.semconv._incubating import attributes as incubating_attributes
from opentelemetry.semconv._incubating import metrics as incubating_metrics
from opentelemetry.semconv.schemas import Schemas

from otel_kit import catalogue
from otel_kit._instrumentation import asyncpg as asyncpg_integration
from otel_kit._instrumentation import psycopg as psycopg_integration
from otel_kit._instrumentation import runtime
from otel_kit._instrumentation import sqlalchemy as sqlalchemy_integration
from otel_kit._instrumentation._context import IntegrationContext
from otel_kit._instruments import FastInstruments
from otel_kit._pipeline import build_resource
from otel_kit.catalogue import MetricSpec, prometheus_label, prometheus_name, unit_suffix
from otel_kit.config import load_settings
from tests.exposition import samples
from tests.handles import MakeHandle
from tests.http_app import client, make_app

CONFORMANCE_DOC = Path(__file__).parents[2] / "docs" / "conformance.md"

# Catalogue metrics outside semconv, by rule: otel-kit's own metrics are named otel_kit.*
# (semconv's naming rules keep a name of one's own out of its namespaces).
OWN_PREFIX = "otel_kit."
# Catalogue metrics and attributes in a namespace semconv v1.44 does not define, with why.
NOT_SEMCONV_METRICS = {
    "cache.requests": "semconv has no cache metrics; named in its style, `cache` is no namespace",
}
NOT_SEMCONV_ATTRIBUTES = {
    "cache.name": "cache.requests' cache (redis, a name given to redis_cache, or the caller's)",
    "cache.result": "cache.requests' hit or miss",
}
# Values otel-kit records that are not among the package's well-known values.
NOT_WELL_KNOWN_VALUES = {
    # process.cpu.time's note: "The following values for cpu.mode SHOULD be used: user,
    # system, wait" (v1.44); the cpu.mode registry names that state iowait.
    ("cpu.mode", "wait"): "process.cpu.time's own list (user, system, wait)",
}

_KINDS = (  # API instrument class -> catalogue kind (sync or observable alike)
    (otel_metrics.Counter, "counter"),
    (otel_metrics.ObservableCounter, "counter"),
    (otel_metrics.UpDownCounter, "updowncounter"),
    (otel_metrics.ObservableUpDownCounter, "updowncounter"),
    (otel_metrics.Histogram, "histogram"),
    (otel_metrics.ObservableGauge, "gauge"),
)


@dataclass(frozen=True)
class Constant:
    """One `NAME: Final = "value"` of a semconv module, with the docstring after it."""

    module: ModuleType
    name: str
    value: str
    doc: str

    @property
    def deprecated(self) -> bool:
        # "Deprecated in favor of stable ..." marks an incubating copy of a stable constant: the
        # name itself is not deprecated then, the stable module is the one to import it from.
        return self.doc.startswith("Deprecated:")

    def field(self, label: str) -> str | None:
        """A line `label: value` of the docstring (metrics: Instrument, Unit)."""
        found = re.search(rf"^{label}: (.+)$", self.doc, re.MULTILINE)
        return found.group(1).strip() if found else None


def _modules(package: ModuleType) -> Iterator[ModuleType]:
    for info in pkgutil.iter_modules(package.__path__):
        yield importlib.import_module(f"{package.__name__}.{info.name}")


def _constants(*packages: ModuleType) -> dict[str, list[Constant]]:
    """Every string constant of the packages' modules, by value (stable modules first)."""
    found: dict[str, list[Constant]] = {}
    for package in packages:
        for module in _modules(package):
            assert module.__file__ is not None
            body = ast.parse(Path(module.__file__).read_text(encoding="utf-8")).body
            for node, after in zip(body, [*body[1:], None], strict=True):
                if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                    continue
                value = getattr(module, node.target.id)  # the constant Python sees
                if not isinstance(value, str):
                    continue
                doc = ""
                if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                    doc = str(after.value.value).strip()
                found.setdefault(value, []).append(Constant(module, node.target.id, value, doc))
    return found


METRICS = _constants(stable_metrics, incubating_metrics)
ATTRIBUTES = _constants(stable_attributes, incubating_attributes)


def _well_known(key: str) -> set[object]:
    """The values of the package's enum for attribute `key` (stable and incubating)."""
    # The enum of KEY_NAME is KeyNameValues, in the module of the constant (case aside:
    # CPYTHON_GC_GENERATION, CPythonGCGenerationValues).
    values: set[object] = set()
    for constant in ATTRIBUTES[key]:
        enum_name = (constant.name.replace("_", "") + "Values").lower()
        for name, enum in vars(constant.module).items():
            if name.lower() == enum_name and isinstance(enum, type) and issubclass(enum, Enum):
                values.update(member.value for member in enum)
    assert values, f"semconv has no well-known values for {key}"
    return values


def _namespace(name: str) -> str:
    return name.split(".", 1)[0]


SPECS = [spec for spec in vars(catalogue).values() if isinstance(spec, MetricSpec)]
SEMCONV_SPECS = [
    s for s in SPECS if not s.name.startswith(OWN_PREFIX) and s.name not in NOT_SEMCONV_METRICS
]


def _kind(instrument: object) -> str:
    return next(kind for cls, kind in _KINDS if isinstance(instrument, cls))


def test_installed_semconv_is_the_version_the_tables_were_checked_against() -> None:
    """docs/conformance.md's tables are semconv v1.44's, the version the package generates
    (its newest schema URL): a newer package fails here until they are checked against it."""
    newest = max(Schemas, key=lambda s: tuple(int(n) for n in s.name[1:].split("_")))
    documented = re.search(r"semantic conventions \*\*v(\d+\.\d+\.\d+)\*\*", doc_text())
    assert documented is not None
    installed = newest.value.rpartition("/")[2]
    assert installed == documented.group(1), (
        f"semconv {installed} installed: check docs/conformance.md's tables (written for "
        f"{documented.group(1)}) against it, then update its version"
    )


@pytest.mark.parametrize("spec", SEMCONV_SPECS, ids=lambda s: s.name)
def test_metric_is_semconvs(spec: MetricSpec) -> None:
    """Name, instrument kind and unit as the metric's constant documents them, not deprecated;
    unit, description and kind as its `create_*` helper builds the instrument."""
    constants = METRICS.get(spec.name)
    assert constants, f"{spec.name} is no semconv metric"
    assert not [c for c in constants if c.deprecated], f"{spec.name} is deprecated"
    documented = next(c for c in constants if c.field("Instrument") is not None)
    assert (documented.field("Instrument"), documented.field("Unit")) == (spec.kind, spec.unit)

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("conformance")
    helper_module = importlib.import_module(
        documented.module.__name__.replace(stable_metrics.__name__, incubating_metrics.__name__)
    )
    create = getattr(helper_module, f"create_{documented.name.lower()}")
    takes_callbacks = "callbacks" in inspect.signature(create).parameters
    instrument = create(meter, callbacks=[]) if takes_callbacks else create(meter)
    assert (instrument.name, instrument.unit, instrument.description, _kind(instrument)) == (
        spec.name,
        spec.unit,
        spec.description,
        spec.kind,
    )


def test_metrics_outside_semconv_are_outside_its_namespaces() -> None:
    namespaces = {_namespace(name) for name in METRICS}
    own = [s.name for s in SPECS if s.name.startswith(OWN_PREFIX)]
    assert own == ["otel_kit.http.server.time_to_first_byte"]
    assert _namespace(OWN_PREFIX) not in namespaces
    for name in NOT_SEMCONV_METRICS:
        assert name in {s.name for s in SPECS}, f"{name}: not in the catalogue, drop the entry"
        assert name not in METRICS, f"{name} is semconv's now: drop the allow-list entry"
        assert _namespace(name) not in namespaces, f"semconv has {_namespace(name)}.* metrics now"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_attribute_keys_are_semconvs_and_current(spec: MetricSpec) -> None:
    for key in spec.attributes:
        if key in NOT_SEMCONV_ATTRIBUTES:
            assert key not in ATTRIBUTES, f"{key} is semconv's now: drop the allow-list entry"
            continue
        constants = ATTRIBUTES.get(key)
        assert constants, f"{spec.name}: {key} is no semconv attribute"
        deprecated = [c.doc for c in constants if c.deprecated]
        assert not deprecated, f"{spec.name}: {key} is deprecated: {deprecated}"


def test_attribute_allow_list_is_used() -> None:
    used = {key for spec in SPECS for key in spec.attributes}
    assert set(NOT_SEMCONV_ATTRIBUTES) <= used


def test_resource_attributes_are_semconvs_and_current() -> None:
    settings = load_settings(
        {"service_name": "shop", "service_version": "1.2.3", "deployment_environment": "prod"}
    )
    keys = set(build_resource(settings).attributes)
    assert keys == {
        "service.name",
        "service.version",
        "service.instance.id",
        "deployment.environment.name",
        "telemetry.sdk.language",  # these three: the SDK's Resource.create
        "telemetry.sdk.name",
        "telemetry.sdk.version",
    }
    for key in keys:
        assert key in ATTRIBUTES, f"{key} is no semconv attribute"
        assert not [c for c in ATTRIBUTES[key] if c.deprecated], f"{key} is deprecated"


def test_known_http_methods_are_semconvs() -> None:
    """The default of http_known_methods: the package's methods (QUERY is incubating)."""
    known = _well_known("http.request.method") - {"_OTHER"}
    assert known == catalogue.KNOWN_HTTP_METHODS


def _check_values(key: str, values: set[Any]) -> None:
    well_known = _well_known(key)
    unlisted = {(key, v) for v in values if v not in well_known}
    assert unlisted <= set(NOT_WELL_KNOWN_VALUES), unlisted
    for entry_key, entry_value in NOT_WELL_KNOWN_VALUES:
        if entry_key == key:
            assert entry_value not in well_known, f"{entry_value} is well known: drop the entry"


def test_runtime_values_are_well_known() -> None:
    """cpu.mode and cpython.gc.generation as runtime.py exports them, in this process."""
    fast = FastInstruments("test")
    runtime.instrument(IntegrationContext(load_settings(), MeterProvider(), fast))
    attributes = [
        point.attributes
        for rm in fast.merge(None, build_resource(load_settings())).resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        if point.attributes
    ]
    modes = {a["cpu.mode"] for a in attributes if "cpu.mode" in a}
    assert {"user", "system"} <= modes
    _check_values("cpu.mode", modes | {"wait"})  # wait: only where the kernel counts it
    generations = {a["cpython.gc.generation"] for a in attributes if "cpython.gc.generation" in a}
    assert generations == {0, 1, 2}
    _check_values("cpython.gc.generation", generations)


def test_db_system_names_are_well_known() -> None:
    """Every db.system.name an integration records: SQLAlchemy's built-in dialects (and
    MariaDB), asyncpg and psycopg, Redis."""
    mapping = sqlalchemy_integration._SYSTEMS
    names = {mapping.get(d, d) for d in sqlalchemy.dialects.__all__} | {"mariadb", "redis"}
    names |= {asyncpg_integration._SYSTEM, psycopg_integration._SYSTEM}
    assert names == {
        "mariadb",
        "microsoft.sql_server",
        "mysql",
        "oracle.db",
        "postgresql",
        "redis",
        "sqlite",
    }
    _check_values("db.system.name", names)


def _sample_names(spec: MetricSpec) -> list[str]:
    if spec.kind == "histogram":
        return [f"{spec.prometheus}_{suffix}" for suffix in ("bucket", "count", "sum")]
    return [spec.prometheus]


SAMPLE_SPECS = {sample: spec for spec in SPECS for sample in _sample_names(spec)}


def _label_names(text: str) -> dict[str, set[str]]:
    """Catalogue metric's Prometheus name -> every label name its samples carry (le and the
    scope left out)."""
    found: dict[str, set[str]] = {}
    for (sample, labels), _ in samples(text).items():
        spec = SAMPLE_SPECS.get(sample)
        if spec is not None:
            found.setdefault(spec.prometheus, set()).update(k for k, _ in labels if k != "le")
    return found


async def test_emitted_labels_are_the_catalogues(make_handle: MakeHandle, tmp_path: Path) -> None:
    """Every label a real setup emits (HTTP server with the opt-in sizes and first byte,
    SQLAlchemy on SQLite with a pool and failures, runtime) is its metric's catalogue
    attribute: the code records what the tests above checked against semconv."""
    app = make_app()
    handle = make_handle(
        app, http_body_sizes=True, http_time_to_first_byte=True, db_query_summary=True
    )
    async with client(app) as http:
        for path in ("/items/1", "/boom", "/unavailable", "/nowhere"):
            await http.get(path)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO items (id) VALUES (1)"))
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(sa.text("INSERT INTO items (id) VALUES (1)"))
    emitted = _label_names(handle.render().decode())
    engine.dispose()
    by_name = {spec.prometheus: spec for spec in SPECS}
    for name, labels in emitted.items():
        allowed = {prometheus_label(key) for key in by_name[name].attributes}
        assert labels <= allowed, f"{name}: {labels - allowed} not in the catalogue"
    http_all = {prometheus_label(k) for k in catalogue.HTTP_SERVER_REQUEST_DURATION.attributes}
    db_all = {prometheus_label(k) for k in catalogue.DB_CLIENT_OPERATION_DURATION.attributes}
    pool = {"db_client_connection_pool_name"}
    assert emitted == {
        "http_server_request_duration_seconds": http_all,
        "http_server_active_requests": {"http_request_method", "url_scheme"},
        "http_server_request_body_size_bytes": http_all,
        "http_server_response_body_size_bytes": http_all,
        "otel_kit_http_server_time_to_first_byte_seconds": {
            "http_request_method",
            "http_route",
            "http_response_status_code",
        },
        # SQLite: no server (server.*), no SQLSTATE (db.response.status_code)
        "db_client_operation_duration_seconds": db_all
        - {"server_address", "server_port", "db_response_status_code"},
        "db_client_connection_count": pool | {"db_client_connection_state"},
        "db_client_connection_max": pool,
        "db_client_connection_pending_requests": pool,
        "db_client_connection_timeouts_total": pool,
        "db_client_connection_wait_time_seconds": pool,
        "process_cpu_time_seconds_total": {"cpu_mode"},
        "process_memory_usage_bytes": set(),
        "process_memory_virtual_bytes": set(),
        "process_thread_count": set(),
        "process_unix_file_descriptor_count": set(),
        "cpython_gc_collections_total": {"cpython_gc_generation"},
        "cpython_gc_collected_objects_total": {"cpython_gc_generation"},
        "cpython_gc_uncollectable_objects_total": {"cpython_gc_generation"},
    }


# The unit table of docs/conformance.md: | `UCUM` | spec's word | otel-kit's word | note |, a
# word written `word`, "(none)" (no unit word) or "—" (the spec's table has no row for it).
_WORD = r"(`[^`]+`|\(none\)|—)"
_UNIT_ROW = re.compile(rf"^\| `([^`]+)` \| {_WORD} \| {_WORD} \| (.*) \|$")


def doc_text() -> str:
    return CONFORMANCE_DOC.read_text(encoding="utf-8")


def _doc_section(title: str) -> str:
    text = doc_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _word(cell: str) -> str | None:
    return {"—": None, "(none)": ""}.get(cell, cell.strip("`"))


def _unit_rows() -> list[tuple[str, str | None, str | None, str]]:
    rows = []
    for line in _doc_section("OTel to Prometheus units").splitlines():
        found = _UNIT_ROW.match(line)
        if found:
            ucum, spec, kit, note = found.groups()
            rows.append((ucum, _word(spec), _word(kit), note.strip()))
    return rows


def test_unit_table_is_the_implementation() -> None:
    """Each row's otel-kit word is `unit_suffix()`'s; 'same' exactly where it is the spec's;
    every unit the translation knows has its row."""
    rows = _unit_rows()
    assert len(rows) == len({row[0] for row in rows}) >= 30
    for ucum, spec, kit, note in rows:
        assert unit_suffix(ucum) == (kit or ""), ucum
        if spec is not None:
            assert (spec == kit) == (note == "same"), f"{ucum}: {note}"
    documented = {row[0] for row in rows}
    assert set(catalogue._UNIT_WORDS) <= documented
    assert {f"1/{per}" for per in catalogue._PER_UNIT_WORDS} <= documented


# The metric name table: | `otel.name` | `unit` | kind | `prometheus_name` |
_NAME_ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \| (\w+) \| `([^`]+)` \|")


def test_name_table_is_the_implementation() -> None:
    rows = [
        found.groups()
        for line in _doc_section("OTel to Prometheus names").splitlines()
        if (found := _NAME_ROW.match(line))
    ]
    assert len(rows) >= 8
    for name, unit, kind, expected in rows:
        built = prometheus_name(name, unit, monotonic_sum=kind == "counter", gauge=kind == "gauge")
        assert built == expected, (name, unit, kind)


def test_doc_lists_every_catalogue_metric() -> None:
    """docs/conformance.md has an attribute table for each metric otel-kit emits."""
    text = doc_text()
    assert [spec.name for spec in SPECS if f"`{spec.name}`" not in text] == []
