"""What each setting accepts: parsers for `otel_kit.config.Settings`' validators, and how a
value is shown wherever otel-kit prints or logs it (`shown`, `redact_url`).

Each parser takes the raw value (text from the environment, or a keyword argument) and returns
it parsed, or raises ValueError whose message is the rule; `load_settings()` adds the setting's
names and the value.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr, ValidationInfo

from otel_kit._instrumentation import INTEGRATIONS
from otel_kit.catalogue import TRANSLATION_STRATEGIES

__all__ = [
    "EXEMPLAR_FILTERS",
    "EXPORTERS",
    "INSTRUMENTATIONS",
    "INT_RULES",
    "URL_SETTINGS",
    "basic_auth",
    "bearer_token",
    "boolean",
    "buckets",
    "disabled",
    "empty_is_unset",
    "exemplar_filter",
    "exporters",
    "headers",
    "host",
    "integer",
    "methods",
    "non_empty",
    "otlp_url",
    "pairs",
    "patterns",
    "protocol",
    "redact_url",
    "redis_cache",
    "shown",
    "translation_strategy",
    "url_path",
]

EXPORTERS = ("prometheus", "otlp", "console", "none")
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")  # the OTel spec's, in its order
INSTRUMENTATIONS = tuple(integration.name for integration in INTEGRATIONS)

_MS = "an integer number of milliseconds"
# Integer settings: (lowest, highest, the rule an error shows).
INT_RULES: dict[str, tuple[int, int, str]] = {
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
URL_SETTINGS = ("otlp_endpoint", "otlp_metrics_endpoint")
# C0 controls and DEL: CR/LF would split a header; none belongs in a header value or a URL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def pairs(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    parsed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=value; expected k1=v1,k2=v2")
        parsed[key.strip()] = val.strip()
    return parsed


def exporters(value: Any) -> Any:
    names = tuple(name.lower() for name in _split(value))
    bad = [name for name in names if name not in EXPORTERS]
    if bad or not names:
        raise ValueError(f"allowed: comma-separated {', '.join(EXPORTERS)}")
    if "none" in names and len(names) > 1:
        raise ValueError("'none' cannot be combined with other exporters")
    return names


def patterns(value: Any) -> Any:
    parsed = _split(value)
    for pattern in parsed:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"{pattern!r} is not a regular expression ({exc}); "
                "expected comma-separated regular expressions"
            ) from None
    return parsed


def buckets(value: Any) -> Any:
    rule = "expected a non-empty, strictly increasing list of finite numbers >= 0"
    try:
        bounds = tuple(float(b) for b in _split(value))
    except (TypeError, ValueError):
        raise ValueError(rule) from None
    ordered = all(a < b for a, b in itertools.pairwise(bounds))
    if not bounds or not ordered or any(b < 0 or not math.isfinite(b) for b in bounds):
        raise ValueError(rule)
    return bounds


def methods(value: Any) -> Any:
    """HTTP method names, as semconv's OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS: exact (no case
    folding), a full replacement of the defaults; empty is allowed (every method _OTHER)."""
    names = _split(value)
    if not isinstance(names, tuple | list | set | frozenset) or not all(
        isinstance(name, str) and _HEADER_NAME.fullmatch(name) for name in names
    ):  # an RFC 9110 token, as a header name
        raise ValueError(
            "expected comma-separated HTTP method names (case-sensitive tokens, e.g. "
            "GET,POST,PURGE), which replace the default list"
        )
    return tuple(sorted(names) if isinstance(names, set | frozenset) else dict.fromkeys(names))


def disabled(value: Any) -> Any:
    names = _split(value)
    bad = [name for name in names if name not in INSTRUMENTATIONS]
    if bad:
        raise ValueError(f"allowed: comma-separated {', '.join(INSTRUMENTATIONS)}")
    return names


def integer(value: Any, info: ValidationInfo) -> Any:
    """Integers: one message (the rule) for text that is not one and for values out of range."""
    low, high, rule = INT_RULES[str(info.field_name)]
    if value is None:
        return None
    try:
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError(rule) from None
    if isinstance(value, float | bool) or not low <= number <= high:
        raise ValueError(rule)
    return number


def url_path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "?# "):
        raise ValueError("expected a URL path starting with '/' (no query, no spaces)")
    return value


# The messages never quote the value: it is a credential.
def bearer_token(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not re.fullmatch(r"[!-~]+", value.get_secret_value()):
        raise ValueError(
            "expected a non-empty token of visible ASCII characters, no spaces "
            "(unset it to serve metrics without credentials)"
        )
    return value


def basic_auth(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        user, colon, _ = value.get_secret_value().partition(":")
        if not colon or not user:
            raise ValueError(
                "expected user:password with a non-empty user name (no ':' in the user name)"
            )
    return value


def boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ("true", "false", ""):
        return text == "true"
    raise ValueError("allowed: true, false (case-insensitive)")


def host(value: Any) -> Any:
    name = value.strip() if isinstance(value, str) else value
    if isinstance(name, str) and (_is_ip(name) or _HOSTNAME.fullmatch(name)):
        return name
    raise ValueError(
        "expected a host name or IP address to bind, e.g. localhost, 127.0.0.1, "
        "0.0.0.0 (all IPv4 interfaces) or :: (all IPv6)"
    )


def empty_is_unset(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def non_empty(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def otlp_url(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None  # an empty spec variable means "not set", as in the SDK
    rule = (
        "expected an http:// or https:// URL with a host, without spaces or control "
        "characters, e.g. http://localhost:4318"
    )
    if any(char.isspace() or _CONTROL.match(char) for char in value.strip()):
        raise ValueError(rule)  # urlsplit would silently drop some of them
    try:
        url = urlsplit(value.strip())
        port_ok = url.port is None or url.port > 0
    except ValueError:
        raise ValueError(rule) from None
    if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
        raise ValueError(rule)
    return value.strip()


def protocol(value: Any) -> Any:
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in ("http/protobuf", "grpc"):
        raise ValueError(
            "allowed: http/protobuf, grpc (the OTel Python exporters have no http/json)"
        )
    return name


def exemplar_filter(value: Any) -> Any:
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in EXEMPLAR_FILTERS:
        raise ValueError(f"allowed: {', '.join(EXEMPLAR_FILTERS)}")
    return name


def translation_strategy(value: Any) -> Any:
    """Prometheus' names for them, in any case."""
    name = value.strip().lower() if isinstance(value, str) else value
    for strategy in TRANSLATION_STRATEGIES:
        if strategy.lower() == name:
            return strategy
    raise ValueError(f"allowed: {', '.join(TRANSLATION_STRATEGIES)}")


