"""Twin benchmark: spatial index build and queries, tracing and valve isolation, on the demo city and the 10× city.

    python bench/bench_twin.py            # medians of 200 queries (index build: of 3)
    python bench/bench_twin.py --scales 1

Queries: assets within 50 m of a random point; assets inside a random 200 m square; buildings within 30 m of a
random pipe; the valves that isolate a random water pipe; everything downstream of a random manhole.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from twin.democity.city import build_demo_city
from twin.model import City
from twin.sensors import Network
from twin.spatial import SpatialIndex
from twin.topology import downstream, isolate


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(city: City, runs: int) -> dict[str, float]:
    rng = random.Random(1)
    builds = []
    for _ in range(3):
        started = time.perf_counter()
        index = SpatialIndex(city)
        builds.append(time.perf_counter() - started)
    assert city.terrain is not None
    xmin, ymin, xmax, ymax = city.terrain.bounds
    water, drainage = city.networks[Network.WATER], city.networks[Network.DRAINAGE]
    links = [f"{kind.value}:{lid}" for kind, net in city.networks.items() for lid in net.links]
    water_links, manholes = list(water.links), list(drainage.nodes)

    def point() -> tuple[float, float]:
        return rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)

    def square() -> list[tuple[float, float]]:
        x, y = point()
        return [(x, y), (x + 200, y), (x + 200, y + 200), (x, y + 200)]

    return {
        "assets": len(index),
        "index_s": statistics.median(builds),
        "near_ms": _median_ms(lambda: index.near(*point(), radius_m=50.0), runs),
        "inside_ms": _median_ms(lambda: index.inside(square()), runs),
        "buildings_near_pipe_ms": _median_ms(lambda: index.buildings_near_asset(rng.choice(links), 30.0), runs),
        "isolate_ms": _median_ms(lambda: isolate(water, rng.choice(water_links)), runs),
        "downstream_ms": _median_ms(lambda: downstream(drainage, rng.choice(manholes)), max(runs // 10, 5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(
        "| city | assets | index build | near 50 m | inside 200 m square | buildings ≤ 30 m of a pipe "
        "| isolate a water pipe | downstream of a manhole |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for scale in args.scales:
        city = build_demo_city(scale=scale)
        r = measure(city, args.runs)
        print(
            f"| {'demo' if scale == 1 else f'demo ×{scale}'} | {r['assets']:,.0f} | {r['index_s']:.2f} s "
            f"| {r['near_ms']:.2f} ms | {r['inside_ms']:.2f} ms | {r['buildings_near_pipe_ms']:.2f} ms "
            f"| {r['isolate_ms']:.2f} ms | {r['downstream_ms']:.1f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main()
