"""The built-in demo city (吉安示范片区): its size, its sensors bound to assets, and all three engines run it."""

from __future__ import annotations

import pytest
import shapely

from twin.democity.city import build_demo_city
from twin.drainage import run_swmm
from twin.gas import run_gas
from twin.model import City, NodeKind
from twin.sensors import Network
from twin.spatial import SpatialIndex
from twin.store.assets import load_city, save_city
from twin.water import run_epanet


@pytest.fixture(scope="module")
def city() -> City:
    return build_demo_city()


def test_demo_city_has_the_promised_size(city: City) -> None:
    assert city.terrain is not None
    xmin, ymin, xmax, ymax = city.terrain.bounds
    assert 1.7e6 < (xmax - xmin) * (ymax - ymin) < 2.6e6  # about 2 km²
    assert len(city.buildings) >= 800
    assert len(city.networks[Network.DRAINAGE].nodes) >= 300
    water_junctions = [n for n in city.networks[Network.WATER].nodes.values() if n.kind is NodeKind.JUNCTION]
    gas_junctions = city.networks[Network.GAS].nodes
    assert len(water_junctions) >= 200 and len(gas_junctions) >= 150
    assert len(city.sensors) >= 400
    assert {s.network for s in city.sensors.values()} == set(Network)
    assert len(city.low_points) >= 5 and any(p.kind == "underpass" for p in city.low_points.values())
    ground = city.terrain.elevation_m
    assert ground.max() - ground.min() > 20  # hills to the river


def test_every_sensor_is_bound_to_an_asset_of_the_city_and_stands_on_it(city: City) -> None:
    index = SpatialIndex(city)
    for sensor in city.sensors.values():
        if sensor.network is Network.RAIN:
            assert sensor.asset_id is None
            continue
        assert sensor.asset_id is not None
        geometry = index.geometry(sensor.asset_id)  # raises if the asset is unknown
        assert geometry.distance(shapely.Point(sensor.x_m, sensor.y_m)) < 1.0, sensor.sensor_id


def test_pipes_follow_the_streets(city: City) -> None:
    streets = shapely.MultiLineString([list(s) for s in city.streets])
    for kind, net in city.networks.items():
        off = [
            lid
            for lid, link in net.links.items()
            if shapely.LineString(net.polyline(link)).centroid.distance(streets) > 25.0
        ]
        assert len(off) <= 0.03 * len(net.links), (kind, off[:5])


def test_the_same_seed_gives_the_same_city(city: City) -> None:
    again = build_demo_city()
    for kind, net in city.networks.items():
        assert again.networks[kind].source == net.source
    assert again.buildings == city.buildings and again.sensors == city.sensors


def test_demo_city_runs_in_swmm_epanet_and_pandapipes(city: City) -> None:
    swmm = run_swmm(city.networks[Network.DRAINAGE].source)
    assert abs(swmm.flow_routing_continuity_error_pct) < 5 and abs(swmm.runoff_continuity_error_pct) < 5
    water = run_epanet(city.networks[Network.WATER], duration_h=24)
    assert water.converged and water.min_pressure_m > 15
    gas = run_gas(city.networks[Network.GAS])
    assert gas.converged


@pytest.mark.integration
def test_demo_city_is_stored_and_loaded_back(city: City, db) -> None:  # type: ignore[no-untyped-def]
    versions = save_city(db, city)
    assert set(versions) == {"drainage", "water", "gas", "buildings", "spaces", "low_points", "terrain", "streets"}
    loaded = load_city(db)
    assert loaded.streets == city.streets and loaded.street_kinds == city.street_kinds  # the risk map's roads
    assert loaded.rivers == city.rivers
    for kind, net in city.networks.items():
        assert loaded.networks[kind].nodes == net.nodes and loaded.networks[kind].links == net.links
        assert loaded.networks[kind].source == net.source
    assert loaded.spaces == city.spaces and loaded.low_points == city.low_points
