"""Every health check indicator against the ground truth of a simulated year, within a stated tolerance.

The year (:mod:`simulators.year`) is the demo area's 21 sensors and the demo city's three plant meters over the
whole of 2026: storms, leaks, gas leaks, pressure faults, outages and the people handling the alerts. Its truth
comes from the noise-free model; the indicators come from the store as any city's would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lifeline.report_commands import report
from lifeline.settings import Settings
from models.healthcheck.indicators import CITY, compute_all, compute_indicator, load_definitions
from models.healthcheck.report import year_bounds
from simulators.scenario import GroundTruth
from simulators.year import YearPlan, plan_years, simulate_year
from twin.democity.city import build_demo_city
from twin.model import City
from twin.sensors import Network
from twin.store.assets import save_city
from twin.store.db import DictConnection
from twin.store.sensors import upsert_sensors

pytestmark = pytest.mark.integration

DEFS = load_definitions()
PLANT_METERS = ("WF-PU1", "WF-PU2", "WF-PTANK")
DAY = timedelta(days=1)

# Tolerance of each indicator against the truth: (absolute, relative), either suffices.
TOLERANCE: dict[str, tuple[float, float]] = {
    # counted from noisy readings (1 cm) and the detector's alerts; the truth from the noise-free levels. A point
    # whose true peak stops just short of a limit can cross it in noise: three points or 5 % (the 638 sensors of
    # the demo city, 吉州区: 70 points for 67, 72.2 % surcharged for 69.1 %; city-wide 122 overflows for 121)
    "waterlogging_points": (3.0, 0.05),
    "waterlogging_density": (2.6, 0.05),
    "drainage_surcharge_share": (0.0, 0.05),
    "drainage_overflow_events": (2.0, 0.03),
    # alerts re-raised within 10 min of clearing continue the alarm: exact
    "gas_leak_alarms": (0.0, 0.0),
    # the water balance on hourly means with 1 % meter noise: 0.3 percentage points
    "water_leakage_rate": (0.3, 0.0),
    # minimum night flow with the table's assumed night use and night-day factor: a quarter of the true rate
    "water_leakage_mnf": (0.0, 0.25),
    # readings held until the next one (30 s, 60 s) with sensor noise at the crossings: 0.1 h over the year
    "methane_exceedance_hours": (0.1, 0.0),
    "gas_pressure_out_of_range_hours": (0.1, 0.0),
    # rain end read from the district's gauge (±8 %), levels with 1 cm noise at the limit, a median over few
    # storms and points (in 青原区 three): 6 minutes
    "drainage_drain_time_hours": (0.1, 0.0),
    # what the store holds against what the simulator wrote; the people's delays as drawn: exact
    "data_completeness": (1e-9, 0.0),
    "sensors_online": (1e-9, 0.0),
    "alert_acknowledge_minutes": (1e-6, 0.0),
    "alert_dispatch_minutes": (1e-6, 0.0),
    "alert_resolve_hours": (1e-6, 0.0),
}
# Checked against the demo city's twin below, not the year.
TWIN_INDICATORS = {"sensor_coverage_per_km"}


@pytest.fixture(scope="module")
def demo_city() -> City:
    return build_demo_city()


@pytest.fixture
def year_2026(db: DictConnection, schema: str, demo_city: City) -> Iterator[GroundTruth]:
    upsert_sensors(db, [demo_city.sensors[s] for s in PLANT_METERS])
    started = time.perf_counter()
    truth = simulate_year(db, schema=schema, plan=YearPlan(year=2026, seed=12))
    print(f"simulated year 2026: {truth.summary['sensors']} sensors, {time.perf_counter() - started:.1f} s")
    yield truth


def test_every_indicator_has_a_ground_truth_check() -> None:
    assert {d.id for d in DEFS.indicators} == set(TOLERANCE) | TWIN_INDICATORS


def test_indicators_match_the_simulated_year_within_tolerance(
    db: DictConnection, schema: str, pg_url: str, year_2026: GroundTruth, tmp_path: Path
) -> None:
    truth: dict[str, dict[str, Any]] = year_2026.summary["indicators"]
    start, end = year_bounds(2026)
    values = compute_all(db, DEFS, start=start, end=end)
    # compute_all reads the per-sensor rows once for the city and hands each district its own: the same values,
    # evidence and details as each indicator computed on its own.
    alone = [
        compute_indicator(db, DEFS[v.indicator_id], definitions=DEFS, start=start, end=end, district=v.district)
        for v in values
    ]
    assert alone == values
    checked = 0
    lines = []
    for v in values:
        if v.indicator_id in TWIN_INDICATORS:
            continue
        want = truth[v.district].get(v.indicator_id)
        if DEFS[v.indicator_id].scope == "city" and v.district != CITY:
            assert v.value is None
            continue
        assert want is not None, f"{v.indicator_id} in {v.district or 'city'}: no truth"
        absolute, relative = TOLERANCE[v.indicator_id]
        assert v.value == pytest.approx(want, abs=absolute, rel=relative), (v.indicator_id, v.district, v.detail)
        lines.append(f"{v.district or '全市'} {v.indicator_id}: {v.value:.4g} (truth {want:.4g})")
        checked += 1
    print("\n".join(lines))
    assert checked == 2 + 3 * 13  # two city-wide water figures, 13 others in the city and both districts
    city = truth[CITY]
    # The year is not trivial: every kind of event happened and shows in the figures.
    assert city["waterlogging_points"] >= 2 and city["drainage_overflow_events"] >= 1
    assert city["gas_leak_alarms"] >= 2 and city["gas_pressure_out_of_range_hours"] > 0
    assert city["data_completeness"] < 100 and city["sensors_online"] < 100
    assert city["drainage_drain_time_hours"] > 0 and city["alert_dispatch_minutes"] is not None
    # G-M-004's reading flapped at the limit on the way down (noise beyond the detector's deadband): two alerts,
    # one alarm.
    gas = next(v for v in values if (v.indicator_id, v.district) == ("gas_leak_alarms", CITY))
    assert (gas.value, gas.detail["alerts"]) == (4, 5)
    # The report command prints the same figures beside the truth.
    truth_file = tmp_path / "ground_truth_2026.json"
    truth_file.write_text(json.dumps({"summary": year_2026.summary}, default=str), encoding="utf-8")
    out = tmp_path / "report.html"
    printed = CliRunner().invoke(
        report,
        ["--year", "2026", "--out", str(out), "--no-pdf", "--truth", str(truth_file)],
        obj=Settings(database_url=pg_url, db_schema=schema),
    )
    assert printed.exit_code == 0, printed.output
    line = next(x for x in printed.output.splitlines() if x.startswith("water_leakage_rate"))
    assert f"{city['water_leakage_rate']:.4g}" in line and "全市" in line


def test_an_earlier_year_of_the_plan_is_worse(db: DictConnection, schema: str, demo_city: City) -> None:
    upsert_sensors(db, [demo_city.sensors[s] for s in PLANT_METERS])
    # A shortened pair of years (60 days each) is enough to see the plan's direction.
    plans = plan_years([2025, 2026], seed=3, days=60)
    truths = {p.year: simulate_year(db, schema=schema, plan=p) for p in plans}
    before, after = (truths[y].summary["indicators"][CITY] for y in (2025, 2026))
    assert before["water_leakage_rate"] > after["water_leakage_rate"]
    assert before["alert_acknowledge_minutes"] > after["alert_acknowledge_minutes"]
    start, _ = year_bounds(2025)
    got = compute_indicator(db, DEFS["water_leakage_rate"], definitions=DEFS, start=start, end=start + 60 * DAY)
    assert got.value == pytest.approx(before["water_leakage_rate"], abs=0.3)


def test_sensor_coverage_per_km_matches_the_demo_city_twin(db: DictConnection, demo_city: City) -> None:
    save_city(db, demo_city)
    db.execute("DELETE FROM sensors")
    upsert_sensors(db, demo_city.sensors.values())
    pipe_km = sum(
        link.length_m / 1000.0
        for net in (Network.DRAINAGE, Network.WATER, Network.GAS)
        for link in demo_city.networks[net].links.values()
        if link.kind.value in ("conduit", "pipe")
    )
    monitoring = sum(1 for s in demo_city.sensors.values() if s.network is not Network.RAIN)
    start, end = year_bounds(2026)
    got = compute_indicator(db, DEFS["sensor_coverage_per_km"], definitions=DEFS, start=start, end=end)
    assert got.value == pytest.approx(monitoring / pipe_km, rel=1e-9)
    assert set(got.detail["pipe_km"]) == {"drainage", "water", "gas"}
    assert compute_indicator(
        db, DEFS["sensor_coverage_per_km"], definitions=DEFS, start=start, end=end, district="吉州区"
    ).value is None  # fmt: skip
