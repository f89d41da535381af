"""The city's 3D scene: terrain, streets, buildings, pipes, manholes and sensors as triangle meshes, exported as GLB.

:func:`build_scene` turns a :class:`~twin.model.City` into a handful of batched meshes (pyvista ``PolyData``, one per
building use, one per network's pipes, one per network's nodes, one for the sensors, the terrain and the streets),
each of which knows which asset every triangle belongs to. :func:`export_scene` writes them as one binary glTF file
(``scene.glb``) and a metadata file (``scene-meta.json``) that the 3D page loads: per mesh, the asset ids in draw
order with their triangle and vertex ranges, and per asset its attributes, so a click maps to an asset with one
binary search and live state can recolour one asset's vertices.

Geometry is built in bulk with numpy: walls and roofs of all buildings of a use at once (roofs triangulated by
pyvista, so concave footprints are right), pipes as low-sided prisms along every segment of every link. Sizes
drawn larger than life so they are visible at city scale (pipe radius × ``pipe_radius_scale``, manholes, node
boxes, sensor markers) are parameters of :func:`build_scene` and are recorded in the metadata.

Coordinates: the scene is shifted to a local origin (``origin_m`` in the metadata, CRS metres and metres above the
datum) so float32 keeps millimetres; meshes hold (x east, y north, z up) metres from that origin, and the glTF file
holds glTF's Y-up axes: (x, z, −y).

Example:
    >>> from twin.democity.layout import build_layout
    >>> from twin.model import City
    >>> layout = build_layout()
    >>> city = City("demo", "EPSG:4547", terrain=layout.terrain, buildings=layout.buildings)
    >>> scene = build_scene(city)
    >>> sum(len(m.ids) for m in scene.meshes if m.kind == "building") == len(city.buildings)
    True
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import logging
import math
import os
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import shapely

from twin.model import Building, BuildingUse, City, Link, Node, PipeNetwork, Terrain, asset_ref
from twin.sensors import Network as NetworkKind
from twin.sensors import Sensor

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SCENE_FORMAT = "lifeline-scene/1"
GLB_NAME = "scene.glb"
META_NAME = "scene-meta.json"

USE_COLOURS: Mapping[BuildingUse, str] = {
    BuildingUse.RESIDENTIAL: "#d8cfc0",
    BuildingUse.COMMERCIAL: "#7986cb",
    BuildingUse.OFFICE: "#b0bec5",
    BuildingUse.INDUSTRIAL: "#a1887f",
    BuildingUse.SCHOOL: "#f48fb1",
    BuildingUse.HOSPITAL: "#e53935",
    BuildingUse.ELDERLY_CARE: "#ab47bc",
    BuildingUse.PUBLIC: "#a5d6a7",
}
"""Building colour by use, sRGB hex: people who cannot leave quickly (school, hospital, elderly care) stand out."""

NETWORK_COLOURS: Mapping[NetworkKind, str] = {
    NetworkKind.DRAINAGE: "#26c6da",
    NetworkKind.WATER: "#1e88e5",
    NetworkKind.GAS: "#ffa000",
    NetworkKind.RAIN: "#9ccc65",
}
"""Pipe, node and sensor colour by network, sRGB hex (the operations page uses the same hues)."""

STREET_COLOUR = "#3c4654"
TERRAIN_LOW_COLOUR = "#6f8a5c"
TERRAIN_HIGH_COLOUR = "#b5a67c"
RIVER_COLOUR = "#2b6c9e"
SOIL_COLOUR = "#5b4a3a"
# The ground's soil skirt reaches this far below the lowest ground, metres: below the deepest sewer.
SKIRT_BELOW_M = 10.0
# A building's walls start this far below its ground elevation so that sloping ground never shows a gap under it.
PLINTH_M = 0.5
# Streets float this high above the terrain so the (decimated, translucent) ground never hides them.
STREET_LIFT_M = 0.5


@dataclass(slots=True)
class SceneMesh:
    """One batched mesh of the scene: many assets of one kind, each a contiguous run of triangles and vertices.

    Attributes:
        name: unique name, also the glTF node and mesh name (``buildings-school``, ``pipes-water``…).
        layer: the page's layer toggle it belongs to: ``ground``, ``streets``, ``buildings``, ``drainage``,
            ``water``, ``gas`` or ``sensors``.
        kind: ``terrain``, ``streets``, ``building``, ``link``, ``node`` or ``sensor``.
        mesh: triangles only; points in local metres (x east, y north, z up from the scene origin); point data
            ``Normals`` (unit, float) and, where the mesh has per-vertex colours, ``Colors`` (uint8 RGBA, sRGB).
        colour: base colour, sRGB hex.
        opacity: 1 opaque … 0 invisible.
        ids: city-wide asset ids in draw order (``building:B00001``, ``drainage:C12``, ``sensor:D-L-001``).
        tri_offsets: asset *k* owns triangles ``tri_offsets[k]:tri_offsets[k + 1]``; shape (len(ids) + 1,).
        vertex_offsets: asset *k* owns vertices ``vertex_offsets[k]:vertex_offsets[k + 1]``; shape (len(ids) + 1,).
        network: the network of a pipe, node or sensor mesh.
        use: the building use of a building mesh.
    """

    name: str
    layer: str
    kind: str
    mesh: Any
    colour: str
    opacity: float = 1.0
    ids: tuple[str, ...] = ()
    tri_offsets: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    vertex_offsets: IntArray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    network: str | None = None
    use: str | None = None

    @property
    def n_triangles(self) -> int:
        return int(self.mesh.n_cells)

    @property
    def n_vertices(self) -> int:
        return int(self.mesh.n_points)


@dataclass(slots=True)
class Scene:
    """A city's scene, ready to export or to plot with pyvista.

    Attributes:
        city_name, crs: from the city.
        origin_m: (x, y, z) of the local origin, CRS metres and metres above the datum.
        meshes: the batched meshes, drawn in this order.
        assets: attributes of every pickable asset by city-wide id, JSON-ready.
        options: the drawing parameters the scene was built with (exaggerations, sizes), for the record.
        build_s: seconds spent building.
    """

    city_name: str
    crs: str
    origin_m: tuple[float, float, float]
    meshes: list[SceneMesh]
    assets: dict[str, dict[str, Any]]
    options: dict[str, float | int]
    build_s: float = 0.0

    def mesh(self, name: str) -> SceneMesh:
        """Return the mesh called *name*; raise ``KeyError`` if there is none."""
        for m in self.meshes:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def n_triangles(self) -> int:
        return sum(m.n_triangles for m in self.meshes)


@dataclass(frozen=True, slots=True)
class ScenePaths:
    """Where :func:`export_scene` wrote the scene, how big it is and how long it took (seconds)."""

    glb: Path
    meta: Path
    glb_bytes: int
    triangles: int
    build_s: float
    export_s: float


def build_scene(
    city: City,
    *,
    pipe_radius_scale: float = 4.0,
    min_pipe_radius_m: float = 0.2,
    max_pipe_radius_m: float = 3.0,
    pipe_sides: int = 8,
    pipe_step_m: float = 25.0,
    pipe_follow_tolerance_m: float = 0.3,
    water_cover_m: float = 1.2,
    manhole_radius_m: float = 1.2,
    node_size_m: float = 1.6,
    sensor_size_m: float = 6.0,
    street_width_m: float = 12.0,
    street_step_m: float = 25.0,
    terrain_max_points: int = 150_000,
    terrain_opacity: float = 0.4,
) -> Scene:
    """Build the scene of *city*.

    Pipes are drawn at their burial depth: a drainage conduit's centre is at its end nodes' invert (``z_m``) plus
    its radius; a water pipe's at the node elevation (``z_m``) minus *water_cover_m* minus its radius; a gas pipe's
    at the junction's ``z_m`` (already ground minus cover). Between its end nodes a conduit runs in a straight grade
    along its plan path; a water or gas pipe keeps a cover interpolated between its ends' covers, following the
    ground. Drainage nodes are cylinders from invert to rim; water and gas nodes boxes centred at the depth of
    the pipes they join.

    Args:
        city: the city.
        pipe_radius_scale: drawn pipe radius ÷ true radius; pipes of a few decimetres vanish at city scale, so
            they are drawn this many times thicker (the burial depth of the centreline is true).
        min_pipe_radius_m: no pipe is drawn thinner than this, metres.
        max_pipe_radius_m: no pipe is drawn thicker than this, metres (a 5 m culvert ×4 would hide the street).
        pipe_sides: sides of the prism drawn for a pipe (8 looks round; 6 is lighter).
        pipe_step_m: a water or gas pipe's path is sampled at least every this many metres to follow the ground…
        pipe_follow_tolerance_m: …and the samples are kept only where the path departs from a straight grade by
            more than this, metres.
        water_cover_m: earth cover over water mains, metres.
        manhole_radius_m: drawn radius of a drainage manhole (a vertical cylinder from invert to rim), metres.
        node_size_m: edge of the box drawn at a water or gas node, metres.
        sensor_size_m: size of a sensor marker (an octahedron on the ground above the sensor), metres.
        street_width_m: drawn street width, metres.
        street_step_m: streets are draped over the terrain with a vertex at least every this many metres.
        terrain_max_points: the DEM is resampled to a coarser grid until it has at most this many points.
        terrain_opacity: opacity of the ground, so pipes beneath it show.

    Raises:
        ValueError: the city has nothing to draw.
        KeyError: a link ends at a node its network does not hold.
    """
    started = time.perf_counter()
    options: dict[str, float | int] = {
        "pipe_radius_scale": pipe_radius_scale,
        "min_pipe_radius_m": min_pipe_radius_m,
        "max_pipe_radius_m": max_pipe_radius_m,
        "pipe_sides": pipe_sides,
        "pipe_step_m": pipe_step_m,
        "pipe_follow_tolerance_m": pipe_follow_tolerance_m,
        "water_cover_m": water_cover_m,
        "manhole_radius_m": manhole_radius_m,
        "node_size_m": node_size_m,
        "sensor_size_m": sensor_size_m,
        "street_width_m": street_width_m,
        "street_step_m": street_step_m,
        "terrain_max_points": terrain_max_points,
        "terrain_opacity": terrain_opacity,
    }
    origin = _origin(city)
    ground = _GroundProbe(city.terrain, origin)
    meshes: list[SceneMesh] = []
    assets: dict[str, dict[str, Any]] = {}

    if city.terrain is not None:
        meshes.append(_terrain_mesh(city.terrain, city.rivers, origin, terrain_max_points, terrain_opacity))
    streets = _street_mesh(city.streets, ground, origin, street_width_m, street_step_m)
    if streets is not None:
        meshes.append(streets)

    by_use: dict[BuildingUse, list[Building]] = {}
    for building in city.buildings.values():
        ring = _clean_ring(building.footprint)
        if len(ring) < 3:
            log.warning("building %s has a footprint of %d points; not drawn", building.building_id, len(ring))
            continue
        by_use.setdefault(building.use, []).append(building)
    for use in BuildingUse:
        if use in by_use:
            meshes.append(_building_mesh(use, by_use[use], origin))
            assets.update((f"building:{b.building_id}", _building_record(b)) for b in by_use[use])

    for kind in (NetworkKind.DRAINAGE, NetworkKind.WATER, NetworkKind.GAS):
        network = city.networks.get(kind)
        if network is None:
            continue
        depth = _NetworkDepth(network, pipe_radius_scale, min_pipe_radius_m, max_pipe_radius_m, water_cover_m)
        if network.links:
            mesh, records = _pipe_mesh(network, depth, ground, origin, pipe_sides, pipe_step_m, pipe_follow_tolerance_m)
            meshes.append(mesh)
            assets.update(records)
        if network.nodes:
            mesh, records = _node_mesh(
                network, ground, origin, manhole_radius_m, node_size_m, water_cover_m, pipe_sides
            )
            meshes.append(mesh)
            assets.update(records)

    placed = [s for s in city.sensors.values() if s.x_m or s.y_m]
    if len(placed) < len(city.sensors):
        log.warning("%d sensors have no position; not drawn", len(city.sensors) - len(placed))
    if placed:
        mesh, records = _sensor_mesh(placed, ground, origin, sensor_size_m)
        meshes.append(mesh)
        assets.update(records)

    if not meshes:
        raise ValueError(f"city {city.name!r} has no terrain, streets, buildings, networks or sensors to draw")
    scene = Scene(
        city_name=city.name,
        crs=city.crs,
        origin_m=origin,
        meshes=meshes,
        assets=assets,
        options=options,
        build_s=time.perf_counter() - started,
    )
    log.info(
        "scene of %s: %d meshes, %d triangles, %d assets in %.2f s",
        city.name,
        len(meshes),
        scene.n_triangles,
        len(assets),
        scene.build_s,
    )
    return scene


def export_scene(source: Scene | City, out_dir: Path, *, gzip_level: int | None = 1) -> ScenePaths:
    """Write *source* (a scene, or a city to build one from with the defaults) to ``out_dir``.

    Writes ``scene.glb`` (binary glTF 2.0: one node and one mesh per :class:`SceneMesh`, Y-up, metres from the
    origin) and ``scene-meta.json`` (origin, axes, counts, legend colours, per mesh the asset ids with their
    triangle and vertex offsets, per asset its attributes), then gzip copies of both (``*.gz``, about a third and
    a seventh of the size) that a server can send to browsers as they are. Each file is written under a temporary
    name and renamed, so a server never hands out half a file; the copies are written last, so a copy older than
    its original is stale.

    Args:
        source: the scene or the city.
        out_dir: the folder, created if missing.
        gzip_level: compression level of the gzip copies (1 is fast and nearly as small as 9); None: no copies.

    Example:
        >>> import tempfile
        >>> from twin.model import Building, BuildingUse, City
        >>> b = Building("B1", ((0, 0), (10, 0), (10, 10), (0, 10)), 9.0, 3, 40.0, BuildingUse.SCHOOL)
        >>> paths = export_scene(City("tiny", "EPSG:4547", buildings={"B1": b}), Path(tempfile.mkdtemp()))
        >>> paths.glb.read_bytes()[:4], paths.triangles
        (b'glTF', 10)
    """
    scene = source if isinstance(source, Scene) else build_scene(source)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    glb = encode_glb(scene)
    meta = orjson.dumps(
        scene_meta(scene, glb_sha256=hashlib.sha256(glb).hexdigest(), glb_bytes=len(glb)),
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    glb_path = _write_atomic(out_dir / GLB_NAME, glb)
    meta_path = _write_atomic(out_dir / META_NAME, meta)
    for path, data in ((glb_path, glb), (meta_path, meta)):
        gz = path.with_name(path.name + ".gz")
        if gzip_level is None:
            gz.unlink(missing_ok=True)
        else:
            _write_atomic(gz, gzip.compress(data, compresslevel=gzip_level, mtime=0))
    export_s = time.perf_counter() - started
    log.info("exported %s (%.1f MB) in %.2f s", glb_path, len(glb) / 1e6, export_s)
    return ScenePaths(glb_path, meta_path, len(glb), scene.n_triangles, scene.build_s, export_s)


def scene_meta(scene: Scene, *, glb_sha256: str = "", glb_bytes: int = 0) -> dict[str, Any]:
    """Return the scene's metadata as a JSON-ready dict (what ``scene-meta.json`` holds)."""
    counts: dict[str, Any] = {
        "buildings": sum(len(m.ids) for m in scene.meshes if m.kind == "building"),
        "links": {m.network: len(m.ids) for m in scene.meshes if m.kind == "link"},
        "nodes": {m.network: len(m.ids) for m in scene.meshes if m.kind == "node"},
        "sensors": sum(len(m.ids) for m in scene.meshes if m.kind == "sensor"),
        "triangles": scene.n_triangles,
        "vertices": sum(m.n_vertices for m in scene.meshes),
    }
    return {
        "format": SCENE_FORMAT,
        "city": scene.city_name,
        "crs": scene.crs,
        "origin_m": list(scene.origin_m),
        "axes": "glTF Y-up, metres: X = east - origin_x, Y = elevation - origin_z, Z = -(north - origin_y)",
        "glb": {"sha256": glb_sha256, "bytes": glb_bytes},
        "options": scene.options,
        "counts": counts,
        "legend": {
            "use": {use.value: USE_COLOURS[use] for use in BuildingUse},
            "network": {net.value: colour for net, colour in NETWORK_COLOURS.items()},
        },
        "meshes": [
            {
                "name": m.name,
                "node": i,
                "layer": m.layer,
                "kind": m.kind,
                "network": m.network,
                "use": m.use,
                "colour": m.colour,
                "opacity": m.opacity,
                "triangles": m.n_triangles,
                "vertices": m.n_vertices,
                "ids": list(m.ids),
                "tri_offsets": m.tri_offsets,
                "vertex_offsets": m.vertex_offsets,
            }
            for i, m in enumerate(scene.meshes)
        ],
        "assets": scene.assets,
    }


