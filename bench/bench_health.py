"""Sensor health detector speed: the compiled detector against the Python reference, µs a reading.

Half the sensors are water pressures (all rules, drift included), half sewer levels (no drift); values are a slow
wave with noise. Three batch shapes:

* ``minute``: 1,000 sensors × 1 hour at 1-minute resolution, one batch a minute (1,000 readings);
* ``5000``: batches of 5,000 readings, 50 consecutive readings of each of 100 sensors: sensors sampling every
  second, received live (one batch every 50 s); and 1-minute sensors, received up to 50 minutes late (a backlog:
  most readings are then a clock skew and suspect, which costs Python work for each);
* ``small``: 100 sensors, one batch a minute (100 readings).

Readings are built before timing; the time is the process's CPU time (steadier than wall time on shared cores) of
``evaluate`` and ``commit`` of every batch with a fresh detector (compiled code is loaded before timing). The
reference is given lists of ``Reading``; the compiled detector is timed on a :class:`~twin.readings.ReadingBatch`
(columns, as ingest hands them) and on the same lists (which it turns into columns first).

    python bench/bench_health.py            # median of 3 runs
    python bench/bench_health.py --runs 1 --sensors 5000
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from models.sensor_health import SensorHealthDetector
from models.sensor_health_kernel import compile_kernels
from models.sensor_health_reference import ReferenceHealthDetector
from twin.readings import Reading, ReadingBatch
from twin.sensors import Network, Quantity, Sensor

START = datetime(2026, 6, 1, tzinfo=UTC)
Batches = list[tuple[datetime, Sequence[Reading]]]


def make_sensors(count: int, interval_s: float = 60.0) -> dict[str, Sensor]:
    """Return *count* sensors by id sampling every *interval_s*, half pressures and half levels."""
    sensors: dict[str, Sensor] = {}
    for i in range(count):
        if i % 2:
            sensor = Sensor(
                f"P{i:05d}",
                Network.WATER,
                Quantity.PRESSURE,
                f"P{i}",
                valid_min=0.0,
                valid_max=1000.0,
                interval_s=interval_s,
            )
        else:
            sensor = Sensor(
                f"L{i:05d}",
                Network.DRAINAGE,
                Quantity.LEVEL,
                f"L{i}",
                valid_min=0.0,
                valid_max=8.0,
                interval_s=interval_s,
            )
        sensors[sensor.sensor_id] = sensor
    return sensors


def _value(sid: str, k: int, rng: random.Random) -> float:
    wave = math.sin(2 * math.pi * k / 1440)
    return (300.0 + 10 * wave + rng.gauss(0, 0.3)) if sid[0] == "P" else 0.3 + rng.gauss(0, 0.003)


def make_batches(sensors: dict[str, Sensor], minutes: int, seed: int = 1) -> Batches:
    """Return one batch of readings per minute (every sensor once), with the time it is received."""
    rng = random.Random(seed)
    batches: Batches = []
    for k in range(minutes):
        ts = START + timedelta(minutes=k)
        readings = [Reading(sid, ts, _value(sid, k, rng), 0) for sid in sensors]
        batches.append((ts + timedelta(seconds=1), readings))
    return batches


def make_runs(
    sensors: dict[str, Sensor], windows: int, step: timedelta, per_batch: int = 100, span: int = 50
) -> Batches:
    """Return batches of *span* consecutive readings (*step* apart) of *per_batch* sensors each, *windows* times.

    Each batch is received 1 s after its newest reading.
    """
    rng = random.Random(2)
    ids = list(sensors)
    batches: Batches = []
    for w in range(windows):
        for first in range(0, len(ids), per_batch):
            group = ids[first : first + per_batch]
            readings = [
                Reading(sid, START + k * step, _value(sid, k, rng), 0)
                for sid in group
                for k in range(w * span, (w + 1) * span)
            ]
            batches.append((START + ((w + 1) * span - 1) * step + timedelta(seconds=1), readings))
    return batches


def measure(make: Callable[[], SensorHealthDetector | ReferenceHealthDetector], batches: Batches) -> float:
    """Return the CPU time of evaluating and committing every batch with a fresh detector, seconds."""
    det = make()
    began = time.process_time()
    for now, readings in batches:
        det.commit(det.evaluate(readings, now=now))  # type: ignore[arg-type]
    return time.process_time() - began


def compare(name: str, sensors: dict[str, Sensor], batches: Batches, runs: int) -> None:
    """Print µs a reading of the reference and of the compiled detector (columns and lists) on *batches*."""
    total = sum(len(b) for _, b in batches)
    columns: Batches = [(now, ReadingBatch.from_readings(b)) for now, b in batches]
    for _, batch in columns:
        assert isinstance(batch, ReadingBatch)
    per = {}
    for label, make, data in (
        ("reference", lambda: ReferenceHealthDetector(sensors), batches),
        ("kernel", lambda: SensorHealthDetector(sensors), columns),
        ("kernel, lists", lambda: SensorHealthDetector(sensors), batches),
    ):
        seconds = statistics.median(measure(make, data) for _ in range(runs))
        per[label] = seconds / total * 1e6
    print(
        f"{name:<38} {total:>9,} readings  reference {per['reference']:6.3f} µs  kernel {per['kernel']:6.3f} µs"
        f" ({per['reference'] / per['kernel']:5.1f}×)  kernel on lists {per['kernel, lists']:6.3f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    print(f"kernel compiled or loaded in {compile_kernels():.2f} s; µs a reading, median of {args.runs}")
    sensors = make_sensors(args.sensors)
    compare(f"{args.sensors} sensors, a batch a minute", sensors, make_batches(sensors, args.minutes), args.runs)
    # 5,000-reading batches: 100 sensors × 50 readings, as many readings in all as the minute batches.
    windows = max(1, args.sensors * args.minutes // 5000)
    fast = make_sensors(100, interval_s=1.0)
    compare("100 1-s sensors × 50 readings, live", fast, make_runs(fast, windows, timedelta(seconds=1)), args.runs)
    small = make_sensors(100)
    backlog = make_runs(small, windows, timedelta(minutes=1))
    compare("100 1-min sensors × 50 readings, late", small, backlog, args.runs)
    compare("100 sensors, a batch a minute", small, make_batches(small, args.minutes), args.runs)


if __name__ == "__main__":
    main()
