"""Gas leak early warning on the real pandapipes engine: methane rising in a watched manhole beside a leaking pipe.

The demo city's gas network (pandapipes) and its underground spaces; a 5-hour :class:`GasScenario` with a small
leak 1.5 h in, beside a watched manhole, sized so that methane there reaches 20 %LEL about an hour later; each
minute's readings evaluated as one batch at that minute. The longer evaluation (ten leaks, three normal days) is
``bench/bench_gas_drainage.py``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from shapely import LineString, Point

from models.chain import DetectorChain
from models.gas import GasLeakDetector, GasLeakRules
from simulators.gas_scenarios import GasLeakEvent, GasScenario
from simulators.scenario import Step
from twin.alerts import AlertChange
from twin.democity.gas import build_gas
from twin.democity.layout import build_layout
from twin.democity.sensors import place_sensors
from twin.model import City
from twin.readings import Reading
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor

START = datetime(2025, 7, 1, 16, tzinfo=UTC)  # local midnight in the demo city
LEAK_AT = START + timedelta(hours=1, minutes=30)
HOURS = timedelta(hours=5)


@dataclass(frozen=True)
class Run:
    city: City
    event: GasLeakEvent
    truth: dict[str, object]
    steps: list[Step]
    crossed_at: datetime


def _replay(detector: GasLeakDetector, steps: Iterable[Step]) -> list[AlertChange]:
    changes: list[AlertChange] = []
    for step in steps:
        batch = [Reading(r.sensor_id, r.ts, r.value, 0) for r in step.readings]
        result = detector.evaluate(batch, now=step.ts, suspect=frozenset())
        detector.commit(result)
        changes += result.changes
    return changes


@pytest.fixture(scope="module")
def run() -> Run:
    network, _net, spaces = build_gas(build_layout())
    city = City(name="demo", crs="EPSG:4547", networks={Network.GAS: network}, spaces={s.space_id: s for s in spaces})
    city.sensors = place_sensors(city)
    watched = sorted(sid.removeprefix("GM-") for sid in city.sensors if sid.startswith("GM-MH"))
    manhole = city.spaces[watched[len(watched) // 3]]
    pipe_id = next(n.removeprefix("gas:") for n in manhole.near if n.removeprefix("gas:") in network.links)
    line = LineString(network.polyline(network.links[pipe_id]))
    position = float(line.project(Point(manhole.x_m, manhole.y_m), normalized=True))
    event = GasLeakEvent(pipe_id=pipe_id, position=position, volume_flow_m3_h=0.1, start=LEAK_AT)
    scenario = GasScenario(
        network,
        city.spaces,
        city.sensors,
        start=START,
        duration=HOURS,
        events=[event],
        seed=11,
        snapshot_step=timedelta(minutes=30),
    )
    truth = scenario.ground_truth().events[0]
    crossed = [s["crossed_20_pct_lel_at"] for s in truth["spaces"] if s["crossed_20_pct_lel_at"]]
    assert crossed, "the test leak must bring methane to 20 %LEL within the run"
    return Run(city, event, truth, list(scenario.steps()), datetime.fromisoformat(min(crossed)))


@pytest.fixture(scope="module")
def changes(run: Run) -> list[AlertChange]:
    return _replay(GasLeakDetector(run.city.sensors, city=run.city), run.steps)


def test_leak_is_warned_of_at_least_half_an_hour_before_methane_reaches_20_pct_lel(
    run: Run, changes: list[AlertChange]
) -> None:
    raised = [c for c in changes if c.event == "raised"]
    assert len(raised) == 1, [c.message_en for c in raised]
    first = raised[0]
    assert LEAK_AT < first.ts <= run.crossed_at - timedelta(minutes=30)
    assert first.kind == "gas_leak" and first.network == "gas" and first.cause_key.startswith("gas_leak:")
    assert first.message and first.message_en


def test_projected_time_to_20_pct_lel_is_within_a_factor_of_two_of_the_real_one(
    run: Run, changes: list[AlertChange]
) -> None:
    first = next(c for c in changes if c.event == "raised")
    assert first.detail is not None
    real_s = (run.crossed_at - first.ts).total_seconds()
    assert 0.5 * real_s <= first.detail["eta_s"] <= 2.0 * real_s


def test_grade_is_iii_before_the_alarm_level_and_never_less_severe_than_the_threshold_detector(
    run: Run, changes: list[AlertChange]
) -> None:
    before = [c.grade for c in changes if c.ts < run.crossed_at and c.event != "cleared"]
    assert min(before) <= int(Grade.III)
    after = [c.grade for c in changes if c.ts >= run.crossed_at + timedelta(minutes=5)]
    assert all(g <= int(Grade.IV) for g in after)


def test_the_leaking_pipe_is_among_the_top_three_candidates(run: Run, changes: list[AlertChange]) -> None:
    first = next(c for c in changes if c.event == "raised")
    assert first.detail is not None
    assets = [c["asset"] for c in first.detail["candidates"]]
    assert f"gas:link:{run.event.pipe_id}" in assets[:3], assets
    assert all(0.0 <= c["score"] <= 1.0 for c in first.detail["candidates"])


def test_no_warning_before_the_leak(changes: list[AlertChange]) -> None:
    assert all(c.ts > LEAK_AT for c in changes)


def test_state_survives_a_restart_through_json(run: Run, changes: list[AlertChange]) -> None:
    half = len(run.steps) // 2 + 30  # after the warning was raised
    first = GasLeakDetector(run.city.sensors, city=run.city)
    early = _replay(first, run.steps[:half])
    second = GasLeakDetector(run.city.sensors, city=run.city)
    second.load_state(json.loads(json.dumps(first.dump_state())))
    late = _replay(second, run.steps[half:])
    assert [(c.event, c.cause_key, c.grade, c.ts) for c in early + late] == [
        (c.event, c.cause_key, c.grade, c.ts) for c in changes
    ]


def test_suspect_readings_are_ignored(run: Run) -> None:
    detector = GasLeakDetector(run.city.sensors, city=run.city)
    found: list[AlertChange] = []
    for step in run.steps:
        batch = [Reading(r.sensor_id, r.ts, r.value, 0) for r in step.readings]
        methane = frozenset((r.sensor_id, r.ts) for r in batch if r.sensor_id.startswith("GM-"))
        result = detector.evaluate(batch, now=step.ts, suspect=methane)
        detector.commit(result)
        found += result.changes
    assert found == []


def _pressure_sensor() -> Sensor:
    return Sensor(
        "GP-1",
        Network.GAS,
        Quantity.PRESSURE,
        "低压燃气节点 1 压力",
        interval_s=60.0,
        limits=(AlarmLimit(Grade.IV, Direction.LOW, 1.8),),
    )


def _pressure(t: datetime, k: int, drop_kpa: float) -> float:
    """A regulated low-pressure node: 2.7 kPa with a daily swing of ±0.05 kPa and deterministic jitter."""
    hour = (t.timestamp() % 86400) / 3600
    return 2.7 + 0.05 * math.sin(2 * math.pi * hour / 24) + 0.004 * math.sin(k * 1.7) - drop_kpa


def test_pressure_drop_against_the_learned_day_raises_a_leak_warning_and_a_normal_day_does_not() -> None:
    sensor = _pressure_sensor()
    detector = GasLeakDetector({"GP-1": sensor}, rules=GasLeakRules())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[AlertChange] = []
    drop_at = 2 * 24 * 60 + 600  # the third day, 10:00
    for k in range(3 * 24 * 60):
        ts = t0 + timedelta(minutes=k)
        drop = 0.08 if k >= drop_at else 0.0
        result = detector.evaluate([Reading("GP-1", ts, _pressure(ts, k, drop), 0)], now=ts, suspect=frozenset())
        detector.commit(result)
        events += result.changes
    assert [c.event for c in events] == ["raised"]
    assert timedelta(0) < events[0].ts - (t0 + timedelta(minutes=drop_at)) <= timedelta(minutes=20)
    assert events[0].detail is not None and events[0].detail["pressure_drop_kpa"] > 0.04


# --- the fast path and spikes, on one methane sensor -------------------------------------------------------------

_LIMITS = tuple(AlarmLimit(g, Direction.HIGH, v) for g, v in zip(Grade, (75.0, 50.0, 35.0, 20.0), strict=True))
_GM = Sensor(
    "GM-1", Network.GAS, Quantity.METHANE, "井1 甲烷", interval_s=60.0, valid_min=0.0, valid_max=100.0, limits=_LIMITS
)
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_QUIET = 200  # minutes of background before anything happens


def _background(minutes: int, seed: int = 1) -> list[Reading]:
    """1-minute readings of a quiet space: 0.7 %LEL with Gaussian noise σ 0.3, never below 0."""
    rng = random.Random(seed)
    return [Reading("GM-1", _T0 + timedelta(minutes=k), max(0.0, 0.7 + rng.gauss(0.0, 0.3)), 0) for k in range(minutes)]


def _gas_changes(readings: Iterable[Reading], *, health: bool, rules: GasLeakRules | None = None) -> list[AlertChange]:
    """Each reading as one batch at its time, through sensor health first (as ingest chains them) if *health*."""
    extra = [lambda sensors: GasLeakDetector(sensors, rules=rules)]
    chain = DetectorChain.default({"GM-1": _GM}, extra=extra) if health else None
    gas = GasLeakDetector({"GM-1": _GM}, rules=rules)
    found: list[AlertChange] = []
    for reading in readings:
        if chain is not None:
            result = chain.evaluate([reading], now=reading.ts)
            chain.commit(result)
            found += [c for c in result.changes if c.kind == "gas_leak"]
        else:
            step = gas.evaluate([reading], now=reading.ts, suspect=frozenset())
            gas.commit(step)
            found += step.changes
    return found


def _fast_rise() -> tuple[list[Reading], datetime]:
    """Background, then methane rising 20 %LEL a minute, reported by exception (every 2 %LEL, ~6 s) and each minute.

    Returns the readings and when the true value reaches 20 %LEL.
    """
    readings = _background(_QUIET)
    start = _T0 + timedelta(minutes=_QUIET)
    rng = random.Random(2)
    last = readings[-1].value
    for k in range(1, 12 * 3):  # 5-s samples for three minutes
        ts = start + timedelta(seconds=5 * k)
        x = 0.7 + 20.0 * 5 * k / 60 + rng.gauss(0.0, 0.3)
        if abs(x - last) >= 2.0 or k % 12 == 0:
            readings.append(Reading("GM-1", ts, x, 0))
            last = x
    return readings, start + timedelta(minutes=1)


def test_a_fast_rise_reported_on_change_is_warned_of_before_20_pct_lel_by_the_fast_path() -> None:
    readings, at_20 = _fast_rise()
    changes = _gas_changes(readings, health=True)
    raised = [c for c in changes if c.event == "raised"]
    assert len(raised) == 1 and raised[0].ts < at_20 - timedelta(seconds=20), [c.ts for c in raised]
    assert raised[0].detail is not None and raised[0].detail["eta_s"] <= 60
    assert raised[0].grade <= int(Grade.II)  # projected well past 20 %LEL within the horizon
    # Counting three readings of the smoothed level alone would warn only about when 20 %LEL is reached.
    slow = GasLeakRules(fast_pct_lel=math.inf)
    late = [c for c in _gas_changes(readings, health=True, rules=slow) if c.event == "raised"]
    assert late and late[0].ts > raised[0].ts + timedelta(seconds=10)


def test_a_fast_rise_in_one_minute_readings_is_confirmed_by_its_second_reading() -> None:
    readings = _background(_QUIET)
    rise = [4.2, 7.9, 11.4, 15.2, 18.8, 22.1]  # 3.5 %LEL a minute
    start = _T0 + timedelta(minutes=_QUIET)
    readings += [Reading("GM-1", start + timedelta(minutes=k + 1), v, 0) for k, v in enumerate(rise)]
    raised = [c for c in _gas_changes(readings, health=True) if c.event == "raised"]
    assert [c.ts for c in raised] == [start + timedelta(minutes=2)]


# A spike of two readings looks like a level change until sensor health has seen it come back: only with it.
_SPIKES = [(jump, 1, health) for jump in (5.0, 10.0, 20.0, 60.0) for health in (True, False)]
_SPIKES += [(jump, 2, True) for jump in (5.0, 10.0, 20.0, 60.0)]


@pytest.mark.parametrize(("jump", "width", "health"), _SPIKES)
def test_a_spike_is_not_a_leak(jump: float, width: int, health: bool) -> None:
    # Sensor health flags a spike only once it has come back, so its readings reach the gas detector as trusted:
    # the detector holds a reading far from its prediction until the next one, and forgets what health flags late.
    readings = _background(_QUIET + 60)
    for k in range(_QUIET, _QUIET + width):
        readings[k] = readings[k]._replace(value=readings[k].value + jump)
    assert _gas_changes(readings, health=health) == []


def test_a_state_holding_a_reading_survives_a_restart_through_json() -> None:
    readings, _at_20 = _fast_rise()
    straight = _gas_changes(readings, health=False)
    first = GasLeakDetector({"GM-1": _GM})
    for reading in readings[: _QUIET + 2]:
        first.commit(first.evaluate([reading], now=reading.ts, suspect=frozenset()))
    assert first.dump_state()["methane"]["GM-1"]["held_ts"] is not None  # the first jump waits
    second = GasLeakDetector({"GM-1": _GM})
    second.load_state(json.loads(json.dumps(first.dump_state())))
    late: list[AlertChange] = []
    for reading in readings[_QUIET + 2 :]:
        result = second.evaluate([reading], now=reading.ts, suspect=frozenset())
        second.commit(result)
        late += result.changes
    assert [(c.event, c.ts, c.grade) for c in late] == [(c.event, c.ts, c.grade) for c in straight]
