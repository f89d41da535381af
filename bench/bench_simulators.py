"""Simulator speed: 24 hours of the demo city at 1-minute resolution, computed and recorded (publishing excluded).

For each engine scenario — the drainage under a 2-hour 50-year storm then 22 hours of drying (SWMM), the water
supply with a leak (EPANET), the gas network with a leak (pandapipes) — and all three combined, measures the wall
time to compute the scenario and write its recording and ground truth, and reports it as × real time.

    python bench/bench_simulators.py            # medians of 3 runs
    python bench/bench_simulators.py --runs 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simulators.gas_scenarios import GasLeakEvent, GasScenario
from simulators.rain_scenarios import RainSeries, RainstormScenario
from simulators.runner import run_scenario
from simulators.scenario import CombinedScenario, Scenario
from simulators.water_scenarios import LeakEvent, WaterScenario
from twin.democity.city import build_demo_city
from twin.model import City
from twin.sensors import Network
from twin.storms import DEFAULT_FORMULA, FORMULAS

START = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(hours=24)


def _rain(city: City) -> Scenario:
    rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=50, duration_min=120)
    return RainstormScenario(
        city.networks[Network.DRAINAGE], city.sensors, rain=rain, start=START, drain=DAY - rain.duration
    )


def _water(city: City) -> Scenario:
    leak = LeakEvent(flow_l_s=10.0, start=START + timedelta(hours=3), junction_id="J0505")
    return WaterScenario(city.networks[Network.WATER], city.sensors, start=START, duration=DAY, events=[leak])


def _gas(city: City) -> Scenario:
    leak = GasLeakEvent(start=START + timedelta(hours=3), pipe_id="LP0007", volume_flow_m3_h=20.0)
    return GasScenario(city.networks[Network.GAS], city.spaces, city.sensors, start=START, duration=DAY, events=[leak])


def _all(city: City) -> Scenario:
    return CombinedScenario([_rain(city), _water(city), _gas(city)], name="all")


def measure(city: City, make: Callable[[City], Scenario], runs: int) -> tuple[float, int]:
    """Median wall time of computing and recording one scenario, seconds; and its message count."""
    times, messages = [], 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
            started = time.perf_counter()
            result = run_scenario(make(city), sensors=city.sensors, prefix="lifeline/v1", out_dir=Path(tmp))
            times.append(time.perf_counter() - started)
            messages = result.messages
    return statistics.median(times), messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    city = build_demo_city()
    print(f"# 24 h of the demo city at 1-minute resolution, {datetime.now(UTC):%Y-%m-%d}, median of {args.runs}")
    print("| scenario | messages | wall time | × real time |")
    print("|---|---:|---:|---:|")
    for label, make in (
        ("drainage: 50-year storm + drying (SWMM)", _rain),
        ("water: 10 L/s leak (EPANET)", _water),
        ("gas: 20 m³/h leak (pandapipes)", _gas),
        ("all three combined", _all),
    ):
        wall, messages = measure(city, make, args.runs)
        print(f"| {label} | {messages:,} | {wall:.1f} s | {DAY.total_seconds() / wall:,.0f}× |", flush=True)


if __name__ == "__main__":
    main()
