"""The detectors' learned state is stored by ingest and restored when it starts again."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from models.chain import DetectorChain
from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.readings import Reading
from twin.sensors import Network, Quantity, Sensor
from twin.store.db import DictConnection
from twin.store.detector_state import load_states, save_states

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


def test_non_finite_learned_values_are_stored_and_read_back_exactly(db: DictConnection) -> None:
    # A flow meter without a valid range reports an infinite value: sensor health trusts it (it is in range) and
    # its spread and means, and the baseline's bin, become infinite then NaN. Both states must be stored (jsonb
    # takes no NaN token) and read back as they were, not learnt again.
    sensors = {"U1": Sensor("U1", Network.DRAINAGE, Quantity.FLOW, "流量1")}
    chain = DetectorChain.default(sensors)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    for m in range(12):
        ts = t0 + timedelta(minutes=m)
        chain.commit(chain.evaluate([Reading("U1", ts, math.inf if m == 6 else -40.0 + m % 3, 0)], now=ts))
    states = chain.dump_states()
    assert states["sensor_health"]["sensors"]["U1"]["spread"] == "NaN"
    with db.transaction():
        save_states(db, states)
    again = DetectorChain.default(sensors)
    assert sorted(again.load_states(load_states(db))) == ["anomaly", "sensor_health"]
    assert again.dump_states() == states
