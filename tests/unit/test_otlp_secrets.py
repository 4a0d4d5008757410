"""OTLP credentials never reach the output or the logs (issue 20): header values with control
characters are refused without being echoed; a password in the endpoint URL and header values
are hidden by `otel-kit config`, repr(), config errors and the export warnings."""

from __future__ import annotations

import logging
import socket

import pytest
from typer.testing import CliRunner

from otel_kit._exporters.push import ExportHealth
from otel_kit._setting_rules import redact_url
from otel_kit.cli._app import app as cli
from otel_kit.config import ConfigError, load_settings
from tests.handles import MakeHandle

PASSWORD = "pw-s3cret"
HEADER_SECRET = "hdr-s3cret"
SECRETS = (PASSWORD, HEADER_SECRET)
CONTROL_RULE = "header values must not contain control characters"


def assert_hidden(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize(
    "env",
    ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_KIT_OTLP_HEADERS"],
)
@pytest.mark.parametrize(
    "text",
    [
        f"Authorization=Bearer {HEADER_SECRET}\r\nX-Injected: 1",
        f"Authorization=Bearer {HEADER_SECRET}%0D%0AX-Injected: 1",  # percent-encoded CR LF
        f"authorization=Bearer\t{HEADER_SECRET}",
        f"x-api-key={HEADER_SECRET}%00",  # (an environment variable cannot hold NUL)
    ],
)
def test_header_values_with_control_characters_are_refused_unechoed(
    monkeypatch: pytest.MonkeyPatch, env: str, text: str
) -> None:
    monkeypatch.setenv(env, text)
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("invalid setting otlp_headers / ")
    assert env in message
    assert f" = <redacted>: {CONTROL_RULE}" in message
    assert "the value of header 'authorization'" in message or "'x-api-key'" in message
    assert_hidden(message)


def test_header_keyword_dicts_are_checked_too() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({"otlp_headers": {"Authorization": f"Bearer {HEADER_SECRET}\r\n"}})
    assert "invalid setting otlp_headers / OTEL_KIT_OTLP_HEADERS" in str(error.value)
    assert CONTROL_RULE in str(error.value)
    assert_hidden(str(error.value))
    with pytest.raises(ConfigError, match="HTTP header names"):
        load_settings({"otlp_headers": {"X-Evil\r\nHost": "x"}})
    # Whitespace around a value is trimmed, as the OTel spec says: not an error.
    settings = load_settings({"otlp_headers": f"Authorization = Bearer {HEADER_SECRET} \r\n"})
    assert settings.otlp_headers["authorization"].get_secret_value() == f"Bearer {HEADER_SECRET}"


def test_config_command_and_repr_hide_the_password_and_header_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://user:{PASSWORD}@collector:4318")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"https://ops:{PASSWORD}@collector:4318/v1/metrics"
    )
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer {HEADER_SECRET},X-Tenant=acme"
    )
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert_hidden(result.output)

    def row(name: str) -> str:
        return next(line for line in result.output.splitlines() if f" {name} " in line)

    assert "'http://user:***@collector:4318'" in row("otlp_endpoint")
    assert "'https://ops:***@collector:4318/v1/metrics'" in row("otlp_metrics_endpoint")
    assert "authorization=***,x-tenant=***" in row("otlp_headers")
    settings = load_settings()
    assert_hidden(repr(settings))
    assert "otlp_endpoint='http://user:***@collector:4318'" in repr(settings)
    # the values themselves are untouched: the exporter sends them
    assert settings.otlp_endpoint == f"http://user:{PASSWORD}@collector:4318"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://user:{PASSWORD}@collector:4318",  # wrong scheme
        f"http://user:{PASSWORD}@collector:0",  # port 0
        f"http://user:{PASSWORD}@collector:port",  # not a port
        f"http://user:{PASSWORD}@:4318",  # no host
        f"http://user:{PASSWORD}@collector:4318/v1 metrics",  # a space
        f"http://user:{PASSWORD}@collector\r\n:4318",  # a line break inside
        f"http://user:p@ss:{PASSWORD}@collector:abc",  # unencoded @ and : in the password
        f"user:{PASSWORD}@collector:4318",  # no scheme
    ],
)
def test_url_errors_do_not_echo_the_password(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT = '" in message
    assert "expected an http:// or https:// URL" in message
    assert "user:***@" in message
    assert_hidden(message)
    with pytest.raises(ConfigError) as error:
        load_settings({"otlp_metrics_endpoint": url})
    assert "invalid setting otlp_metrics_endpoint" in str(error.value)
    assert_hidden(str(error.value))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://localhost:4318", "http://localhost:4318"),
        ("http://user@host:4318", "http://user@host:4318"),  # a user name alone is no secret
        ("http://user:pw@host:4318/v1/metrics", "http://user:***@host:4318/v1/metrics"),
        ("https://user:p@ss@host", "https://user:***@host"),
        ("http://:pw@host", "http://:***@host"),
        ("user:pw@host:1", "user:***@host:1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more: exports are refused


def test_failed_exports_log_no_secret(
    make_handle: MakeHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything anyone logs, the SDK and urllib3 included
    port = closed_port()
    handle = make_handle(
        metrics_exporter="otlp",
        otlp_endpoint=f"http://user:{PASSWORD}@127.0.0.1:{port}",
        otlp_headers={"Authorization": f"Bearer {HEADER_SECRET}"},
        otlp_timeout_ms=300,
    )
    handle.shutdown()  # pushes the last interval: refused
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["otel_kit"]
    message = warnings[0].getMessage()
    assert f"cannot export metrics to http://user:***@127.0.0.1:{port}/v1/metrics" in message
    assert_hidden(caplog.text)
    for record in caplog.records:
        assert_hidden(record.getMessage())


def test_export_reasons_are_masked() -> None:
    """The SDK's messages and exceptions may quote the URL or a header: masked in the warning
    and in the later summary."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    logging.getLogger("otel_kit").addHandler(handler)
    try:
        now = [0.0]
        health = ExportHealth(
            f"http://user:{PASSWORD}@h:4318/v1/metrics",
            repeat_s=10,
            clock=lambda: now[0],
            secrets=(f"Bearer {HEADER_SECRET}", PASSWORD),
        )
        health.failed(f"InvalidHeader: b'Bearer {HEADER_SECRET}\\r\\n' for {PASSWORD}")
        now[0] = 11.0
        health.failed(f"ConnectionError: http://user:{PASSWORD}@h:4318 refused")
    finally:
        logging.getLogger("otel_kit").removeHandler(handler)
    assert len(records) == 2
    assert "InvalidHeader: b'***\\r\\n' for ***" in records[0]
    assert "http://user:***@h:4318 refused" in records[1]
    for record in records:
        assert_hidden(record)


@pytest.mark.parametrize("setting", ["otlp_endpoint", "otlp_metrics_endpoint"])
def test_grpc_refuses_credentials_in_the_url(make_handle: MakeHandle, setting: str) -> None:
    """gRPC takes the URL's authority as its target: a password there would go to gRPC's own
    logs and resolver, never to the server. Refused, naming the setting, not the password."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")
    url = f"http://user:{PASSWORD}@127.0.0.1:4317"
    with pytest.raises(ConfigError) as error:
        make_handle(metrics_exporter="otlp", otlp_protocol="grpc", **{setting: url})
    message = str(error.value)
    assert message.startswith(f"invalid setting {setting} / ")
    assert "grpc takes no user name or password in the URL" in message
    assert "user:***@127.0.0.1:4317" in message
    assert_hidden(message)
