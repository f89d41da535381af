"""The demo stream: deterministic, and its storm crosses the limits of the sensors it hits, then passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from models.thresholds import ThresholdDetector
from simulators.demo_stream import CYCLE_TICKS, DemoStream
from twin.demo import demo_sensors
from twin.readings import Reading
from twin.sensors import SensorRegistry

T0 = datetime(2026, 11, 25, tzinfo=UTC)


def test_same_seed_gives_the_same_messages() -> None:
    a = DemoStream(demo_sensors(), seed=3).messages(tick=20, ts=T0, prefix="p")
    b = DemoStream(demo_sensors(), seed=3).messages(tick=20, ts=T0, prefix="p")
    assert a == b and len(a) == 21
    assert orjson.loads(a[0].payload)["ts"] == "2026-11-25T00:00:00.000+00:00"


def test_a_cycle_alarms_every_hot_sensor_and_clears_them_all() -> None:
    sensors = demo_sensors()
    stream = DemoStream(sensors, seed=7)
    detector = ThresholdDetector(SensorRegistry(sensors))
    last_event: dict[str, str] = {}
    worst: dict[str, int] = {}
    for tick in range(CYCLE_TICKS):
        ts = T0 + timedelta(minutes=tick)
        result = detector.evaluate([Reading(s.sensor_id, ts, stream.value(s, tick), 0) for s in sensors])
        detector.commit(result)
        for change in result.changes:
            last_event[change.cause_key] = change.event
            if change.event != "cleared":
                worst[change.sensor_id or ""] = min(worst.get(change.sensor_id or "", 4), change.grade)
    assert stream.hot >= {"D-L-001", "G-M-001", "W-P-005"}
    assert all(sid in worst for sid in stream.hot), worst
    assert worst["D-L-001"] == 1 and worst["G-M-001"] <= 2 and worst["W-P-005"] <= 2
    assert set(last_event.values()) == {"cleared"}
