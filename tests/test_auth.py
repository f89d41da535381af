"""Access to the viewer: tokens and roles on every route and the websocket, sessions, rate limits, audit, CORS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from lifeline.cli import cli
from twin.errors import ConfigError
from twin.store.db import DictConnection
from viewer.app import create_app
from viewer.auth import COOKIE, Authenticator, Role, add_token, digest, read_tokens

from .conftest import serve

pytestmark = pytest.mark.integration

ROLES = ("viewer", "operator", "emergency", "admin")


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.toml"
    return path, {role: add_token(path, name=f"{role}-1", role=Role(role)) for role in ROLES}


@pytest.fixture
def secured(pg_url: str, schema: str, tokens: tuple[Path, dict[str, str]]) -> Iterator[str]:
    auth = Authenticator.from_file(tokens[0], rate_per_s=50.0, burst=60.0)
    with serve(create_app(conninfo=pg_url, schema=schema, auth=auth)) as url:
        yield url


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Every route of the OpenAPI document, by the permission it needs (GET with read; the rest as noted).
READ_ROUTES = ["/api/sensors", "/api/sensors/W-P-001/readings", "/api/alerts", "/api/twin", "/api/drills"]


def test_without_a_token_every_api_route_says_401(secured: str) -> None:
    spec = httpx.get(f"{secured}/openapi.json").json()
    open_paths = {"/api/info", "/healthz", "/api/session"}
    checked = 0
    for path, methods in spec["paths"].items():
        if path in open_paths:
            continue
        concrete = path.replace("{sensor_id}", "W-P-001").replace("{ref}", "water:node:J1").replace("{drill_id}", "1")
        for method in methods:
            res = httpx.request(method.upper(), f"{secured}{concrete}", json={"kind": "rainstorm"})
            assert res.status_code == 401, (method, path, res.status_code, res.text[:200])
            assert res.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked >= 10
    assert httpx.get(f"{secured}/api/info").json()["auth_required"] is True
    assert httpx.get(f"{secured}/api/sensors", headers=_h("not-a-token")).status_code == 401


def test_each_role_reads_and_only_some_may_act(secured: str, tokens: tuple[Path, dict[str, str]]) -> None:
    _, by_role = tokens
    for role, token in by_role.items():
        for route in READ_ROUTES:
            assert httpx.get(f"{secured}{route}", headers=_h(token)).status_code == 200, (role, route)
        # Drills are not enabled on this server: 409 for who may start one, 403 for who may not.
        started = httpx.post(f"{secured}/api/drills", headers=_h(token), json={"kind": "rainstorm"})
        assert started.status_code == (409 if role in ("operator", "admin") else 403), (role, started.text)
        audit = httpx.get(f"{secured}/api/audit", headers=_h(token))
        assert audit.status_code == (200 if role == "admin" else 403), role


def test_page_session_cookie_and_websocket(secured: str, tokens: tuple[Path, dict[str, str]]) -> None:
    _, by_role = tokens
    ws_url = secured.replace("http", "ws") + "/ws/alerts"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(ws_url, open_timeout=10)
    assert refused.value.response.status_code == 403

    with httpx.Client(base_url=secured) as client:
        assert client.get("/api/session").status_code == 401
        assert client.post("/api/session", json={"token": "wrong"}).status_code == 401
        res = client.post("/api/session", json={"token": by_role["emergency"]})
        assert res.status_code == 204
        cookie = res.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.get("/api/session").json() == {"name": "emergency-1", "role": "emergency", "auth_required": True}
        assert client.get("/api/alerts").status_code == 200
        with ws_connect(
            ws_url, open_timeout=10, additional_headers={"Cookie": f"{COOKIE}={client.cookies[COOKIE]}"}
        ) as ws:
            assert '"hello"' in ws.recv(timeout=10)
        assert client.delete("/api/session").status_code == 204
        client.cookies.clear()
        assert client.get("/api/alerts").status_code == 401
    with ws_connect(ws_url, open_timeout=10, additional_headers=_h(by_role["viewer"])) as ws:
        assert '"hello"' in ws.recv(timeout=10)


def test_actions_and_refusals_are_audited(
    secured: str, tokens: tuple[Path, dict[str, str]], db: DictConnection
) -> None:
    _, by_role = tokens
    httpx.post(f"{secured}/api/session", json={"token": "bad"})
    httpx.post(f"{secured}/api/session", json={"token": by_role["operator"]})
    httpx.post(f"{secured}/api/drills", headers=_h(by_role["viewer"]), json={"kind": "rainstorm"})
    httpx.post(f"{secured}/api/drills", headers=_h(by_role["operator"]), json={"kind": "rainstorm"})
    rows = httpx.get(f"{secured}/api/audit", headers=_h(by_role["admin"])).json()
    seen = [(r["actor"], r["action"], r["outcome"]) for r in reversed(rows)]
    assert seen == [
        ("unknown", "sign_in", "failed"),
        ("operator-1", "sign_in", "ok"),
        ("viewer-1", "POST /api/drills", "denied"),
        ("operator-1", "drill_start", "failed"),
    ]
    stored = db.execute("SELECT detail::text AS d FROM audit_log").fetchall()
    assert all(by_role["operator"] not in (r["d"] or "") for r in stored)  # no token in the log


def test_rate_limit_answers_429_with_retry_after(pg_url: str, schema: str, tokens: tuple[Path, dict[str, str]]) -> None:
    _, by_role = tokens
    auth = Authenticator.from_file(tokens[0], rate_per_s=1.0, burst=5.0)
    with serve(create_app(conninfo=pg_url, schema=schema, auth=auth)) as url:
        codes = [httpx.get(f"{url}/api/twin", headers=_h(by_role["viewer"])).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = httpx.get(f"{url}/api/twin", headers=_h(by_role["viewer"]))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another client is not slowed down by the first.
        assert httpx.get(f"{url}/api/twin", headers=_h(by_role["admin"])).status_code == 200


def test_cors_is_closed_by_default_and_opens_only_to_named_origins(
    pg_url: str, schema: str, secured: str, tokens: tuple[Path, dict[str, str]]
) -> None:
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    res = httpx.options(f"{secured}/api/alerts", headers=pre)
    assert "access-control-allow-origin" not in res.headers
    auth = Authenticator.from_file(tokens[0])
    with serve(create_app(conninfo=pg_url, schema=schema, auth=auth, cors_origins=["https://ops.example"])) as url:
        ok = httpx.options(f"{url}/api/alerts", headers={**pre, "Origin": "https://ops.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        other = httpx.options(f"{url}/api/alerts", headers=pre)
        assert "access-control-allow-origin" not in other.headers


def test_tokens_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[[token]]\nname = "x"\nrole = "admin"\nsha256 = "{digest("changeme")}"\n')
    with pytest.raises(ConfigError, match="default or well-known token is refused"):
        read_tokens(path)
    path.write_text('[[token]]\nname = "x"\nrole = "boss"\nsha256 = "' + "0" * 64 + '"\n')
    with pytest.raises(ConfigError, match="role 'boss' is not one of"):
        read_tokens(path)
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not TOML"):
        read_tokens(path)


def test_tokens_cli_and_serve_refuses_to_run_open(tmp_path: Path, pg_url: str, schema: str) -> None:
    path = tmp_path / "tokens.toml"
    runner = CliRunner()
    made = runner.invoke(cli, ["tokens", "create", "--name", "ops-1", "--role", "operator", "--file", str(path)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and token not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    listed = runner.invoke(cli, ["tokens", "list", "--file", str(path)])
    assert "ops-1\toperator" in listed.output
    again = runner.invoke(cli, ["tokens", "create", "--name", "ops-1", "--role", "viewer", "--file", str(path)])
    assert again.exit_code != 0 and "exists already" in again.output
    env: dict[str, Any] = {"LIFELINE_DATABASE_URL": pg_url, "LIFELINE_DB_SCHEMA": schema, "LIFELINE_AUTH": "tokens"}
    refused = runner.invoke(cli, ["serve", "--port", "0"], env={**env, "LIFELINE_API_TOKENS_FILE": None})
    assert refused.exit_code != 0 and "the API needs tokens" in refused.output
    bad = tmp_path / "weak.toml"
    bad.write_text(f'[[token]]\nname = "x"\nrole = "admin"\nsha256 = "{digest("admin")}"\n')
    refused = runner.invoke(cli, ["serve", "--port", "0"], env={**env, "LIFELINE_API_TOKENS_FILE": str(bad)})
    assert refused.exit_code != 0 and "well-known token is refused" in refused.output
