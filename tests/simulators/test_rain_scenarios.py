"""The rainstorm scenario on the demo city's drainage, run by the real SWMM engine step by step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulators.rain_scenarios import RainSeries, RainstormRun, RainstormScenario, scenario_inp
from simulators.runner import run_scenario
from simulators.scenario import GroundTruth, Step
from twin.democity.drainage import build_drainage
from twin.democity.layout import Layout, build_layout
from twin.democity.sensors import place_sensors
from twin.errors import ConfigError, UnknownAssetError
from twin.model import City, PipeNetwork, asset_ref
from twin.sensors import Network, Quantity, Sensor
from twin.storms import DEFAULT_FORMULA, FORMULAS, read_rain_csv

START = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
FORMULA = FORMULAS[DEFAULT_FORMULA]


@dataclass(frozen=True)
class Demo:
    layout: Layout
    network: PipeNetwork
    sensors: dict[str, Sensor]


@dataclass(frozen=True)
class Storm:
    scenario: RainstormScenario
    run: RainstormRun
    truth: GroundTruth
    steps: list[Step]


@pytest.fixture(scope="module")
def demo() -> Demo:
    """The demo city's drainage and its sensors (drainage and rain gauges only: no water or gas to build)."""
    layout = build_layout(2026)
    network, _subcatchments, _inp = build_drainage(layout)
    city = City(name="drainage only", crs="EPSG:4547", terrain=layout.terrain, low_points=dict(layout.low_points))
    city.networks = {Network.DRAINAGE: network}
    return Demo(layout, network, place_sensors(city))


def _storm(demo: Demo, return_period_years: float) -> Storm:
    rain = RainSeries.design(FORMULA, return_period_years=return_period_years, duration_min=120)
    scenario = RainstormScenario(demo.network, demo.sensors, rain=rain, start=START)
    steps = list(scenario.steps())
    return Storm(scenario, scenario.run(), scenario.ground_truth(), steps)


@pytest.fixture(scope="module")
def storm50(demo: Demo) -> Storm:
    return _storm(demo, 50)


def test_a_50_year_storm_floods_the_underpasses_and_most_road_low_points(demo: Demo, storm50: Storm) -> None:
    truth = storm50.truth
    low_points = truth.summary["low_points"]
    assert set(low_points) == set(demo.layout.low_points)
    for event in truth.events:
        tagged = demo.network.nodes[event["node_id"]].attrs.get("low_point")
        assert event["low_point"] == tagged
    flooded = set(truth.summary["flooded_low_points"])
    assert flooded == {p for p, v in low_points.items() if v["flooded"]}
    underpasses = {p for p, lp in demo.layout.low_points.items() if lp.kind == "underpass"}
    road = set(demo.layout.low_points) - underpasses
    assert underpasses and underpasses <= flooded
    assert len(road & flooded) >= math.ceil(0.75 * len(road))
    storm_end = START + storm50.scenario.rain.duration
    assert all(START < datetime.fromisoformat(e["start"]) <= storm_end for e in truth.events if e["low_point"])
    assert truth.summary["flooded_nodes"] == len(truth.events) > len(flooded)


def test_level_sensors_at_flooded_low_points_reach_the_street_while_it_rains(demo: Demo, storm50: Storm) -> None:
    by_asset = {s.asset_id: s.sensor_id for s in demo.sensors.values() if s.quantity is Quantity.LEVEL}
    storm_end = START + storm50.scenario.rain.duration
    checked = 0
    for point in storm50.truth.summary["flooded_low_points"]:
        node_id = storm50.truth.summary["low_points"][point]["node_id"]
        sensor_id = by_asset[asset_ref(Network.DRAINAGE, node_id)]
        during = [r.value for s in storm50.steps if s.ts <= storm_end for r in s.readings if r.sensor_id == sensor_id]
        assert max(during) >= demo.network.nodes[node_id].depth_m - 1e-6, (point, node_id, max(during))
        checked += 1
    assert checked == len(storm50.truth.summary["flooded_low_points"])