# --- glTF -----------------------------------------------------------------------------------------------------------

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
_UNSIGNED_BYTE = 5121
_UNSIGNED_SHORT = 5123
_UNSIGNED_INT = 5125
_TRIANGLES = 4


def encode_glb(scene: Scene) -> bytes:
    """Return *scene* as binary glTF 2.0 bytes.

    Per mesh: ``POSITION`` and ``NORMAL`` (float32, Y-up), ``COLOR_0`` (normalised uint8 RGBA, linear) where the
    mesh has vertex colours, triangle indices (uint16 or uint32), and a metallic-roughness material (``BLEND``
    where the mesh is translucent). Node *i* is mesh *i*, named like the mesh, with ``extras.layer`` and
    ``extras.kind``.
    """
    chunks: list[bytes] = []
    offset = 0
    buffer_views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []

    def add_view(data: bytes, target: int) -> int:
        nonlocal offset
        buffer_views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": target})
        pad = (-len(data)) % 4
        chunks.append(data + b"\0" * pad)
        offset += len(data) + pad
        return len(buffer_views) - 1

    def add_accessor(view: int, component: int, count: int, kind: str, **extra: Any) -> int:
        accessors.append({"bufferView": view, "componentType": component, "count": count, "type": kind, **extra})
        return len(accessors) - 1

    meshes: list[dict[str, Any]] = []
    materials: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for i, m in enumerate(scene.meshes):
        points = np.asarray(m.mesh.points, dtype=np.float64)
        position = _to_gltf_axes(points).astype(np.float32)
        normal = _to_gltf_axes(np.asarray(m.mesh.point_data["Normals"], dtype=np.float64)).astype(np.float32)
        faces = _triangles(m.mesh)
        attributes = {
            "POSITION": add_accessor(
                add_view(position.tobytes(), _ARRAY_BUFFER),
                _FLOAT,
                len(position),
                "VEC3",
                min=position.min(axis=0).tolist() if len(position) else [0.0, 0.0, 0.0],
                max=position.max(axis=0).tolist() if len(position) else [0.0, 0.0, 0.0],
            ),
            "NORMAL": add_accessor(add_view(normal.tobytes(), _ARRAY_BUFFER), _FLOAT, len(normal), "VEC3"),
        }
        if "Colors" in m.mesh.point_data:
            colours = _srgb_bytes_to_linear_bytes(np.asarray(m.mesh.point_data["Colors"], dtype=np.uint8))
            view = add_view(colours.tobytes(), _ARRAY_BUFFER)
            attributes["COLOR_0"] = add_accessor(view, _UNSIGNED_BYTE, len(colours), "VEC4", normalized=True)
        small = len(position) <= 65535
        index_type = _UNSIGNED_SHORT if small else _UNSIGNED_INT
        index_bytes = faces.astype(np.uint16 if small else np.uint32).tobytes()
        indices = add_accessor(add_view(index_bytes, _ELEMENT_ARRAY_BUFFER), index_type, faces.size, "SCALAR")
        rgba = [*_srgb_to_linear(_hex_rgb(m.colour)), m.opacity]
        if "Colors" in m.mesh.point_data:
            rgba = [1.0, 1.0, 1.0, m.opacity]  # the vertex colours carry the colour
        materials.append(
            {
                "name": m.name,
                "pbrMetallicRoughness": {"baseColorFactor": rgba, "metallicFactor": 0.0, "roughnessFactor": 0.85},
                "alphaMode": "BLEND" if m.opacity < 1.0 else "OPAQUE",
                "doubleSided": m.kind in ("terrain", "streets"),
            }
        )
        meshes.append(
            {
                "name": m.name,
                "primitives": [
                    {"attributes": attributes, "indices": indices, "material": i, "mode": _TRIANGLES},
                ],
            }
        )
        nodes.append({"name": m.name, "mesh": i, "extras": {"layer": m.layer, "kind": m.kind, "meta_index": i}})

    binary = b"".join(chunks)
    document = {
        "asset": {"version": "2.0", "generator": "Lifeline Twin twin.scene"},
        "extras": {"origin_m": list(scene.origin_m), "crs": scene.crs, "city": scene.city_name},
        "scene": 0,
        "scenes": [{"name": scene.city_name, "nodes": list(range(len(nodes)))}],
        "nodes": nodes,
        "meshes": meshes,
        "materials": materials,
        "accessors": accessors,
        "bufferViews": buffer_views,
        "buffers": [{"byteLength": len(binary)}],
    }
    json_chunk = orjson.dumps(document)
    json_chunk += b" " * ((-len(json_chunk)) % 4)
    total = 12 + 8 + len(json_chunk) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(json_chunk), b"JSON"),
            json_chunk,
            struct.pack("<I4s", len(binary), b"BIN\0"),
            binary,
        ]
    )


