"""The nowcast runs the real SWMM engine in worker processes, on the demo city and on a pystorms network."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pystorms
import pytest

from models.waterlogging.nowcast import nowcast, swmm_pool
from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, alert_changes, assess, risk_geojson
from models.waterlogging.scoring import score_warnings
from simulators.rain_scenarios import RainSeries, RainstormRun, RainstormScenario
from twin.democity.city import build_demo_city
from twin.drainage import check_swmm, read_swmm
from twin.errors import ConfigError, ModelImportError
from twin.model import City, PipeNetwork
from twin.sensors import Network, Quantity
from twin.storms import DEFAULT_FORMULA, FORMULAS

START = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Storm:
    city: City
    network: PipeNetwork
    rain: RainSeries
    truth: RainstormRun
    level_node: dict[str, str]  # sensor id → node id


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with swmm_pool(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def storm() -> Storm:
    """A 30-year, 2-hour storm on the demo city, run by the rainstorm simulator: the ground truth."""
    city = build_demo_city()
    network = city.networks[Network.DRAINAGE]
    rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=30, duration_min=120)
    truth = RainstormScenario(network, city.sensors, rain=rain, start=START, drain=timedelta(hours=4)).run()
    levels = {
        s.sensor_id: (s.asset_id or "").removeprefix("drainage:")
        for s in city.sensors.values()
        if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL
    }
    return Storm(city, network, rain, truth, levels)


def _levels_at(storm: Storm, minute: int) -> dict[str, float]:
    col = {sid: k for k, sid in enumerate(storm.truth.sensor_ids)}
    return {node: float(storm.truth.values[minute - 1, col[sid]]) for sid, node in storm.level_node.items()}


def test_nowcast_on_the_true_rain_finds_the_floods_of_the_simulator(storm: Storm, pool: ProcessPoolExecutor) -> None:
    cast = nowcast(
        storm.network,
        now=START,
        observed_rain_mm_h=[],
        forecast_rain_mm_h=storm.rain.rain_mm_h,
        horizon=timedelta(hours=6),
        executor=pool,
    )
    truth = {n: f.volume_m3 for n, f in storm.truth.floods.items()}
    predicted = cast.volumes()
    big = [n for n, v in truth.items() if v >= 10.0]
    assert len(big) >= 5
    for node in big:
        assert predicted[node] == pytest.approx(truth[node], rel=0.15, abs=2.0)
        i = cast.node_ids.index(node)
        eta = START + timedelta(seconds=float(cast.eta_s[i]))
        assert abs((eta - storm.truth.floods[node].first_flood).total_seconds()) <= 180
    assert set(cast.flooded(min_volume_m3=10.0)) == set(big)


def test_hot_start_continues_where_the_last_nowcast_stopped(storm: Storm, pool: ProcessPoolExecutor) -> None:
    rain = storm.rain.rain_mm_h
    first = nowcast(
        storm.network,
        now=START + timedelta(minutes=20),
        observed_rain_mm_h=rain[:20],
        forecast_rain_mm_h=rain[20:],
        horizon=timedelta(hours=1),
        executor=pool,
    )
    assert first.hotstart is not None
    later = START + timedelta(minutes=40)
    hot = nowcast(
        storm.network,
        now=later,
        observed_rain_mm_h=rain[:40],
        forecast_rain_mm_h=rain[40:],
        hotstart=first.hotstart,
        horizon=timedelta(hours=3),
        executor=pool,
    )
    warm = nowcast(
        storm.network,
        now=later,
        observed_rain_mm_h=rain[:40],
        forecast_rain_mm_h=rain[40:],
        horizon=timedelta(hours=3),
        executor=pool,
    )
    assert float(warm.volume_m3.sum()) > 100.0
    assert float(hot.volume_m3.sum()) == pytest.approx(float(warm.volume_m3.sum()), rel=0.05)


def test_drift_from_the_level_sensors_is_reported_and_corrected(storm: Storm, pool: ProcessPoolExecutor) -> None:
    minute = 45
    rain = [v * 0.6 for v in storm.rain.rain_mm_h]  # the gauges catch 60 % of the rain
    cast = nowcast(
        storm.network,
        now=START + timedelta(minutes=minute),
        observed_rain_mm_h=rain[:minute],
        forecast_rain_mm_h=rain[minute:],
        observed_depth_m=_levels_at(storm, minute),
        horizon=timedelta(hours=3),
        executor=pool,
    )
    assert cast.misfit is not None and cast.misfit_corrected is not None
    assert cast.misfit.bias_m < 0  # the model is too dry
    assert cast.misfit.rmse_m > 0.1
    assert cast.rain_factor > 1.2
    assert cast.misfit_corrected.rmse_m < 0.6 * cast.misfit.rmse_m
    assert cast.runs > 1


def test_warnings_risk_map_and_alerts_from_a_nowcast(storm: Storm, pool: ProcessPoolExecutor) -> None:
    city = storm.city
    model = PondingModel(storm.network, city.terrain, city.low_points.values())
    assets = RiskAssets.for_city(city, model)
    rain = list(storm.rain.rain_mm_h)
    forecasts = []
    first = None
    previous: dict[str, int] = {}
    raised = []
    for minute in (0, 20, 40):
        # The true rain as forecast: this checks the chain; forecast errors are measured in bench/bench_nowcast.py.
        cast = nowcast(
            storm.network,
            now=START + timedelta(minutes=minute),
            observed_rain_mm_h=rain[:minute],
            forecast_rain_mm_h=rain[minute:],
            horizon=timedelta(hours=3),
            executor=pool,
        )
        forecasts.append((cast.issued, cast.volumes()))
        risk = assess(
            assets,
            model.fill(cast.volume_m3),
            issued=cast.issued,
            source="nowcast",
            node_eta_s=cast.eta_s,
            node_duration_s=cast.duration_s,
        )
        changes, previous = alert_changes(risk, previous)
        raised += [c for c in changes if c.event == "raised"]
        first = first or risk
    truth = storm.truth
    score = score_warnings(
        forecasts,
        {n: f.volume_m3 for n, f in truth.floods.items()},
        {n: f.first_flood for n, f in truth.floods.items()},
    )
    assert score.hit_rate >= 0.9
    assert score.false_alarm_ratio <= 0.2
    assert score.median_lead_s >= 30 * 60
    assert raised, "a 30-year storm on the demo city must raise waterlogging warnings"
    underpass = [c for c in raised if c.cause_key in ("waterlogging:LP003", "waterlogging:LP007")]
    assert underpass and all(c.kind == "waterlogging" and c.network == "drainage" for c in raised)
    detail = underpass[0].detail or {}
    assert detail["eta_s"] > 20 * 60 and detail["depth_m"] > 0.3 and detail["affected"]
    assert first is not None
    geo = risk_geojson(first, city.crs)
    kinds = {f["properties"]["kind"] for f in geo["features"]}
    assert "pond" in kinds and "underpass" in kinds
    lon, lat = (
        geo["features"][0]["geometry"]["coordinates"][0][0]
        if geo["features"][0]["geometry"]["type"] == ("Polygon")
        else geo["features"][0]["geometry"]["coordinates"]
    )
    assert 114.0 < lon < 116.0 and 26.0 < lat < 28.0  # Ji'an


def test_a_cleared_forecast_clears_its_alerts(storm: Storm) -> None:
    model = PondingModel(storm.network, storm.city.terrain, storm.city.low_points.values())
    assets = RiskAssets.for_city(storm.city, model)
    wet = assess(
        assets, model.fill({n: f.volume_m3 for n, f in storm.truth.floods.items()}), issued=START, source="nowcast"
    )
    raised, active = alert_changes(wet, {})
    dry = assess(assets, model.fill({}), issued=START + timedelta(minutes=10), source="nowcast")
    cleared, now_active = alert_changes(dry, active)
    assert raised and not now_active
    assert {c.cause_key for c in cleared if c.event == "cleared"} == set(active)


def test_nowcast_runs_on_a_pystorms_network(pool: ProcessPoolExecutor) -> None:
    path = Path(pystorms.__file__).parent / "networks" / "gamma.inp"
    try:
        check_swmm(path)
    except ModelImportError as exc:
        pytest.skip(f"SWMM rejects {path.name}: {exc}")
    network = read_swmm(path)
    heavy = [0.0] * 30 + [60.0] * 90 + [0.0] * 30  # mm/h, 5-minute steps: 90 mm in 1.5 h
    cast = nowcast(
        network,
        now=START + timedelta(minutes=5 * 30),
        observed_rain_mm_h=heavy[:30],
        forecast_rain_mm_h=heavy[30:],
        rain_step=timedelta(minutes=5),
        horizon=timedelta(hours=6),
        executor=pool,
    )
    assert set(cast.node_ids) >= {n for n in network.nodes}
    flooded = cast.flooded(min_volume_m3=1.0)
    assert flooded, "90 mm in 1.5 h floods the gamma network"
    model = PondingModel(network, None)
    city = City(name="gamma", crs="EPSG:3857", networks={Network.DRAINAGE: network})
    assets = RiskAssets.for_city(city, model)
    risk = assess(
        assets,
        model.fill(cast.volumes()),
        issued=cast.issued,
        source="nowcast",
        node_eta_s=np.array([cast.eta_s[cast.node_ids.index(n)] for n in model.node_ids]),
    )
    assert risk.graded() and all(math.isfinite(r["eta_s"]) for r in risk.graded())


def test_bad_input_is_refused_with_a_clear_error(storm: Storm) -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        nowcast(storm.network, now=datetime(2026, 7, 1), observed_rain_mm_h=[], forecast_rain_mm_h=[1.0])
    with pytest.raises(ConfigError, match="finite"):
        nowcast(storm.network, now=START, observed_rain_mm_h=[-1.0], forecast_rain_mm_h=[1.0])
    empty = PipeNetwork(kind=Network.DRAINAGE, name="empty")
    with pytest.raises(ConfigError, match="SWMM"):
        nowcast(empty, now=START, observed_rain_mm_h=[], forecast_rain_mm_h=[1.0])


def test_main_roads_are_more_exposed_than_local_streets(storm: Storm) -> None:
    from models.waterlogging.risk import MAIN_ROAD_EXPOSURE, grade_of

    city = storm.city
    assert len(city.street_kinds) == len(city.streets) and set(city.street_kinds) == {"main", "local"}
    assets = RiskAssets.for_city(city, PondingModel(storm.network, city.terrain, city.low_points.values()))
    roads = [a for a in assets.assets if a.kind == "road"]
    main = [a for a in roads if "main road" in a.reasons]
    assert len(main) == 20  # the middle north-south and east-west streets, 10 segments each
    assert {a.exposure for a in main} == {MAIN_ROAD_EXPOSURE} and {a.exposure for a in roads} == {1.0, 1.5}
    # 0.2 m of water: a local street is waterlogged (IV), a main road one grade worse (III).
    assert (grade_of(0.2 * 1.0), grade_of(0.2 * MAIN_ROAD_EXPOSURE)) == (4, 3)
