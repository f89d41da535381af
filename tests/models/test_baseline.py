"""The per-sensor baseline: quiet on normal days, lasting departures raised and cleared, state kept over a restart."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np

from models.baseline import BaselineDetector
from models.chain import DetectorChain
from twin.demo import demo_sensors
from twin.readings import Reading, ReadingBatch
from twin.sensors import Network, Quantity, Sensor

SENSORS = {s.sensor_id: s for s in demo_sensors()}
PRESSURE = [sid for sid, s in SENSORS.items() if sid.startswith("W-P-")]
START = datetime(2026, 3, 1, 16, tzinfo=UTC)  # local midnight (UTC+8), a Sunday night


def _pressure(minutes: np.ndarray, sensor: int, rng: np.random.Generator) -> np.ndarray:
    """A day-shaped pressure (kPa): high at night, low at the morning and evening peaks, with noise σ 0.8 kPa."""
    hour = (minutes / 60.0) % 24
    daily = 320 + 25 * np.cos(2 * math.pi * (hour - 3) / 24) - 12 * np.exp(-((hour - 19) ** 2) / 2)
    out: np.ndarray = daily + 4 * sensor + rng.normal(0.0, 0.8, minutes.shape)
    return out


def _days(days: int, *, seed: int, offset: tuple[float, float, float] | None = None) -> list[list[Reading]]:
    """Batches of 5 minutes of the five pressure sensors' readings; *offset* = (start min, end min, kPa) on W-P-002."""
    rng = np.random.default_rng(seed)
    minutes = np.arange(days * 1440, dtype=float)
    values = {sid: _pressure(minutes, k, rng) for k, sid in enumerate(PRESSURE)}
    if offset is not None:
        a, b, kpa = offset
        values["W-P-002"][int(a) : int(b)] -= kpa
    batches = []
    for start in range(0, len(minutes), 5):
        batch = [
            Reading(sid, START + timedelta(minutes=m), float(values[sid][m]), 0)
            for m in range(start, start + 5)
            for sid in PRESSURE
        ]
        batches.append(batch)
    return batches


def _run(det: BaselineDetector, batches: list[list[Reading]]) -> list[tuple[str, str, datetime]]:
    out: list[tuple[str, str, datetime]] = []
    for batch in batches:
        result = det.evaluate(batch, now=batch[-1].ts, suspect=frozenset())
        det.commit(result)
        out.extend((c.event, c.cause_key, c.ts) for c in result.changes)
    return out


def test_normal_days_raise_nothing() -> None:
    det = BaselineDetector(SENSORS)
    assert _run(det, _days(7, seed=1)) == []
    score = det.score("W-P-001")
    assert score is not None and abs(score) < 2.0


def test_lasting_drop_is_raised_within_half_an_hour_and_cleared_when_it_ends() -> None:
    day5 = 5 * 1440
    start, end = day5 + 10 * 60, day5 + 14 * 60  # 10:00–14:00 local on day 6
    changes = _run(BaselineDetector(SENSORS), _days(7, seed=2, offset=(start, end, 15.0)))
    assert [(e, k) for e, k, _ in changes] == [("raised", "anomaly:W-P-002"), ("cleared", "anomaly:W-P-002")]
    raised_after = (changes[0][2] - (START + timedelta(minutes=start))).total_seconds() / 60
    cleared_after = (changes[1][2] - (START + timedelta(minutes=end))).total_seconds() / 60
    assert 0 <= raised_after <= 30
    assert 0 <= cleared_after <= 40


def test_no_judgement_before_warm_up() -> None:
    # A drop on the second day is not judged: the bins have seen one day only.
    changes = _run(BaselineDetector(SENSORS), _days(2, seed=3, offset=(1440 + 600, 1440 + 840, 40.0)))
    assert changes == []


def test_state_round_trips_through_json_and_resumes_identically() -> None:
    batches = _days(6, seed=4, offset=(5 * 1440 + 600, 5 * 1440 + 700, 15.0))
    cut = 5 * 288 + 110  # batch index inside the drop
    straight = BaselineDetector(SENSORS)
    expected = _run(straight, batches)
    first = BaselineDetector(SENSORS)
    got = _run(first, batches[:cut])
    stored = json.loads(json.dumps(first.dump_state()))
    second = BaselineDetector(SENSORS)
    second.load_state(stored)
    got += _run(second, batches[cut:])
    assert expected and got == expected
    assert second.dump_state() == straight.dump_state()