def _to_gltf_axes(xyz: FloatArray) -> FloatArray:
    """(x east, y north, z up) → glTF (x, y up, z south): (x, z, −y). A rotation, so windings keep their sense."""
    return np.column_stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]]) if len(xyz) else np.zeros((0, 3))


def _triangles(mesh: Any) -> IntArray:
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    triangles = faces.reshape(-1, 4)
    if not np.all(triangles[:, 0] == 3):
        raise ValueError("scene meshes must hold triangles only")
    return triangles[:, 1:]


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# --- colours --------------------------------------------------------------------------------------------------------


def _hex_rgb(colour: str) -> tuple[float, float, float]:
    text = colour.lstrip("#")
    return (int(text[0:2], 16) / 255.0, int(text[2:4], 16) / 255.0, int(text[4:6], 16) / 255.0)


def _srgb_to_linear(rgb: Iterable[float]) -> list[float]:
    return [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]


def _srgb_bytes_to_linear_bytes(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    c = rgba[:, :3].astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = rgba.copy()
    out[:, :3] = np.round(linear * 255.0).astype(np.uint8)
    return out


def _rgba_bytes(colour: str) -> npt.NDArray[np.uint8]:
    return np.array([round(c * 255) for c in _hex_rgb(colour)] + [255], dtype=np.uint8)


# --- placement ------------------------------------------------------------------------------------------------------


def _origin(city: City) -> tuple[float, float, float]:
    """The local origin: the centre of what is drawn, at the median ground elevation, rounded to whole metres."""
    if city.terrain is not None:
        xmin, ymin, xmax, ymax = city.terrain.bounds
        z = float(np.median(city.terrain.elevation_m))
    else:
        xy = [p for b in city.buildings.values() for p in b.footprint]
        xy += [(n.x_m, n.y_m) for net in city.networks.values() for n in net.nodes.values()]
        xy += [p for street in city.streets for p in street]
        if not xy:
            return (0.0, 0.0, 0.0)
        arr = np.asarray(xy, dtype=np.float64)
        xmin, ymin = arr.min(axis=0)
        xmax, ymax = arr.max(axis=0)
        grounds = [b.ground_m for b in city.buildings.values()]
        z = float(np.median(grounds)) if grounds else 0.0
    return (float(round((xmin + xmax) / 2)), float(round((ymin + ymax) / 2)), float(round(z)))


class _GroundProbe:
    """Ground elevation in absolute metres at CRS points: the terrain where there is one, else *default_m*."""

    def __init__(self, terrain: Terrain | None, origin: tuple[float, float, float]) -> None:
        self.terrain = terrain
        self.default_m = origin[2]

    def at(self, x_m: FloatArray, y_m: FloatArray) -> FloatArray:
        if self.terrain is None:
            return np.full(np.shape(x_m), self.default_m, dtype=np.float64)
        return np.asarray(self.terrain.elevation_at(np.asarray(x_m), np.asarray(y_m)), dtype=np.float64).reshape(
            np.shape(x_m)
        )


def _clean_ring(ring: Sequence[tuple[float, float]]) -> Sequence[tuple[float, float]]:
    if len(ring) > 1 and tuple(ring[0]) == tuple(ring[-1]):
        return ring[:-1]
    return ring


def _pyvista() -> Any:
    """Import pyvista on first use: VTK takes about half a second to load, and the viewer only needs file names."""
    import pyvista

    return pyvista


def _poly(points: FloatArray, triangles: IntArray, normals: FloatArray, colours: Any = None) -> Any:
    """A pyvista triangle mesh from numpy arrays (points (N, 3), triangles (T, 3), normals (N, 3))."""
    faces = np.empty((len(triangles), 4), dtype=np.int64)
    faces[:, 0] = 3
    faces[:, 1:] = triangles
    mesh = _pyvista().PolyData(np.ascontiguousarray(points, dtype=np.float64), faces=faces.ravel())
    mesh.point_data["Normals"] = normals.astype(np.float32)
    if colours is not None:
        mesh.point_data["Colors"] = colours
    return mesh


def _offsets(counts: IntArray) -> IntArray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _group_by_asset(
    points: FloatArray,
    normals: FloatArray,
    triangles: IntArray,
    vertex_asset: IntArray,
    tri_asset: IntArray,
    n_assets: int,
) -> tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray]:
    """Reorder vertices and triangles so each asset's are contiguous, in asset order; return them with offsets."""
    vorder = np.argsort(vertex_asset, kind="stable")
    new_index = np.empty_like(vorder)
    new_index[vorder] = np.arange(len(vorder))
    torder = np.argsort(tri_asset, kind="stable")
    tris = new_index[triangles[torder]]
    return (
        points[vorder],
        normals[vorder],
        tris,
        _offsets(np.bincount(tri_asset, minlength=n_assets).astype(np.int64)),
        _offsets(np.bincount(vertex_asset, minlength=n_assets).astype(np.int64)),
    )