def test_every_sensor_reports_every_step(demo: Demo, storm50: Storm) -> None:
    steps = storm50.steps
    assert len(steps) == 240  # 2 h of rain and 2 h of drain, 1-minute steps
    assert [s.ts for s in steps] == [START + timedelta(minutes=k) for k in range(1, 241)]
    readings = sum(len(s.readings) for s in steps)
    assert readings == len(demo.sensors) * len(steps) == storm50.truth.summary["readings"]
    assert all(r.ts == s.ts for s in steps for r in s.readings)
    flows = [r.value for s in steps for r in s.readings if r.sensor_id.startswith("DF-")]
    assert max(flows) > 1000.0  # trunk sewers and outfalls carry m³/s in a 50-year storm, reported in L/s


def test_swmm_records_the_design_rain_depth(demo: Demo, storm50: Storm) -> None:
    design = FORMULA.depth_mm(50, 120)
    assert sum(storm50.scenario.rain.rain_mm_h) / 60.0 == pytest.approx(design, rel=1e-9)
    recorded = storm50.truth.summary["rain_mm"]
    assert set(recorded) == {"RG-N", "RG-S"}
    for depth in recorded.values():
        assert depth == pytest.approx(design, rel=0.02)
        assert depth == pytest.approx(design, rel=1e-9)  # SWMM got exactly the design storm, first minute included
    gauges = [s.sensor_id for s in demo.sensors.values() if s.quantity is Quantity.RAIN_RATE]
    assert len(gauges) == 4
    for gauge in gauges:
        series = [r.value for s in storm50.steps for r in s.readings if r.sensor_id == gauge]
        assert sum(series) / 60.0 == pytest.approx(design, rel=1e-9)
    assert abs(storm50.truth.summary["runoff_continuity_error_pct"]) < 1.0
    assert abs(storm50.truth.summary["flow_routing_continuity_error_pct"]) < 1.0


def test_the_same_seed_gives_a_byte_identical_recording(demo: Demo, tmp_path: Path) -> None:
    rain = RainSeries.design(FORMULA, return_period_years=10, duration_min=60)

    def record(seed: int, out: Path) -> tuple[bytes, bytes]:
        scenario = RainstormScenario(
            demo.network,
            demo.sensors,
            rain=rain,
            start=START,
            drain=timedelta(minutes=30),
            level_noise_m=0.005,
            flow_noise_l_s=2.0,
            seed=seed,
        )
        result = run_scenario(scenario, sensors=demo.sensors, prefix="test/v1", out_dir=out, seed=seed)
        assert result.messages == len(demo.sensors) * 90
        return result.recording.read_bytes(), result.ground_truth.read_bytes()

    first = record(7, tmp_path / "a")
    assert record(7, tmp_path / "b") == first
    other_recording, other_truth = record(8, tmp_path / "c")
    assert other_recording != first[0]  # the noise differs…
    assert other_truth.replace(b'"seed": 8', b'"seed": 7') == first[1]  # …the noise-free ground truth does not


def test_a_recorded_rain_series_drives_the_same_machinery(demo: Demo, tmp_path: Path) -> None:
    intensities = [3.6, 6.0, 24.0, 60.0, 96.0, 48.0, 30.0, 12.0, 6.0, 0.0, 2.4, 0.0]  # mm/h, 5-minute records
    first = datetime(2026, 6, 18, 14, 0, tzinfo=UTC)
    csv = tmp_path / "rain.csv"
    lines = ["ts,rain_mm_h"] + [
        f"{(first + k * timedelta(minutes=5)).isoformat()},{v}" for k, v in enumerate(intensities)
    ]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rain = RainSeries.from_records(read_rain_csv(csv), name=csv.name)
    assert rain.step == timedelta(minutes=5) and rain.start == first
    scenario = RainstormScenario(demo.network, demo.sensors, rain=rain, drain=timedelta(hours=1))
    steps = list(scenario.steps())
    assert len(steps) == 120 and steps[0].ts == first + timedelta(minutes=1)
    gauge = next(s.sensor_id for s in demo.sensors.values() if s.quantity is Quantity.RAIN_RATE)
    reported = [r.value for s in steps for r in s.readings if r.sensor_id == gauge]
    assert reported[:60] == [v for v in intensities for _minute in range(5)]
    assert reported[60:] == [0.0] * 60
    truth = scenario.ground_truth()
    design = sum(intensities) * 5 / 60
    assert truth.summary["design_rain_mm"] == pytest.approx(design)
    for depth in truth.summary["rain_mm"].values():
        assert depth == pytest.approx(design, rel=1e-6)
    assert truth.scenario["storm"]["kind"] == "recorded"
    assert truth.summary["readings"] == len(demo.sensors) * 120


