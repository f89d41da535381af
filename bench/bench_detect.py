"""Streaming detection speed: the detector chain ingest runs, on 1,000 sensors × 1 hour at 1-minute resolution.

Batches hold 5 minutes of every sensor (5,000 readings, ingest's largest batch). Half the sensors are water
pressures, half sewer levels (see bench_health.py). The time covers ``evaluate`` and ``commit`` of every batch;
the per-detector split comes from the chain's own timers. Prints readings/s for the chain and for each detector.

    python bench/bench_detect.py            # median of 3 runs
    python bench/bench_detect.py --runs 1 --sensors 5000
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from bench_health import make_batches, make_sensors

from models.chain import DetectorChain
from twin.readings import Reading
from twin.sensors import Sensor


def regroup(batches: list[tuple[datetime, list[Reading]]], minutes: int) -> list[tuple[datetime, list[Reading]]]:
    """Merge one-minute batches into batches of *minutes* minutes."""
    out = []
    for k in range(0, len(batches), minutes):
        part = batches[k : k + minutes]
        out.append((part[-1][0], [r for _, b in part for r in b]))
    return out


Batches = list[tuple[datetime, list[Reading]]]


def measure(sensors: dict[str, Sensor], batches: Batches) -> tuple[float, dict[str, float]]:
    """Return the wall time of the chain over every batch (seconds) and the time per detector."""
    chain = DetectorChain.default(sensors)
    began = time.perf_counter()
    for now, readings in batches:
        chain.commit(chain.evaluate(readings, now=now))
    return time.perf_counter() - began, dict(chain.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--batch-minutes", type=int, default=5)
    args = parser.parse_args()
    sensors = make_sensors(args.sensors)
    batches = regroup(make_batches(sensors, args.minutes), args.batch_minutes)
    total = sum(len(b) for _, b in batches)
    runs = [measure(sensors, batches) for _ in range(args.runs)]
    seconds = statistics.median(r[0] for r in runs)
    print(
        f"chain, {args.sensors} sensors × {args.minutes} min = {total:,} readings in batches of "
        f"{args.batch_minutes} min: {seconds:.3f} s, {total / seconds:,.0f} readings/s (median of {args.runs})"
    )
    for name in runs[0][1]:
        part = statistics.median(r[1][name] for r in runs)
        print(f"  {name:<14} {part:.3f} s  {total / part:>12,.0f} readings/s")


if __name__ == "__main__":
    main()
