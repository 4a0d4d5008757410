"""A protected metrics endpoint: bearer token and basic auth on the app's /metrics (in-process,
httpx ASGI transport); the settings' validation, and `otel-kit config` with credentials. The
separate metrics port with credentials, and `otel-kit check` / `top` against it:
tests/integration/test_metrics_auth.py."""

from __future__ import annotations

import base64

import pytest
from typer.testing import CliRunner

from otel_kit import setup_metrics
from otel_kit.cli._app import app as cli
from otel_kit.config import ConfigError, load_settings
from tests.exposition import series, value
from tests.handles import MakeHandle
from tests.metrics_auth import (
    CHALLENGE_BASIC,
    CHALLENGE_BEARER,
    PASSWORD,
    TOKEN,
    USER,
    assert_refused,
    basic,
    bearer,
    client,
    make_app,
)

COUNT = "http_server_request_duration_seconds_count"


async def test_bearer_token_on_the_app_metrics_path(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app, metrics_bearer_token=TOKEN)
    async with client(app) as c:
        for i in range(3):  # app routes need no credential
            assert (await c.get(f"/items/{i}")).status_code == 200
        refused = [
            await c.get("/metrics"),
            await c.get("/metrics", headers=bearer("wrong")),
            await c.get("/metrics", headers=bearer(TOKEN + "x")),
            await c.get("/metrics", headers=bearer(TOKEN[:-1])),
            await c.get("/metrics", headers={"Authorization": TOKEN}),  # no scheme
            await c.get("/metrics", headers=basic(USER, TOKEN)),  # basic auth is not configured
        ]
        for response in refused:
            assert_refused(response, CHALLENGE_BEARER)
        ok = await c.get("/metrics", headers=bearer(TOKEN))
        # RFC 7235: the scheme is case-insensitive
        lower = await c.get("/metrics", headers={"Authorization": f"bearer  {TOKEN}"})
    assert ok.status_code == lower.status_code == 200
    assert value(ok.text, COUNT, http_route="/items/{item_id}") == 3
    # Neither the refused scrapes nor the accepted ones were counted as requests.
    assert value(ok.text, COUNT) == 3
    assert [labels["http_response_status_code"] for labels in series(ok.text, COUNT)] == ["200"]
    assert series(ok.text, "target_info")


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [
        (basic(USER, PASSWORD), True),
        (basic("Prometheus", PASSWORD), False),  # wrong user (case matters)
        (basic(USER, PASSWORD + "x"), False),  # wrong password
        (basic(USER, ""), False),
        (basic("", PASSWORD), False),
        ({"Authorization": "Basic !!not-base64!!"}, False),
        ({"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()}, False),
        (bearer(USER), False),  # no bearer token configured
    ],
)
async def test_basic_auth_on_the_app_metrics_path(
    make_handle: MakeHandle, headers: dict[str, str], accepted: bool
) -> None:
    app = make_app()
    make_handle(app, metrics_basic_auth=f"{USER}:{PASSWORD}")
    async with client(app) as c:
        assert (await c.get("/items/1")).status_code == 200
        response = await c.get("/metrics", headers=headers)
        missing = await c.get("/metrics")
    assert_refused(missing, CHALLENGE_BASIC)
    if accepted:
        assert response.status_code == 200
        assert value(response.text, COUNT, http_route="/items/{item_id}") == 1
    else:
        assert_refused(response, CHALLENGE_BASIC)


async def test_either_credential_when_both_are_set(make_handle: MakeHandle) -> None:
    app = make_app()
    make_handle(app, metrics_bearer_token=TOKEN, metrics_basic_auth=f"{USER}:{PASSWORD}")
    async with client(app) as c:
        assert_refused(await c.get("/metrics"), CHALLENGE_BEARER, CHALLENGE_BASIC)
        assert (await c.get("/metrics", headers=bearer(TOKEN))).status_code == 200
        assert (await c.get("/metrics", headers=basic(USER, PASSWORD))).status_code == 200
        assert_refused(
            await c.get("/metrics", headers=bearer(USER)), CHALLENGE_BEARER, CHALLENGE_BASIC
        )


# -- settings ----------------------------------------------------------------------------------

BAD = [
    ("metrics_bearer_token", "OTEL_KIT_METRICS_BEARER_TOKEN", "s3cret token", "no spaces"),
    ("metrics_bearer_token", "OTEL_KIT_METRICS_BEARER_TOKEN", "s3cret-tök", "visible ASCII"),
    ("metrics_basic_auth", "OTEL_KIT_METRICS_BASIC_AUTH", "s3cret", "expected user:password"),
    ("metrics_basic_auth", "OTEL_KIT_METRICS_BASIC_AUTH", ":s3cret", "non-empty user name"),
]


@pytest.mark.parametrize(("field", "env", "secret", "rule"), BAD)
def test_bad_credentials_are_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, field: str, env: str, secret: str, rule: str
) -> None:
    messages = []
    with pytest.raises(ConfigError) as error:
        setup_metrics(**{field: secret})
    messages.append(str(error.value))
    monkeypatch.setenv(env, secret)
    with pytest.raises(ConfigError) as error:
        load_settings()
    messages.append(str(error.value))
    flag = "--" + field.replace("_", "-")
    result = CliRunner().invoke(cli, ["run", flag, secret, "python", "-c", "pass"])
    assert result.exit_code == 2
    messages.append(result.stderr)
    for message in messages:
        assert f"invalid setting {field} / {env} = <redacted>: " in message
        assert rule in message
        assert "s3cret" not in message


def test_empty_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty keyword argument is an error; an empty variable is an unset one (as every
    OTel variable): the endpoint is open."""
    for field in ("metrics_bearer_token", "metrics_basic_auth"):
        with pytest.raises(ConfigError, match=f"invalid setting {field} .* = <redacted>: "):
            load_settings({field: ""})
    monkeypatch.setenv("OTEL_KIT_METRICS_BEARER_TOKEN", "")
    monkeypatch.setenv("OTEL_KIT_METRICS_BASIC_AUTH", "")
    settings = load_settings()
    assert settings.metrics_bearer_token is None
    assert settings.metrics_basic_auth is None


def test_config_command_hides_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_KIT_METRICS_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("OTEL_KIT_METRICS_BASIC_AUTH", "prometheus:hunter2")
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0
    assert TOKEN not in result.output
    assert "hunter2" not in result.output
    for name in ("metrics_bearer_token", "metrics_basic_auth"):
        line = next(line for line in result.output.splitlines() if name in line)
        assert "SecretStr('**********')" in line
    settings = load_settings()
    assert TOKEN not in repr(settings)
    assert settings.metrics_bearer_token is not None
    assert settings.metrics_bearer_token.get_secret_value() == TOKEN
