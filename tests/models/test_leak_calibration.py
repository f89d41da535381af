"""The water-leak detector's longer calibration on networks run by their tanks and pumps (WNTR's ky10).

On ky10 (13 tanks, 13 pumps, three of them switched on tank levels by its EPANET controls; its common modes
swallow every leak response, so measured tank levels are inputs too) the detector calibrates for
``cycle_calibrate_s`` (3 days) instead of one, with its threshold set from the whole calibration re-scored under
the final noise model. With one day of calibration its noise model sees too little of the pump cycles and it
raises on most days of a month with no leak (``bench/bench_transfer_streaming.py --network …/ky10.inp``: 29 raises
in 28 days before the change, none after). These tests replay 8 leak-free days of ky10 minute by minute through
both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import wntr

from models.transfer_data import SensorStream, place_sensors, simulate_stream
from models.water_leak import LeakSettings, WaterLeakDetector
from twin.model import PipeNetwork
from twin.sensors import Sensor
from twin.water import read_epanet

from .streams import replay

START = datetime(2025, 5, 31, 16, tzinfo=UTC)  # local midnight, 1 June 2025 (UTC+8)
DAYS = 8
DAY = timedelta(days=1)


def ky10_inp() -> Path:
    return Path(wntr.__file__).parent / "library" / "networks" / "ky10.inp"


@pytest.fixture(scope="module")
def ky10() -> tuple[PipeNetwork, list[Sensor], SensorStream]:
    network = read_epanet(ky10_inp())
    sensors = place_sensors(network)
    stream, _truth = simulate_stream(network, sensors, start=START, duration=DAYS * DAY, seed=41)
    return network, sensors, stream


def test_three_days_of_calibration_raise_nothing_on_leak_free_days(
    ky10: tuple[PipeNetwork, list[Sensor], SensorStream],
) -> None:
    network, sensors, stream = ky10
    detector = WaterLeakDetector(network, {s.sensor_id: s for s in sensors})
    assert detector.calibration_s == 3 * 86_400.0  # measured tanks: the longer calibration applies by itself
    changes = replay(detector, stream)
    assert detector.dump_state()["calib_max"] > 0  # the threshold was set from the re-scored calibration
    assert changes == [], [(c.event, c.ts, (c.detail or {}).get("statistic")) for c in changes]


def test_one_day_of_calibration_raises_on_the_same_days(ky10: tuple[PipeNetwork, list[Sensor], SensorStream]) -> None:
    """What the longer calibration prevents: the same readings, calibrated for a day, raise false alarms."""
    network, sensors, stream = ky10
    detector = WaterLeakDetector(
        network, {s.sensor_id: s for s in sensors}, settings=LeakSettings(cycle_calibrate_s=86_400.0)
    )
    raised = [c for c in replay(detector, stream) if c.event == "raised"]
    assert len(raised) >= 2


def test_a_restart_during_calibration_keeps_what_was_kept(ky10: tuple[PipeNetwork, list[Sensor], SensorStream]) -> None:
    """The calibration's kept moments are in the stored state: a detector restored mid-calibration sets the same
    threshold as one that ran through (deviations are stored as float32)."""
    network, sensors, stream = ky10
    by_id = {s.sensor_id: s for s in sensors}
    through = WaterLeakDetector(network, by_id)
    replay(through, stream, until=START + 5 * DAY)
    first = WaterLeakDetector(network, by_id)
    replay(first, stream, until=START + 3 * DAY)
    stored = json.loads(json.dumps(first.dump_state()))
    assert len(stored["samples"]["ts"]) > 200
    second = WaterLeakDetector(network, by_id)
    second.load_state(stored)
    replay(second, stream, since=START + 3 * DAY, until=START + 5 * DAY)
    expected = through.dump_state()["calib_max"]
    assert expected > 0 and second.dump_state()["samples"] is None
    assert second.dump_state()["calib_max"] == pytest.approx(expected, rel=1e-3)


def test_the_longer_calibration_follows_the_models_controls() -> None:
    """WNTR's Net3 switches pump 335 on tank 1's level (its tanks are not inputs there): three days. The demo city's
    pumps have no controls: one day, as the demo city's benchmarks were measured."""
    from .bench_modules import load_bench

    net3, net3_sensors = load_bench("bench_water_leak").net3_network()
    detector = WaterLeakDetector(net3, net3_sensors)
    assert not detector.measured_tanks_used and detector.calibration_s == 3 * 86_400.0
    demo, demo_sensors = load_bench("bench_water_leak").demo_network()
    assert WaterLeakDetector(demo, demo_sensors).calibration_s == 86_400.0