def test_a_2_year_storm_floods_far_less_than_a_50_year_one(demo: Demo, storm50: Storm) -> None:
    storm2 = _storm(demo, 2)
    small, big = storm2.truth.summary, storm50.truth.summary
    assert small["design_rain_mm"] < 0.6 * big["design_rain_mm"]
    assert small["flooded_nodes"] < big["flooded_nodes"] / 4
    assert small["flood_volume_m3"] < 0.05 * big["flood_volume_m3"]
    underpasses = {p for p, lp in demo.layout.low_points.items() if lp.kind == "underpass"}
    assert not underpasses & set(small["flooded_low_points"])  # their pumps are sized for a 3-year storm


def test_the_model_is_set_up_for_rain_set_step_by_step(demo: Demo) -> None:
    text = scenario_inp(
        demo.network.source,
        start=START,
        end=START + timedelta(hours=4, minutes=1),
        rain_step=timedelta(minutes=1),
        report_step=timedelta(minutes=1),
    )
    options = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        elif section == "[OPTIONS]" and line.strip() and not line.startswith(";"):
            key, value = line.split(None, 1)
            assert key not in options, f"{key} twice"
            options[key] = value.strip()
        elif section == "[RAINGAGES]" and line.strip() and not line.startswith(";"):
            assert line.split()[1:] == ["INTENSITY", "00:01:00", "1", "TIMESERIES", "LIFELINE-RAIN"]
    assert options["WET_STEP"] == options["DRY_STEP"] == options["REPORT_STEP"] == "00:01:00"
    assert (options["START_DATE"], options["START_TIME"]) == ("07/01/2026", "06:00:00")
    assert (options["END_DATE"], options["END_TIME"]) == ("07/01/2026", "10:01:00")
    assert options["ROUTING_STEP"] == "5" and options["FLOW_UNITS"] == "CMS"
    conduits = demo.network.source.split("[CONDUITS]")[1].split("[")[0]
    assert conduits in text


def test_bad_inputs_are_refused_before_swmm_runs(demo: Demo) -> None:
    rain = RainSeries((10.0, 20.0))
    with pytest.raises(ConfigError, match="start"):
        RainstormScenario(demo.network, demo.sensors, rain=rain)
    with pytest.raises(ConfigError, match="timezone"):
        RainstormScenario(demo.network, demo.sensors, rain=rain, start=datetime(2026, 7, 1))
    with pytest.raises(ConfigError, match="whole number"):
        RainstormScenario(demo.network, demo.sensors, rain=rain, start=START, drain=timedelta(seconds=90))
    water = PipeNetwork(Network.WATER, "water", source="[JUNCTIONS]", source_format="epanet-inp")
    with pytest.raises(ConfigError, match="SWMM"):
        RainstormScenario(water, {}, rain=rain, start=START)
    stray = Sensor("DL-NOWHERE", Network.DRAINAGE, Quantity.LEVEL, "nowhere", asset_id="drainage:NOWHERE")
    with pytest.raises(UnknownAssetError):
        RainstormScenario(demo.network, {**demo.sensors, stray.sensor_id: stray}, rain=rain, start=START)
    with pytest.raises(ConfigError):
        RainSeries((5.0, -1.0))
    uneven = [(START, 1.0), (START + timedelta(minutes=1), 2.0), (START + timedelta(minutes=3), 0.0)]
    with pytest.raises(ConfigError, match="regular"):
        RainSeries.from_records(uneven)
