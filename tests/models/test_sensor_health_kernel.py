"""The compiled sensor health detector decides exactly as the Python reference, batch after batch.

:class:`models.sensor_health.SensorHealthDetector` (arrays and a numba kernel) and
:class:`models.sensor_health_reference.ReferenceHealthDetector` (one object per sensor, one reading at a time) are
fed the same batches; every batch must give the same changes (same order, same fields), the same suspect readings
and the same state (compared through ``state_to_json``), before and after commit. The streams hold every fault the
rules know (out of range, stuck, spike, drift, dropout, clock ahead and behind) and what the input can throw at
them (bad quality, duplicates, out-of-order times, unknown sensors, batches evaluated and not committed, the state
stored as JSON and restored mid-stream, sensors redefined).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import sensor_health_kernel as kern
from models.sensor_health import (
    HealthDetection,
    HealthRules,
    HealthState,
    SensorHealthDetector,
    state_from_json,
    state_to_json,
)
from models.sensor_health_reference import ReferenceHealthDetector
from tests.models.test_sensor_health import SENSORS as DEMO_SENSORS
from tests.models.test_sensor_health import _batches as demo_batches
from twin.alerts import AlertChange
from twin.readings import Reading, ReadingBatch, ts_to_us
from twin.sensors import Network, Quantity, Sensor

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SENSORS: dict[str, Sensor] = {
    s.sensor_id: s
    for s in (
        Sensor("P1", Network.WATER, Quantity.PRESSURE, "压力1", valid_min=0.0, valid_max=1000.0),
        Sensor("P2", Network.WATER, Quantity.PRESSURE, "压力2", valid_min=0.0, valid_max=1000.0, interval_s=30.0),
        Sensor("L1", Network.DRAINAGE, Quantity.LEVEL, "液位1", valid_min=0.0, valid_max=8.0),
        Sensor("R1", Network.RAIN, Quantity.RAIN_RATE, "雨量1", valid_min=0.0, valid_max=200.0),
        Sensor("U1", Network.DRAINAGE, Quantity.FLOW, "流量1", interval_s=10.0),
        Sensor("G1", Network.GAS, Quantity.PRESSURE, "燃气1", valid_min=0.0, valid_max=10.0, interval_s=120.0),
    )
}
IDS = (*SENSORS, "X-UNKNOWN")
BASE = {"P1": 300.0, "P2": 450.0, "L1": 0.5, "R1": 2.0, "U1": -40.0, "G1": 3.2, "X-UNKNOWN": 1.0}
NOISE = {"P1": 0.3, "P2": 0.5, "L1": 0.003, "R1": 0.5, "U1": 1.0, "G1": 0.005, "X-UNKNOWN": 0.1}
QUICK = HealthRules(
    stuck_readings=4,
    spike_max_readings=2,
    spike_hold_s=300.0,
    drift_fast_tau_s=600.0,
    drift_slow_tau_s=3600.0,
    drift_scale_tau_s=7200.0,
    drift_warmup_s=1200.0,
    drift_readopt_s=3600.0,
    drift_readings=3,
    clock_readings=1,
    clock_tau_readings=4.0,
    warmup_readings=5,
    stuck_tau_s=900.0,
    spread_tau_s=600.0,
)
"""Short warm-ups and runs, so that every rule fires many times in a short stream."""


def _plain(value: Any) -> Any:
    """Return *value* with floats and times as exact strings, so that NaN equals NaN and time zones count."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _change_key(change: AlertChange) -> Any:
    return _plain(dataclasses.astuple(change))


def _state_json(state: Mapping[str, HealthState]) -> list[tuple[str, Any]]:
    """The state as stored, in its order."""
    return [(sid, _plain(state_to_json(s))) for sid, s in state.items()]


def _assert_same(ref: HealthDetection, new: HealthDetection) -> None:
    assert [_change_key(c) for c in new.changes] == [_change_key(c) for c in ref.changes]
    assert new.suspect == ref.suspect
    assert {(sid, ts.isoformat()) for sid, ts in new.suspect} == {(sid, ts.isoformat()) for sid, ts in ref.suspect}
    assert _state_json(new.state) == _state_json(ref.state)


