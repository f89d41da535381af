"""The 3D scene: the demo city's ground with networks laid along its streets, built and exported as GLB + metadata."""

from __future__ import annotations

import gzip
import struct
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import shapely

from twin.democity.layout import Layout, build_layout
from twin.model import Building, BuildingUse, City, Link, LinkKind, Node, NodeKind, PipeNetwork, Terrain
from twin.scene import GLB_NAME, META_NAME, build_scene, export_scene
from twin.sensors import Network, Quantity, Sensor

_COMPONENT_BYTES = {5121: 1, 5123: 2, 5125: 4, 5126: 4}
_TYPE_SIZE = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
_NUMPY = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}


# --- a city with synthetic networks along the demo streets -------------------------------------------------------

# Each network runs along the street centreline, shifted sideways (metres) so the three never share a trench.
_SHIFT_M = {Network.DRAINAGE: (3.0, 3.0), Network.WATER: (-3.0, -3.0), Network.GAS: (5.0, -5.0)}


def street_networks(layout: Layout) -> dict[Network, PipeNetwork]:
    """Lay a drainage, a water and a gas network along every street segment of *layout*.

    Nodes sit at the street intersections: drainage manholes with inverts 3.0–4.2 m below ground (outfalls on the
    river bank), water junctions at ground elevation (EPANET convention), gas junctions 0.9 m below ground. Every
    seventh link bends through one interior vertex.
    """
    g = layout.street_graph
    networks: dict[Network, PipeNetwork] = {}
    for kind in (Network.DRAINAGE, Network.WATER, Network.GAS):
        dx, dy = _SHIFT_M[kind]
        net = PipeNetwork(kind=kind, name=f"synthetic {kind.value}")
        for node_id, data in g.nodes(data=True):
            x, y = data["x"] + dx, data["y"] + dy
            ground = layout.ground(x, y)
            i, j = data["i"], data["j"]
            if kind is Network.DRAINAGE:
                invert = ground - (3.0 + 0.4 * ((i + j) % 4))
                nk = NodeKind.OUTFALL if node_id in layout.bank_nodes else NodeKind.JUNCTION
                net.nodes[node_id] = Node(node_id, nk, x, y, invert, depth_m=ground - invert, ground_m=ground)
            elif kind is Network.WATER:
                nk = NodeKind.RESERVOIR if (i, j) == (0, 0) else NodeKind.JUNCTION
                net.nodes[node_id] = Node(node_id, nk, x, y, ground, ground_m=ground)
            else:
                nk = NodeKind.SOURCE if (i, j) == (0, 0) else NodeKind.SINK
                net.nodes[node_id] = Node(node_id, nk, x, y, ground - 0.9, ground_m=ground)
        for k, (a, b) in enumerate(sorted(g.edges)):
            na, nb = net.nodes[a], net.nodes[b]
            if kind is Network.DRAINAGE and na.z_m < nb.z_m:
                na, nb = nb, na  # conduits run downhill
            vertices: tuple[tuple[float, float], ...] = ()
            if k % 7 == 0:
                vertices = (((na.x_m + nb.x_m) / 2 + 2.0, (na.y_m + nb.y_m) / 2 + 2.0),)
            diameter = {Network.DRAINAGE: 0.6 + 0.2 * (k % 3), Network.WATER: 0.3, Network.GAS: 0.16}[kind]
            link_kind = LinkKind.CONDUIT if kind is Network.DRAINAGE else LinkKind.PIPE
            length = float(np.hypot(na.x_m - nb.x_m, na.y_m - nb.y_m))
            link_id = f"L{k:05d}"
            net.links[link_id] = Link(link_id, link_kind, na.node_id, nb.node_id, diameter, length, vertices=vertices)
        networks[kind] = net
    return networks


