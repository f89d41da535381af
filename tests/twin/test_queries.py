"""Spatial queries, tracing, valve isolation and the asset store, on the demo city's ground and streets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import shapely

from twin.buildings import read_buildings_geojson
from twin.democity.layout import CRS, build_layout
from twin.errors import ModelImportError, UnknownAssetError
from twin.model import City, IsolationValve, Link, LinkKind, Node, NodeKind, PipeNetwork
from twin.sensors import Network, Quantity, Sensor
from twin.spatial import SpatialIndex, sensors_observing
from twin.store.assets import layer_versions, load_city, save_city
from twin.topology import downstream, isolate, path_to_outfall, upstream


@pytest.fixture(scope="module")
def layout():  # type: ignore[no-untyped-def]
    return build_layout()


def _street_network(layout, kind: Network, *, valves: bool = False) -> PipeNetwork:  # type: ignore[no-untyped-def]
    """A network along the streets; drainage links point south to outfalls on the bank, as gravity sewers would."""
    g = layout.street_graph
    net = PipeNetwork(kind=kind, name=f"test {kind.value}")
    for nid, d in g.nodes(data=True):
        is_outfall = kind is Network.DRAINAGE and d["j"] == 0
        net.nodes[nid] = Node(
            nid,
            NodeKind.OUTFALL if is_outfall else NodeKind.JUNCTION,
            d["x"],
            d["y"],
            d["z"] - 2.0,
            depth_m=2.0,
            ground_m=d["z"],
        )
    for k, (a, b) in enumerate(sorted(g.edges)):
        da, db = g.nodes[a], g.nodes[b]
        if kind is Network.DRAINAGE:
            if da["j"] == db["j"] == 0:
                continue  # outfall to outfall: no sewer along the bank
            if da["j"] < db["j"]:
                a, b = b, a
        length = math.hypot(da["x"] - db["x"], da["y"] - db["y"])
        net.links[f"L{k:04d}"] = Link(f"L{k:04d}", LinkKind.PIPE, a, b, 0.3, length)
        if valves:
            na = net.nodes[a]
            net.valves[f"V{k:04d}"] = IsolationValve(f"V{k:04d}", f"L{k:04d}", a, na.x_m, na.y_m)
    return net


def _city(layout) -> City:  # type: ignore[no-untyped-def]
    city = City(
        name="测试城",
        crs=CRS,
        terrain=layout.terrain,
        buildings=dict(layout.buildings),
        low_points=dict(layout.low_points),
    )
    for kind in (Network.DRAINAGE, Network.WATER):
        city.networks[kind] = _street_network(layout, kind, valves=kind is Network.WATER)
    node = city.networks[Network.DRAINAGE].nodes["X0505"]
    city.sensors["DL-X0505"] = Sensor(
        "DL-X0505", Network.DRAINAGE, Quantity.LEVEL, "井", asset_id="drainage:X0505", x_m=node.x_m, y_m=node.y_m
    )
    return city


def test_near_point_finds_the_nearest_assets_first_without_scanning(layout) -> None:  # type: ignore[no-untyped-def]
    city = _city(layout)
    index = SpatialIndex(city)
    node = city.networks[Network.WATER].nodes["X0303"]
    hits = index.near(node.x_m, node.y_m, radius_m=30.0)
    assert hits[0].distance_m == 0.0
    assert {"water:X0303", "drainage:X0303"} <= {h.ref for h in hits}
    assert all(h.distance_m <= 30.0 for h in hits)
    brute = [
        b
        for b in city.buildings.values()
        if shapely.Polygon(b.footprint).distance(shapely.Point(node.x_m, node.y_m)) <= 80.0
    ]
    assert len(index.near(node.x_m, node.y_m, radius_m=80.0, prefixes=("building:",))) == len(brute) > 0


def test_inside_polygon_and_buildings_near_a_pipe(layout) -> None:  # type: ignore[no-untyped-def]
    city = _city(layout)
    index = SpatialIndex(city)
    b = next(iter(city.buildings.values()))
    assert f"building:{b.building_id}" in {h.ref for h in index.inside(b.footprint)}
    hits = index.buildings_near_asset("water:L0010", 40.0)
    line = shapely.LineString(city.networks[Network.WATER].polyline(city.networks[Network.WATER].links["L0010"]))
    expected = {f"building:{k}" for k, v in city.buildings.items() if shapely.Polygon(v.footprint).distance(line) <= 40}
    assert {h.ref for h in hits} == expected and expected
    with pytest.raises(UnknownAssetError):
        index.geometry("water:nope")
    assert sensors_observing(city, "drainage:X0505") == ["DL-X0505"]


def test_upstream_downstream_and_path_to_outfall(layout) -> None:  # type: ignore[no-untyped-def]
    net = _city(layout).networks[Network.DRAINAGE]
    down = downstream(net, "X0505")
    assert "X0500" in down and not down & {"X0506", "X0510"}
    assert "X0510" in upstream(net, "X0505")
    path = path_to_outfall(net, "X0505")
    assert path and net.nodes[net.links[path[-1]].to_id].kind is NodeKind.OUTFALL
    with pytest.raises(KeyError):
        upstream(net, "nope")


def test_valves_that_isolate_a_pipe(layout) -> None:  # type: ignore[no-untyped-def]
    net = _city(layout).networks[Network.WATER]
    link = net.links["L0100"]
    result = isolate(net, "L0100")
    # Every pipe has a valve at its 'from' end; the segment stops at those valves.
    assert f"V{100:04d}" in result.valves
    assert "L0100" in result.links and result.links <= set(net.links)
    for vid in result.valves:
        valve = net.valves[vid]
        assert valve.near_node_id in (net.links[valve.link_id].from_id, net.links[valve.link_id].to_id)
    assert link.to_id in result.nodes


def test_city_is_stored_versioned_and_loaded_back(layout, db) -> None:  # type: ignore[no-untyped-def]
    city = _city(layout)
    first = save_city(db, city)
    assert first == {"drainage": 1, "water": 1, "buildings": 1, "spaces": 1, "low_points": 1, "terrain": 1}
    assert save_city(db, city) == first  # unchanged: no new version
    water = city.networks[Network.WATER]
    changed = water.links["L0001"]
    water.links["L0001"] = Link(changed.link_id, changed.kind, changed.from_id, changed.to_id, 0.4, changed.length_m)
    assert save_city(db, city)["water"] == 2
    versions = [(v["layer"], v["version"]) for v in layer_versions(db) if v["layer"] == "water"]
    assert versions == [("water", 2), ("water", 1)]
    loaded = load_city(db)
    assert loaded.crs == CRS and len(loaded.buildings) == len(city.buildings)
    assert loaded.networks[Network.WATER].links["L0001"].diameter_m == 0.4
    assert loaded.networks[Network.WATER].valves == water.valves
    assert loaded.buildings["B00001"] == city.buildings["B00001"]
    assert loaded.terrain is not None
    assert loaded.terrain.elevation_at(598_400.0, 3_000_600.0) == pytest.approx(
        city.terrain.elevation_at(598_400.0, 3_000_600.0), abs=1e-3
    )


def test_buildings_geojson_in_lonlat_is_projected(tmp_path: Path) -> None:
    ring = [[114.99, 27.11], [114.9905, 27.11], [114.9905, 27.1104], [114.99, 27.1104], [114.99, 27.11]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "A1",
                "properties": {"height": 24, "building": "school"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            },
            {
                "type": "Feature",
                "properties": {"levels": 3},
                "geometry": {"type": "MultiPolygon", "coordinates": [[ring], [ring]]},
            },
        ],
    }
    path = tmp_path / "b.geojson"
    path.write_text(json.dumps(doc))
    buildings = read_buildings_geojson(path, crs=CRS)
    assert [b.building_id for b in buildings] == ["A1", "F00001-0", "F00001-1"]
    a1 = buildings[0]
    assert (a1.height_m, a1.floors, a1.use.value) == (24.0, 8, "school")
    area = shapely.Polygon(a1.footprint).area
    assert 49.5 * 44.3 * 0.9 < area < 49.5 * 44.3 * 1.1  # 0.0005° lon × 0.0004° lat at 27° N, in m²
    assert buildings[1].height_m == 9.0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f["properties"].pop("height"), "properties.height_m"),
        (lambda f: f["properties"].update(height="tall"), "properties.height"),
        (lambda f: f.update(geometry={"type": "Point", "coordinates": [0, 0]}), "geometry"),
    ],
)
def test_bad_building_names_file_feature_and_field(tmp_path: Path, change, field: str) -> None:  # type: ignore[no-untyped-def]
    feature = {
        "type": "Feature",
        "properties": {"height": 10},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0.001, 0], [0.001, 0.001], [0, 0]]]},
    }
    change(feature)
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(ModelImportError) as err:
        read_buildings_geojson(path, crs=CRS)
    assert err.value.field == field and err.value.line == 0 and str(path) in str(err.value)
