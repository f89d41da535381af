"""The threshold detector: grades, escalation, hysteresis, duplicates and restart state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from models.thresholds import ThresholdDetector, state_from_active
from twin.demo import demo_sensors
from twin.readings import Reading, ReadingBatch
from twin.sensors import SensorRegistry

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
SENSORS = SensorRegistry(demo_sensors())


def _levels(*values: float, sensor: str = "D-L-001", start: int = 0) -> list[Reading]:
    return [Reading(sensor, T0 + timedelta(minutes=start + i), v, 0) for i, v in enumerate(values)]


def _run(det: ThresholdDetector, readings: list[Reading]) -> list[tuple[str, int]]:
    result = det.evaluate(readings)
    det.commit(result)
    return [(c.event, c.grade) for c in result.changes]


def test_rising_level_raises_then_escalates_then_clears() -> None:
    det = ThresholdDetector(SENSORS)
    # limits for D-L-001: IV 0.8, III 1.2, II 1.6, I 2.0 m
    assert _run(det, _levels(0.3, 0.85, 0.9, 1.3, 2.1, 1.0, 0.5)) == [
        ("raised", 4),
        ("updated", 3),
        ("updated", 1),
        ("updated", 4),
        ("cleared", 4),
    ]


def test_value_hovering_at_a_limit_does_not_flap() -> None:
    det = ThresholdDetector(SENSORS)
    assert _run(det, _levels(0.81, 0.79, 0.80, 0.795, 0.81)) == [("raised", 4)]


def test_low_limits_grade_falling_pressure() -> None:
    det = ThresholdDetector(SENSORS)
    readings = _levels(300.0, 210.0, 90.0, sensor="W-P-003")
    changes = det.evaluate(readings).changes
    assert [(c.event, c.grade, c.cause_key) for c in changes] == [
        ("raised", 4, "threshold:W-P-003:low"),
        ("updated", 1, "threshold:W-P-003:low"),
    ]
    assert "低于" in changes[0].message and "below" in changes[0].message_en


def test_evaluate_does_not_change_state_until_commit() -> None:
    det = ThresholdDetector(SENSORS)
    first = det.evaluate(_levels(1.0))
    again = det.evaluate(_levels(1.0))
    assert [c.event for c in first.changes] == [c.event for c in again.changes] == ["raised"]


def test_duplicates_late_and_bad_readings_change_nothing() -> None:
    det = ThresholdDetector(SENSORS)
    assert _run(det, _levels(0.3, start=10)) == []
    assert _run(det, _levels(5.0, start=5)) == []  # older than what was seen
    assert _run(det, _levels(0.3, start=10)) == []  # the same again
    bad = [Reading("D-L-001", T0 + timedelta(minutes=20), 5.0, 2)]
    assert _run(det, bad) == []


def test_state_restored_from_active_alerts_does_not_raise_twice() -> None:
    state = state_from_active([{"cause_key": "threshold:D-L-001:high", "grade": 3}], {"D-L-001": T0})
    det = ThresholdDetector(SENSORS, state)
    assert _run(det, _levels(1.3, start=1)) == []
    assert _run(det, _levels(0.2, start=2)) == [("cleared", 3)]


def _random_batches(seed: int) -> list[list[Reading]]:
    """Batches of readings around the limits of a few sensors, with bad quality, unknown sensors, duplicates
    and late readings."""
    rng = random.Random(seed)
    sensors = ["D-L-001", "D-L-002", "W-P-001", "G-M-001", "nope"]
    scale = {"D-L-001": 2.2, "D-L-002": 2.2, "W-P-001": 400.0, "G-M-001": 40.0, "nope": 1.0}
    batches: list[list[Reading]] = []
    clock = 0
    for _ in range(40):
        batch: list[Reading] = []
        for _ in range(rng.randint(0, 30)):
            sid = rng.choice(sensors)
            clock += rng.randint(0, 2)
            minute = clock - (rng.randint(1, 20) if rng.random() < 0.1 else 0)
            calm = rng.random() < 0.7
            value = scale[sid] * (rng.uniform(0.3, 0.5) if calm else rng.uniform(0.0, 1.0))
            batch.append(Reading(sid, T0 + timedelta(minutes=minute), value, 2 if rng.random() < 0.05 else 0))
        if batch and rng.random() < 0.2:
            batch.append(rng.choice(batch))
        batches.append(batch)
    return batches


def test_columns_give_what_readings_give() -> None:
    changed = 0
    for seed in range(30):
        by_rows, by_columns = ThresholdDetector(SENSORS), ThresholdDetector(SENSORS)
        for batch in _random_batches(seed):
            rows, columns = by_rows.evaluate(batch), by_columns.evaluate(ReadingBatch.from_readings(batch))
            assert columns.changes == rows.changes, seed
            assert columns.state == rows.state, seed
            by_rows.commit(rows)
            by_columns.commit(columns)
            changed += len(rows.changes)
    assert changed > 100  # the streams do cross the limits


def test_columns_change_nothing_until_commit_and_sensors_added_later_are_judged() -> None:
    """The column path keeps the detector as it was until commit; a sensor the registry gains later is judged
    once the detector is given the new definitions; readings of sensors it does not know change nothing."""
    known = {sid: s for sid, s in SENSORS.items() if sid != "D-L-002"}
    det = ThresholdDetector(known)
    calm = ReadingBatch.from_readings(_levels(0.3, 0.4) + _levels(0.3, sensor="nope"))
    first = det.evaluate(calm)
    again = det.evaluate(calm)
    assert first.changes == again.changes == [] and first.state == again.state
    bad = ReadingBatch.from_readings([Reading("D-L-001", T0, 5.0, 2)])
    assert set(first.state) == {"D-L-001"} and det.evaluate(bad).state == {}  # nothing committed yet
    det.commit(first)
    high = ReadingBatch.from_readings(_levels(0.9, start=5) + _levels(0.9, sensor="D-L-002", start=5))
    assert [(c.sensor_id, c.event) for c in det.evaluate(high).changes] == [("D-L-001", "raised")]
    det.update_sensors(SENSORS)
    result = det.evaluate(high)
    assert [(c.sensor_id, c.event) for c in result.changes] == [("D-L-001", "raised"), ("D-L-002", "raised")]
    det.commit(result)
    assert det.evaluate(ReadingBatch.from_readings(_levels(0.95, start=6))).changes == []  # still raised: no change
