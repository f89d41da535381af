"""The health check API on a simulated year: every role reads; operators keep the ledger; changes are audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulators.year import YearPlan, simulate_year
from twin.democity.city import build_demo_city
from twin.store.db import DictConnection
from twin.store.sensors import upsert_sensors
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import serve

pytestmark = pytest.mark.integration


@pytest.fixture
def served(
    db: DictConnection, schema: str, pg_url: str, tmp_path: Path
) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    city = build_demo_city()
    upsert_sensors(db, [city.sensors[s] for s in ("WF-PU1", "WF-PU2", "WF-PTANK")])
    # A shortened year (the first 120 days of 2026) keeps the test quick.
    simulate_year(db, schema=schema, plan=YearPlan(year=2026, seed=5, days=120, storms=6))
    tokens = tmp_path / "tokens.toml"
    headers = {
        role.value: {"Authorization": f"Bearer {add_token(tokens, name=f'hc-{role.value}', role=role)}"}
        for role in (Role.VIEWER, Role.OPERATOR)
    }
    with serve(create_app(conninfo=pg_url, schema=schema, auth=Authenticator.from_file(tokens))) as url:
        yield url, headers


def test_viewer_reads_and_operator_keeps_the_ledger(
    served: tuple[str, dict[str, dict[str, str]]], db: DictConnection
) -> None:
    url, headers = served
    viewer, operator = headers["viewer"], headers["operator"]
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/api/healthcheck", params={"year": 2026}).status_code == 401
        table = http.get("/api/healthcheck/definitions", headers=viewer).json()
        assert table["editable"] == "file" and len(table["indicators"]) == 16
        got = http.get("/api/healthcheck", params={"year": 2026}, headers=viewer)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["districts"] == ["", "吉州区", "青原区"]
        assert 0 <= body["index"][""]["value"] <= 100
        leak = next(i for i in body["indicators"] if i["id"] == "water_leakage_rate")
        assert leak["target"] == 9 and leak["values"][""]["value"] > 0 and leak["values"]["吉州区"]["value"] is None
        assert body["problems"], "a year with storms and leaks has problems"
        one = http.get("/api/healthcheck", params={"year": 2026, "district": "青原区"}, headers=viewer).json()
        assert one["districts"] == ["", "青原区"]
        bad = http.get("/api/healthcheck", params={"from": "2026-13-01", "to": "2026-12-31"}, headers=viewer)
        assert bad.status_code == 422 and "YYYY-MM-DD" in bad.json()["detail"]
        both = http.get("/api/healthcheck", params={"year": 2026, "from": "2026-01-01"}, headers=viewer)
        assert both.status_code == 422 and "not both" in both.json()["detail"]
        assert http.get("/api/healthcheck", params={"year": 2026, "district": "x"}, headers=viewer).status_code == 404

        # The viewer role reads the ledger but may not write it; the refusal is audited.
        denied = http.post("/api/healthcheck/diagnose", params={"year": 2026}, headers=viewer)
        assert denied.status_code == 403 and "may not change the ledger" in denied.json()["detail"]
        ids = http.post("/api/healthcheck/diagnose", params={"year": 2026}, headers=operator).json()["problems"]
        assert len(ids) == len(body["problems"])
        entries = http.get("/api/healthcheck/ledger", params={"year": 2026}, headers=viewer).json()
        points = next(e for e in entries if (e["indicator_id"], e["district"]) == ("waterlogging_points", ""))
        problem = points["id"]
        task = http.post(
            f"/api/healthcheck/problems/{problem}/tasks",
            json={"title": "易涝点改造", "owner": "市城管局", "deadline": "2027-05-31"},
            headers=operator,
        )
        assert task.status_code == 201, task.text
        task_id = task.json()["task_id"]
        wrong = http.patch(f"/api/healthcheck/tasks/{task_id}", json={"status": "finished"}, headers=operator)
        assert wrong.status_code == 422 and "must be one of" in wrong.json()["detail"]
        done = http.patch(f"/api/healthcheck/tasks/{task_id}", json={"status": "done"}, headers=operator)
        assert done.status_code == 200
        missing = http.post(
            "/api/healthcheck/problems/999999/tasks",
            json={"title": "x", "owner": "y", "deadline": "2027-01-01"},
            headers=operator,
        )
        assert missing.status_code == 404
        # Re-checked over the same storms it is still there; over a month without storms it is closed.
        same = http.post(
            f"/api/healthcheck/problems/{problem}/recheck", json={"from": "2026-01-01", "to": "2026-04-30"},
            headers=operator,
        )  # fmt: skip
        assert same.status_code == 200, same.text
        assert same.json()["outcome"] == "reopened" and same.json()["value"] == points["value"]
        quiet = http.post(
            f"/api/healthcheck/problems/{problem}/recheck", json={"from": "2026-06-01", "to": "2026-06-30"},
            headers=operator,
        )  # fmt: skip
        assert quiet.json() == {
            "problem_id": problem,
            "outcome": "closed",
            "value": 0.0,
            "period": "2026-06-01 至 2026-06-30",
        }
        entries = http.get("/api/healthcheck/ledger", params={"year": 2026}, headers=viewer).json()
        mine = next(e for e in entries if e["id"] == problem)
        assert mine["status"] == "closed" and [c["outcome"] for c in mine["rechecks"]] == ["reopened", "closed"]
        assert mine["tasks"][0]["status"] == "done" and mine["tasks"][0]["owner"] == "市城管局"
        assert http.get("/healthcheck").status_code == 200
    actions = {
        (r["action"], r["outcome"], r["actor"])
        for r in db.execute("SELECT action, outcome, actor FROM audit_log").fetchall()
    }
    assert ("healthcheck_diagnose", "denied", "hc-viewer") in actions
    assert ("healthcheck_diagnose", "ok", "hc-operator") in actions
    assert ("healthcheck_task_create", "ok", "hc-operator") in actions
    assert ("healthcheck_task_status", "ok", "hc-operator") in actions
    assert ("healthcheck_recheck", "ok", "hc-operator") in actions
