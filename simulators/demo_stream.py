"""The demo's synthetic stream: every demo sensor reports each tick, and a short storm crosses the limits.

A cycle of :data:`CYCLE_TICKS` ticks: rain builds to a downpour, the levels at low points and underpasses rise
through every grade and drain again, methane builds in one underground space, and pressure sags at one water
junction. Values follow each sensor's own limits, so any sensor set works. Deterministic for a given seed.
This is a stand-in for the scenario simulators; it only shows the whole path working.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.sensors import Direction, Grade, Network, Quantity, Sensor

log = logging.getLogger(__name__)

CYCLE_TICKS = 90


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message to publish."""

    topic: str
    payload: bytes


def _storm(tick: int) -> float:
    """Rain intensity at *tick* of the cycle, mm/h: a peak of ~65 mm/h at tick 25."""
    phase = tick % CYCLE_TICKS
    return 65.0 * math.exp(-(((phase - 25) / 8.0) ** 2)) if phase < 60 else 0.0


def _limit(sensor: Sensor, direction: Direction, grade: Grade) -> float | None:
    return next((lim.threshold for lim in sensor.limits if lim.direction is direction and lim.grade is grade), None)


def _hot(sensors: Sequence[Sensor]) -> frozenset[str]:
    """The sensors the demo storm hits hard: low points and underpasses first, one gas space, one far junction."""
    levels = [s for s in sensors if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL]
    low = [s for s in levels if any(word in s.name for word in ("低洼", "下穿", "积水"))] or levels[:1]
    methane = [s for s in sensors if s.quantity is Quantity.METHANE][:1]
    water = [s for s in sensors if s.network is Network.WATER and s.quantity is Quantity.PRESSURE]
    return frozenset(s.sensor_id for s in (*low[:3], *methane, *water[-1:]))


class DemoStream:
    """Values for every sensor at every tick, driven by each sensor's own limits, deterministic for a seed.

    Example:
        >>> stream = DemoStream(demo_sensors(), seed=7)                                        # doctest: +SKIP
        >>> msgs = stream.messages(tick=25, ts=datetime.now(UTC), prefix="lifeline/v1")        # doctest: +SKIP
    """

    def __init__(self, sensors: Sequence[Sensor], *, seed: int = 7) -> None:
        self.sensors = list(sensors)
        self.hot = _hot(self.sensors)
        self._rng = random.Random(seed)

    def value(self, sensor: Sensor, tick: int) -> float:
        """Return the demo value of *sensor* at *tick* (canonical unit)."""
        phase = tick % CYCLE_TICKS
        noise = self._rng.gauss(0.0, 1.0)
        hot = sensor.sensor_id in self.hot
        if sensor.quantity is Quantity.RAIN_RATE:
            return max(0.0, _storm(tick) * (0.8 + 0.2 * (zlib.crc32(sensor.sensor_id.encode()) % 2)) + 0.3 * noise)
        if sensor.quantity is Quantity.LEVEL and sensor.network is Network.DRAINAGE:
            first = _limit(sensor, Direction.HIGH, Grade.IV) or 1.0
            worst = _limit(sensor, Direction.HIGH, Grade.I) or 2.0 * first
            base = 0.3 * first
            peak = 1.08 * worst if hot else 0.7 * first
            return max(0.0, base + (peak - base) * _storm(tick - 6) / 65.0 + 0.01 * first * noise)
        if sensor.quantity is Quantity.LEVEL:  # a tank: slow daily swing
            top = sensor.valid_max if math.isfinite(sensor.valid_max) else 5.0
            return max(0.0, top * (0.65 + 0.1 * math.sin(2 * math.pi * phase / CYCLE_TICKS)) + 0.01 * noise)
        if sensor.quantity is Quantity.METHANE:
            if hot and 30 <= phase < 60:
                return max(0.0, 1.0 + 55.0 * math.sin(math.pi * (phase - 30) / 30.0) + 0.5 * noise)
            return max(0.0, 1.0 + 0.3 * noise)
        if sensor.quantity is Quantity.PRESSURE:
            low = _limit(sensor, Direction.LOW, Grade.IV)
            if low is None:
                base = 3.0 if sensor.network is Network.GAS else 300.0
            else:
                base = low * (1.5 if sensor.network is Network.WATER else 1.35)
            if hot and 60 <= phase < 80:
                second = _limit(sensor, Direction.LOW, Grade.II) or 0.5 * base
                return base - (base - 0.9 * second) * math.sin(math.pi * (phase - 60) / 20.0) + 0.01 * base * noise
            return base + 0.01 * base * noise
        if sensor.quantity is Quantity.FLOW:
            if sensor.network is Network.DRAINAGE:
                return max(0.0, 20.0 + 900.0 * _storm(tick - 4) / 65.0 + 2.0 * noise)
            return max(0.0, 60.0 + 20.0 * math.sin(2 * math.pi * phase / CYCLE_TICKS) + 2.0 * noise)
        return 0.0

    def messages(self, *, tick: int, ts: datetime, prefix: str, seq: int | None = None) -> list[Message]:
        """Return one message per sensor for *tick*, stamped *ts*."""
        stamp = ts.isoformat(timespec="milliseconds")
        out = []
        for sensor in self.sensors:
            body = {
                "ts": stamp,
                "value": round(self.value(sensor, tick), 4),
                "unit": sensor.unit,
                "seq": tick if seq is None else seq,
            }
            out.append(Message(f"{prefix}/{sensor.network.value}/{sensor.sensor_id}", orjson.dumps(body)))
        return out


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
    stream = DemoStream(sensors, seed=seed)
    published = 0
    with Publisher(mqtt_config, client_id=f"lifeline-demo-stream-{seed}") as pub:
        tick = start_tick
        while not stop.is_set() and (count is None or tick - start_tick < count):
            for msg in stream.messages(tick=tick, ts=datetime.now(UTC), prefix=prefix):
                pub.publish(msg.topic, msg.payload)
                published += 1
            pub.flush()
            tick += 1
            if (tick - start_tick) % 30 == 0:
                log.info("demo stream: %d ticks, %d messages", tick, published)
            stop.wait(interval_s)
    return published
