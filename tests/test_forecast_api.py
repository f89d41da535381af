"""Rain forecasts over the API: pushed by an operator's or admin's program, stored once, refused when bad, the
current one read by anyone signed in; every store and refusal in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from twin.store.db import DictConnection
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import serve

pytestmark = pytest.mark.integration

NOW = datetime(2026, 7, 1, 8, 7, 30, tzinfo=UTC)
ISSUED = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def _body(**overrides: Any) -> dict[str, Any]:
    body = {
        "source": "气象局",
        "issued_at": "2026-07-01T16:00:00+08:00",  # = ISSUED
        "start": "2026-07-01T16:00:00+08:00",
        "step_s": 300,
        "values_mm_h": [12.0, 30.0, 6.0],
    }
    return {**body, **overrides}


def test_forecast_round_trip_idempotent_and_refusals(pg_url: str, schema: str, db: DictConnection) -> None:
    with serve(create_app(conninfo=pg_url, schema=schema, clock=lambda: NOW)) as url:
        missing = httpx.get(f"{url}/api/risk/forecast/latest")
        assert missing.status_code == 404 and "no rain forecast issued in the last 180 min" in missing.json()["detail"]

        stored = httpx.post(f"{url}/api/risk/forecast", json=_body())
        assert stored.status_code == 201, stored.text
        first = stored.json()
        assert first["created"] is True and first["id"] > 0 and first["step_s"] == 60 and first["sent_step_s"] == 300
        assert first["values_mm_h"] == [12.0] * 5 + [30.0] * 5 + [6.0] * 5
        assert datetime.fromisoformat(first["issued_at"]) == ISSUED and first["sent_by"] == "anonymous"
        assert datetime.fromisoformat(first["received_at"]) == NOW

        again = httpx.post(f"{url}/api/risk/forecast", json=_body())
        assert again.status_code == 200 and again.json()["created"] is False and again.json()["id"] == first["id"]

        current = httpx.get(f"{url}/api/risk/forecast/latest")
        assert current.status_code == 200
        latest = current.json()
        assert latest["id"] == first["id"] and latest["source"] == "气象局" and latest["age_s"] == 450.0
        assert latest["values_from_now_mm_h"] == [30.0] * 3 + [6.0] * 5
        assert httpx.get(f"{url}/api/risk/forecast/latest", params={"max_age_min": 5}).status_code == 404
        assert httpx.get(f"{url}/api/risk/forecast/latest", params={"max_age_min": 0}).status_code == 422

        conflict = httpx.post(f"{url}/api/risk/forecast", json=_body(values_mm_h=[12.0, 31.0, 6.0]))
        assert conflict.status_code == 409 and "a different forecast from '气象局'" in conflict.json()["detail"]

        for body, message in [
            (_body(values_mm_h=[1.0, -2.0]), "value 1 is negative (-2 mm/h)"),
            (_body(values_mm_h=[]), "the forecast has no values"),
            (_body(start="2026-07-01T00:00:00Z"), "is more than 6 h before the time received"),
            (_body(step_s=3600, values_mm_h=[1.0] * 30), "spans 30 h; at most 24 h is accepted"),
            (_body(issued_at="2026-07-01T08:00:00"), "has no UTC offset"),
            (_body(source="雷达", issued_at="2026-07-01T10:00:00Z"), "is after the time received"),
        ]:
            refused = httpx.post(f"{url}/api/risk/forecast", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert message in refused.json()["detail"], refused.text
        # NaN and Infinity are not JSON, but Python's parser reads them: refused all the same.
        nan = httpx.post(
            f"{url}/api/risk/forecast",
            content=b'{"source": "x", "issued_at": "2026-07-01T08:00:00Z", "start": "2026-07-01T08:00:00Z",'
            b' "values_mm_h": [1.0, NaN]}',
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 422 and "value 1 is not a finite number" in str(nan.json()["detail"]), nan.text
        # Not the shape at all: FastAPI's own validation names the field.
        shapeless = httpx.post(f"{url}/api/risk/forecast", json={"source": "x", "values_mm_h": "lots"})
        assert shapeless.status_code == 422 and "issued_at" in shapeless.text
    row = db.execute("SELECT count(*) AS n FROM rain_forecasts").fetchone()
    assert row is not None and row["n"] == 1
    outcomes = db.execute(
        "SELECT outcome, count(*) AS n FROM audit_log WHERE action = 'rain_forecast_store' GROUP BY outcome"
    ).fetchall()
    assert {r["outcome"]: r["n"] for r in outcomes} == {"ok": 1, "duplicate": 1, "refused": 8}


def test_only_operators_and_admins_may_send_forecasts(pg_url: str, schema: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    by_role = {role: add_token(tokens, name=f"{role.value}-1", role=role) for role in Role}
    auth = Authenticator.from_file(tokens, rate_per_s=50.0, burst=60.0)
    with serve(create_app(conninfo=pg_url, schema=schema, auth=auth, clock=lambda: NOW)) as url:

        def as_(role: Role | None) -> dict[str, str]:
            return {"Authorization": f"Bearer {by_role[role]}"} if role else {}

        anonymous = httpx.post(f"{url}/api/risk/forecast", json=_body())
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/api/risk/forecast/latest").status_code == 401
        for role in (Role.VIEWER, Role.EMERGENCY):
            denied = httpx.post(f"{url}/api/risk/forecast", json=_body(), headers=as_(role))
            assert denied.status_code == 403, (role, denied.text)
            assert f"role '{role.value}' may not send rain forecasts (only: admin, operator)" in denied.json()["detail"]
            # Refused before the body is read: a bad body gets the same answer.
            assert httpx.post(f"{url}/api/risk/forecast", json={}, headers=as_(role)).status_code == 403
        by_operator = httpx.post(f"{url}/api/risk/forecast", json=_body(), headers=as_(Role.OPERATOR))
        assert by_operator.status_code == 201 and by_operator.json()["sent_by"] == "operator-1"
        by_admin = httpx.post(f"{url}/api/risk/forecast", json=_body(source="雷达外推"), headers=as_(Role.ADMIN))
        assert by_admin.status_code == 201 and by_admin.json()["sent_by"] == "admin-1"
        for role in Role:  # every role reads the current forecast: the newest, the admin's (stored last)
            current = httpx.get(f"{url}/api/risk/forecast/latest", headers=as_(role))
            assert current.status_code == 200 and current.json()["id"] == by_admin.json()["id"], role
        audit = httpx.get(f"{url}/api/audit", headers=as_(Role.ADMIN)).json()
        seen = [(r["actor"], r["action"], r["outcome"]) for r in reversed(audit)]
        assert seen == [
            ("viewer-1", "POST /api/risk/forecast", "denied"),
            ("viewer-1", "POST /api/risk/forecast", "denied"),
            ("emergency-1", "POST /api/risk/forecast", "denied"),
            ("emergency-1", "POST /api/risk/forecast", "denied"),
            ("operator-1", "rain_forecast_store", "ok"),
            ("admin-1", "rain_forecast_store", "ok"),
        ]
