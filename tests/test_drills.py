"""Drills from the operations centre: started over the API, published like real sensors, stopped on request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from twin.democity.city import build_demo_city
from twin.mqtt import MqttConfig
from twin.store.sensors import upsert_sensors
from viewer.app import create_app

from .conftest import serve, wait_for

pytestmark = pytest.mark.integration


def test_drill_runs_a_storm_through_ingest_and_a_long_drill_can_be_stopped(
    pg_url: str, schema: str, db: Any, broker: MqttConfig, prefix: str, start_ingest: Any
) -> None:
    upsert_sensors(db, build_demo_city().sensors.values())
    svc = start_ingest()
    env = {"LIFELINE_MQTT_URL": broker.url, "LIFELINE_TOPIC_PREFIX": prefix}
    app = create_app(conninfo=pg_url, schema=schema, drill_env=env, drill_demo_city=True)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/info").json()["drill"] is False
        storm = client.post(
            "/api/drills",
            json={
                "kind": "rainstorm",
                "speed": "max",
                "params": {"return_period": 50, "duration_min": 30, "drain_min": 10},
            },
        )
        assert storm.status_code == 201 and storm.json()["status"] == "running"
        assert client.get("/api/info").json()["drill"] is True  # the page shows 演练 while it runs

        def finished() -> dict[str, Any] | None:
            drill = next(d for d in client.get("/api/drills").json() if d["id"] == storm.json()["id"])
            return None if drill["status"] == "running" else drill

        done = wait_for(finished, timeout=120, what="the storm drill to finish")
        assert done["status"] == "finished", done["log_tail"]
        wait_for(lambda: svc.stats.readings_stored > 1000, timeout=60, what="the drill's readings stored")
        wait_for(lambda: client.get("/api/alerts").json(), timeout=30, what="alerts raised by the drill")

        long = client.post(
            "/api/drills",
            json={
                "kind": "gas-leak",
                "speed": "1",
                "params": {"pipe": "LP0007", "flow": 30, "hours": 3, "methane_report": "change", "methane_change": 5},
            },
        )
        assert long.status_code == 201
        stopped = client.delete(f"/api/drills/{long.json()['id']}").json()
        assert stopped["status"] == "stopped"
        assert client.delete("/api/drills/999").status_code == 404
        bad = client.post("/api/drills", json={"kind": "earthquake"})
        assert bad.status_code == 422 and "unknown drill kind" in bad.json()["detail"]
        bad = client.post("/api/drills", json={"kind": "leak", "params": {"junction": "--demo"}})
        assert bad.status_code == 422


def test_drills_are_refused_where_no_broker_is_configured(pg_url: str, schema: str) -> None:
    with serve(create_app(conninfo=pg_url, schema=schema)) as url:
        res = httpx.post(f"{url}/api/drills", json={"kind": "rainstorm"})
        assert res.status_code == 409 and "not enabled" in res.json()["detail"]


def test_a_gas_leak_drill_can_have_its_methane_detectors_report_on_change(tmp_path: Any) -> None:
    from twin.errors import ConfigError
    from viewer.drills import DrillManager

    base = {"pipe": "LP0007", "flow": 30}
    regular = DrillManager._args("gas-leak", base, tmp_path)
    assert "--methane-report" not in regular  # as the command's default: once a sensor step
    change = DrillManager._args("gas-leak", {**base, "methane_report": "change"}, tmp_path)
    assert change[-6:] == ["--methane-report", "change", "--methane-sample-s", "5", "--methane-change", "2.0"]
    tuned = {**base, "methane_report": "change", "methane_sample_s": 10, "methane_change": 5}
    assert DrillManager._args("gas-leak", tuned, tmp_path)[-4:] == [
        "--methane-sample-s",
        "10",
        "--methane-change",
        "5.0",
    ]

    for (name, value), message in (
        (("methane_report", "sometimes"), "methane_report must be 'regular' or 'change'"),
        (("methane_sample_s", 7), "dividing 60"),
        (("methane_change", 0), "methane_change must be above 0"),
        (("methane_change", "lots"), "methane_change must be a number"),
    ):
        params = {**base, "methane_report": "change", name: value}
        with pytest.raises(ConfigError, match=message):
            DrillManager._args("gas-leak", params, tmp_path)
    with pytest.raises(ConfigError, match="methane_sample_s needs methane_report 'change'"):
        DrillManager._args("gas-leak", {**base, "methane_sample_s": 10}, tmp_path)