def _columns(readings: Sequence[Reading]) -> ReadingBatch:
    """The readings as bare columns (no Reading objects behind them)."""
    return ReadingBatch(
        [r.sensor_id for r in readings],
        np.array([ts_to_us(r.ts) for r in readings], np.int64),
        np.array([r.value for r in readings], np.float64),
        np.array([r.quality for r in readings], np.int16),
    )


def _stored(state: Mapping[str, HealthState]) -> dict[str, HealthState]:
    """The state after a trip through the database: strict JSON text (jsonb takes no NaN or Infinity) and back.

    Every sensor's state must come back, non-finite values included (an infinite value of a sensor without a
    valid range makes its spread and means infinite, then NaN).
    """
    text = json.dumps({sid: state_to_json(s) for sid, s in state.items()}, allow_nan=False)
    return {sid: state_from_json(data) for sid, data in json.loads(text).items()}


def _run_both(
    batches: Sequence[tuple[datetime, list[Reading]]],
    sensors: Mapping[str, Sensor],
    rules: HealthRules,
    *,
    seed: int,
    redefine: Mapping[str, Sensor] | None = None,
) -> int:
    """Feed both detectors *batches*, with retries, restores and redefinitions drawn from *seed*; return changes."""
    rng = random.Random(seed)
    ref = ReferenceHealthDetector(sensors, rules=rules)
    new = SensorHealthDetector(sensors, rules=rules)
    seen = 0
    for step, (now, readings) in enumerate(batches):
        as_columns = rng.random() < 0.5
        given = _columns(readings) if as_columns else readings
        if rng.random() < 0.15:
            # Evaluated, then not committed (a failed write): nothing may change; a later batch may come first.
            _assert_same(ref.evaluate(readings, now=now), new.evaluate(given, now=now))
            if rng.random() < 0.5 and step + 1 < len(batches):
                later_now, later = batches[step + 1]
                _assert_same(ref.evaluate(later, now=later_now), new.evaluate(later, now=later_now))
        if rng.random() < 0.08:
            stored_ref, stored_new = _stored(ref.state), _stored(new.state)
            assert _state_json(stored_new) == _state_json(stored_ref)
            ref = ReferenceHealthDetector(sensors, stored_ref, rules=rules)
            new = SensorHealthDetector(sensors, stored_new, rules=rules)
        if redefine is not None and rng.random() < 0.05:
            sensors = redefine if sensors is not redefine else SENSORS
            ref.update_sensors(sensors)
            new.update_sensors(sensors)
        result_ref = ref.evaluate(readings, now=now)
        result_new = new.evaluate(given, now=now)
        _assert_same(result_ref, result_new)
        ref.commit(result_ref)
        new.commit(result_new)
        assert _state_json(new.state) == _state_json(ref.state)
        seen += len(result_ref.changes)
    return seen


