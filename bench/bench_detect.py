"""Streaming detection speed: the detector chain ingest runs, on 1,000 sensors × 1 hour at 1-minute resolution.

Batches hold 5 minutes of every sensor (5,000 readings, ingest's largest batch). Half the sensors are water
pressures, half sewer levels (see bench_health.py). The time covers ``evaluate`` and ``commit`` of every batch;
the per-detector split comes from the chain's own timers. Prints readings/s for the chain and for each detector.

With ``--twin``, the chain is the one ``lifeline evaluate`` and ingest run on the demo city: the three above plus
the network detectors its twin supports (drainage, gas, water leaks, :mod:`models.registry`), on a 56-hour water
scenario of the demo city (its 141 water sensors, a 10 L/s leak at J0505 after 52 h, EPANET), one batch per
simulated minute (141 readings) and, with ``--batch-minutes``, larger ones.

    python bench/bench_detect.py            # median of 3 runs
    python bench/bench_detect.py --runs 1 --sensors 5000
    python bench/bench_detect.py --twin --batch-minutes 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from datetime import datetime

from bench_health import make_batches, make_sensors

from models.chain import DetectorChain
from models.registry import learned_detectors
from twin.model import City
from twin.readings import Reading, ReadingBatch
from twin.sensors import Network, Sensor


def regroup(batches: list[tuple[datetime, list[Reading]]], minutes: int) -> list[tuple[datetime, list[Reading]]]:
    """Merge one-minute batches into batches of *minutes* minutes."""
    out = []
    for k in range(0, len(batches), minutes):
        part = batches[k : k + minutes]
        out.append((part[-1][0], [r for _, b in part for r in b]))
    return out


Batches = list[tuple[datetime, list[Reading]]]


def twin_batches(city: City, hours: float = 56.0) -> Batches:
    """Return a water scenario of the demo city as one batch of readings per simulated minute."""
    from datetime import UTC, timedelta

    from simulators.water_scenarios import LeakEvent, WaterScenario

    network = city.networks[Network.WATER]
    water = {k: s for k, s in city.sensors.items() if s.network is Network.WATER}
    start = datetime(2025, 7, 1, 16, tzinfo=UTC)
    leak = LeakEvent(junction_id="J0505", flow_l_s=10.0, start=start + timedelta(hours=52))
    scenario = WaterScenario(network, water, start=start, duration=timedelta(hours=hours), events=[leak], seed=1)
    return [(step.ts, [Reading(r.sensor_id, r.ts, r.value, 0) for r in step.readings]) for step in scenario.steps()]


def measure(
    sensors: dict[str, Sensor], batches: Sequence[tuple[datetime, Sequence[Reading]]], city: City | None = None
) -> tuple[float, dict[str, float]]:
    """Return the CPU time of the chain over every batch (seconds) and the (wall) time per detector."""
    chain = DetectorChain.default(sensors, extra=learned_detectors(city))
    began = time.process_time()
    for now, readings in batches:
        chain.commit(chain.evaluate(readings, now=now))
    return time.process_time() - began, dict(chain.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--batch-minutes", type=int, default=5)
    parser.add_argument("--twin", action="store_true", help="the demo city's full chain on a water scenario")
    parser.add_argument(
        "--rows",
        action="store_true",
        help="give the chain lists of Reading objects, not the columns (ReadingBatch) ingest gives it",
    )
    args = parser.parse_args()
    city: City | None = None
    if args.twin:
        from twin.democity.city import build_demo_city

        city = build_demo_city()
        sensors = dict(city.sensors)
        batches = regroup(twin_batches(city), args.batch_minutes)
        what = f"demo city chain, water scenario of {len(batches[0][1]) // args.batch_minutes} sensors × 56 h"
    else:
        sensors = make_sensors(args.sensors)
        batches = regroup(make_batches(sensors, args.minutes), args.batch_minutes)
        what = f"chain, {args.sensors} sensors × {args.minutes} min"
    total = sum(len(b) for _, b in batches)
    fed: list[tuple[datetime, Sequence[Reading]]] = list(batches)
    if not args.rows:
        # As ingest gives them: columns, made by the decoder (not timed here).
        columns = [ReadingBatch.from_readings(readings) for _now, readings in batches]
        for batch in columns:
            batch._rows = None  # no Reading objects ready made, as in ingest
        fed = [(now, batch) for (now, _r), batch in zip(batches, columns, strict=True)]
        what += " (columns)"
    else:
        what += " (Reading lists)"
    runs = [measure(sensors, fed, city) for _ in range(args.runs)]
    seconds = statistics.median(r[0] for r in runs)
    print(
        f"{what} = {total:,} readings in batches of {args.batch_minutes} min ({total // len(batches):,} readings): "
        f"{seconds:.3f} s CPU, {total / seconds:,.0f} readings/s (median of {args.runs})"
    )
    for name in runs[0][1]:
        part = statistics.median(r[1][name] for r in runs)
        print(f"  {name:<14} {part:.3f} s  {total / part:>12,.0f} readings/s")


if __name__ == "__main__":
    main()
