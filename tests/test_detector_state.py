"""The detectors' learned state is stored by ingest and restored when it starts again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration


def test_state_survives_a_restart(start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection) -> None:
    svc = start_ingest()
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=100)
    with Publisher(broker, client_id=f"pub-{prefix[5:15]}") as pub:
        for i in range(20):
            ts = (t0 + timedelta(seconds=5 * i)).isoformat()
            pub.publish(f"{prefix}/water/W-P-001", orjson.dumps({"ts": ts, "value": 300 + i % 3, "unit": "kPa"}))
        # Out of range: a health alert, which stores the state with its batch.
        pub.publish(f"{prefix}/water/W-P-002", orjson.dumps({"ts": t0.isoformat(), "value": 1500, "unit": "kPa"}))
    wait_for(
        lambda: db.execute("SELECT count(*) AS n FROM readings").fetchone()["n"] == 21,  # type: ignore[index]
        what="21 readings",
    )
    client_id = svc.mqtt_config.client_id
    wait_for(
        lambda: db.execute("SELECT 1 FROM detector_state WHERE name = %s", (f"{client_id}/sensor_health",)).fetchone(),
        what="health state stored with the alert's batch",
    )
    active = [r["cause_key"] for r in db.execute("SELECT cause_key FROM alerts WHERE active").fetchall()]
    assert active == ["health:W-P-002:out_of_range"]
    before = svc.detectors.dump_states()
    assert before["sensor_health"]["sensors"]["W-P-001"]["trusted"] == 20
    assert before["anomaly"]["sensors"]["W-P-001"]["count"]  # learned bins
    svc.stop()

    rows = {r["name"]: r["state"] for r in db.execute("SELECT name, state FROM detector_state").fetchall()}
    assert set(rows) == {f"{client_id}/sensor_health", f"{client_id}/anomaly"}
    assert rows[f"{client_id}/sensor_health"] == before["sensor_health"]

    again = start_ingest()
    assert again.detectors is not None
    assert again.detectors.dump_states() == before
