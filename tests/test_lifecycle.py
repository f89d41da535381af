"""The alert lifecycle over the API: each step and role rule, history export, escalation on a controlled clock,
incidents grouping related alerts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from twin.alerts import AlertChange
from twin.lifecycle import EscalationPolicy
from twin.store.alerts import apply_change
from twin.store.db import DictConnection
from twin.store.lifecycle import escalate_due
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import serve

pytestmark = pytest.mark.integration

# Each test's start, a few seconds ahead of the wall clock (escalation counts from the later of the alert's time and
# when it was stored); set per test, since a long test session would otherwise leave it behind.
T0 = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _t0() -> None:
    global T0
    T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)


def _raise(
    db: DictConnection,
    schema: str,
    *,
    sensor: str,
    grade: int,
    district: str = "吉州区",
    at: datetime | None = None,
    kind: str = "threshold",
    network: str = "drainage",
) -> int:
    change = AlertChange(
        event="raised",
        cause_key=f"{kind}:{sensor}:high",
        kind=kind,
        sensor_id=sensor,
        network=network,
        district=district,
        grade=grade,
        ts=T0 if at is None else at,
        value=1.0,
        threshold=0.5,
        message=f"{sensor} 液位超限",
        message_en=f"{sensor} level high",
    )
    with db.transaction():
        apply_change(db, change, schema=schema)
    row = db.execute("SELECT id FROM alerts WHERE cause_key = %s AND active", (change.cause_key,)).fetchone()
    assert row is not None
    return int(row["id"])


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.toml"
    roles = ("viewer", "operator", "emergency", "admin")
    return path, {r: add_token(path, name=f"{r}-1", role=Role(r)) for r in roles}


@pytest.fixture
def clock() -> list[datetime]:
    return [T0]


@pytest.fixture
def api(pg_url: str, schema: str, tokens: tuple[Path, dict[str, str]], clock: list[datetime]) -> Iterator[str]:
    app = create_app(
        conninfo=pg_url,
        schema=schema,
        auth=Authenticator.from_file(tokens[0], rate_per_s=0),
        clock=lambda: clock[0],
        escalation_interval_s=0.2,
    )
    with serve(app) as url:
        yield url


def _act(url: str, token: str, alert_id: int, action: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/api/alerts/{alert_id}/actions",
        headers={"Authorization": f"Bearer {token}"},
        json={"action": action, **body},
    )


def test_each_step_with_its_roles_then_history(
    api: str, tokens: tuple[Path, dict[str, str]], db: DictConnection, schema: str, clock: list[datetime]
) -> None:
    _, tok = tokens
    alert = _raise(db, schema, sensor="D-L-001", grade=2)
    assert _act(api, tok["viewer"], alert, "acknowledge").status_code == 403  # viewers only look
    assert _act(api, tok["operator"], alert, "close").status_code == 409  # not from raised
    assert _act(api, tok["operator"], 999_999, "acknowledge").status_code == 404
    clock[0] = T0 + timedelta(minutes=3)
    res = _act(api, tok["emergency"], alert, "acknowledge", note="收到，前往现场")
    assert res.status_code == 200 and res.json()["state"] == "acknowledged"
    assert _act(api, tok["emergency"], alert, "acknowledge").status_code == 409  # not twice
    assert _act(api, tok["emergency"], alert, "dispatch", assignee="x", task="y").status_code == 403
    incomplete = _act(api, tok["operator"], alert, "dispatch", assignee="排水抢修二队")
    assert incomplete.status_code == 422 and "work order" in incomplete.text
    res = _act(api, tok["operator"], alert, "dispatch", assignee="排水抢修二队", task="井陂路下穿通道抽排")
    assert res.json()["state"] == "dispatched"
    assert _act(api, tok["emergency"], alert, "resolve", note="已抽排完毕").json()["state"] == "resolved"
    assert _act(api, tok["emergency"], alert, "recheck").status_code == 403  # the centre re-checks
    assert _act(api, tok["operator"], alert, "reopen", note="复查仍有积水").json()["state"] == "dispatched"
    assert _act(api, tok["emergency"], alert, "resolve").json()["state"] == "resolved"
    assert _act(api, tok["operator"], alert, "recheck", note="复查无积水").json()["state"] == "rechecked"
    assert _act(api, tok["admin"], alert, "close").json()["state"] == "closed"

    row = db.execute(
        "SELECT state, assignee, acknowledged_at, incident_id FROM alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert row is not None and (row["state"], row["assignee"]) == ("closed", "排水抢修二队")
    assert row["acknowledged_at"] == T0 + timedelta(minutes=3)
    incident = db.execute("SELECT closed_at FROM incidents WHERE id = %s", (row["incident_id"],)).fetchone()
    assert incident is not None and incident["closed_at"] is not None  # its only alert is closed

    hdr = {"Authorization": f"Bearer {tok['viewer']}"}
    events = httpx.get(f"{api}/api/alerts/{alert}/history", headers=hdr).json()
    assert [(e["event"], e["actor"]) for e in events] == [
        ("raised", "system"),
        ("acknowledge", "emergency-1"),
        ("dispatch", "operator-1"),
        ("resolve", "emergency-1"),
        ("reopen", "operator-1"),
        ("resolve", "emergency-1"),
        ("recheck", "operator-1"),
        ("close", "admin-1"),
    ]
    assert events[2]["detail"] == {"assignee": "排水抢修二队", "task": "井陂路下穿通道抽排"}
    exported = httpx.get(f"{api}/api/alerts/{alert}/history", params={"format": "csv"}, headers=hdr)
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["event_id", "event", "ts"] and len(rows) == 9 and rows[2][6] == "收到，前往现场"
    audit = httpx.get(f"{api}/api/audit", headers={"Authorization": f"Bearer {tok['admin']}"}).json()
    seen = {(a["actor"], a["action"], a["outcome"]) for a in audit}
    assert ("viewer-1", f"POST /api/alerts/{alert}/actions", "denied") in seen
    assert ("emergency-1", "alert_dispatch", "denied") in seen and ("admin-1", "alert_close", "ok") in seen


def test_escalation_follows_the_grade_deadlines(db: DictConnection, schema: str) -> None:
    policy = EscalationPolicy()
    red = _raise(db, schema, sensor="D-L-001", grade=1)
    blue = _raise(db, schema, sensor="D-L-002", grade=4)

    def level(alert_id: int) -> int:
        row = db.execute("SELECT escalation_level FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        assert row is not None
        return int(row["escalation_level"])

    assert escalate_due(db, policy, now=T0 + timedelta(minutes=4, seconds=59), schema=schema) == []
    first = escalate_due(db, policy, now=T0 + timedelta(minutes=5), schema=schema)
    assert len(first) == 1 and level(red) == 1 and level(blue) == 0
    assert escalate_due(db, policy, now=T0 + timedelta(minutes=6), schema=schema) == []  # once per level
    event = db.execute("SELECT note, detail FROM alert_events WHERE id = %s", (first[0],)).fetchone()
    assert event is not None and event["detail"] == {"level": 1, "contact": policy.chain[0]}
    assert "未叫应" in event["note"]
    escalate_due(db, policy, now=T0 + timedelta(minutes=10), schema=schema)
    assert level(red) == 2
    # Acknowledged: no further escalation, however long it waits.
    db.execute("UPDATE alerts SET state = 'acknowledged' WHERE id = %s", (red,))
    escalate_due(db, policy, now=T0 + timedelta(hours=5), schema=schema)
    assert level(red) == 2 and level(blue) == 2  # blue: 2 h per level, capped at the chain's length (3)
    escalate_due(db, policy, now=T0 + timedelta(hours=9), schema=schema)
    assert level(blue) == 3


def test_viewer_escalates_on_its_clock_and_pushes_it(
    api: str, tokens: tuple[Path, dict[str, str]], db: DictConnection, schema: str, clock: list[datetime]
) -> None:
    _, tok = tokens
    alert = _raise(db, schema, sensor="D-L-003", grade=1)
    ws_url = api.replace("http", "ws") + "/ws/alerts"
    with ws_connect(ws_url, open_timeout=10, additional_headers={"Authorization": f"Bearer {tok['viewer']}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        clock[0] = T0 + timedelta(minutes=5, seconds=1)  # the red alert's first deadline passes
        msg = json.loads(ws.recv(timeout=15))
        if msg["event"] == "raised":  # the hub had not yet passed the raise when the client subscribed
            msg = json.loads(ws.recv(timeout=15))
    assert (msg["event"], msg["alert"]["id"], msg["alert"]["escalation_level"]) == ("escalated", alert, 1)
    assert msg["actor"] == "system" and msg["event_detail"]["contact"] == EscalationPolicy().chain[0]


def test_related_alerts_share_an_incident(db: DictConnection, schema: str) -> None:
    a = _raise(db, schema, sensor="D-L-001", grade=2)
    b = _raise(db, schema, sensor="D-L-002", grade=3, at=T0 + timedelta(minutes=40))
    c = _raise(db, schema, sensor="D-L-003", grade=3, district="青原区", at=T0 + timedelta(minutes=41))
    d = _raise(db, schema, sensor="D-L-004", grade=3, at=T0 + timedelta(hours=5))  # long after: a new one
    e = _raise(db, schema, sensor="W-P-001", grade=3, kind="sensor_health", network="water")

    def incident(alert_id: int) -> int | None:
        row = db.execute("SELECT incident_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        assert row is not None
        return None if row["incident_id"] is None else int(row["incident_id"])

    assert incident(a) == incident(b) is not None
    assert incident(c) not in (None, incident(a))
    assert incident(d) not in (None, incident(a))
    assert incident(e) is None  # maintenance alerts are not grouped
    members = db.execute("SELECT alerts FROM incidents WHERE id = %s", (incident(a),)).fetchone()
    assert members is not None and members["alerts"] == 2
