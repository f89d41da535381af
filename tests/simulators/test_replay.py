"""A recorded scenario replayed over the real broker lands in the store exactly as the faults say it should."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.faults import Fault, FaultKind
from simulators.runner import run_scenario
from simulators.scenario import GroundTruth, SimReading, Step
from twin.demo import demo_sensors
from twin.mqtt import MqttConfig
from twin.sensors import SensorRegistry
from twin.store.db import DictConnection

from ..conftest import wait_for

pytestmark = pytest.mark.integration
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


class Ramp:
    """Thirty minutes of three sensors rising slowly."""

    name = "ramp"
    start = START
    duration = timedelta(minutes=30)
    step = timedelta(minutes=1)

    def steps(self) -> Iterator[Step]:
        for k in range(30):
            ts = START + k * self.step
            yield Step(
                ts,
                [
                    SimReading("D-L-002", ts, 0.3 + 0.01 * k),
                    SimReading("W-P-002", ts, 300.0 - k),
                    SimReading("R-002", ts, 1.0 * k),
                ],
            )

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(scenario={"kind": "ramp"})


def test_replayed_recording_is_stored_with_faults_accounted_for(
    tmp_path: Path, start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    faults = [
        Fault(FaultKind.DUPLICATE, "D-L-002", START, START + timedelta(minutes=10)),
        Fault(FaultKind.MALFORMED, "R-002", START + timedelta(minutes=20), START + timedelta(minutes=25)),
        Fault(FaultKind.DROPOUT, "W-P-002", START, START + timedelta(minutes=5)),
    ]
    run = run_scenario(
        Ramp(), sensors=SensorRegistry(demo_sensors()), prefix=prefix, out_dir=tmp_path, faults=faults, seed=1
    )
    assert run.messages == 30 + 10 + 30 - 5 + 30
    svc = start_ingest()
    env = {**os.environ, "LIFELINE_MQTT_URL": broker.url}
    result = subprocess.run(
        [sys.executable, "-m", "lifeline", "replay", str(run.recording), "--speed", "max"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"published {run.messages} of {run.messages}" in result.stdout
    wait_for(lambda: svc.stats.messages == run.messages, timeout=20, what="every replayed message processed")
    rows = {
        r["sensor_id"]: r["n"]
        for r in db.execute("SELECT sensor_id, count(*) AS n FROM readings GROUP BY sensor_id").fetchall()
    }
    assert rows == {"D-L-002": 30, "W-P-002": 25, "R-002": 25}
    assert svc.stats.readings_duplicate == 10
    letters = db.execute("SELECT count(*) AS n FROM dead_letter").fetchone()
    assert letters is not None and letters["n"] == 5