# --- terrain and streets --------------------------------------------------------------------------------------------


def _terrain_mesh(
    terrain: Terrain,
    rivers: Sequence[Sequence[tuple[float, float]]],
    origin: tuple[float, float, float],
    max_points: int,
    opacity: float,
) -> SceneMesh:
    """The DEM as a triangulated surface, resampled to at most *max_points*, coloured by elevation and river.

    Its edge is closed by a vertical skirt of soil down to :data:`SKIRT_BELOW_M` below the lowest ground.
    """
    z = terrain.elevation_m
    rows, cols = z.shape
    stride = max(1, math.ceil(math.sqrt(rows * cols / max(max_points, 4))))
    row_idx = np.unique(np.append(np.arange(0, rows, stride), rows - 1))
    col_idx = np.unique(np.append(np.arange(0, cols, stride), cols - 1))
    xs = terrain.x0_m + col_idx * terrain.cell_m - origin[0]
    ys = terrain.y0_m + row_idx * terrain.cell_m - origin[1]
    gx, gy = np.meshgrid(xs, ys)
    gz = z[np.ix_(row_idx, col_idx)] - origin[2]
    grid = _pyvista().StructuredGrid(gx, gy, gz)
    surface = grid.extract_surface(algorithm="dataset_surface", pass_pointid=False, pass_cellid=False).triangulate()
    points = np.asarray(surface.points, dtype=np.float64)
    triangles = _triangles(surface)
    p = points[triangles]
    if np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2].sum() < 0:
        triangles = triangles[:, ::-1]  # wind counter-clockwise seen from above, so the ground faces up
    surface = _poly(points, triangles, np.zeros_like(points)).compute_normals(
        point_normals=True, cell_normals=False, split_vertices=False, consistent_normals=False
    )
    points = np.asarray(surface.points, dtype=np.float64)
    elevation = points[:, 2]
    lo, hi = np.percentile(elevation, [2, 98]) if len(elevation) else (0.0, 1.0)
    t = np.clip((elevation - lo) / max(hi - lo, 1e-6), 0.0, 1.0)[:, None]
    low = np.asarray(_hex_rgb(TERRAIN_LOW_COLOUR))
    high = np.asarray(_hex_rgb(TERRAIN_HIGH_COLOUR))
    rgb = low * (1 - t) + high * t
    if rivers:
        water = np.zeros(len(points), dtype=bool)
        for ring in rivers:
            if len(ring) >= 3:
                polygon = shapely.Polygon(ring)
                water |= shapely.contains_xy(polygon, points[:, 0] + origin[0], points[:, 1] + origin[1])
        rgb[water] = _hex_rgb(RIVER_COLOUR)
    # A skirt of soil round the edge, down below the deepest sewer, shows that the ground is a block with depth.
    edge = np.concatenate(
        [
            np.column_stack([np.zeros(len(col_idx) - 1, dtype=np.int64), np.arange(len(col_idx) - 1)]),
            np.column_stack([np.arange(len(row_idx) - 1), np.full(len(row_idx) - 1, len(col_idx) - 1)]),
            np.column_stack([np.full(len(col_idx) - 1, len(row_idx) - 1), np.arange(len(col_idx) - 1, 0, -1)]),
            np.column_stack([np.arange(len(row_idx) - 1, 0, -1), np.zeros(len(row_idx) - 1, dtype=np.int64)]),
        ]
    )
    a, b = edge, np.roll(edge, -1, axis=0)
    bottom = np.full(len(edge), float(gz.min()) - SKIRT_BELOW_M)
    skirt_points, skirt_normals, skirt_tris = _walls(
        np.column_stack([gx[a[:, 0], a[:, 1]], gy[a[:, 0], a[:, 1]]]),
        np.column_stack([gx[b[:, 0], b[:, 1]], gy[b[:, 0], b[:, 1]]]),
        bottom,
        bottom,
        gz[a[:, 0], a[:, 1]],
        gz[b[:, 0], b[:, 1]],
    )
    rgb = np.concatenate([rgb, np.tile(_hex_rgb(SOIL_COLOUR), (len(skirt_points), 1))])
    colours = np.empty((len(rgb), 4), dtype=np.uint8)
    colours[:, :3] = np.round(rgb * 255).astype(np.uint8)
    colours[:, 3] = 255
    mesh = _poly(
        np.concatenate([points, skirt_points]),
        np.concatenate([_triangles(surface), skirt_tris + len(points)]),
        np.concatenate([np.asarray(surface.point_data["Normals"], dtype=np.float64), skirt_normals]),
        colours,
    )
    return SceneMesh(
        name="terrain",
        layer="ground",
        kind="terrain",
        mesh=mesh,
        colour=TERRAIN_LOW_COLOUR,
        opacity=opacity,
        tri_offsets=np.array([0, mesh.n_cells], dtype=np.int64),
        vertex_offsets=np.array([0, mesh.n_points], dtype=np.int64),
    )


