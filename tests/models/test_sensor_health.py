"""Sensor health: every injected fault is found on its sensor in time and cleared after; healthy sensors stay quiet.

The stream is 24 h of 1-minute readings from a few demo sensors (a diurnal water pressure curve with noise, a
storm-driven sewer level, the rain itself and a gas pressure), sent through :func:`simulators.faults.inject` and
decoded by the ingest decoder, each minute's messages evaluated as one batch received at that minute.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import groupby

import pytest

from ingest.protocol import PayloadDecoder
from models.sensor_health import HealthState, SensorHealthDetector, cause_key
from simulators.faults import Fault, FaultKind, inject
from simulators.scenario import GroundTruth, SimReading, Step
from twin.alerts import AlertChange
from twin.demo import demo_sensors
from twin.readings import Reading
from twin.sensors import SensorRegistry

T0 = datetime(2026, 7, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DAY = timedelta(hours=24)
SENSORS = SensorRegistry(demo_sensors())
PRESSURES = ("W-P-001", "W-P-002", "W-P-003", "W-P-004", "W-P-005")
LEVELS = ("D-L-001", "D-L-002", "D-L-003", "D-L-004")
STORM_START = T0 + timedelta(hours=10)
STORM = timedelta(hours=2)


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@dataclass(frozen=True, slots=True)
class Expect:
    """An injected fault, the health fault it should raise, and the longest delays to raise and clear, minutes."""

    fault: Fault
    health: str
    raise_within_min: float
    clear_within_min: float


EXPECTED = (
    Expect(Fault(FaultKind.STUCK, "W-P-002", _at(8), _at(10)), "stuck", 11, 1),
    Expect(Fault(FaultKind.SPIKE, "W-P-003", _at(14), _at(14) + 2 * MINUTE, 60.0), "spike", 3, 17),
    # 20 kPa/h against a daily swing of ±10 kPa: raised after about 2 h; the baseline needs about an hour to settle.
    Expect(Fault(FaultKind.DRIFT, "W-P-004", _at(12), _at(16), 20.0), "drift", 150, 120),
    Expect(Fault(FaultKind.DROPOUT, "D-L-002", _at(9), _at(9.5)), "dropout", 6, 1),
    Expect(Fault(FaultKind.CLOCK_SKEW, "D-L-003", _at(15), _at(16), 180.0), "clock_skew", 2, 2),
    # A 10-minute jump of +10 m takes the level past its valid maximum of 8 m: out of range, not a spike.
    Expect(Fault(FaultKind.SPIKE, "D-L-004", _at(17), _at(17) + 10 * MINUTE, 10.0), "out_of_range", 1, 1),
)
FAULTED = {e.fault.sensor_id for e in EXPECTED}
HEALTHY = ("W-P-001", "W-P-005", "D-L-001", "R-001", "G-P-001")


def _rain_mm_h(ts: datetime) -> float:
    """A 2-hour storm peaking at 40 mm/h, dry otherwise."""
    t = (ts - STORM_START) / STORM
    return 40.0 * math.sin(math.pi * t) ** 2 if 0.0 <= t <= 1.0 else 0.0


class CityDay:
    """24 h of the demo sensors at 1-minute resolution: pressures with a daily swing, levels that follow the rain."""

    name = "city-day"
    start = T0
    duration = DAY
    step = MINUTE

    def steps(self) -> Iterator[Step]:
        rng = random.Random(7)
        phases = {sid: rng.uniform(-0.5, 0.5) for sid in PRESSURES}
        levels = dict.fromkeys(LEVELS, 0.25)
        for k in range(int(DAY / MINUTE)):
            ts = T0 + k * MINUTE
            day = 2 * math.pi * (k / 1440)
            rain = _rain_mm_h(ts)
            readings = [SimReading("R-001", ts, rain)]
            for sid in PRESSURES:
                kpa = 300.0 - 10.0 * math.sin(day - 1.2 + phases[sid]) + rng.gauss(0.0, 0.3)
                readings.append(SimReading(sid, ts, kpa))
            for i, sid in enumerate(LEVELS):
                # Each level fills with the rain and drains towards its dry-weather depth (time constant 40 min).
                levels[sid] += (0.25 + 0.03 * rain * (1 + 0.2 * i) - levels[sid]) / 40.0
                readings.append(SimReading(sid, ts, levels[sid] + rng.gauss(0.0, 0.003)))
            readings.append(SimReading("G-P-001", ts, 3.2 + 0.1 * math.sin(day) + rng.gauss(0.0, 0.005)))
            yield Step(ts, readings)

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(scenario={"kind": self.name})


def _batches() -> list[tuple[datetime, list[Reading]]]:
    """Decode the faulty stream; one batch per minute of arrival, with the time it arrived."""
    clock = [T0]
    decoder = PayloadDecoder(sensors=SENSORS, clock=lambda: clock[0])
    messages = inject(
        CityDay().steps(), sensors=SENSORS, prefix="lifeline/v1", faults=[e.fault for e in EXPECTED], seed=3
    )
    batches: list[tuple[datetime, list[Reading]]] = []
    for at, group in groupby(messages, key=lambda m: m.at):
        clock[0] = at
        readings = [r for m in group for r in decoder.decode(m.topic, m.payload).readings]
        batches.append((at, readings))
    return batches


@dataclass(frozen=True, slots=True)
class Run:
    changes: list[AlertChange]
    suspect: set[tuple[str, datetime]]
    state: dict[str, HealthState]


def _run(batches: list[tuple[datetime, list[Reading]]], *, restart_at: datetime | None = None) -> Run:
    det = SensorHealthDetector(SENSORS)
    changes: list[AlertChange] = []
    suspect: set[tuple[str, datetime]] = set()
    for at, readings in batches:
        if restart_at is not None and at == restart_at:
            det = SensorHealthDetector(SENSORS, state=copy.deepcopy(dict(det.state)))
        result = det.evaluate(readings, now=at)
        det.commit(result)
        changes.extend(result.changes)
        suspect |= result.suspect
    return Run(changes, suspect, dict(det.state))


@cache
def _day() -> Run:
    return _run(_batches())


def _events(run: Run, key: str) -> list[tuple[str, datetime]]:
    return [(c.event, c.ts) for c in run.changes if c.cause_key == key]


@pytest.mark.parametrize("expect", EXPECTED, ids=lambda e: f"{e.fault.kind.value}->{e.health}")
def test_injected_fault_is_raised_on_its_sensor_in_time_and_cleared_after(expect: Expect) -> None:
    fault = expect.fault
    events = _events(_day(), cause_key(fault.sensor_id, expect.health))
    assert [e for e, _ in events] == ["raised", "cleared"], events
    (_, raised), (_, cleared) = events
    assert fault.start <= raised <= fault.start + expect.raise_within_min * MINUTE
    assert fault.end <= cleared <= fault.end + expect.clear_within_min * MINUTE


def test_faulty_sensor_raises_no_other_kind_of_health_alert() -> None:
    for expect in EXPECTED:
        keys = {c.cause_key for c in _day().changes if c.sensor_id == expect.fault.sensor_id}
        assert keys == {cause_key(expect.fault.sensor_id, expect.health)}


def test_healthy_sensors_raise_nothing_in_a_day_with_a_storm() -> None:
    assert max(r.value for _, batch in _batches() for r in batch if r.sensor_id == "D-L-001") > 1.0
    assert [c.cause_key for c in _day().changes if c.sensor_id not in FAULTED] == []


def test_readings_of_a_faulty_sensor_are_suspect_and_healthy_ones_are_not() -> None:
    suspect = _day().suspect
    silent = EXPECTED[3].fault.sensor_id  # a dropout leaves no readings to distrust
    assert {sid for sid, _ in suspect} == FAULTED - {silent}
    spike = EXPECTED[1].fault
    assert {(spike.sensor_id, spike.start), (spike.sensor_id, spike.start + MINUTE)} <= suspect
    assert (spike.sensor_id, spike.end) not in suspect
    out_of_range = EXPECTED[5].fault
    assert all((out_of_range.sensor_id, out_of_range.start + k * MINUTE) in suspect for k in range(10))


def test_state_survives_a_restart_in_the_middle_of_faults() -> None:
    restarted = _run(_batches(), restart_at=_at(14) + MINUTE)
    assert [(c.event, c.cause_key, c.ts) for c in restarted.changes] == [
        (c.event, c.cause_key, c.ts) for c in _day().changes
    ]
    assert restarted.suspect == _day().suspect


def test_stuck_sensor_coming_back_at_another_value_is_neither_a_spike_nor_a_drift() -> None:
    det = SensorHealthDetector(SENSORS)
    values = (
        [300.0 + 0.3 * ((k * 7) % 5) for k in range(7 * 60)]
        + [301.0] * 120
        + [312.0 + 0.3 * (k % 4) for k in range(240)]
    )
    events = []
    for k, value in enumerate(values):
        ts = T0 + k * MINUTE
        result = det.evaluate([Reading("W-P-001", ts, value, 0)], now=ts)
        det.commit(result)
        events += [(c.event, c.cause_key, (c.ts - T0) // MINUTE) for c in result.changes]
    stuck = cause_key("W-P-001", "stuck")
    assert events == [("raised", stuck, 7 * 60 + 10), ("cleared", stuck, 9 * 60)]


def test_lasting_pressure_change_raises_a_drift_that_clears_once_the_baseline_is_readopted() -> None:
    det = SensorHealthDetector(SENSORS)
    # 8 h steady, then a slow ramp of 40 kPa over 2 h that stays (a new set point), followed for 20 h.
    values = [300.0 + 0.3 * ((k * 7) % 5) + min(max(k - 480, 0), 120) / 3 for k in range(30 * 60)]
    events = []
    for k, value in enumerate(values):
        ts = T0 + k * MINUTE
        result = det.evaluate([Reading("W-P-001", ts, value, 0)], now=ts)
        det.commit(result)
        events += [(c.event, c.cause_key) for c in result.changes]
    assert events == [("raised", cause_key("W-P-001", "drift")), ("cleared", cause_key("W-P-001", "drift"))]


def test_evaluate_changes_nothing_until_commit() -> None:
    det = SensorHealthDetector(SENSORS)
    bad = [Reading("D-L-001", T0, 9.0, 2)]
    first = det.evaluate(bad, now=T0)
    again = det.evaluate(bad, now=T0)
    assert [c.event for c in first.changes] == [c.event for c in again.changes] == ["raised"]
    det.commit(first)
    assert det.evaluate(bad, now=T0 + MINUTE).changes == []


def test_rain_gauge_resting_at_zero_after_rain_is_not_stuck() -> None:
    det = SensorHealthDetector(SENSORS)
    rain = [5.0 + (k % 7) for k in range(60)] + [0.0] * 120
    for k, value in enumerate(rain):
        ts = T0 + k * MINUTE
        result = det.evaluate([Reading("R-001", ts, value, 0)], now=ts)
        det.commit(result)
        assert result.changes == []


def test_gateway_delivering_a_buffer_is_not_a_clock_skew() -> None:
    det = SensorHealthDetector(SENSORS)
    changes: list[AlertChange] = []
    for block in range(8):
        now = T0 + (block + 1) * 15 * MINUTE
        readings = [Reading("W-P-001", now - (15 - k) * MINUTE, 300.0 + 0.3 * (k % 3), 0) for k in range(15)]
        result = det.evaluate(readings, now=now)
        det.commit(result)
        changes.extend(result.changes)
    assert [c.cause_key for c in changes] == []


def test_clock_running_steadily_late_is_a_clock_skew() -> None:
    det = SensorHealthDetector(SENSORS)
    raised: list[datetime] = []
    for k in range(30):
        now = T0 + k * MINUTE
        result = det.evaluate([Reading("W-P-001", now - timedelta(minutes=10), 300.0 + 0.3 * (k % 3), 0)], now=now)
        det.commit(result)
        raised += [now for c in result.changes if c.cause_key == cause_key("W-P-001", "clock_skew")]
    assert raised == [T0 + 9 * MINUTE]
