"""The demo's synthetic stream: every demo sensor reports each tick, and a short storm crosses the limits.

A cycle of :data:`CYCLE_TICKS` ticks: rain builds to a downpour, the underpass level at D-L-001 rises through
every grade and drains again, methane builds in a utility tunnel (G-M-001), and pressure sags at the network's
far end (W-P-004). Deterministic for a given seed. This is a stand-in for the scenario simulators; it only shows
the whole path working.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.sensors import Quantity, Sensor

log = logging.getLogger(__name__)

CYCLE_TICKS = 90

_BASELINE = {
    Quantity.LEVEL: 0.35,
    Quantity.PRESSURE: 300.0,
    Quantity.FLOW: 60.0,
    Quantity.METHANE: 1.0,
    Quantity.RAIN_RATE: 0.0,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes


def _storm(tick: int) -> float:
    """Rain intensity at *tick* of the cycle, mm/h: a peak of ~65 mm/h at tick 25."""
    phase = tick % CYCLE_TICKS
    return 65.0 * math.exp(-(((phase - 25) / 8.0) ** 2)) if phase < 60 else 0.0


def value_at(sensor: Sensor, tick: int, rng: random.Random) -> float:
    """Return the demo value of *sensor* at *tick* (canonical unit)."""
    phase = tick % CYCLE_TICKS
    rain = _storm(tick)
    noise = rng.gauss(0.0, 1.0)
    if sensor.quantity is Quantity.RAIN_RATE:
        return max(0.0, rain * (1.0 if sensor.sensor_id.endswith("1") else 0.8) + 0.3 * noise)
    if sensor.quantity is Quantity.LEVEL:
        lagged = _storm(tick - 6)
        gain = 0.036 if sensor.sensor_id == "D-L-001" else 0.012
        return max(0.0, 0.35 + gain * lagged + 0.01 * noise)
    if sensor.quantity is Quantity.METHANE:
        if sensor.sensor_id == "G-M-001" and 30 <= phase < 60:
            return max(0.0, 1.0 + 55.0 * math.sin(math.pi * (phase - 30) / 30.0) + 0.5 * noise)
        return max(0.0, 1.0 + 0.3 * noise)
    if sensor.quantity is Quantity.PRESSURE:
        base = 3.0 if sensor.network.value == "gas" else 300.0
        if sensor.sensor_id == "W-P-004" and 60 <= phase < 80:
            return base - 140.0 * math.sin(math.pi * (phase - 60) / 20.0) + 2.0 * noise
        return base + (0.02 if base < 10 else 3.0) * noise
    if sensor.quantity is Quantity.FLOW:
        return max(0.0, 60.0 + 20.0 * math.sin(2 * math.pi * phase / CYCLE_TICKS) + 2.0 * noise)
    return _BASELINE[sensor.quantity]


def demo_messages(
    sensors: Sequence[Sensor], *, tick: int, ts: datetime, seq: int, prefix: str, rng: random.Random
) -> list[Message]:
    """Return one message per sensor for *tick*, stamped *ts*."""
    out = []
    stamp = ts.isoformat(timespec="milliseconds")
    for sensor in sensors:
        value = round(value_at(sensor, tick, rng), 4)
        body = {"ts": stamp, "value": value, "unit": sensor.unit, "seq": seq}
        out.append(Message(f"{prefix}/{sensor.network.value}/{sensor.sensor_id}", orjson.dumps(body)))
    return out


def ticks(start: int = 0) -> Iterator[int]:
    """Count ticks forever from *start*."""
    tick = start
    while True:
        yield tick
        tick += 1


def run_demo_stream(
    *,
    sensors: Sequence[Sensor],
    mqtt_config: MqttConfig,
    prefix: str,
    interval_s: float,
    stop: threading.Event,
    seed: int = 7,
    count: int | None = None,
    start_tick: int = 0,
) -> int:
    """Publish a tick every *interval_s* seconds (timestamps: now) until *stop* is set or *count* ticks are sent.

    Returns:
        The number of messages published.
    """
    rng = random.Random(seed)
    published = 0
    with Publisher(mqtt_config, client_id=f"lifeline-demo-stream-{seed}") as pub:
        tick = start_tick
        while not stop.is_set() and (count is None or tick - start_tick < count):
            for msg in demo_messages(sensors, tick=tick, ts=datetime.now(UTC), seq=tick, prefix=prefix, rng=rng):
                pub.publish(msg.topic, msg.payload)
                published += 1
            pub.flush()
            tick += 1
            if (tick - start_tick) % 30 == 0:
                log.info("demo stream: %d ticks, %d messages", tick, published)
            stop.wait(interval_s)
    return published