def _street_mesh(
    streets: Sequence[Sequence[tuple[float, float]]],
    ground: _GroundProbe,
    origin: tuple[float, float, float],
    width_m: float,
    step_m: float,
) -> SceneMesh | None:
    """Streets as flat ribbons draped over the terrain, a vertex pair at least every *step_m*; None if none."""
    samples: list[FloatArray] = []
    for line in streets:
        pts = np.asarray(line, dtype=np.float64)
        if len(pts) < 2:
            continue
        for a, b in itertools.pairwise(pts):
            n = max(1, math.ceil(float(np.hypot(*(b - a))) / step_m))
            t = np.linspace(0.0, 1.0, n + 1)[:, None]
            samples.append(a + (b - a) * t)
    if not samples:
        return None
    counts = np.array([len(s) for s in samples], dtype=np.int64)
    centre = np.concatenate(samples)
    starts = _offsets(counts)[:-1]
    # Direction of each ribbon (one straight segment each), repeated for its samples.
    first, last = centre[starts], centre[starts + counts - 1]
    direction = last - first
    direction /= np.maximum(np.linalg.norm(direction, axis=1), 1e-9)[:, None]
    side = np.repeat(np.column_stack([-direction[:, 1], direction[:, 0]]), counts, axis=0) * (width_m / 2)
    left, right = centre + side, centre - side
    z_left = ground.at(left[:, 0], left[:, 1]) + STREET_LIFT_M - origin[2]
    z_right = ground.at(right[:, 0], right[:, 1]) + STREET_LIFT_M - origin[2]
    n = len(centre)
    points = np.empty((2 * n, 3))
    points[0::2, :2] = right - origin[:2]
    points[0::2, 2] = z_right
    points[1::2, :2] = left - origin[:2]
    points[1::2, 2] = z_left
    # Quads between consecutive samples of the same ribbon: right_i, right_i+1, left_i+1, left_i (counter-clockwise
    # seen from above, since left is to the left of the direction of travel).
    is_last = np.zeros(n, dtype=bool)
    is_last[starts + counts - 1] = True
    i = np.flatnonzero(~is_last)
    r0, l0, r1, l1 = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
    triangles = np.concatenate([np.column_stack([r0, r1, l1]), np.column_stack([r0, l1, l0])])
    normals = np.tile([0.0, 0.0, 1.0], (2 * n, 1))
    mesh = _poly(points, triangles, normals)
    return SceneMesh(
        name="streets",
        layer="streets",
        kind="streets",
        mesh=mesh,
        colour=STREET_COLOUR,
        tri_offsets=np.array([0, mesh.n_cells], dtype=np.int64),
        vertex_offsets=np.array([0, mesh.n_points], dtype=np.int64),
    )


# --- buildings ------------------------------------------------------------------------------------------------------


