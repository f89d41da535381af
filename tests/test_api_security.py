"""The API under hostile input: generated requests from its own OpenAPI document, and SQL injection in every string.

Schemathesis generates requests for every operation (with a valid admin token, so the handlers run) and checks
that none answers 500; the injection test sends classic payloads through every string parameter and checks that
nothing breaks and no table changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from twin.demo import demo_sensors
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import PG_URL, serve

pytestmark = pytest.mark.integration

PAYLOADS = (
    "'; DROP TABLE readings; --",
    '" OR 1=1 --',
    "x' UNION SELECT sensor_id, NULL FROM sensors --",
    "W-P-001'; SELECT pg_sleep(5); --",
    "%27%20OR%20%271%27=%271",
    "😀" * 50,
    "a" * 5000,
    "nul\x00byte",  # PostgreSQL text cannot hold NUL: refused as bad input (422), never a 500
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A secured viewer on its own schema: (url, admin token, schema)."""
    name = "t_" + uuid.uuid4().hex[:10]
    with connect(PG_URL, schema=name, autocommit=True) as conn:
        migrate(conn, schema=name)
        upsert_sensors(conn, demo_sensors())
    path: Path = tmp_path_factory.mktemp("auth") / "tokens.toml"
    token = add_token(path, name="fuzz-admin", role=Role.ADMIN)
    auth = Authenticator.from_file(path, rate_per_s=0.0)
    try:
        with serve(create_app(conninfo=PG_URL, schema=name, auth=auth)) as url:
            yield url, token, name
    finally:
        with connect(PG_URL, schema=name, autocommit=True) as conn:
            drop_schema(conn, schema=name)


def test_generated_requests_never_cause_a_server_error(server: tuple[str, str, str]) -> None:
    """Every operation, up to 30 generated requests with valid and 30 with invalid data, as an admin: no 500."""
    url, token, _ = server
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    calls: list[tuple[str, str, int]] = []
    for operation, mode in [(op, m) for op in operations for m in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            # Drills are not enabled on this server, so generated drill requests are refused, never run.
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            response = case.call(base_url=url, timeout=30)
            calls.append((case.method, case.path, response.status_code))
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid requests
    assert len(calls) >= 10 * len(operations) // 2
    assert all(code < 500 for _m, _p, code in calls)
    print(
        f"{len(calls)} generated requests over {len(operations)} operations; statuses:",
        sorted({c for _m, _p, c in calls}),
    )


def _counts(schema_name: str) -> dict[str, int]:
    with connect(PG_URL, schema=schema_name, autocommit=True) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"])  # type: ignore[index]  # noqa: S608
            for table in ("sensors", "readings", "alerts", "audit_log", "twin_models")
        }


def test_sql_injection_through_every_string_parameter(server: tuple[str, str, str]) -> None:
    url, token, schema_name = server
    before = _counts(schema_name)
    spec = httpx.get(f"{url}/openapi.json").json()
    tried = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for path, methods in spec["paths"].items():
            for method, op in methods.items():
                if method != "get":
                    continue
                params = [
                    p
                    for p in op.get("parameters", [])
                    if _is_string(p.get("schema", {})) and p["in"] in ("path", "query")
                ]
                for param in params:
                    for payload in PAYLOADS:
                        concrete, query = path, {}
                        for p in op.get("parameters", []):
                            if p["in"] == "path":
                                value = payload if p is param else "W-P-001"
                                concrete = concrete.replace("{" + p["name"] + "}", _quote(value))
                        if param["in"] == "query":
                            query[param["name"]] = payload
                        res = client.get(concrete, params=query)
                        tried += 1
                        assert res.status_code < 500, (path, param["name"], payload[:40], res.text[:200])
                        assert "syntax error" not in res.text.lower() and "psycopg" not in res.text.lower()
    assert tried >= 40
    assert _counts(schema_name) == before


def _is_string(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "string":
        return True
    return any(_is_string(s) for s in schema.get("anyOf", []))


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
