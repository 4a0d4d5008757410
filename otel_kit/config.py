"""Configuration: one table, keyword argument > OTEL_KIT_* env var > OTel spec env var > default.

Every setting is a field below: its env var names are its aliases, its description the one line
the README table, `otel-kit run --help` and `otel-kit config` show (`setting_docs()`). What each
accepts is in `_setting_rules`; bad values raise `ConfigError` naming the setting, the bad value
and what is allowed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict, get_args

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otel_kit import _setting_rules as rules
from otel_kit._setting_rules import EXEMPLAR_FILTERS, EXPORTERS, INSTRUMENTATIONS
from otel_kit.catalogue import (
    DB_DURATION_BUCKETS,
    DEFAULT_DURATION_BUCKETS,
    KNOWN_HTTP_METHODS,
    TRANSLATION_STRATEGIES,
)

__all__ = [
    "EXPORTERS",
    "INSTRUMENTATIONS",
    "ConfigError",
    "SettingDoc",
    "SettingKeywords",
    "Settings",
    "load_settings",
    "setting_docs",
]


class ConfigError(ValueError):
    """A setting has a value otel-kit cannot use. The message names setting, value and rule."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,  # the OTel spec: an empty variable is an unset one
    )

    sdk_disabled: bool = Field(
        False,
        validation_alias=AliasChoices("sdk_disabled", "OTEL_KIT_SDK_DISABLED", "OTEL_SDK_DISABLED"),
        description="true: no exporter, no instrumentation, the app untouched; true or false "
        "(any case)",
    )
    service_name: str | None = Field(
        None,
        validation_alias=AliasChoices("service_name", "OTEL_KIT_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="the service.name resource attribute, non-empty (unset: service.name from "
        "resource_attributes, else unknown_service)",
    )
    service_version: str | None = Field(
        None,
        validation_alias=AliasChoices("service_version", "OTEL_KIT_SERVICE_VERSION"),
        description="the service.version resource attribute (unset: from resource_attributes)",
    )
    deployment_environment: str | None = Field(
        None,
        validation_alias=AliasChoices("deployment_environment", "OTEL_KIT_DEPLOYMENT_ENVIRONMENT"),
        description="the deployment.environment.name resource attribute (unset: from "
        "resource_attributes)",
    )
    resource_attributes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices(
            "resource_attributes", "OTEL_KIT_RESOURCE_ATTRIBUTES", "OTEL_RESOURCE_ATTRIBUTES"
        ),
        description="more resource attributes: k1=v1,k2=v2 or a dict",
    )
    metrics_exporter: Annotated[tuple[str, ...], NoDecode] = Field(
        ("prometheus",),
        validation_alias=AliasChoices(
            "metrics_exporter", "OTEL_KIT_METRICS_EXPORTER", "OTEL_METRICS_EXPORTER"
        ),
        description=f"where metrics go: comma-separated {', '.join(EXPORTERS)}",
    )
    prometheus_host: str = Field(
        "localhost",
        validation_alias=AliasChoices(
            "prometheus_host", "OTEL_KIT_PROMETHEUS_HOST", "OTEL_EXPORTER_PROMETHEUS_HOST"
        ),
        description="host name or IP address the metrics port binds (0.0.0.0 or :: for all "
        "interfaces); used only with a port",
    )
    prometheus_port: int | None = Field(
        None,
        validation_alias=AliasChoices(
            "prometheus_port", "OTEL_KIT_PROMETHEUS_PORT", "OTEL_EXPORTER_PROMETHEUS_PORT"
        ),
        description="serve metrics on this port, 0 to 65535 (0: a free one), instead of on the "
        "app (unset: on the app, or 9464 when there is no app)",
    )
    metrics_path: str = Field(
        "/metrics",
        validation_alias=AliasChoices("metrics_path", "OTEL_KIT_METRICS_PATH"),
        description="path of the metrics endpoint on the app, starting with / (no query)",
    )
    metrics_include_default_registry: bool = Field(
        False,
        validation_alias=AliasChoices(
            "metrics_include_default_registry", "OTEL_KIT_METRICS_INCLUDE_DEFAULT_REGISTRY"
        ),
        description="true: otel-kit's endpoint also serves prometheus_client's default registry "
        "(the app's own prometheus_client metrics), but no name otel-kit uses; with several "
        "processes (multiproc_dir) only in prometheus_client's multiprocess mode "
        "(PROMETHEUS_MULTIPROC_DIR); true or false",
    )
    prometheus_scope_labels: bool = Field(
        True,
        validation_alias=AliasChoices(
            "prometheus_scope_labels", "OTEL_KIT_PROMETHEUS_SCOPE_LABELS"
        ),
        description="true: each series has otel_scope_name and otel_scope_version labels (the "
        "meter that made it, as the OTel spec and the Collector do); false: none, and metrics "
        "of one name from several meters merge into one family; true or false",
    )
    prometheus_translation_strategy: str = Field(
        TRANSLATION_STRATEGIES[0],
        validation_alias=AliasChoices(
            "prometheus_translation_strategy", "OTEL_KIT_PROMETHEUS_TRANSLATION_STRATEGY"
        ),
        description="metric and label names on /metrics, as Prometheus' otlp.translation_strategy "
        "names them: UnderscoreEscapingWithSuffixes (the default, http_server_request_duration_"
        "seconds), UnderscoreEscapingWithoutSuffixes, NoUTF8EscapingWithSuffixes (http.server."
        "request.duration_seconds), NoTranslation; UTF-8 names only to a scraper that asks for "
        "them (escaping=allow-utf-8, as Prometheus 3 does), else escaped to underscores",
    )
    # Credentials a scrape must present (in-app and separate port; either one when both are set).
    metrics_bearer_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("metrics_bearer_token", "OTEL_KIT_METRICS_BEARER_TOKEN"),
        description="token a scrape must send in an Authorization: Bearer header, visible "
        "ASCII without spaces (unset: the endpoint is open; docs/security.md)",
    )
    metrics_basic_auth: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("metrics_basic_auth", "OTEL_KIT_METRICS_BASIC_AUTH"),
        description="user:password a scrape may send instead, with HTTP basic auth",
    )
    multiproc_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("multiproc_dir", "OTEL_KIT_MULTIPROC_DIR"),
        description="directory where several processes share their metrics for one scrape "
        "(otel-kit run: a new temporary one unless given; docs/multiprocess.md)",
    )
    excluded_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        validation_alias=AliasChoices(
            "excluded_urls",
            "OTEL_KIT_EXCLUDED_URLS",
            "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS",
            "OTEL_PYTHON_EXCLUDED_URLS",
        ),
        description="request paths not measured: comma-separated regular expressions, searched "
        "in the path",
    )
    duration_buckets: Annotated[tuple[float, ...], NoDecode] = Field(
        DEFAULT_DURATION_BUCKETS,
        validation_alias=AliasChoices("duration_buckets", "OTEL_KIT_DURATION_BUCKETS"),
        description="duration histogram bucket bounds in seconds: comma-separated, strictly "
        "increasing numbers >= 0 (the default is semconv's HTTP advice; not for "
        "db.client.operation.duration)",
    )
    db_duration_buckets: Annotated[tuple[float, ...], NoDecode] = Field(
        DB_DURATION_BUCKETS,
        validation_alias=AliasChoices("db_duration_buckets", "OTEL_KIT_DB_DURATION_BUCKETS"),
        description="db.client.operation.duration bucket bounds in seconds, as duration_buckets "
        "(the default is semconv's DB advice)",
    )
    db_query_summary: bool = Field(
        False,
        validation_alias=AliasChoices("db_query_summary", "OTEL_KIT_DB_QUERY_SUMMARY"),
        description="true: also db.query.summary on SQL operation durations, from the SQL text "
        "(SELECT users; tables as written, never literals): at most cardinality_limit / 2 "
        "distinct summaries, then the operation name alone; true or false",
    )
    http_body_sizes: bool = Field(
        False,
        validation_alias=AliasChoices("http_body_sizes", "OTEL_KIT_HTTP_BODY_SIZES"),
        description="true: also http.server.request.body.size and http.server.response.body.size"
        " (semconv's opt-in histograms, bytes); true or false",
    )
    http_time_to_first_byte: bool = Field(
        False,
        validation_alias=AliasChoices(
            "http_time_to_first_byte", "OTEL_KIT_HTTP_TIME_TO_FIRST_BYTE"
        ),
        description="true: also otel_kit.http.server.time_to_first_byte, seconds from a request's "
        "start to its first response body byte (duration_buckets); true or false",
    )
    # Semconv marks it Opt-In; on by default all the same (the dashboards' "in progress").
    http_active_requests: bool = Field(
        True,
        validation_alias=AliasChoices("http_active_requests", "OTEL_KIT_HTTP_ACTIVE_REQUESTS"),
        description="false: no http.server.active_requests (requests in progress); true or false",
    )
    http_known_methods: Annotated[tuple[str, ...], NoDecode] = Field(
        tuple(sorted(KNOWN_HTTP_METHODS)),
        validation_alias=AliasChoices(
            "http_known_methods",
            "OTEL_KIT_HTTP_KNOWN_METHODS",
            "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",
        ),
        description="HTTP methods recorded as themselves, server and client; any other is "
        "_OTHER: comma-separated, case-sensitive method names, replacing the default list",
    )
    cardinality_limit: int = Field(
        2000,
        validation_alias=AliasChoices("cardinality_limit", "OTEL_KIT_CARDINALITY_LIMIT"),
        description="attribute sets per metric, 1 to 10000000; more go to one otel_metric_"
        'overflow="true" series',
    )
    # Read here, not by the SDK, so a bad value fails as a ConfigError (the SDK's is ValueError).
    exemplar_filter: str = Field(
        "trace_based",
        validation_alias=AliasChoices(
            "exemplar_filter", "OTEL_KIT_EXEMPLAR_FILTER", "OTEL_METRICS_EXEMPLAR_FILTER"
        ),
        description="which measurements (otel-kit's and the OTel SDK's) may keep an exemplar: "
        f"{', '.join(EXEMPLAR_FILTERS)} (any case)",
    )
    disabled_instrumentations: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        validation_alias=AliasChoices(
            "disabled_instrumentations",
            "OTEL_KIT_DISABLED_INSTRUMENTATIONS",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        ),
        description=f"integrations turned off: comma-separated {', '.join(INSTRUMENTATIONS)}",
    )
    peer_services: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("peer_services", "OTEL_KIT_PEER_SERVICES"),
        description="service_peer_name label of outbound calls: host=name,host:port=name or a dict",
    )
    redis_cache: str = Field(
        "all",
        validation_alias=AliasChoices("redis_cache", "OTEL_KIT_REDIS_CACHE"),
        description="which Redis clients' GET, MGET, HGET, ... count as cache lookups: all "
        '(unnamed ones as cache_name "redis"), named (only clients named with '
        "otel_kit.cache.redis_cache) or none",
    )
    # 15 s, not the OTel spec's 60 s: Prometheus' default scrape interval, so that rates over
    # a few scrapes do not step between 0 and a spike (collector/otelcol-config.yaml expects it).
    export_interval_ms: int = Field(
        15000,
        validation_alias=AliasChoices(
            "export_interval_ms", "OTEL_KIT_EXPORT_INTERVAL_MS", "OTEL_METRIC_EXPORT_INTERVAL"
        ),
        description="push interval of the otlp and console exporters, ms: 100 to 86400000",
    )
    # OTLP push (OTEL_METRICS_EXPORTER=otlp). Signal-specific spec names win over generic ones;
    # otel-kit reads them here (not in the SDK exporter) so bad values fail at startup.
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "otlp_endpoint", "OTEL_KIT_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description="OTLP receiver (Collector) base URL, http:// or https:// (unset: "
        "localhost:4318, or 4317 for grpc); http/protobuf appends /v1/metrics",
    )
    otlp_metrics_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "otlp_metrics_endpoint",
            "OTEL_KIT_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ),
        description="OTLP URL for metrics, used as given; wins over otlp_endpoint",
    )
    otlp_protocol: str = Field(
        "http/protobuf",
        validation_alias=AliasChoices(
            "otlp_protocol",
            "OTEL_KIT_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        description="OTLP transport: http/protobuf (otel-kit[otlp]) or grpc (otel-kit[otlp-grpc])",
    )
    # SecretStr: `otel-kit config` and reprs must not print credentials.
    otlp_headers: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices(
            "otlp_headers",
            "OTEL_KIT_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        description="headers sent with each OTLP export: name1=value1,name2=value2 "
        "(percent-encoded values) or a dict",
    )
    # Milliseconds, as the OTel spec says (the Python SDK alone reads seconds).
    otlp_timeout_ms: int = Field(
        10000,
        validation_alias=AliasChoices(
            "otlp_timeout_ms",
            "OTEL_KIT_OTLP_TIMEOUT_MS",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ),
        description="OTLP export timeout, ms: 100 to 600000",
    )

    _pairs = field_validator("resource_attributes", "peer_services", mode="before")(rules.pairs)
    _exporters = field_validator("metrics_exporter", mode="before")(rules.exporters)
    _patterns = field_validator("excluded_urls", mode="before")(rules.patterns)
    _buckets = field_validator("duration_buckets", "db_duration_buckets", mode="before")(
        rules.buckets
    )
    _disabled = field_validator("disabled_instrumentations", mode="before")(rules.disabled)
    _redis_cache = field_validator("redis_cache", mode="before")(rules.redis_cache)
    _strategy = field_validator("prometheus_translation_strategy", mode="before")(
        rules.translation_strategy
    )
    _exemplar_filter = field_validator("exemplar_filter", mode="before")(rules.exemplar_filter)
    _integer = field_validator(*rules.INT_RULES, mode="before")(rules.integer)
    _path = field_validator("metrics_path")(rules.url_path)
    _token = field_validator("metrics_bearer_token")(rules.bearer_token)
    _basic_auth = field_validator("metrics_basic_auth")(rules.basic_auth)
    _boolean = field_validator(
        "sdk_disabled",
        "metrics_include_default_registry",
        "prometheus_scope_labels",
        "http_body_sizes",
        "http_time_to_first_byte",
        "http_active_requests",
        "db_query_summary",
        mode="before",
    )(rules.boolean)
    _methods = field_validator("http_known_methods", mode="before")(rules.methods)
    _host = field_validator("prometheus_host", mode="before")(rules.host)
    _unset = field_validator("multiproc_dir", mode="before")(rules.empty_is_unset)
    _non_empty = field_validator("service_name")(rules.non_empty)
    _url = field_validator(*rules.URL_SETTINGS, mode="before")(rules.otlp_url)
    _protocol = field_validator("otlp_protocol", mode="before")(rules.protocol)
    _headers = field_validator("otlp_headers", mode="before")(rules.headers)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """repr() without a URL's password (SecretStr fields already show stars)."""
        for name, value in super().__repr_args__():
            redact = name in rules.URL_SETTINGS and isinstance(value, str)
            yield name, rules.redact_url(value) if redact else value


class SettingKeywords(TypedDict, total=False):
    """The settings as keyword arguments of `setup_metrics()`: one key per `Settings` field
    (a test keeps them equal). Lists and pairs may also be given as their environment text."""

    sdk_disabled: bool
    service_name: str | None
    service_version: str | None
    deployment_environment: str | None
    resource_attributes: Mapping[str, str] | str
    metrics_exporter: Sequence[str]
    prometheus_host: str
    prometheus_port: int | None
    metrics_path: str
    metrics_include_default_registry: bool
    prometheus_scope_labels: bool
    prometheus_translation_strategy: str
    metrics_bearer_token: str | SecretStr | None
    metrics_basic_auth: str | SecretStr | None
    multiproc_dir: str | None
    excluded_urls: Sequence[str]
    duration_buckets: Sequence[float] | str
    db_duration_buckets: Sequence[float] | str
    db_query_summary: bool
    http_body_sizes: bool
    http_time_to_first_byte: bool
    http_active_requests: bool
    http_known_methods: Sequence[str] | str
    cardinality_limit: int
    exemplar_filter: str
    disabled_instrumentations: Sequence[str]
    peer_services: Mapping[str, str] | str
    redis_cache: str
    export_interval_ms: int
    otlp_endpoint: str | None
    otlp_metrics_endpoint: str | None
    otlp_protocol: str
    otlp_headers: Mapping[str, str | SecretStr] | str
    otlp_timeout_ms: int


@dataclass(frozen=True)
class SettingDoc:
    """One row of the settings table."""

    name: str  # the keyword argument
    env: tuple[str, ...]  # OTEL_KIT_<NAME> first, then the OTel spec's names
    default: str  # as an environment variable would spell it; "" when unset
    description: str
    secret: bool  # never printed, never put on a command line


def _holds_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_holds_secret(arg) for arg in get_args(annotation))


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    return "" if value is None or value == {} else str(value)


@functools.cache
def setting_docs() -> tuple[SettingDoc, ...]:
    """Every setting, in `Settings` order, from the fields themselves."""
    docs = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices)
        docs.append(
            SettingDoc(
                name=name,
                env=tuple(str(choice) for choice in alias.choices[1:]),
                default=_as_text(field.get_default(call_default_factory=True)),
                description=field.description or "",
                secret=_holds_secret(field.annotation),
            )
        )
    return tuple(docs)


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from keyword arguments (None means 'not given') over the environment."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(Settings.model_fields))}"
        )
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        docs = {doc.name: doc for doc in setting_docs()}
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            doc = docs.get(field)
            where = field if doc is None else " / ".join((field, *doc.env))
            # Credentials: never echo them into logs (nor a URL's password).
            secret = doc is not None and doc.secret
            shown = "<redacted>" if secret else rules.shown(field, error.get("input"))
            lines.append(f"invalid setting {where} = {shown}: {message}")
        raise ConfigError("\n".join(lines)) from None
    if settings.sdk_disabled:  # the OTel spec's switch: no exporter, no instrumentation
        return settings.model_copy(
            update={"metrics_exporter": ("none",), "disabled_instrumentations": INSTRUMENTATIONS}
        )
    return settings