def _building_mesh(use: BuildingUse, buildings: Sequence[Building], origin: tuple[float, float, float]) -> SceneMesh:
    """Extrude every footprint of one use at once: a quad per wall edge, a roof polygon triangulated by pyvista."""
    rings = [_clean_ring(b.footprint) for b in buildings]
    n = len(buildings)
    counts = np.fromiter((len(r) for r in rings), dtype=np.int64, count=n)
    xy = np.asarray([p for r in rings for p in r], dtype=np.float64) - np.asarray(origin[:2])
    total = len(xy)
    starts = _offsets(counts)[:-1]
    owner = np.repeat(np.arange(n), counts)
    nxt = np.arange(1, total + 1)
    nxt[starts + counts - 1] = starts
    cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    ccw = (np.add.reduceat(cross, starts) >= 0)[owner]
    base = np.fromiter((b.ground_m - PLINTH_M for b in buildings), dtype=np.float64, count=n) - origin[2]
    top = np.fromiter((b.ground_m + b.height_m for b in buildings), dtype=np.float64, count=n) - origin[2]

    # Walls: edge a→b with the outside on the right of a→b as seen from above, whatever the ring's orientation.
    here = np.arange(total)
    a = np.where(ccw, here, nxt)
    b = np.where(ccw, nxt, here)
    zb, zt = base[owner], top[owner]
    wall_points, wall_normals, wall_tris = _walls(xy[a], xy[b], zb, zb, zt, zt)
    wall_tri_owner = np.concatenate([owner, owner])

    # Roofs: each ring counter-clockwise, triangulated (concave rings too) by pyvista.
    local = here - starts[owner]
    order = np.where(ccw, here, starts[owner] + counts[owner] - 1 - local)
    roof_points = np.column_stack([xy[order], top[owner]])
    roof = _pyvista().PolyData(roof_points, faces=np.insert(np.arange(total), starts, counts))
    roof.cell_data["owner"] = np.arange(n)
    roof = roof.triangulate()
    roof_tris = _triangles(roof) + 4 * total
    roof_tri_owner = np.asarray(roof.cell_data["owner"], dtype=np.int64)

    points = np.concatenate([wall_points, roof_points])
    normals = np.concatenate([wall_normals, np.tile([0.0, 0.0, 1.0], (total, 1))])
    vertex_owner = np.concatenate([np.repeat(owner, 4), owner])
    points, normals, tris, tri_offsets, vertex_offsets = _group_by_asset(
        points,
        normals,
        np.concatenate([wall_tris, roof_tris]),
        vertex_owner,
        np.concatenate([wall_tri_owner, roof_tri_owner]),
        n,
    )
    return SceneMesh(
        name=f"buildings-{use.value.replace('_', '-')}",
        layer="buildings",
        kind="building",
        mesh=_poly(points, tris, normals),
        colour=USE_COLOURS[use],
        ids=tuple(f"building:{b.building_id}" for b in buildings),
        tri_offsets=tri_offsets,
        vertex_offsets=vertex_offsets,
        use=use.value,
    )


