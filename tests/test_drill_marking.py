"""Alerts raised during a drill are marked (演练 DRILL) in the store and wherever an alert shows: the REST list,
the websocket, webhooks, the terminal client, the history export and the dashboard's separate counts."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
from click.testing import CliRunner, Result

from lifeline.cli import cli
from twin.alerts import AlertChange
from twin.democity.city import build_demo_city
from twin.mqtt import MqttConfig
from twin.store.alerts import AppliedChange, apply_change, apply_changes_marked
from twin.store.db import DictConnection
from twin.store.drills import close_drill, in_drill_mode, list_drills, open_drill, renew
from twin.store.sensors import upsert_sensors
from viewer.app import create_app
from viewer.drills import networks_of
from viewer.webhooks import Webhook

from .conftest import serve, wait_for
from .test_webhooks import Receiver

pytestmark = pytest.mark.integration


def _change(sensor: str, network: str, *, event: str = "raised", grade: int = 1) -> AlertChange:
    return AlertChange(
        event=event,
        cause_key=f"threshold:{sensor}:high",
        kind="threshold",
        sensor_id=sensor,
        network=network,
        district="吉州区",
        grade=grade,
        ts=datetime.now(UTC),
        value=1.7,
        threshold=1.6,
        message=f"{sensor} 超限",
        message_en=f"{sensor} above its limit",
    )


def _raise(db: DictConnection, schema: str, sensor: str, network: str, grade: int = 1) -> int:
    change = _change(sensor, network, grade=grade)
    with db.transaction():
        apply_change(db, change, schema=schema)
    row = db.execute("SELECT id FROM alerts WHERE cause_key = %s AND active", (change.cause_key,)).fetchone()
    assert row is not None
    return int(row["id"])


def _drill_of(db: DictConnection, alert_id: int) -> int | None:
    row = db.execute("SELECT drill_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    return None if row["drill_id"] is None else int(row["drill_id"])


def test_alerts_of_drilled_networks_are_marked_while_the_drill_runs_and_its_grace_lasts(
    db: DictConnection, schema: str
) -> None:
    assert in_drill_mode(db) == []
    real = _raise(db, schema, "D-L-001", "drainage")
    drill = open_drill(db, kind="rainstorm", networks=["drainage", "rain"], params={"return_period": 50})
    assert in_drill_mode(db) == ["drainage", "rain"]
    marked = _raise(db, schema, "D-L-002", "drainage")
    rain = _raise(db, schema, "R-001", "rain")
    water = _raise(db, schema, "W-P-001", "water")  # not a drilled network: a real alert
    assert [_drill_of(db, a) for a in (real, marked, rain, water)] == [None, drill, drill, None]

    # The mark stays with the alert: its updates and clearing are the drill's too.
    _raise(db, schema, "D-L-002", "drainage", grade=2)
    assert _drill_of(db, marked) == drill

    # Ended: still marked within the grace (ingest may be behind), not after it.
    close_drill(db, drill, outcome="stopped")
    assert _drill_of(db, _raise(db, schema, "D-L-003", "drainage")) == drill
    db.execute("UPDATE drills SET stopped_at = now() - interval '2 min' WHERE id = %s", (drill,))
    assert _drill_of(db, _raise(db, schema, "D-L-004", "drainage")) is None
    assert in_drill_mode(db) == []

    # A drill whose viewer died (no stop recorded) ends when its lease runs out.
    orphan = open_drill(db, kind="gas-leak", networks=["gas"], params={}, lease_s=30)
    renew(db, [orphan], lease_s=30)
    assert _drill_of(db, _raise(db, schema, "G-M-001", "gas")) == orphan
    db.execute("UPDATE drills SET lease_until = now() - interval '2 min' WHERE id = %s", (orphan,))
    assert _drill_of(db, _raise(db, schema, "G-M-002", "gas")) is None
    listed = {d["id"]: d for d in list_drills(db)}
    assert listed[drill]["alerts"] == 3 and listed[drill]["outcome"] == "stopped"
    assert listed[orphan]["alerts"] == 1 and listed[orphan]["stopped_at"] is None


def test_recording_a_change_says_which_drill_its_alert_belongs_to(db: DictConnection, schema: str) -> None:
    drill = open_drill(db, kind="rainstorm", networks=["drainage"], params={})
    with db.transaction():
        done = apply_changes_marked(
            db,
            [
                _change("D-L-001", "drainage", grade=2),
                _change("W-P-001", "water", grade=2),
                _change("D-L-001", "drainage", event="updated", grade=2),
                _change("D-L-001", "drainage", event="cleared", grade=2),
                _change("D-L-009", "drainage", event="cleared", grade=2),  # nothing active: nothing done
            ],
            schema=schema,
        )
    assert [None if d is None else d.drill_id for d in done] == [drill, None, drill, drill, None]
    assert done[4] is None and all(isinstance(d, AppliedChange) and d.event_id > 0 for d in done[:4])


def test_drill_alerts_and_real_alerts_are_grouped_in_separate_incidents(db: DictConnection, schema: str) -> None:
    def incident_of(alert_id: int) -> dict[str, Any]:
        row = db.execute(
            "SELECT i.* FROM incidents i JOIN alerts a ON a.incident_id = i.id WHERE a.id = %s", (alert_id,)
        ).fetchone()
        assert row is not None
        return row

    real = incident_of(_raise(db, schema, "D-L-001", "drainage"))
    drill = open_drill(db, kind="rainstorm", networks=["drainage", "rain"], params={})
    first = incident_of(_raise(db, schema, "D-L-002", "drainage"))  # the real incident is open: not joined
    second = incident_of(_raise(db, schema, "D-L-003", "drainage"))
    assert first["id"] != real["id"] and first["drill_id"] == drill
    assert second["id"] == first["id"] and second["alerts"] == 2
    close_drill(db, drill, outcome="stopped")
    db.execute("UPDATE drills SET stopped_at = now() - interval '2 min' WHERE id = %s", (drill,))
    # Real again: back to the real incident, though the drill's is the newer one.
    after = incident_of(_raise(db, schema, "D-L-004", "drainage"))
    assert after["id"] == real["id"] and after["alerts"] == 2 and after["drill_id"] is None
    counts = {r["id"]: r["alerts"] for r in db.execute("SELECT id, alerts FROM incidents").fetchall()}
    assert counts == {real["id"]: 2, first["id"]: 2}
    # A drill alert with no incident open yet gets one of its own.
    gas = open_drill(db, kind="gas-leak", networks=["gas"], params={})
    alone = incident_of(_raise(db, schema, "G-M-001", "gas"))
    assert alone["drill_id"] == gas and alone["alerts"] == 1


def test_networks_of_each_drill_kind() -> None:
    assert networks_of("rainstorm", {}) == ("drainage", "rain")
    assert networks_of("leak", {"junction": "J1"}) == ("water",)
    assert networks_of("gas-leak", {"pipe": "P1"}) == ("gas",)
    toml = '[scenario]\nname = "x"\n[[water.leak]]\njunction = "J1"\n[[gas.leak]]\njunction = "G1"\n'
    assert networks_of("scenario", {"toml": toml}) == ("water", "gas")
    assert networks_of("scenario", {"toml": "not = [toml"}) == ("drainage", "water", "gas", "rain")


def _watch(url: str, state: Path) -> tuple[threading.Thread, list[Result]]:
    out: list[Result] = []

    def run() -> None:
        out.append(
            CliRunner().invoke(
                cli,
                ["alerts", "--url", url, "watch", "--state-file", str(state), "--count", "2"],
                env={"LIFELINE_API_TOKEN": "any (the viewer under test is open)"},
            )
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_the_drill_marker_shows_on_every_path_an_alert_takes(
    pg_url: str, schema: str, db: DictConnection, tmp_path: Path
) -> None:
    receiver = Receiver(failures=0)
    hook = Webhook(receiver.url, max_grade=2, first_retry_s=0.1, max_retry_s=0.5)
    app = create_app(conninfo=pg_url, schema=schema, webhooks=[hook], escalation=None)
    try:
        with serve(app) as url:
            wait_for(lambda: db.execute("SELECT 1 FROM webhook_cursor").fetchone(), what="the webhook cursor")
            state = tmp_path / "last-event"
            thread, watched = _watch(url, state)
            wait_for(state.exists, what="the terminal client connected")
            ws_url = url.replace("http", "ws", 1) + "/ws/alerts"
            with websockets.sync.client.connect(ws_url) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "hello"
                real = _raise(db, schema, "D-L-001", "drainage")
                drill = open_drill(db, kind="rainstorm", networks=["drainage", "rain"], params={})
                assert httpx.get(f"{url}/api/info").json()["drill_networks"] == ["drainage", "rain"]
                drilled = _raise(db, schema, "D-L-002", "drainage")
                pushed = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            by_alert = {m["alert"]["id"]: m for m in pushed}
            assert by_alert[real]["drill"] is False and by_alert[real]["alert"]["drill_id"] is None
            assert by_alert[drilled]["drill"] is True and by_alert[drilled]["alert"]["drill_id"] == drill
            assert by_alert[drilled]["alert"]["drill"] is True

            listed = {a["id"]: a for a in httpx.get(f"{url}/api/alerts").json()}
            assert (listed[real]["drill"], listed[drilled]["drill"]) == (False, True)

            thread.join(20)
            lines = [line for line in watched[0].output.splitlines() if f"#{real} " in line or f"#{drilled} " in line]
            assert len(lines) == 2, watched[0].output
            assert not lines[0].startswith("[演练 DRILL]") and f"#{real} " in lines[0]
            assert lines[1].startswith("[演练 DRILL]") and f"#{drilled} " in lines[1]

            wait_for(lambda: len(receiver.accepted) == 2, what="both alerts delivered by webhook", timeout=20)
            bodies = [(headers, json.loads(body)) for headers, body in receiver.accepted]
            hooks = {body["alert"]["id"]: (headers, body) for headers, body in bodies}
            assert "X-Lifeline-Drill" not in hooks[real][0] and hooks[real][1]["drill"] is False
            assert hooks[drilled][0]["X-Lifeline-Drill"] == str(drill) and hooks[drilled][1]["drill"] is True

            history = httpx.get(f"{url}/api/alerts/{drilled}/history").json()
            assert [e["drill_id"] for e in history] == [drill]
            assert httpx.get(f"{url}/api/alerts/{real}/history").json()[0]["drill_id"] is None
            exported = httpx.get(f"{url}/api/alerts/{drilled}/history", params={"format": "csv"})
            rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
            assert rows[0][-1] == "drill" and rows[1][-1] == f"演练 DRILL {drill}"
            rows = list(csv.reader(io.StringIO(httpx.get(f"{url}/api/alerts/{real}/history?format=csv").text)))
            assert rows[1][-1] == ""

            board = httpx.get(f"{url}/api/dashboard").json()
            assert board["active"] == {"drainage": {"1": 1}}
            assert board["drill"]["active"] == {"drainage": {"1": 1}}
            assert board["awaiting_response"] == 1 and board["drill"]["awaiting_response"] == 1
            assert board["response"]["raised"] == 1  # the drill's alert does not count in response times
    finally:
        receiver.server.shutdown()


def test_a_drill_started_from_the_page_marks_the_alerts_it_raises_through_ingest(
    pg_url: str, schema: str, db: Any, broker: MqttConfig, prefix: str, start_ingest: Any
) -> None:
    upsert_sensors(db, build_demo_city().sensors.values())
    svc = start_ingest()
    env = {"LIFELINE_MQTT_URL": broker.url, "LIFELINE_TOPIC_PREFIX": prefix}
    app = create_app(conninfo=pg_url, schema=schema, drill_env=env, drill_demo_city=True, escalation=None)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        real = _raise(db, schema, "W-P-001", "water")
        storm = client.post(
            "/api/drills",
            json={"kind": "rainstorm", "speed": "max", "params": {"return_period": 50, "duration_min": 30}},
        )
        assert storm.status_code == 201, storm.text
        drill = storm.json()
        assert drill["registered"] and drill["networks"] == ["drainage", "rain"]
        wait_for(lambda: svc.stats.readings_stored > 1000, timeout=120, what="the drill's readings stored")
        raised = wait_for(
            lambda: [a for a in client.get("/api/alerts").json() if a["network"] in ("drainage", "rain")],
            timeout=60,
            what="alerts raised by the drill through ingest",
        )
        assert raised and all(a["drill_id"] == drill["id"] for a in raised)
        [water] = client.get("/api/alerts?network=water").json()
        assert water["id"] == real and water["drill"] is False
        registered = client.get("/api/drills/registry").json()
        assert registered[0]["id"] == drill["id"] and registered[0]["alerts"] >= len(raised)
        wait_for(
            lambda: client.get("/api/drills/registry").json()[0]["outcome"] == "finished",
            timeout=120,
            what="the drill's end recorded in the registry",
        )