def test_suspect_readings_are_not_learned_or_judged() -> None:
    batches = _days(5, seed=5, offset=(4 * 1440 + 600, 4 * 1440 + 720, 30.0))
    det = BaselineDetector(SENSORS)
    changes = []
    for batch in batches:
        suspect = frozenset((r.sensor_id, r.ts) for r in batch if r.sensor_id == "W-P-002")
        result = det.evaluate(batch, now=batch[-1].ts, suspect=suspect)
        det.commit(result)
        changes.extend(result.changes)
    assert changes == []
    assert det.score("W-P-002") is None


def test_chain_passes_sensor_health_suspects_on_and_keeps_state() -> None:
    chain = DetectorChain.default(SENSORS)
    assert [d.name for d in chain.detectors] == ["sensor_health", "threshold", "anomaly"]
    t0 = START
    # W-P-001 reads 2,000 kPa: outside its valid range, a health alert and not a threshold or behaviour one.
    batch = [Reading("W-P-001", t0, 2000.0, 2), Reading("W-P-003", t0, 330.0, 0)]
    result = chain.evaluate(batch, now=t0)
    assert [c.cause_key for c in result.changes] == ["health:W-P-001:out_of_range"]
    assert ("W-P-001", t0) in result.suspect
    chain.commit(result)
    states = json.loads(json.dumps(chain.dump_states()))
    assert set(states) == {"sensor_health", "anomaly"}
    fresh = DetectorChain.default(SENSORS)
    assert fresh.load_states(states) == ["sensor_health", "anomaly"]
    assert fresh.dump_states() == chain.dump_states()
    assert fresh.load_states({"sensor_health": {"sensors": {"W-P-001": {"last_ts": "not a time"}}}}) == [
        "sensor_health"
    ]


def test_columns_give_what_readings_give() -> None:
    batches = _days(6, seed=6, offset=(5 * 1440 + 600, 5 * 1440 + 720, 15.0))
    by_rows, by_columns = BaselineDetector(SENSORS), BaselineDetector(SENSORS)
    changes = 0
    for k, batch in enumerate(batches):
        if k % 7 == 0:
            batch = batch + batch[:3]  # duplicates
        columns = ReadingBatch.from_readings(batch)
        suspect = frozenset((r.sensor_id, r.ts) for r in batch[:2]) if k % 5 == 0 else frozenset()
        rows_result = by_rows.evaluate(batch, now=batch[-1].ts, suspect=suspect)
        columns_result = by_columns.evaluate(columns, now=batch[-1].ts, suspect=suspect)
        assert columns_result.changes == rows_result.changes
        by_rows.commit(rows_result)
        by_columns.commit(columns_result)
        changes += len(rows_result.changes)
    assert changes == 2  # the drop is raised and cleared
    assert by_columns.dump_state() == by_rows.dump_state()


def test_state_made_non_finite_by_an_infinite_value_is_strict_json_and_resumes_identically() -> None:
    # A flow meter without a valid range: an infinite reading is trusted by sensor health and makes its bin NaN.
    # Written as a bare NaN token, PostgreSQL refused the whole document (and every detector's state with it).
    sensors = {"U1": Sensor("U1", Network.DRAINAGE, Quantity.FLOW, "流量1")}
    batches = [
        [Reading("U1", START + timedelta(minutes=m), math.inf if m == 5 else -40.0 + m % 3, 0)] for m in range(20)
    ]
    straight = BaselineDetector(sensors)
    expected = _run(straight, batches)
    first = BaselineDetector(sensors)
    got = _run(first, batches[:10])
    text = json.dumps(first.dump_state(), allow_nan=False)
    assert '"NaN"' in text
    second = BaselineDetector(sensors)
    second.load_state(json.loads(text))
    assert second.dump_state() == first.dump_state()
    got += _run(second, batches[10:])
    assert got == expected
    assert second.dump_state() == straight.dump_state()