def street_city(scale: int = 1) -> City:
    """The demo city's ground and buildings (:func:`build_layout`) with :func:`street_networks` and five sensors."""
    layout = build_layout(scale=scale)
    city = City(
        name="吉安示范片区" if scale == 1 else f"吉安示范片区 ×{scale}",
        crs="EPSG:4547",
        terrain=layout.terrain,
        buildings=dict(layout.buildings),
        low_points=dict(layout.low_points),
        streets=layout.streets(),
        rivers=[layout.river],
        networks=street_networks(layout),
    )
    sites = [
        ("D-L-001", Network.DRAINAGE, Quantity.LEVEL, "X0303"),
        ("D-L-002", Network.DRAINAGE, Quantity.LEVEL, "X0705"),
        ("W-P-001", Network.WATER, Quantity.PRESSURE, "X0504"),
        ("G-M-001", Network.GAS, Quantity.METHANE, "X0606"),
    ]
    for sensor_id, network, quantity, node_id in sites:
        node = city.networks[network].nodes[node_id]
        city.sensors[sensor_id] = Sensor(
            sensor_id, network, quantity, f"{node_id} 监测点", f"{network.value}:{node_id}", x_m=node.x_m, y_m=node.y_m
        )
    x, y = layout.xy("X0808")
    city.sensors["R-001"] = Sensor("R-001", Network.RAIN, Quantity.RAIN_RATE, "雨量计", x_m=x + 20, y_m=y + 20)
    return city


@cache
def _demo_city() -> City:
    return street_city()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[City, Path, float]:
    city = _demo_city()
    out = tmp_path_factory.mktemp("scene")
    started = time.perf_counter()
    export_scene(city, out)
    return city, out, time.perf_counter() - started


# --- reading GLB back ------------------------------------------------------------------------------------------------