def _stream(seed: int, batches: int, *, period_s: float = 60.0) -> list[tuple[datetime, list[Reading]]]:
    """Return a faulty stream: each sensor in and out of every fault, batches shuffled, received at ``now``."""
    rng = random.Random(seed)
    out: list[tuple[datetime, list[Reading]]] = []
    now = T0
    last: dict[str, Reading] = {}
    level = dict(BASE)
    mode = dict.fromkeys(IDS, "normal")
    ramp = dict.fromkeys(IDS, 0.0)
    modes = ("normal",) * 8 + ("stuck", "spike", "drift", "range", "bad", "silent", "ahead", "behind", "dup", "late")
    for b in range(batches):
        # Whole periods half the time, so that times fall exactly on the rules' limits too.
        jitter = rng.choice((0, rng.randrange(0, 5_000_000)))
        now += timedelta(seconds=period_s * rng.choice((1, 1, 1, 1, 0.5, 2)), microseconds=jitter)
        if rng.random() < 0.02:
            now += timedelta(minutes=rng.choice((10, 30, 90)))  # every sensor silent: dropouts all round
        readings: list[Reading] = []
        for sid in IDS:
            if rng.random() < 0.08:
                mode[sid] = rng.choice(modes)
                ramp[sid] = 0.0
            m = mode[sid]
            if m == "silent":
                continue
            count = rng.choice((1, 1, 1, 2, 3))
            for c in range(count):
                jitter = rng.choice((0, rng.randrange(10**6)))
                ts = now - timedelta(seconds=period_s * (count - 1 - c), microseconds=jitter)
                scale = NOISE[sid]
                level[sid] += rng.gauss(0.0, scale * 0.2)
                value = level[sid] + rng.gauss(0.0, scale) + 5 * scale * math.sin(b / 40)
                quality = 0 if rng.random() < 0.95 else 1
                if m == "stuck" and sid in last:
                    value = last[sid].value
                elif m == "spike" and rng.random() < 0.5:
                    value += rng.choice((-1, 1)) * scale * rng.choice((20, 60, 200))
                elif m == "drift":
                    ramp[sid] += scale * 3
                    value += ramp[sid]
                elif m == "range":
                    value = rng.choice((-5.0, 1e6, math.nan, -math.inf))
                elif m == "bad":
                    quality = 2
                elif m == "ahead":
                    ts += timedelta(seconds=rng.choice((90, 200, 400)))
                elif m == "behind":
                    ts -= timedelta(seconds=rng.choice((600, 620, 900)))
                elif m == "dup" and sid in last:
                    readings.append(last[sid])
                elif m == "late":
                    ts -= timedelta(seconds=rng.choice((30, 60, 3600)))
                if rng.random() < 0.01:
                    value = 0.0  # resting at the bound
                reading = Reading(sid, ts, value, quality)
                readings.append(reading)
                if rng.random() < 0.03:
                    readings.append(reading)  # a duplicate in the same batch
                last[sid] = reading
        rng.shuffle(readings)
        out.append((now, readings))
    return out


def test_seeded_streams_with_every_fault_give_the_same_decisions() -> None:
    redefined = dict(SENSORS)
    del redefined["L1"]
    redefined["P1"] = dataclasses.replace(SENSORS["P1"], valid_max=310.0, interval_s=20.0)
    redefined["X-UNKNOWN"] = Sensor("X-UNKNOWN", Network.GAS, Quantity.METHANE, "新", valid_min=0.0, valid_max=5.0)
    total = 0
    for seed in range(4):
        total += _run_both(_stream(seed, 900), SENSORS, QUICK, seed=seed, redefine=redefined)
    total += _run_both(_stream(11, 1500), SENSORS, HealthRules(), seed=11)
    assert total > 500  # the streams do exercise the rules


def test_the_fault_injected_city_day_gives_the_same_decisions() -> None:
    assert _run_both(demo_batches(), DEMO_SENSORS, HealthRules(), seed=5) > 0


def test_every_fault_is_raised_and_cleared_in_the_seeded_streams() -> None:
    det = SensorHealthDetector(SENSORS, rules=QUICK)
    events = set()
    for now, readings in _stream(2, 900):
        result = det.evaluate(readings, now=now)
        det.commit(result)
        events |= {(c.event, c.cause_key.rsplit(":", 1)[1]) for c in result.changes}
    faults = ("out_of_range", "stuck", "spike", "drift", "dropout", "clock_skew")
    assert events == {(e, f) for e in ("raised", "cleared") for f in faults}


