"""Configuration: one table, keyword argument > OTEL_KIT_* env var > OTel spec env var > default.

Every setting is a field below; its env var names are the field's aliases. Bad values raise
`ConfigError` naming the setting, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otel_kit.catalogue import DEFAULT_DURATION_BUCKETS

__all__ = ["EXPORTERS", "INSTRUMENTATIONS", "ConfigError", "Settings", "load_settings"]

EXPORTERS = ("prometheus", "otlp", "console", "none")
INSTRUMENTATIONS = ("fastapi", "sqlalchemy", "redis", "httpx", "runtime")


_MS = "an integer number of milliseconds"
# Integer settings: (lowest, highest, the rule an error shows).
_INT_RULES: dict[str, tuple[int, int, str]] = {
    "prometheus_port": (0, 65535, "expected a TCP port from 0 to 65535 (0 picks a free port)"),
    "cardinality_limit": (
        1,
        10_000_000,
        "expected an integer from 1 to 10000000 (attribute sets per metric before overflow)",
    ),
    "export_interval_ms": (100, 86_400_000, f"expected {_MS} from 100 to 86400000 (one day)"),
    "otlp_timeout_ms": (
        100,
        600_000,
        f"expected {_MS} from 100 to 600000 (the OTel spec unit: 10 s is 10000)",
    ),
}
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ConfigError(ValueError):
    """A setting has a value otel-kit cannot use. The message names setting, value and rule."""


def _env(name: str, *spec_names: str) -> AliasChoices:
    """Aliases: the field name (keyword argument), OTEL_KIT_<NAME>, then OTel spec names."""
    return AliasChoices(name, f"OTEL_KIT_{name.upper()}", *spec_names)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,  # the OTel spec: an empty variable is an unset one
    )

    # OTEL_SDK_DISABLED=true: setup_metrics() measures and serves nothing (the app is untouched).
    sdk_disabled: bool = Field(False, validation_alias=_env("sdk_disabled", "OTEL_SDK_DISABLED"))
    service_name: str | None = Field(
        None, validation_alias=_env("service_name", "OTEL_SERVICE_NAME")
    )
    service_version: str | None = Field(None, validation_alias=_env("service_version"))
    deployment_environment: str | None = Field(
        None, validation_alias=_env("deployment_environment")
    )
    resource_attributes: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        validation_alias=_env("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES"),
    )
    metrics_exporter: Annotated[tuple[str, ...], NoDecode] = Field(
        ("prometheus",), validation_alias=_env("metrics_exporter", "OTEL_METRICS_EXPORTER")
    )
    prometheus_host: str = Field(
        "localhost", validation_alias=_env("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST")
    )
    prometheus_port: int | None = Field(
        None, validation_alias=_env("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT")
    )
    metrics_path: str = Field("/metrics", validation_alias=_env("metrics_path"))
    # Credentials a scrape must present (in-app and separate port; either one when both are set).
    metrics_bearer_token: SecretStr | None = Field(
        None, validation_alias=_env("metrics_bearer_token")
    )
    metrics_basic_auth: SecretStr | None = Field(None, validation_alias=_env("metrics_basic_auth"))
    # Several processes, one Prometheus view (`otel-kit run` sets it; docs/multiprocess.md).
    multiproc_dir: str | None = Field(None, validation_alias=_env("multiproc_dir"))
    excluded_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        validation_alias=_env(
            "excluded_urls", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"
        ),
    )
    duration_buckets: Annotated[tuple[float, ...], NoDecode] = Field(
        DEFAULT_DURATION_BUCKETS, validation_alias=_env("duration_buckets")
    )
    cardinality_limit: int = Field(2000, validation_alias=_env("cardinality_limit"))
    disabled_instrumentations: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        validation_alias=_env("disabled_instrumentations", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"),
    )
    peer_services: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("peer_services")
    )
    export_interval_ms: int = Field(
        60000, validation_alias=_env("export_interval_ms", "OTEL_METRIC_EXPORT_INTERVAL")
    )

    @field_validator("resource_attributes", "peer_services", mode="before")
    @classmethod
    def _parse_pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item!r} is not key=value; expected k1=v1,k2=v2")
            pairs[key.strip()] = val.strip()
        return pairs

    @field_validator("metrics_exporter", mode="before")
    @classmethod
    def _parse_exporters(cls, value: Any) -> Any:
        names = tuple(name.lower() for name in _split(value))
        bad = [name for name in names if name not in EXPORTERS]
        if bad or not names:
            raise ValueError(f"allowed: comma-separated {', '.join(EXPORTERS)}")
        if "none" in names and len(names) > 1:
            raise ValueError("'none' cannot be combined with other exporters")
        return names

    @field_validator("excluded_urls", mode="before")
    @classmethod
    def _parse_patterns(cls, value: Any) -> Any:
        patterns = _split(value)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{pattern!r} is not a regular expression ({exc}); "
                    "expected comma-separated regular expressions"
                ) from None
        return patterns

    @field_validator("duration_buckets", mode="before")
    @classmethod
    def _parse_buckets(cls, value: Any) -> Any:
        rule = "expected a non-empty, strictly increasing list of finite numbers >= 0"
        try:
            bounds = tuple(float(b) for b in _split(value))
        except (TypeError, ValueError):
            raise ValueError(rule) from None
        ordered = all(a < b for a, b in itertools.pairwise(bounds))
        if not bounds or not ordered or any(b < 0 or not math.isfinite(b) for b in bounds):
            raise ValueError(rule)
        return bounds

    @field_validator("disabled_instrumentations", mode="before")
    @classmethod
    def _parse_disabled(cls, value: Any) -> Any:
        names = _split(value)
        bad = [name for name in names if name not in INSTRUMENTATIONS]
        if bad:
            raise ValueError(f"allowed: comma-separated {', '.join(INSTRUMENTATIONS)}")
        return names

    @field_validator(*_INT_RULES, mode="before")
    @classmethod
    def _parse_int(cls, value: Any, info: ValidationInfo) -> Any:
        """Integers: one message (the rule) for text that is not one and for values out of range."""
        low, high, rule = _INT_RULES[str(info.field_name)]
        if value is None:
            return None
        try:
            number = int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ValueError(rule) from None
        if isinstance(value, float | bool) or not low <= number <= high:
            raise ValueError(rule)
        return number

    @field_validator("metrics_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?# "):
            raise ValueError("expected a URL path starting with '/' (no query, no spaces)")
        return value

    # The messages never quote the value: it is a credential.
    @field_validator("metrics_bearer_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[!-~]+", value.get_secret_value()):
            raise ValueError(
                "expected a non-empty token of visible ASCII characters, no spaces "
                "(unset it to serve metrics without credentials)"
            )
        return value

    @field_validator("metrics_basic_auth")
    @classmethod
    def _check_basic_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, colon, _ = value.get_secret_value().partition(":")
            if not colon or not user:
                raise ValueError(
                    "expected user:password with a non-empty user name (no ':' in the user name)"
                )
        return value

    @field_validator("sdk_disabled", mode="before")
    @classmethod
    def _parse_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else value
        if text in ("true", "false", ""):
            return text == "true"
        raise ValueError("allowed: true, false (case-insensitive)")

    @field_validator("prometheus_host", mode="before")
    @classmethod
    def _check_host(cls, value: Any) -> Any:
        host = value.strip() if isinstance(value, str) else value
        if isinstance(host, str) and (_is_ip(host) or _HOSTNAME.fullmatch(host)):
            return host
        raise ValueError(
            "expected a host name or IP address to bind, e.g. localhost, 127.0.0.1, "
            "0.0.0.0 (all IPv4 interfaces) or :: (all IPv6)"
        )

    @field_validator("multiproc_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("service_name")
    @classmethod
    def _check_non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a non-empty string")
        return value

    # OTLP push (OTEL_METRICS_EXPORTER=otlp). Signal-specific spec names win over generic ones;
    # otel-kit reads them here (not in the SDK exporter) so bad values fail at startup.
    otlp_endpoint: str | None = Field(
        None, validation_alias=_env("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otlp_metrics_endpoint: str | None = Field(
        None,
        validation_alias=_env("otlp_metrics_endpoint", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
    )
    otlp_protocol: str = Field(
        "http/protobuf",
        validation_alias=_env(
            "otlp_protocol", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ),
    )
    # SecretStr: `otel-kit config` and reprs must not print credentials.
    otlp_headers: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        validation_alias=_env(
            "otlp_headers", "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"
        ),
    )
    # Milliseconds, as the OTel spec says (the Python SDK alone reads seconds).
    otlp_timeout_ms: int = Field(
        10000,
        validation_alias=_env(
            "otlp_timeout_ms", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"
        ),
    )

    @field_validator("otlp_endpoint", "otlp_metrics_endpoint", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None  # an empty spec variable means "not set", as in the SDK
        rule = "expected an http:// or https:// URL with a host, e.g. http://localhost:4318"
        try:
            url = urlsplit(value.strip())
            port_ok = url.port is None or url.port > 0
        except ValueError:
            raise ValueError(rule) from None
        if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
            raise ValueError(rule)
        return value.strip()

    @field_validator("otlp_protocol", mode="before")
    @classmethod
    def _check_protocol(cls, value: Any) -> Any:
        protocol = value.strip().lower() if isinstance(value, str) else value
        if protocol not in ("http/protobuf", "grpc"):
            raise ValueError(
                "allowed: http/protobuf, grpc (the OTel Python exporters have no http/json)"
            )
        return protocol

    @field_validator("otlp_headers", mode="before")
    @classmethod
    def _parse_headers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        headers: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, val = item.partition("=")
            if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
                raise ValueError(
                    "expected name1=value1,name2=value2 (HTTP header names, percent-encoded values)"
                )
            headers[name.strip().lower()] = unquote(val.strip())
        return headers


def _names(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    assert isinstance(alias, AliasChoices)
    return " / ".join(str(choice) for choice in alias.choices)


_SECRET_FIELDS = frozenset({"otlp_headers", "metrics_bearer_token", "metrics_basic_auth"})


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
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            where = _names(field) if field in Settings.model_fields else field
            # Header values carry credentials: never echo them into logs.
            shown = "<redacted>" if field in _SECRET_FIELDS else repr(error.get("input"))
            lines.append(f"invalid setting {where} = {shown}: {message}")
        raise ConfigError("\n".join(lines)) from None
    if settings.sdk_disabled:  # the OTel spec's switch: no exporter, no instrumentation
        return settings.model_copy(
            update={"metrics_exporter": ("none",), "disabled_instrumentations": INSTRUMENTATIONS}
        )
    return settings