def _walls(
    pa: FloatArray, pb: FloatArray, bottom_a: FloatArray, bottom_b: FloatArray, top_a: FloatArray, top_b: FloatArray
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Vertical quads from plan edges a→b (E, 2) whose outside is on the right of a→b seen from above.

    Returns points (4E, 3) (a bottom, b bottom, b top, a top per quad), flat outward normals and two triangles per
    quad (2E, 3), the first E triangles being the quads' lower-right halves.
    """
    e = len(pa)
    quad = np.empty((e, 4, 3))
    quad[:, 0, :2], quad[:, 0, 2] = pa, bottom_a
    quad[:, 1, :2], quad[:, 1, 2] = pb, bottom_b
    quad[:, 2, :2], quad[:, 2, 2] = pb, top_b
    quad[:, 3, :2], quad[:, 3, 2] = pa, top_a
    d = pb - pa
    outward = np.column_stack([d[:, 1], -d[:, 0], np.zeros(e)])
    outward /= np.maximum(np.linalg.norm(outward, axis=1), 1e-12)[:, None]
    q = 4 * np.arange(e)
    tris = np.concatenate([np.column_stack([q, q + 1, q + 2]), np.column_stack([q, q + 2, q + 3])])
    return quad.reshape(-1, 3), np.repeat(outward, 4, axis=0), tris


def _building_record(b: Building) -> dict[str, Any]:
    return {
        "type": "building",
        "id": b.building_id,
        "name": b.name,
        "use": b.use.value,
        "height_m": b.height_m,
        "floors": b.floors,
        "ground_m": b.ground_m,
        "basement": b.basement,
        "occupants": b.occupants,
    }


# --- pipes and nodes ------------------------------------------------------------------------------------------------


class _NetworkDepth:
    """Where a network's pipes run: centre elevation at each end of a link, absolute metres, and drawn radius."""

    def __init__(
        self, network: PipeNetwork, scale: float, min_radius_m: float, max_radius_m: float, water_cover_m: float
    ) -> None:
        self.network = network
        self.scale = scale
        self.min_radius_m = min_radius_m
        self.max_radius_m = max_radius_m
        self.water_cover_m = water_cover_m

    @property
    def follows_ground(self) -> bool:
        """Pressure mains keep their cover over the ground between nodes; gravity sewers run straight."""
        return self.network.kind is not NetworkKind.DRAINAGE

    def centre_m(self, node: Node, link: Link) -> float:
        radius = link.diameter_m / 2
        if self.network.kind is NetworkKind.DRAINAGE:
            return node.z_m + radius
        if self.network.kind is NetworkKind.WATER:
            return node.z_m - self.water_cover_m - radius
        return node.z_m

    def drawn_radius_m(self, link: Link) -> float:
        return min(max(link.diameter_m / 2 * self.scale, self.min_radius_m), max(self.max_radius_m, self.min_radius_m))


def _pipe_mesh(
    network: PipeNetwork,
    depth: _NetworkDepth,
    ground: _GroundProbe,
    origin: tuple[float, float, float],
    sides: int,
    step_m: float,
    tolerance_m: float,
) -> tuple[SceneMesh, dict[str, dict[str, Any]]]:
    """Every link of *network* as prisms along its plan path, capped at its two ends.

    A drainage conduit runs in a straight grade between its end centre elevations. A water or gas pipe keeps its
    cover: its path is sampled at least every *step_m* and its depth below the ground is interpolated between the
    depths at its ends, so a main crossing a hollow dips with the ground instead of surfacing; samples are kept
    only on links where that path departs from a straight grade by more than *tolerance_m*.
    """
    links = list(network.links.values())
    n = len(links)
    plans: list[FloatArray] = []
    fracs: list[FloatArray] = []
    za = np.empty(n)
    zb = np.empty(n)
    radius = np.empty(n)
    originals: list[npt.NDArray[np.bool_]] = []
    for k, link in enumerate(links):
        try:
            a, b = network.endpoints(link)
        except KeyError as exc:
            raise KeyError(
                f"link {link.link_id!r} of the {network.kind.value} network ends at unknown node {exc}"
            ) from exc
        plan = np.asarray(network.polyline(link), dtype=np.float64)
        original = np.ones(len(plan), dtype=bool)
        if depth.follows_ground:
            plan, original = _densify(plan, step_m)
        step = np.hypot(*np.diff(plan, axis=0).T)
        along = np.concatenate([[0.0], np.cumsum(step)])
        plans.append(plan)
        originals.append(original)
        fracs.append(along / along[-1] if along[-1] > 0 else np.linspace(0.0, 1.0, len(plan)))
        za[k], zb[k] = depth.centre_m(a, link), depth.centre_m(b, link)
        radius[k] = depth.drawn_radius_m(link)
    counts = np.fromiter((len(p) for p in plans), dtype=np.int64, count=n)
    owner = np.repeat(np.arange(n), counts)
    plan_all = np.concatenate(plans)
    frac = np.concatenate(fracs)
    surface = ground.at(plan_all[:, 0], plan_all[:, 1])
    first = _offsets(counts)[:-1]
    last = first + counts - 1
    straight = za[owner] + (zb - za)[owner] * frac
    if depth.follows_ground:
        below_a, below_b = surface[first] - za, surface[last] - zb
        z = surface - (below_a[owner] + (below_b - below_a)[owner] * frac)
        # Keep the added samples only on links where following the ground departs from a straight grade.
        bends = np.maximum.reduceat(np.abs(z - straight), first) > tolerance_m
        keep = np.concatenate(originals) | bends[owner]
        plan_all, z, owner, surface = plan_all[keep], z[keep], owner[keep], surface[keep]
        counts = np.bincount(owner, minlength=n).astype(np.int64)
        first = _offsets(counts)[:-1]
        last = first + counts - 1
    else:
        z = straight
    path = np.column_stack([plan_all, z]) - np.asarray(origin)

    is_last = np.zeros(len(path), dtype=bool)
    is_last[last] = True
    seg = np.flatnonzero(~is_last)
    seg_owner = owner[seg]
    cap_start = np.isin(seg, first)
    cap_end = np.isin(seg + 1, last)
    points, normals, tris, vertex_prism, tri_prism = _prisms(
        path[seg], path[seg + 1], radius[seg_owner], sides, cap_start=cap_start, cap_end=cap_end
    )
    points, normals, tris, tri_offsets, vertex_offsets = _group_by_asset(
        points, normals, tris, seg_owner[vertex_prism], seg_owner[tri_prism], n
    )
    mid_index = first + (counts - 1) // 2
    mid_cover = surface[mid_index] - (path[mid_index, 2] + origin[2])
    records = {
        asset_ref(network.kind, link.link_id): {
            "type": "link",
            "network": network.kind.value,
            "id": link.link_id,
            "kind": link.kind.value,
            "from": link.from_id,
            "to": link.to_id,
            "diameter_m": link.diameter_m,
            "length_m": link.length_m,
            "roughness": link.roughness,
            "centre_from_m": round(float(za[k]), 3),
            "centre_to_m": round(float(zb[k]), 3),
            "cover_mid_m": round(float(mid_cover[k]) - link.diameter_m / 2, 3),
            "attrs": dict(link.attrs),
        }
        for k, link in enumerate(links)
    }
    mesh = SceneMesh(
        name=f"pipes-{network.kind.value}",
        layer=network.kind.value,
        kind="link",
        mesh=_poly(points, tris, normals),
        colour=NETWORK_COLOURS[network.kind],
        ids=tuple(asset_ref(network.kind, link.link_id) for link in links),
        tri_offsets=tri_offsets,
        vertex_offsets=vertex_offsets,
        network=network.kind.value,
    )
    return mesh, records


def _densify(plan: FloatArray, step_m: float) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Insert points into the polyline *plan* (N, 2) so no piece is longer than *step_m*; mark the original points."""
    pieces = [plan[:1]]
    marks = [np.ones(1, dtype=bool)]
    for a, b in itertools.pairwise(plan):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / step_m))
        pieces.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
        mark = np.zeros(n, dtype=bool)
        mark[-1] = True
        marks.append(mark)
    return np.concatenate(pieces), np.concatenate(marks)


def _node_mesh(
    network: PipeNetwork,
    ground: _GroundProbe,
    origin: tuple[float, float, float],
    manhole_radius_m: float,
    node_size_m: float,
    water_cover_m: float,
    sides: int,
) -> tuple[SceneMesh, dict[str, dict[str, Any]]]:
    """Drainage nodes as vertical cylinders from invert to rim; water and gas nodes as boxes at their depth."""
    nodes = list(network.nodes.values())
    x = np.fromiter((n.x_m for n in nodes), dtype=np.float64, count=len(nodes))
    y = np.fromiter((n.y_m for n in nodes), dtype=np.float64, count=len(nodes))
    z = np.fromiter((n.z_m for n in nodes), dtype=np.float64, count=len(nodes))
    surface = ground.at(x, y)
    if network.kind is NetworkKind.DRAINAGE:
        rim = np.array(
            [
                n.ground_m if n.ground_m is not None else (n.z_m + n.depth_m if n.depth_m > 0 else s)
                for n, s in zip(nodes, surface, strict=True)
            ]
        )
        bottom, top = z, np.maximum(rim, z + 0.5)
        radius = np.full(len(nodes), manhole_radius_m)
        n_sides, angle = sides, 0.0
    else:
        # The box stands where the pipes meet: a water node's elevation is the ground's, a gas node's the pipe's.
        centre = z - water_cover_m if network.kind is NetworkKind.WATER else z
        bottom, top = centre - node_size_m / 2, centre + node_size_m / 2
        radius = np.full(len(nodes), node_size_m / math.sqrt(2))
        n_sides, angle = 4, math.pi / 4
    p0 = np.column_stack([x, y, bottom]) - np.asarray(origin)
    p1 = np.column_stack([x, y, top]) - np.asarray(origin)
    every = np.ones(len(nodes), dtype=bool)
    points, normals, tris, vertex_prism, tri_prism = _prisms(
        p0, p1, radius, n_sides, cap_start=every, cap_end=every, angle=angle
    )
    points, normals, tris, tri_offsets, vertex_offsets = _group_by_asset(
        points, normals, tris, vertex_prism, tri_prism, len(nodes)
    )
    records = {
        asset_ref(network.kind, n.node_id): {
            "type": "node",
            "network": network.kind.value,
            "id": n.node_id,
            "kind": n.kind.value,
            "x_m": n.x_m,
            "y_m": n.y_m,
            "z_m": n.z_m,
            "depth_m": n.depth_m,
            "ground_m": n.ground_m if n.ground_m is not None else round(float(s), 3),
            "attrs": dict(n.attrs),
        }
        for n, s in zip(nodes, surface, strict=True)
    }
    mesh = SceneMesh(
        name=f"nodes-{network.kind.value}",
        layer=network.kind.value,
        kind="node",
        mesh=_poly(points, tris, normals),
        colour=_shade(NETWORK_COLOURS[network.kind], 0.75),
        ids=tuple(asset_ref(network.kind, n.node_id) for n in nodes),
        tri_offsets=tri_offsets,
        vertex_offsets=vertex_offsets,
        network=network.kind.value,
    )
    return mesh, records


def _shade(colour: str, factor: float) -> str:
    r, g, b = (min(255, round(c * 255 * factor)) for c in _hex_rgb(colour))
    return f"#{r:02x}{g:02x}{b:02x}"


def _prisms(
    p0: FloatArray,
    p1: FloatArray,
    radius: FloatArray,
    sides: int,
    *,
    cap_start: npt.NDArray[np.bool_],
    cap_end: npt.NDArray[np.bool_],
    angle: float = 0.0,
) -> tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray]:
    """Prisms of *sides* sides around the axes p0→p1 (S, 3), radius (S,) metres, smooth side normals, flat caps.

    Args:
        p0, p1: axis ends, (S, 3) metres.
        radius: distance of the corners from the axis, (S,) metres.
        sides: corners per cross-section.
        cap_start, cap_end: (S,) whether to close the prism at p0 / p1.
        angle: rotation of the first corner about the axis, radians.

    Returns:
        points (V, 3), normals (V, 3), triangles (T, 3) winding counter-clockwise seen from outside, and the
        prism each vertex (V,) and each triangle (T,) belongs to.
    """
    s = len(p0)
    axis = p1 - p0
    length = np.linalg.norm(axis, axis=1)
    d = axis / np.maximum(length, 1e-9)[:, None]
    d[length < 1e-9] = (0.0, 0.0, 1.0)  # a zero-length prism still gets a frame (and draws as a flat disc)
    u = np.cross(d, [0.0, 0.0, 1.0])
    vertical = np.linalg.norm(u, axis=1) < 1e-6
    u[vertical] = np.cross(d[vertical], [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u, axis=1)[:, None]
    v = np.cross(d, u)  # (u, v, d) is right-handed, so the rings below turn counter-clockwise about d
    theta = angle + 2 * math.pi * np.arange(sides) / sides
    ring = np.cos(theta)[None, :, None] * u[:, None, :] + np.sin(theta)[None, :, None] * v[:, None, :]  # (S, n, 3)
    offset = ring * radius[:, None, None]
    a = p0[:, None, :] + offset
    b = p1[:, None, :] + offset
    k = np.arange(sides)
    k1 = (k + 1) % sides
    side = np.concatenate([np.column_stack([k, k1, sides + k1]), np.column_stack([k, sides + k1, sides + k])])
    points = [np.concatenate([a, b], axis=1).reshape(-1, 3)]
    normals = [np.concatenate([ring, ring], axis=1).reshape(-1, 3)]
    tris = [(side[None, :, :] + (2 * sides * np.arange(s))[:, None, None]).reshape(-1, 3)]
    vertex_prism = [np.repeat(np.arange(s), 2 * sides)]
    tri_prism = [np.repeat(np.arange(s), len(side))]
    count = 2 * sides * s
    fan = np.arange(1, sides - 1)
    zeros = np.zeros_like(fan)
    # The start cap faces −d, so its fan turns the other way; the end cap faces +d.
    for which, ends, sign, cap in (
        (cap_start, a, -1.0, np.column_stack([zeros, fan + 1, fan])),
        (cap_end, b, 1.0, np.column_stack([zeros, fan, fan + 1])),
    ):
        idx = np.flatnonzero(which)
        if not len(idx) or sides < 3:
            continue
        points.append(ends[idx].reshape(-1, 3))
        normals.append(np.repeat(sign * d[idx], sides, axis=0))
        tris.append((cap[None, :, :] + (count + sides * np.arange(len(idx)))[:, None, None]).reshape(-1, 3))
        vertex_prism.append(np.repeat(idx, sides))
        tri_prism.append(np.repeat(idx, len(cap)))
        count += sides * len(idx)
    return (
        np.concatenate(points),
        np.concatenate(normals),
        np.concatenate(tris),
        np.concatenate(vertex_prism),
        np.concatenate(tri_prism),
    )


# --- sensors --------------------------------------------------------------------------------------------------------


def _sensor_mesh(
    sensors: Sequence[Sensor], ground: _GroundProbe, origin: tuple[float, float, float], size_m: float
) -> tuple[SceneMesh, dict[str, dict[str, Any]]]:
    """Sensors as octahedra standing on the ground above them, with per-vertex colours the page can change."""
    solid = _pyvista().PlatonicSolid("octahedron", radius=1.0).triangulate()
    corners = np.asarray(solid.points, dtype=np.float64)
    faces = _triangles(solid)
    # Flat shading: every triangle gets its own three vertices and the face normal.
    tri_points = corners[faces].reshape(-1, 3)
    face_normal = np.cross(corners[faces[:, 1]] - corners[faces[:, 0]], corners[faces[:, 2]] - corners[faces[:, 0]])
    centroid = corners[faces].mean(axis=1)
    flip = np.einsum("ij,ij->i", face_normal, centroid) < 0
    face_tris = np.arange(len(tri_points)).reshape(-1, 3)
    face_tris[flip] = face_tris[flip][:, ::-1]
    face_normal[flip] *= -1
    face_normal /= np.linalg.norm(face_normal, axis=1)[:, None]
    tri_normals = np.repeat(face_normal, 3, axis=0)

    x = np.fromiter((s.x_m for s in sensors), dtype=np.float64, count=len(sensors))
    y = np.fromiter((s.y_m for s in sensors), dtype=np.float64, count=len(sensors))
    centre = np.column_stack([x, y, ground.at(x, y) + size_m]) - np.asarray(origin)
    scale = np.array([size_m / 2, size_m / 2, size_m])  # a tall diamond reads as a marker from any side
    nv = len(tri_points)
    points = (tri_points[None, :, :] * scale + centre[:, None, :]).reshape(-1, 3)
    normals = tri_normals / scale
    normals = np.tile(normals / np.linalg.norm(normals, axis=1)[:, None], (len(sensors), 1))
    tris = (face_tris[None, :, :] + (nv * np.arange(len(sensors)))[:, None, None]).reshape(-1, 3)
    colours = np.repeat(np.stack([_rgba_bytes(NETWORK_COLOURS[s.network]) for s in sensors]), nv, axis=0)
    records = {
        f"sensor:{s.sensor_id}": {
            "type": "sensor",
            "id": s.sensor_id,
            "name": s.name,
            "network": s.network.value,
            "quantity": s.quantity.value,
            "unit": s.unit,
            "asset_id": s.asset_id,
            "district": s.district,
            "x_m": s.x_m,
            "y_m": s.y_m,
        }
        for s in sensors
    }
    mesh = SceneMesh(
        name="sensors",
        layer="sensors",
        kind="sensor",
        mesh=_poly(points, tris, normals, colours),
        colour="#ffffff",
        ids=tuple(f"sensor:{s.sensor_id}" for s in sensors),
        tri_offsets=_offsets(np.full(len(sensors), len(face_tris), dtype=np.int64)),
        vertex_offsets=_offsets(np.full(len(sensors), nv, dtype=np.int64)),
    )
    return mesh, records


__all__ = [
    "GLB_NAME",
    "META_NAME",
    "NETWORK_COLOURS",
    "USE_COLOURS",
    "Scene",
    "SceneMesh",
    "ScenePaths",
    "build_scene",
    "encode_glb",
    "export_scene",
    "scene_meta",
]
