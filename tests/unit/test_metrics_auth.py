"""A protected metrics endpoint: bearer token and basic auth on the app's /metrics (in-process,
httpx ASGI transport) and on the separate metrics port (a real socket on loopback); the
settings' validation, and `otel-kit config` / `check` / `top` with credentials."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from otel_kit import setup_metrics
from otel_kit.cli._app import app as cli
from otel_kit.config import ConfigError, load_settings
from tests.conftest import series, value

COUNT = "http_server_request_duration_seconds_count"
TOKEN = "s3cret-T0ken_value.~+/="
USER, PASSWORD = "prometheus", "pa:ss wörd"  # a colon and non-ASCII in the password are allowed
CHALLENGE_BEARER = 'Bearer realm="metrics"'
CHALLENGE_BASIC = 'Basic realm="metrics", charset="UTF-8"'


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


def basic(user: str, password: str) -> dict[str, str]:
    pair = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, *challenges: str) -> None:
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == list(challenges)
    assert response.text == "401 Unauthorized: this metrics endpoint needs credentials\n"


async def test_bearer_token_on_the_app_metrics_path() -> None:
    app = make_app()
    setup_metrics(app, metrics_bearer_token=TOKEN)
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
async def test_basic_auth_on_the_app_metrics_path(headers: dict[str, str], accepted: bool) -> None:
    app = make_app()
    setup_metrics(app, metrics_basic_auth=f"{USER}:{PASSWORD}")
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


async def test_either_credential_when_both_are_set() -> None:
    app = make_app()
    setup_metrics(app, metrics_bearer_token=TOKEN, metrics_basic_auth=f"{USER}:{PASSWORD}")
    async with client(app) as c:
        assert_refused(await c.get("/metrics"), CHALLENGE_BEARER, CHALLENGE_BASIC)
        assert (await c.get("/metrics", headers=bearer(TOKEN))).status_code == 200
        assert (await c.get("/metrics", headers=basic(USER, PASSWORD))).status_code == 200
        assert_refused(
            await c.get("/metrics", headers=bearer(USER)), CHALLENGE_BEARER, CHALLENGE_BASIC
        )


async def test_separate_port_with_credentials() -> None:
    app = make_app()
    handle = setup_metrics(
        app, prometheus_host="127.0.0.1", prometheus_port=0, metrics_bearer_token=TOKEN
    )
    async with client(app) as c:
        assert (await c.get("/items/7")).status_code == 200
        assert (await c.get("/metrics", headers=bearer(TOKEN))).status_code == 404  # not on the app
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    with httpx.Client(timeout=10) as direct:
        assert_refused(direct.get(url), CHALLENGE_BEARER)
        assert_refused(direct.get(url, headers=bearer("nope")), CHALLENGE_BEARER)
        assert_refused(direct.post(url, headers=bearer("nope")), CHALLENGE_BEARER)
        ok = direct.get(url, headers=bearer(TOKEN))
        lower = direct.get(url, headers={"Authorization": f"BEARER {TOKEN}"})
    assert ok.status_code == lower.status_code == 200
    assert value(ok.text, COUNT, http_route="/items/{item_id}") == 1


def test_separate_port_with_basic_auth() -> None:
    handle = setup_metrics(
        prometheus_host="127.0.0.1", prometheus_port=0, metrics_basic_auth=f"{USER}:{PASSWORD}"
    )
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    with httpx.Client(timeout=10) as direct:
        assert_refused(direct.get(url), CHALLENGE_BASIC)
        assert_refused(direct.get(url, headers=basic(USER, "x")), CHALLENGE_BASIC)
        ok = direct.get(url, headers=basic(USER, PASSWORD))
    assert ok.status_code == 200
    assert series(ok.text, "target_info")


def loopback_alias_available() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not loopback_alias_available(), reason="this kernel does not route 127.0.0.2 to loopback"
)
@pytest.mark.parametrize(
    ("host", "other"), [("127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.1")]
)
def test_the_metrics_port_listens_on_prometheus_host_only(host: str, other: str) -> None:
    handle = setup_metrics(prometheus_host=host, prometheus_port=0)
    port = handle.prometheus_port
    assert httpx.get(f"http://{host}:{port}/metrics", timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{other}:{port}/metrics", timeout=10)


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


# -- otel-kit check and top ---------------------------------------------------------------------


def test_check_and_top_scrape_a_protected_endpoint() -> None:
    handle = setup_metrics(
        prometheus_host="127.0.0.1",
        prometheus_port=0,
        metrics_bearer_token=TOKEN,
        metrics_basic_auth=f"{USER}:{PASSWORD}",
    )
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    runner = CliRunner()
    env = {"COLUMNS": "200"}

    missing = runner.invoke(cli, ["check", url], env=env)
    assert missing.exit_code == 2
    assert f"{url} answered HTTP 401 (give --bearer-token or --basic-auth)" in missing.stderr
    wrong = runner.invoke(cli, ["top", url, "--once", "--bearer-token", "nope"], env=env)
    assert wrong.exit_code == 2
    assert f"{url} answered HTTP 401 (credentials refused)" in wrong.stderr

    given = [
        runner.invoke(cli, ["check", url, "--bearer-token", TOKEN, "--json"], env=env),
        runner.invoke(cli, ["check", url, "--basic-auth", f"{USER}:{PASSWORD}", "--json"], env=env),
        runner.invoke(
            cli, ["check", url, "--json"], env={**env, "OTEL_KIT_METRICS_BEARER_TOKEN": TOKEN}
        ),
    ]
    for result in given:
        assert result.exit_code == 0, result.output
        families = {family["name"] for family in json.loads(result.stdout)["families"]}
        assert {"target_info", "process_cpu_time_seconds_total"} <= families
    top = runner.invoke(
        cli,
        ["top", url, "--once", "--interval", "0.1"],
        env={**env, "OTEL_KIT_METRICS_BASIC_AUTH": f"{USER}:{PASSWORD}"},
    )
    assert top.exit_code == 0, top.output
    assert "otel-kit top" in top.stdout