def read_glb(path: Path) -> tuple[dict[str, Any], bytes]:
    """Parse a GLB file into its JSON document and binary chunk, checking the container as the spec requires."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_len % 4 == 0
    document = orjson.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert bin_type == b"BIN\0" and bin_len % 4 == 0
    binary = data[28 + json_len : 28 + json_len + bin_len]
    assert 28 + json_len + bin_len == len(data)
    assert document["buffers"][0]["byteLength"] <= bin_len
    return document, binary


def accessor_array(document: dict[str, Any], binary: bytes, index: int) -> np.ndarray[Any, Any]:
    acc = document["accessors"][index]
    view = document["bufferViews"][acc["bufferView"]]
    width = _TYPE_SIZE[acc["type"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    arr = np.frombuffer(binary, dtype=_NUMPY[acc["componentType"]], count=acc["count"] * width, offset=start)
    return arr.reshape(acc["count"], width) if width > 1 else arr


def mesh_arrays(document: dict[str, Any], binary: bytes, name: str) -> dict[str, np.ndarray[Any, Any]]:
    mesh = next(m for m in document["meshes"] if m["name"] == name)
    prim = mesh["primitives"][0]
    out = {key.lower(): accessor_array(document, binary, acc) for key, acc in prim["attributes"].items()}
    out["indices"] = accessor_array(document, binary, prim["indices"]).astype(np.int64).reshape(-1, 3)
    return out


def to_crs(position: np.ndarray[Any, Any], origin: list[float]) -> np.ndarray[Any, Any]:
    """glTF (x, y up, z south) local → CRS (x east, y north, z up) absolute metres."""
    p = position.astype(np.float64)
    return np.column_stack([p[:, 0] + origin[0], -p[:, 2] + origin[1], p[:, 1] + origin[2]])


def load_meta(out: Path) -> dict[str, Any]:
    meta: dict[str, Any] = orjson.loads((out / META_NAME).read_bytes())
    return meta


# --- tests -----------------------------------------------------------------------------------------------------------


def test_glb_container_and_accessors_are_consistent(exported: tuple[City, Path, float]) -> None:
    _city, out, _s = exported
    document, binary = read_glb(out / GLB_NAME)
    meta = load_meta(out)
    assert document["asset"]["version"] == "2.0"
    for view in document["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= len(binary)
    for acc in document["accessors"]:
        view = document["bufferViews"][acc["bufferView"]]
        assert acc["count"] * _COMPONENT_BYTES[acc["componentType"]] * _TYPE_SIZE[acc["type"]] == view["byteLength"]
    assert [n["name"] for n in document["nodes"]] == [m["name"] for m in meta["meshes"]]
    total = 0
    for entry in meta["meshes"]:
        arrays = mesh_arrays(document, binary, entry["name"])
        n_vertices = len(arrays["position"])
        assert len(arrays["normal"]) == n_vertices == entry["vertices"]
        assert len(arrays["indices"]) == entry["triangles"]
        assert arrays["indices"].max() < n_vertices
        assert entry["tri_offsets"][-1] == entry["triangles"]
        assert entry["vertex_offsets"][-1] == entry["vertices"]
        assert len(entry["tri_offsets"]) == len(entry["ids"]) + 1 or entry["kind"] in ("terrain", "streets")
        acc = document["accessors"][document["meshes"][entry["node"]]["primitives"][0]["attributes"]["POSITION"]]
        np.testing.assert_allclose(acc["min"], arrays["position"].min(axis=0))
        np.testing.assert_allclose(acc["max"], arrays["position"].max(axis=0))
        total += len(arrays["indices"])
    assert total == meta["counts"]["triangles"]


def test_meta_lists_every_building_once_with_its_triangles(exported: tuple[City, Path, float]) -> None:
    city, out, _s = exported
    meta = load_meta(out)
    assert meta["counts"]["buildings"] == len(city.buildings)
    ids = [i for m in meta["meshes"] if m["kind"] == "building" for i in m["ids"]]
    assert sorted(ids) == sorted(f"building:{b}" for b in city.buildings)
    for m in meta["meshes"]:
        if m["kind"] == "building":
            # Rectangular footprints: four walls of two triangles and a roof of two.
            assert set(np.diff(m["tri_offsets"])) == {10}
            assert {meta["assets"][i]["use"] for i in m["ids"]} == {m["use"]}
    assert meta["counts"]["links"] == {k.value: len(n.links) for k, n in city.networks.items()}
    assert meta["counts"]["sensors"] == len(city.sensors)


def test_each_asset_owns_the_geometry_where_it_stands(exported: tuple[City, Path, float]) -> None:
    city, out, _s = exported
    document, binary = read_glb(out / GLB_NAME)
    meta = load_meta(out)
    for entry in (m for m in meta["meshes"] if m["kind"] == "building"):
        xyz = to_crs(mesh_arrays(document, binary, entry["name"])["position"], meta["origin_m"])
        for k in range(0, len(entry["ids"]), 17):
            b = city.buildings[entry["ids"][k].removeprefix("building:")]
            part = xyz[entry["vertex_offsets"][k] : entry["vertex_offsets"][k + 1]]
            ring = np.asarray(b.footprint)
            assert np.all(part[:, :2] >= ring.min(axis=0) - 0.01) and np.all(part[:, :2] <= ring.max(axis=0) + 0.01)
            assert part[:, 2].max() == pytest.approx(b.ground_m + b.height_m, abs=0.01)
            assert part[:, 2].min() == pytest.approx(b.ground_m - 0.5, abs=0.01)


def test_pipes_run_below_the_ground(exported: tuple[City, Path, float]) -> None:
    city, out, _s = exported
    terrain = city.terrain
    assert terrain is not None
    document, binary = read_glb(out / GLB_NAME)
    meta = load_meta(out)
    scale, thinnest = meta["options"]["pipe_radius_scale"], meta["options"]["min_pipe_radius_m"]
    checked = 0
    for entry in (m for m in meta["meshes"] if m["kind"] == "link"):
        xyz = to_crs(mesh_arrays(document, binary, entry["name"])["position"], meta["origin_m"])
        offsets = np.asarray(entry["vertex_offsets"])
        drawn = np.array([max(meta["assets"][i]["diameter_m"] / 2 * scale, thinnest) for i in entry["ids"]])
        # A vertex lies on a ring around the pipe's axis, so its height minus the drawn radius bounds the axis below.
        axis_bound = xyz[:, 2] - np.repeat(drawn, np.diff(offsets))
        above = axis_bound - terrain.elevation_at(xyz[:, 0], xyz[:, 1])
        # Water and gas mains keep their cover over hollows; sewers run straight and may come closer to the surface.
        limit = -0.1 if entry["network"] == "drainage" else -0.8
        assert above.max() < limit, f"{entry['name']}: a pipe axis within {-above.max():.2f} m of the surface"
        if entry["network"] == "drainage":
            # A conduit without bends is one prism: the mean of its vertices is its axis midpoint.
            links = city.networks[Network.DRAINAGE].links
            straight = [k for k, i in enumerate(entry["ids"]) if not links[i.removeprefix("drainage:")].vertices]
            mids = np.stack([xyz[offsets[k] : offsets[k + 1]].mean(axis=0) for k in straight])
            depth = terrain.elevation_at(mids[:, 0], mids[:, 1]) - mids[:, 2]
            assert depth.min() > 0.1 and depth.max() < 7.0
        checked += len(entry["ids"])
    assert checked == sum(len(n.links) for n in city.networks.values())
    manholes = next(m for m in meta["meshes"] if m["name"] == "nodes-drainage")
    xyz = to_crs(mesh_arrays(document, binary, "nodes-drainage")["position"], meta["origin_m"])
    node = city.networks[Network.DRAINAGE].nodes["X0303"]
    k = manholes["ids"].index("drainage:X0303")
    part = xyz[manholes["vertex_offsets"][k] : manholes["vertex_offsets"][k + 1]]
    assert part[:, 2].min() == pytest.approx(node.z_m, abs=0.01)
    assert part[:, 2].max() == pytest.approx(node.z_m + node.depth_m, abs=0.01)


def test_triangles_wind_the_way_their_normals_point(exported: tuple[City, Path, float]) -> None:
    _city, out, _s = exported
    document, binary = read_glb(out / GLB_NAME)
    for node in document["nodes"]:
        arrays = mesh_arrays(document, binary, node["name"])
        p, n, t = arrays["position"].astype(np.float64), arrays["normal"].astype(np.float64), arrays["indices"]
        face = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
        agree = np.einsum("ij,ij->i", face, n[t].sum(axis=1)) > 0
        assert agree.mean() > 0.999, f"{node['name']}: {np.count_nonzero(~agree)} triangles face inwards"
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-3)


def test_sensors_have_their_own_recolourable_mesh(exported: tuple[City, Path, float]) -> None:
    city, out, _s = exported
    document, binary = read_glb(out / GLB_NAME)
    meta = load_meta(out)
    entry = next(m for m in meta["meshes"] if m["kind"] == "sensor")
    assert sorted(entry["ids"]) == sorted(f"sensor:{s}" for s in city.sensors)
    arrays = mesh_arrays(document, binary, "sensors")
    assert arrays["color_0"].shape == (entry["vertices"], 4)
    assert meta["assets"]["sensor:D-L-001"]["asset_id"] == "drainage:X0303"
    assert "drainage:X0303" in meta["assets"]


def test_coordinates_are_local_y_up_and_float32_precise(exported: tuple[City, Path, float]) -> None:
    city, out, _s = exported
    document, binary = read_glb(out / GLB_NAME)
    meta = load_meta(out)
    arrays = mesh_arrays(document, binary, "terrain")
    position = arrays["position"]
    assert np.abs(position).max() < 5000.0
    xyz = to_crs(position[arrays["normal"][:, 1] > 0.1], meta["origin_m"])  # the surface, not the soil skirt
    terrain = city.terrain
    assert terrain is not None
    # The ground's vertices lie on the DEM (it is resampled, not smoothed).
    np.testing.assert_allclose(xyz[:, 2], terrain.elevation_at(xyz[:, 0], xyz[:, 1]), atol=0.01)


def test_concave_clockwise_footprint_is_extruded_right(tmp_path: Path) -> None:
    # An L-shape given clockwise: the roof must cover exactly the L and every wall face outwards.
    ring = ((0.0, 0.0), (0.0, 20.0), (10.0, 20.0), (10.0, 10.0), (20.0, 10.0), (20.0, 0.0))
    city = City("L", "EPSG:4547", buildings={"B1": Building("B1", ring, 12.0, 4, 50.0, BuildingUse.ELDERLY_CARE)})
    scene = build_scene(city)
    mesh = scene.mesh("buildings-elderly-care").mesh
    p = np.asarray(mesh.points)
    t = np.asarray(mesh.faces).reshape(-1, 4)[:, 1:]
    face = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
    roof = face[:, 2] > 1e-9
    assert np.abs(face[roof, 2]).sum() / 2 == pytest.approx(shapely.Polygon(ring).area)
    assert not np.any(face[:, 2] < -1e-9), "no face may point down"
    walls = ~roof
    centre = p[t[walls]].mean(axis=1)[:, :2] + scene.origin_m[0:2]
    outward = face[walls][:, :2] / np.linalg.norm(face[walls][:, :2], axis=1)[:, None]
    probe = centre + 0.1 * outward
    assert not shapely.contains_xy(shapely.Polygon(ring), probe[:, 0], probe[:, 1]).any()
    assert len(scene.mesh("buildings-elderly-care").ids) == 1


def test_terrain_is_decimated_to_the_point_budget() -> None:
    terrain = Terrain(0.0, 0.0, 1.0, np.fromfunction(lambda r, c: 0.01 * r + 0.02 * c, (400, 500)))
    scene = build_scene(City("flat", "EPSG:4547", terrain=terrain), terrain_max_points=20_000)
    mesh = scene.mesh("terrain")
    assert mesh.n_vertices <= 20_000 * 1.1
    assert mesh.mesh.bounds[1] - mesh.mesh.bounds[0] == pytest.approx(499.0)


def test_a_link_to_an_unknown_node_is_named() -> None:
    net = PipeNetwork(Network.WATER, "w", nodes={"A": Node("A", NodeKind.JUNCTION, 0.0, 0.0, 40.0)})
    net.links["P1"] = Link("P1", LinkKind.PIPE, "A", "B", 0.2, 10.0)
    with pytest.raises(KeyError, match="'P1' of the water network ends at unknown node 'B'"):
        build_scene(City("broken", "EPSG:4547", networks={Network.WATER: net}))


def test_a_zero_length_pipe_still_draws() -> None:
    net = PipeNetwork(Network.GAS, "g")
    net.nodes["A"] = Node("A", NodeKind.JUNCTION, 5.0, 5.0, 39.0)
    net.nodes["B"] = Node("B", NodeKind.JUNCTION, 5.0, 5.0, 39.0)
    net.links["P1"] = Link("P1", LinkKind.PIPE, "A", "B", 0.1, 0.0)
    mesh = build_scene(City("dot", "EPSG:4547", networks={Network.GAS: net})).mesh("pipes-gas").mesh
    assert np.isfinite(np.asarray(mesh.points)).all() and np.isfinite(mesh.point_data["Normals"]).all()


def test_a_city_with_nothing_to_draw_is_refused() -> None:
    with pytest.raises(ValueError, match="or sensors to draw"):
        build_scene(City("empty", "EPSG:4547"))


def test_demo_city_exports_quickly(exported: tuple[City, Path, float]) -> None:
    _city, out, seconds = exported
    assert seconds < 3.0, f"demo city export took {seconds:.2f} s"
    assert (out / GLB_NAME).stat().st_size < 20_000_000


def test_gzip_copies_hold_the_same_bytes(exported: tuple[City, Path, float], tmp_path: Path) -> None:
    _city, out, _s = exported
    for name in (GLB_NAME, META_NAME):
        original = (out / name).read_bytes()
        copy = (out / f"{name}.gz").read_bytes()
        assert gzip.decompress(copy) == original and len(copy) < len(original) / 2
    export_scene(build_scene(_demo_city()), tmp_path, gzip_level=None)
    assert not list(tmp_path.glob("*.gz"))


def test_ten_times_city_exports_within_ten_seconds(tmp_path: Path) -> None:
    city = street_city(scale=10)
    assert len(city.buildings) >= 8000 and sum(len(n.links) for n in city.networks.values()) >= 5000
    started = time.perf_counter()
    paths = export_scene(city, tmp_path)
    seconds = time.perf_counter() - started
    assert seconds < 10.0, f"10x city export took {seconds:.2f} s"
    assert paths.glb.stat().st_size == paths.glb_bytes