_TIMES = st.integers(min_value=-900, max_value=900)
_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 5.0, 300.0, 300.5, 301.0, 8.0, 1000.0, -1.0, 1e6, math.nan, math.inf]),
    st.floats(min_value=-10.0, max_value=1100.0, allow_nan=False),
)
_READING = st.tuples(st.sampled_from(IDS), _TIMES, _VALUES, st.sampled_from((0, 0, 0, 1, 2)))
_BATCH = st.tuples(
    st.integers(min_value=0, max_value=1200),  # seconds since the previous batch
    st.lists(_READING, max_size=12),
)
_RULES = st.builds(
    HealthRules,
    stuck_readings=st.integers(1, 6),
    stuck_tolerance=st.sampled_from((0.0, 0.1)),
    spike_k=st.sampled_from((2.0, 8.0)),
    spike_max_readings=st.integers(0, 4),
    spike_hold_s=st.sampled_from((0.0, 60.0, 300.0)),
    drift_fast_tau_s=st.sampled_from((120.0, 600.0)),
    drift_slow_tau_s=st.sampled_from((600.0, 3600.0)),
    drift_warmup_s=st.sampled_from((0.0, 300.0)),
    drift_readopt_s=st.sampled_from((300.0, 3600.0)),
    drift_readings=st.integers(1, 3),
    drift_quantities=st.sampled_from((frozenset({Quantity.PRESSURE}), frozenset(Quantity))),
    dropout_intervals=st.sampled_from((1.0, 2.5, 5.0)),
    clock_readings=st.integers(1, 3),
    clock_tau_readings=st.sampled_from((1.0, 2.5, 4.0)),
    warmup_readings=st.integers(0, 5),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(_BATCH, min_size=1, max_size=30), rules=_RULES, seed=st.integers(0, 2**16))
def test_any_stream_gives_the_same_decisions(
    batches: list[tuple[int, list[tuple[str, int, float, int]]]], rules: HealthRules, seed: int
) -> None:
    now = T0
    stream: list[tuple[datetime, list[Reading]]] = []
    for gap, items in batches:
        now += timedelta(seconds=gap)
        stream.append((now, [Reading(sid, now + timedelta(seconds=dt), v, q) for sid, dt, v, q in items]))
    _run_both(stream, SENSORS, rules, seed=seed)


def test_state_of_sensors_unknown_now_is_kept_and_judged_again_once_known() -> None:
    t = T0
    start = {
        "P1": HealthState(last_ts=t, arrived=t, last_value=300.0, trusted=40, active=frozenset({"spike"}), spike_ts=t),
        "GONE": HealthState(last_ts=t, arrived=t, last_value=1.0, trusted=3),
    }
    ref = ReferenceHealthDetector(SENSORS, dict(start), rules=QUICK)
    new = SensorHealthDetector(SENSORS, dict(start), rules=QUICK)
    for k in range(1, 30):
        now = t + k * timedelta(minutes=1)
        readings = [Reading("GONE", now, 2.0, 0), Reading("L1", now, 0.5 + 0.01 * (k % 3), 0)]
        if k == 15:
            extended = {**SENSORS, "GONE": Sensor("GONE", Network.DRAINAGE, Quantity.LEVEL, "回", valid_max=3.0)}
            ref.update_sensors(extended)
            new.update_sensors(extended)
        a, b = ref.evaluate(readings, now=now), new.evaluate(readings, now=now)
        _assert_same(a, b)
        ref.commit(a)
        new.commit(b)
    assert list(new.state) == ["P1", "GONE", "L1"]


def test_an_excursion_longer_than_the_table_widens_it() -> None:
    # A state stored under other rules: an excursion far longer than spike_max_readings allows now.
    start = {
        "P1": HealthState(
            last_ts=T0,
            arrived=T0,
            last_value=300.0,
            trusted=100,
            spread=0.3,
            excursion=-6,
            excursion_base=300.0,
            excursion_jump=50.0,
            excursion_ts=(T0 - timedelta(minutes=2), T0 - timedelta(minutes=1), T0),
        )
    }
    rules = HealthRules(spike_max_readings=1)
    ref = ReferenceHealthDetector(SENSORS, dict(start), rules=rules)
    new = SensorHealthDetector(SENSORS, dict(start), rules=rules)
    for k in range(1, 12):
        now = T0 + k * timedelta(minutes=1)
        readings = [Reading("P1", now, 350.0 + k * 0.01, 0)] if k < 10 else [Reading("P1", now, 300.0, 0)]
        a, b = ref.evaluate(readings, now=now), new.evaluate(readings, now=now)
        _assert_same(a, b)
        ref.commit(a)
        new.commit(b)
    assert new._x.shape[1] > 7  # widened to hold the 3 stored times and the 7 appended


