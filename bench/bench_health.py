"""Sensor health detector speed: 1,000 sensors × 1 hour at 1-minute resolution, one batch per minute.

Half the sensors are water pressures (all rules, drift included), half sewer levels (no drift); values are a slow
wave with noise. Readings are built before timing; the time covers ``evaluate`` and ``commit`` of every batch.

    python bench/bench_health.py            # median of 3 runs
    python bench/bench_health.py --runs 1 --sensors 5000
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from models.sensor_health import SensorHealthDetector
from twin.readings import Reading
from twin.sensors import Network, Quantity, Sensor

START = datetime(2026, 6, 1, tzinfo=UTC)


def make_sensors(count: int) -> dict[str, Sensor]:
    """Return *count* 1-minute sensors by id, half pressures and half levels."""
    sensors: dict[str, Sensor] = {}
    for i in range(count):
        if i % 2:
            sensor = Sensor(f"P{i:05d}", Network.WATER, Quantity.PRESSURE, f"P{i}", valid_min=0.0, valid_max=1000.0)
        else:
            sensor = Sensor(f"L{i:05d}", Network.DRAINAGE, Quantity.LEVEL, f"L{i}", valid_min=0.0, valid_max=8.0)
        sensors[sensor.sensor_id] = sensor
    return sensors


def make_batches(sensors: dict[str, Sensor], minutes: int, seed: int = 1) -> list[tuple[datetime, list[Reading]]]:
    """Return one batch of readings per minute (every sensor once), with the time it is received."""
    rng = random.Random(seed)
    batches = []
    for k in range(minutes):
        ts = START + timedelta(minutes=k)
        wave = math.sin(2 * math.pi * k / 1440)
        readings = [
            Reading(sid, ts, (300.0 + 10 * wave + rng.gauss(0, 0.3)) if sid[0] == "P" else 0.3 + rng.gauss(0, 0.003), 0)
            for sid in sensors
        ]
        batches.append((ts + timedelta(seconds=1), readings))
    return batches


def measure(sensors: dict[str, Sensor], batches: list[tuple[datetime, list[Reading]]]) -> float:
    """Return the wall time of evaluating and committing every batch with a fresh detector, seconds."""
    det = SensorHealthDetector(sensors)
    began = time.perf_counter()
    for now, readings in batches:
        det.commit(det.evaluate(readings, now=now))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    sensors = make_sensors(args.sensors)
    batches = make_batches(sensors, args.minutes)
    total = sum(len(b) for _, b in batches)
    seconds = statistics.median(measure(sensors, batches) for _ in range(args.runs))
    print(
        f"{args.sensors} sensors × {args.minutes} min = {total:,} readings: {seconds:.3f} s, "
        f"{total / seconds:,.0f} readings/s (median of {args.runs})"
    )


if __name__ == "__main__":
    main()