def redis_cache(value: Any) -> Any:
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in ("all", "named", "none"):
        raise ValueError(
            'allowed: all (every client; unnamed ones as cache_name "redis"), named (only '
            "clients named with otel_kit.cache.redis_cache), none (no Redis lookup counted)"
        )
    return mode


def headers(value: Any) -> Any:
    """The messages name the header, never its value: it is often a credential."""
    if isinstance(value, str):
        parsed: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, val = item.partition("=")
            if not sep:
                name = ""  # "api-key" alone: no value
            parsed[name.strip().lower()] = unquote(val.strip())
        value = parsed
    if not isinstance(value, dict):
        return value
    for name, val in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                "expected name1=value1,name2=value2 (HTTP header names, percent-encoded values)"
            )
        text = val.get_secret_value() if isinstance(val, SecretStr) else val
        if isinstance(text, str) and _CONTROL.search(text):
            raise ValueError(
                f"header values must not contain control characters (CR, LF, tab, ...); "
                f"the value of header {name!r} does"
            )
    return value


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced: http://user:***@host:4318/v1.

    The user info ends at the first '/', '?' or '#' (RFC 3986). A malformed password that
    holds one of them still never shows: if an '@' only comes later, the user info is taken to
    end at the last '@', which may hide a little more than needed.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    if "@" not in rest[:end]:
        end = len(rest) if "@" in rest else 0
    userinfo, at, after = rest[:end].rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{head}{sep}{user}:***@{after}{rest[end:]}" if at and colon else url


def shown(name: str, value: Any) -> str:
    """A setting's value as otel-kit prints or logs it: header names without their values,
    URLs without their password, anything else as its repr (SecretStr shows stars)."""
    if name == "otlp_headers" and isinstance(value, dict):
        return ",".join(f"{header}=***" for header in value) or "{}"
    if name in URL_SETTINGS and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)
