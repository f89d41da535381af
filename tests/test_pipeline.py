"""End to end on real services: MQTT → ingest → PostgreSQL → alert → websocket client."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect as ws_connect

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration


def _count(db: DictConnection, sql: str, *args: Any) -> int:
    row = db.execute(sql, args).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def test_reading_flows_to_database_alert_and_websocket(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection, viewer_url: str
) -> None:
    start_ingest()
    ws_url = viewer_url.replace("http", "ws") + "/ws/alerts"
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with ws_connect(ws_url, open_timeout=10) as ws:
            ready.set()
            while len(received) < 2:
                received.append(json.loads(ws.recv(timeout=20)))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    now = datetime.now(UTC)
    with Publisher(broker, client_id=f"pub-{prefix[5:15]}") as pub:
        pub.publish(
            f"{prefix}/drainage/D-L-001",
            orjson.dumps({"ts": (now - timedelta(seconds=2)).isoformat(), "value": 0.4, "unit": "m"}),
        )
        pub.publish(f"{prefix}/drainage/D-L-001", orjson.dumps({"ts": now.isoformat(), "value": 172, "unit": "cm"}))

    wait_for(lambda: _count(db, "SELECT count(*) FROM readings WHERE sensor_id = 'D-L-001'") == 2, what="2 readings")
    alert = wait_for(lambda: db.execute("SELECT * FROM alerts").fetchone(), what="an alert row")
    assert (alert["sensor_id"], alert["grade"], alert["active"]) == ("D-L-001", 2, True)  # 1.72 m ≥ II 1.6 m
    assert alert["value"] == pytest.approx(1.72)
    listener.join(20)
    assert [m["type"] for m in received] == ["hello", "alert"]
    pushed = received[1]
    assert (pushed["event"], pushed["alert"]["id"], pushed["alert"]["grade"]) == ("raised", alert["id"], 2)
    assert "Ⅱ级" in pushed["alert"]["message"]

    api = httpx.get(f"{viewer_url}/api/alerts", params={"active": True}).json()
    assert [a["id"] for a in api] == [alert["id"]]
    # Latest values are folded from the stored batches about once a second: wait for the fold, not the alert.
    sensors = wait_for(
        lambda: (
            {s["sensor_id"]: s for s in httpx.get(f"{viewer_url}/api/sensors").json()}
            if _count(db, "SELECT count(*) FROM sensor_latest WHERE sensor_id = 'D-L-001' AND value > 1") == 1
            else None
        ),
        what="the latest value folded",
    )
    assert sensors["D-L-001"]["latest_value"] == pytest.approx(1.72)
    series = httpx.get(
        f"{viewer_url}/api/sensors/D-L-001/readings",
        params={"from": (now - timedelta(minutes=5)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()},
    ).json()
    assert [p["value"] for p in series["points"]] == [pytest.approx(0.4), pytest.approx(1.72)]


def _alerts_on_mqtt(broker: MqttConfig, prefix: str, readings: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Publish *readings* (topic suffix, payload) and return the alert messages they bring, by topic."""
    import paho.mqtt.client as mqtt

    from twin.mqtt import connect, make_client

    got: list[mqtt.MQTTMessage] = []
    sub = make_client(broker, client_id=f"alerts-{prefix[5:15]}")
    sub.on_message = lambda _c, _u, msg: got.append(msg)
    sub.on_connect = lambda c, *_: c.subscribe(f"{prefix}/alerts/#", qos=1)
    connect(sub, broker, blocking=True)
    sub.loop_start()
    try:
        wait_for(lambda: sub.is_connected(), what="subscriber connected")
        with Publisher(broker, client_id=f"pub2-{prefix[5:15]}") as pub:
            for topic, payload in readings:
                pub.publish(f"{prefix}/{topic}", orjson.dumps(payload))
        wait_for(lambda: len(got) >= len(readings), what=f"{len(readings)} alert(s) on MQTT")
    finally:
        sub.disconnect()
        sub.loop_stop()
    return {msg.topic.removeprefix(f"{prefix}/alerts/"): orjson.loads(msg.payload) for msg in got}


def test_alert_is_published_on_the_alerts_topic(start_ingest: Any, broker: MqttConfig, prefix: str) -> None:
    start_ingest()
    now = datetime.now(UTC).isoformat()
    bodies = _alerts_on_mqtt(broker, prefix, [("gas/G-M-002", {"ts": now, "value": 2.5, "unit": "%vol"})])
    body = bodies["gas/G-M-002"]
    assert (body["event"], body["grade"], body["value"]) == ("raised", 2, pytest.approx(50.0))  # 2.5 %vol = 50 %LEL


def test_alerts_on_the_alerts_topic_say_whether_a_drill_raised_them(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    from twin.store.drills import open_drill

    drill = open_drill(db, kind="gas-leak", networks=["gas"], params={})
    start_ingest()
    now = datetime.now(UTC).isoformat()
    bodies = _alerts_on_mqtt(
        broker,
        prefix,
        [
            ("gas/G-M-002", {"ts": now, "value": 2.5, "unit": "%vol"}),
            ("drainage/D-L-003", {"ts": now, "value": 1.7, "unit": "m"}),
        ],
    )
    gas, drainage = bodies["gas/G-M-002"], bodies["drainage/D-L-003"]
    assert (gas["event"], gas["drill"], gas["drill_id"]) == ("raised", True, drill)  # the drilled network
    assert (drainage["event"], drainage["drill"], drainage["drill_id"]) == ("raised", False, None)  # a real one


def test_websocket_resume_sends_missed_events_once(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection, viewer_url: str
) -> None:
    start_ingest()
    now = datetime.now(UTC)
    with Publisher(broker, client_id=f"pub3-{prefix[5:15]}") as pub:
        for i, level in enumerate((0.9, 1.3, 1.7, 0.2)):
            pub.publish(
                f"{prefix}/drainage/D-L-003",
                orjson.dumps({"ts": (now - timedelta(seconds=10 - i)).isoformat(), "value": level, "unit": "m"}),
            )
    wait_for(lambda: _count(db, "SELECT count(*) FROM alert_events") == 4, what="4 alert events")
    events = [r["id"] for r in db.execute("SELECT id FROM alert_events ORDER BY id").fetchall()]
    ws_url = viewer_url.replace("http", "ws") + f"/ws/alerts?after={events[1]}"
    with ws_connect(ws_url, open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        replay = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1.0)
    assert hello["last_event_id"] == events[-1]
    assert [(m["event_id"], m["event"]) for m in replay] == [(events[2], "updated"), (events[3], "cleared")]
