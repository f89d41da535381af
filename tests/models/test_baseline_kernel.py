"""The compiled baseline detector decides exactly as the numpy reference, batch after batch.

:class:`models.baseline.BaselineDetector` (a numba kernel, sensor by sensor) and
:class:`models.baseline_reference.ReferenceBaselineDetector` (numpy rounds, the k-th reading of every sensor
together) are fed the same batches; every batch must give the same changes (same order, every field, floats to the
bit) and the same state (every array, byte for byte, and ``dump_state()``). The streams last days (so that bins warm
up, weekends included) and hold lasting offsets that raise and clear, offsets longer than the re-adoption time,
and what the input can throw at the detector: duplicates, late and out-of-order readings, NaN and infinite values,
bad quality, suspect readings, unknown and unjudged sensors, batches of 1 to 50 readings a sensor given as columns
or as readings, batches evaluated and not committed, the state stored as JSON and restored mid-stream, and sensors
redefined mid-stream.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models import baseline_kernel as kern
from models.baseline import BaselineDetector, BaselineRules
from models.baseline_reference import ReferenceBaselineDetector
from models.streaming import StreamResult
from tests.models.test_baseline import SENSORS as DEMO_SENSORS
from tests.models.test_baseline import _days as demo_days
from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading, ReadingBatch
from twin.sensors import Network, Quantity, Sensor

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference on ±inf

T0 = datetime(2026, 3, 5, 16, tzinfo=UTC)  # local midnight (UTC+8) starting Friday 6 March: a weekend on days 2-3
STEP_S = 300
DAYS = 7


def _sensor(sid: str, interval_s: float = 60.0) -> Sensor:
    return Sensor(
        sid, Network.WATER, Quantity.PRESSURE, f"传感器{sid}", valid_min=0.0, valid_max=1000.0, interval_s=interval_s
    )


SENSORS: dict[str, Sensor] = {
    s.sensor_id: s
    for s in (
        _sensor("P1", interval_s=300.0),
        _sensor("P2", interval_s=300.0),
        _sensor("P3", interval_s=600.0),
        Sensor("F1", Network.WATER, Quantity.FLOW, "流量1", interval_s=300.0),  # unbounded: floor 1e-3
        _sensor("P4", interval_s=300.0),
        _sensor("P5", interval_s=150.0),
        _sensor("PINF", interval_s=300.0),  # now and then an infinite value: its state goes NaN
        Sensor("L1", Network.DRAINAGE, Quantity.LEVEL, "液位1", valid_min=0.0, valid_max=8.0),  # not judged
    )
}
IDS = (*SENSORS, "X-UNKNOWN")
QUICK = BaselineRules(warmup_days=1.0, readopt_h=6.0, hold_readings=3, score_readings=5)
"""One day of warm-up and six hours to re-adopt, so that alerts are raised, cleared and expire in a week."""


def _stream(seed: int, days: int = DAYS) -> list[Reading]:
    """Readings of every sensor every 5 minutes for *days*, with offsets and faults, in arrival order."""
    rng = random.Random(seed)
    steps = days * 86_400 // STEP_S
    # Offsets (start step, end step, size in σ) by sensor: a few hours, some longer than the re-adoption time,
    # and one city-wide event that starts at slightly different times.
    offsets: dict[str, list[tuple[int, int, float]]] = {sid: [] for sid in IDS}
    for sid in IDS:
        for _ in range(rng.randint(2, 5)):
            a = rng.randrange(steps // 6, steps)
            length = rng.choice([6, 12, 24, 48, 100, 150])  # 30 min to 12.5 h
            offsets[sid].append((a, a + length, rng.choice([-1, 1]) * rng.uniform(6.0, 30.0)))
    city = rng.randrange(steps // 3, steps - 50)
    for sid in IDS:
        offsets[sid].append((city + rng.randrange(0, 12), city + rng.randrange(24, 60), -20.0))
    phase = {sid: rng.randrange(0, STEP_S) + rng.randrange(0, 1000) / 1000 for sid in IDS}
    out: list[Reading] = []
    late: list[Reading] = []
    for k in range(steps):
        for n, sid in enumerate(IDS):
            ts = T0 + timedelta(seconds=k * STEP_S + phase[sid])
            hour = (k * STEP_S / 3600.0) % 24
            value = 300.0 + 10 * n + 8 * math.cos(2 * math.pi * (hour - 3) / 24) + rng.gauss(0.0, 0.8)
            value += sum(size * 0.8 for a, b, size in offsets[sid] if a <= k < b)
            quality = 0
            roll = rng.random()
            if roll < 0.005:
                value = math.nan
            elif roll < 0.01:
                quality = QUALITY_BAD
            elif roll < 0.015:
                quality = 1
            if sid == "PINF" and rng.random() < 0.002:
                value = rng.choice([math.inf, -math.inf])
            reading = Reading(sid, ts, value, quality)
            if rng.random() < 0.01:
                late.append(reading)  # arrives a while later
                continue
            out.append(reading)
            if rng.random() < 0.01:  # a duplicate: same time, same or another value
                out.append(Reading(sid, ts, value if rng.random() < 0.5 else value + 1.0, 0))
        if late and rng.random() < 0.05:
            out.extend(late)
            late.clear()
    return out + late


def _batches(readings: list[Reading], seed: int) -> list[list[Reading]]:
    """Cut *readings* into batches of 1 to 50 time steps (every sensor's readings of those steps), shuffled."""
    rng = random.Random(seed)
    per_step = len(IDS)
    batches: list[list[Reading]] = []
    at = 0
    while at < len(readings):
        size = rng.choice([1, 1, 2, 3, 5, 10, 20, 35, 50]) * per_step
        batch = readings[at : at + size]
        at += size
        if rng.random() < 0.5:
            batch = batch[:]
            rng.shuffle(batch)
        batches.append(batch)
    return batches


def _changes(result: StreamResult) -> list[str]:
    """The changes as exact text (repr gives floats to the bit, and every field)."""
    out = []
    for change in result.changes:
        assert isinstance(change, AlertChange)
        out.append(repr(change))
    return out


def _state_bytes(det: BaselineDetector) -> dict[str, bytes]:
    st = det._state
    return {
        name: np.ascontiguousarray(getattr(st, name)).tobytes()
        for name in ("loc", "spread", "count", "score", "run", "active", "since", "last_ts", "seen")
    }


def _dump(det: BaselineDetector) -> str:
    return json.dumps(det.dump_state(), sort_keys=True)


def _same_state(kernel: BaselineDetector, reference: BaselineDetector) -> None:
    assert _state_bytes(kernel) == _state_bytes(reference)
    assert _dump(kernel) == _dump(reference)


def _suspect(batch: Sequence[Reading], rng: random.Random) -> frozenset[tuple[str, datetime]]:
    if rng.random() < 0.7:
        return frozenset()
    return frozenset((r.sensor_id, r.ts) for r in batch if rng.random() < 0.05)


def _reload(det: BaselineDetector, kind: type[BaselineDetector], sensors: Mapping[str, Sensor]) -> BaselineDetector:
    """A new detector of *kind* with *det*'s state, through JSON."""
    fresh = kind(sensors, rules=det.rules)
    fresh.load_state(json.loads(json.dumps(det.dump_state())))
    return fresh


def _compare(
    batches: Sequence[Sequence[Reading]],
    sensors: Mapping[str, Sensor],
    rules: BaselineRules,
    seed: int,
    *,
    mid_stream: bool = True,
) -> tuple[int, int]:
    """Feed both detectors *batches*; assert they agree on each. Return (changes, batches with rows out of order)."""
    rng = random.Random(seed)
    kernel: BaselineDetector = BaselineDetector(sensors, rules=rules)
    reference: BaselineDetector = ReferenceBaselineDetector(sensors, rules=rules)
    total = unordered = 0
    current = dict(sensors)
    for n, batch in enumerate(batches):
        if mid_stream and n and n % 37 == 0:
            kernel = _reload(kernel, BaselineDetector, current)
            reference = _reload(reference, ReferenceBaselineDetector, current)
            _same_state(kernel, reference)
        if mid_stream and n and n % 53 == 0:
            # Sensors redefined: one dropped (its state forgotten), one back (learning from scratch), one changed.
            current = dict(sensors)
            gone = rng.choice(sorted(current))
            del current[gone]
            if "P2" in current and rng.random() < 0.5:
                current["P2"] = _sensor("P2", interval_s=60.0)
            kernel.update_sensors(current)
            reference.update_sensors(current)
            _same_state(kernel, reference)
        suspect = _suspect(batch, rng)
        given: Sequence[Reading] = ReadingBatch.from_readings(batch) if rng.random() < 0.5 else batch
        now = max(r.ts for r in batch)
        before = _dump(kernel)
        want = reference.evaluate(given, now=now, suspect=suspect)
        got = kernel.evaluate(given, now=now, suspect=suspect)
        assert _changes(got) == _changes(want), f"batch {n}"
        assert _dump(kernel) == before  # evaluating changes nothing
        if rng.random() < 0.1:
            continue  # evaluated and not committed
        kernel.commit(got)
        reference.commit(want)
        _same_state(kernel, reference)
        total += len(want.changes)
        rows = [kernel._row[str(c.sensor_id)] for c in want.changes]
        unordered += rows != sorted(rows)
    return total, unordered


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_gives_what_the_reference_gives(seed: int) -> None:
    batches = _batches(_stream(seed), seed)
    changes, _ = _compare(batches, SENSORS, QUICK, seed)
    assert changes >= 10  # raised, cleared and expired alerts were compared


def test_changes_come_by_rank_then_sensor() -> None:
    """Large batches in which sensors flip at different ranks: the order of the changes is not that of the rows."""
    readings = _stream(7)
    size = 50 * len(IDS)
    batches = [readings[i : i + size] for i in range(0, len(readings), size)]
    changes, unordered = _compare(batches, SENSORS, QUICK, 7, mid_stream=False)
    assert changes >= 10 and unordered >= 1


def test_default_rules_on_the_demo_days() -> None:
    batches = demo_days(6, seed=11, offset=(5 * 1440 + 600, 5 * 1440 + 720, 15.0))
    changes, _ = _compare(batches, DEMO_SENSORS, BaselineRules(), 11, mid_stream=False)
    assert changes == 2


def test_one_reading_a_sensor() -> None:
    """Batches of one reading of each of many sensors, the detector's shape when a minute's readings arrive."""
    sensors = {f"P{i:03d}": _sensor(f"P{i:03d}", interval_s=600.0) for i in range(60)}
    rng = random.Random(5)
    batches = []
    for k in range(3 * 144):
        ts = T0 + timedelta(minutes=10 * k)
        batch = [
            Reading(sid, ts, 300.0 + rng.gauss(0.0, 1.0) + (40.0 if 300 <= k < 340 and i % 3 == 0 else 0.0), 0)
            for i, sid in enumerate(sensors)
        ]
        rng.shuffle(batch)
        batches.append(batch)
    changes, _ = _compare(batches, sensors, BaselineRules(warmup_days=1.0, readopt_h=12.0), 5, mid_stream=False)
    assert changes >= 20


def test_no_warm_up() -> None:
    """With no warm-up every bin judges from its first reading, so a sensor's first reading sets its score."""
    rules = BaselineRules(warmup_days=0.0, readopt_h=6.0, hold_readings=3, score_readings=5)
    batches = _batches(_stream(8, days=2), 8)
    changes, _ = _compare(batches, SENSORS, rules, 8)
    assert changes >= 1


def test_scores_exactly_at_the_limits() -> None:
    """A score exactly at raise_z is not beyond it, nor one exactly at clear_z back within it, nor an alert exactly
    readopt_h old expired."""
    t = T0.timestamp()
    entry = {"loc": [300.0] * 48, "spread": [0.0] * 48, "count": [100] * 48, "last_ts": t - 300.0}
    state = {
        "version": 1,
        "sensors": {
            # σ is the floor, 2 kPa: 308 kPa is z = 4 exactly, 304 kPa z = 2.
            "P1": {**entry, "score": 4.0, "run": 2, "active": False, "since": None},
            "P2": {**entry, "score": 2.0, "run": 0, "active": True, "since": t - 3600.0},
            "P4": {**entry, "score": 4.0, "run": 2, "active": False, "since": None},
            "P5": {**entry, "score": 0.0, "run": 0, "active": True, "since": t - 6 * 3600.0},
        },
    }
    kernel, reference = BaselineDetector(SENSORS, rules=QUICK), ReferenceBaselineDetector(SENSORS, rules=QUICK)
    kernel.load_state(state)
    reference.load_state(state)
    batch = [
        Reading("P1", T0, 308.0, 0),
        Reading("P2", T0, 304.0, 0),
        Reading("P4", T0, 308.5, 0),
        Reading("P5", T0, 300.0, 0),
    ]
    want = reference.evaluate(batch, now=T0, suspect=frozenset())
    got = kernel.evaluate(batch, now=T0, suspect=frozenset())
    assert _changes(got) == _changes(want)
    assert [(c.event, c.sensor_id) for c in got.changes] == [("raised", "P4")]
    kernel.commit(got)
    reference.commit(want)
    _same_state(kernel, reference)
    runs = {sid: kernel.dump_state()["sensors"][sid]["run"] for sid in ("P1", "P2", "P5")}
    assert runs == {"P1": 0, "P2": 1, "P5": 1}
    assert kernel.active() == ["P2", "P4", "P5"]


def test_evaluate_changes_nothing_and_empty_batches() -> None:
    det = BaselineDetector(SENSORS, rules=QUICK)
    assert det.evaluate([], now=T0, suspect=frozenset()).changes == []
    only_unusable = [Reading("X-UNKNOWN", T0, 1.0, 0), Reading("P1", T0, math.nan, 0), Reading("L1", T0, 1.0, 0)]
    result = det.evaluate(only_unusable, now=T0, suspect=frozenset())
    assert result.changes == [] and result.state is det._state
    result = det.evaluate([Reading("P1", T0, 300.0, 0)], now=T0, suspect=frozenset())
    assert det.score("P1") is None and result.state is not det._state
    det.commit(result)
    assert det.score("P1") == 0.0


def test_compile_kernels_is_done_at_construction() -> None:
    BaselineDetector(SENSORS)
    assert kern.compile_kernels() == 0.0