def test_a_plain_mapping_committed_replaces_the_state() -> None:
    new = SensorHealthDetector(SENSORS)
    new.commit(HealthDetection([], set(), {"P1": HealthState(trusted=7)}))
    assert {sid: s.trusted for sid, s in new.state.items()} == {"P1": 7}


@pytest.mark.skipif(kern.AOT is not None, reason="compiled ahead of time for one signature (JIT: LIFELINE_KERNELS=jit)")
def test_the_kernel_is_compiled_once_for_the_types_the_detector_uses() -> None:
    det = SensorHealthDetector(SENSORS)
    for now, readings in _stream(3, 50):
        det.commit(det.evaluate(_columns(readings), now=now))
        det.commit(det.evaluate(readings, now=now))
    det.commit(det.evaluate([], now=T0 + timedelta(days=1)))
    dispatcher: Any = kern.run_batch
    assert len(dispatcher.signatures) == 1


_FLOAT_FIELDS = [name for name in HealthState.__slots__ if isinstance(getattr(HealthState(), name), float)]


def test_a_state_with_non_finite_values_round_trips_exactly_through_strict_json() -> None:
    for value in (math.inf, -math.inf, math.nan):
        state = HealthState(last_ts=T0, arrived=T0, trusted=7)
        for name in _FLOAT_FIELDS:
            setattr(state, name, value)
        data = json.loads(json.dumps(state_to_json(state), allow_nan=False))
        assert _plain(state_to_json(state_from_json(data))) == _plain(state_to_json(state))
        assert all(repr(getattr(state_from_json(data), name)) == repr(value) for name in _FLOAT_FIELDS)


def test_a_sensor_fed_an_infinite_value_continues_after_a_restart_as_without_one() -> None:
    # U1 has no valid range: an infinite flow is trusted and makes its spread and means infinite, then NaN.
    values = [-40.0, -41.0, -40.5, math.inf, -40.0, -39.0, math.inf, -math.inf, -40.2, -40.4, -39.8]
    batches = [
        (T0 + k * timedelta(seconds=10), [Reading("U1", T0 + k * timedelta(seconds=10), v, 0)])
        for k, v in enumerate(values)
    ]
    straight = SensorHealthDetector(SENSORS, rules=QUICK)
    for now, readings in batches:
        straight.commit(straight.evaluate(readings, now=now))
    for cut in range(1, len(batches)):
        ref = ReferenceHealthDetector(SENSORS, rules=QUICK)
        new = SensorHealthDetector(SENSORS, rules=QUICK)
        for k, (now, readings) in enumerate(batches):
            if k == cut:
                assert "U1" in _stored(new.state)
                ref = ReferenceHealthDetector(SENSORS, _stored(ref.state), rules=QUICK)
                new = SensorHealthDetector(SENSORS, _stored(new.state), rules=QUICK)
            a, b = ref.evaluate(readings, now=now), new.evaluate(readings, now=now)
            _assert_same(a, b)
            ref.commit(a)
            new.commit(b)
        assert _state_json(new.state) == _state_json(straight.state)
    assert not math.isfinite(straight.state["U1"].spread)


def test_an_old_state_with_null_for_a_non_finite_value_is_read_as_nan() -> None:
    old = state_to_json(HealthState(last_ts=T0, arrived=T0, last_value=3.0, trusted=7, spread=0.5, fast=3.0))
    old.update(last_value=None, spread=None, fast=None)  # as the writer before non-finite values were named
    state = state_from_json(json.loads(json.dumps(old)))
    assert math.isnan(state.last_value) and math.isnan(state.spread) and math.isnan(state.fast)
    assert (state.trusted, state.slow) == (7, 0.0)
