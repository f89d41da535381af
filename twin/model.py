"""The twin's engine-neutral asset model: nodes and links of a pipe network, buildings, terrain, the city.

Each engine module converts between its engine's model and these values: :mod:`twin.drainage` (SWMM),
:mod:`twin.water` (EPANET through WNTR), :mod:`twin.gas` (pandapipes). Spatial queries, network tracing, the
3D scene and the store work on these values only, whatever engine a network came from.

Coordinates are in the city's projected CRS (``City.crs``, e.g. ``EPSG:4547``), metres; elevations in metres
above the vertical datum. Objects are frozen; a network holds them in dicts keyed by id.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twin.sensors import Network as NetworkKind
from twin.sensors import Sensor


class NodeKind(enum.StrEnum):
    """What a network node is."""

    JUNCTION = "junction"  # SWMM junction / manhole; EPANET junction; gas junction
    OUTFALL = "outfall"  # SWMM
    STORAGE = "storage"  # SWMM
    DIVIDER = "divider"  # SWMM
    TANK = "tank"  # EPANET
    RESERVOIR = "reservoir"  # EPANET
    SOURCE = "source"  # gas: external grid / city gate
    SINK = "sink"  # gas: a consumer node


class LinkKind(enum.StrEnum):
    """What a network link is."""

    CONDUIT = "conduit"  # SWMM
    PUMP = "pump"
    ORIFICE = "orifice"
    WEIR = "weir"
    OUTLET = "outlet"
    PIPE = "pipe"  # EPANET / gas
    VALVE = "valve"
    REGULATOR = "regulator"  # gas pressure regulator


@dataclass(frozen=True, slots=True)
class Node:
    """A node of a pipe network.

    Attributes:
        node_id: id, unique within its network.
        kind: what it is.
        x_m, y_m: position, metres in the city CRS.
        z_m: SWMM invert elevation; EPANET elevation (tank bottom, reservoir head); gas: ground level minus cover.
        depth_m: SWMM max depth (invert to rim); EPANET tank max level; 0 where it does not apply.
        ground_m: ground (rim) elevation above the node, if known.
        attrs: anything else the engine knows (demand pattern, area, outfall type…), JSON-ready.
    """

    node_id: str
    kind: NodeKind
    x_m: float
    y_m: float
    z_m: float
    depth_m: float = 0.0
    ground_m: float | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Link:
    """A link of a pipe network: from ``from_id`` to ``to_id`` along ``vertices`` (interior points, metres).

    ``diameter_m`` is the pipe diameter, or a conduit's full height (geom1); ``length_m`` its length;
    ``roughness`` Manning's n (SWMM), Hazen-Williams C (EPANET) or absolute roughness in mm (gas).
    """

    link_id: str
    kind: LinkKind
    from_id: str
    to_id: str
    diameter_m: float
    length_m: float
    roughness: float = 0.0
    vertices: tuple[tuple[float, float], ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IsolationValve:
    """A shut-off valve on a pipe, next to one of its end nodes (``near_node_id``); closing it cuts the pipe there.

    Isolation valves are not hydraulic links (EPANET models only control valves); they matter for finding which
    valves must close to isolate a burst pipe.
    """

    valve_id: str
    link_id: str
    near_node_id: str
    x_m: float
    y_m: float


@dataclass(slots=True)
class PipeNetwork:
    """One lifeline's network: nodes, links, and the engine model it is made from.

    Attributes:
        kind: drainage, water or gas.
        name: a name for people (the file it came from, or the demo's name).
        nodes, links: by id.
        valves: isolation valves by id (water and gas).
        source: the engine's model, as text (SWMM or EPANET ``.inp``) or JSON (pandapipes), so the network can be
            run again exactly as imported.
        source_format: ``swmm-inp``, ``epanet-inp`` or ``pandapipes-json``.
    """

    kind: NetworkKind
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    valves: dict[str, IsolationValve] = field(default_factory=dict)
    source: str = ""
    source_format: str = ""

    def endpoints(self, link: Link) -> tuple[Node, Node]:
        """Return the two end nodes of *link*."""
        return self.nodes[link.from_id], self.nodes[link.to_id]

    def polyline(self, link: Link) -> list[tuple[float, float]]:
        """Return the link's path in plan, end node to end node, metres."""
        a, b = self.endpoints(link)
        return [(a.x_m, a.y_m), *link.vertices, (b.x_m, b.y_m)]


class BuildingUse(enum.StrEnum):
    """What a building is used for; drives exposure in the risk model."""

    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    OFFICE = "office"
    INDUSTRIAL = "industrial"
    SCHOOL = "school"
    HOSPITAL = "hospital"
    ELDERLY_CARE = "elderly_care"
    PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Building:
    """A building: footprint (exterior ring, metres, counter-clockwise, not closed), height and use.

    Attributes:
        ground_m: ground elevation at the footprint, metres.
        basement: it has a basement or underground garage (where water and gas gather).
        occupants: estimated people inside by day.
    """

    building_id: str
    footprint: tuple[tuple[float, float], ...]
    height_m: float
    floors: int
    ground_m: float
    use: BuildingUse
    basement: bool = False
    occupants: int = 0
    name: str = ""


class SpaceKind(enum.StrEnum):
    """Kinds of underground space where leaked gas or water gathers."""

    MANHOLE = "manhole"
    UTILITY_VAULT = "utility_vault"
    UTILITY_TUNNEL = "utility_tunnel"
    BASEMENT = "basement"
    UNDERPASS = "underpass"


@dataclass(frozen=True, slots=True)
class UndergroundSpace:
    """An underground space: a point with a volume (m³), and what it is next to (``near``: asset ids)."""

    space_id: str
    kind: SpaceKind
    x_m: float
    y_m: float
    z_m: float
    volume_m3: float
    near: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LowPoint:
    """A road low point or underpass where water collects: ``depth_capacity_m`` is how deep it can pond."""

    point_id: str
    name: str
    x_m: float
    y_m: float
    ground_m: float
    kind: str = "road_low_point"  # or "underpass"
    depth_capacity_m: float = 0.5


@dataclass(slots=True)
class Terrain:
    """A digital elevation model on a regular grid.

    ``elevation_m``: array (rows = y from ``y0_m`` upward, columns = x from ``x0_m``), metres; ``cell_m`` the spacing.
    """

    x0_m: float
    y0_m: float
    cell_m: float
    elevation_m: npt.NDArray[np.float64]

    def elevation_at(self, x_m: float | npt.NDArray[np.float64], y_m: float | npt.NDArray[np.float64]) -> Any:
        """Return the bilinearly interpolated elevation at (x, y); points outside take the nearest edge value."""
        rows, cols = self.elevation_m.shape
        fx = np.clip((np.asarray(x_m, dtype=float) - self.x0_m) / self.cell_m, 0, cols - 1.000001)
        fy = np.clip((np.asarray(y_m, dtype=float) - self.y0_m) / self.cell_m, 0, rows - 1.000001)
        ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
        tx, ty = fx - ix, fy - iy
        z = self.elevation_m
        top = z[iy, ix] * (1 - tx) + z[iy, ix + 1] * tx
        bottom = z[iy + 1, ix] * (1 - tx) + z[iy + 1, ix + 1] * tx
        result = top * (1 - ty) + bottom * ty
        return float(result) if np.ndim(result) == 0 else result

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax), metres."""
        rows, cols = self.elevation_m.shape
        return (self.x0_m, self.y0_m, self.x0_m + (cols - 1) * self.cell_m, self.y0_m + (rows - 1) * self.cell_m)


@dataclass(slots=True)
class City:
    """The city information model: everything the twin holds about one city area.

    Attributes:
        name: e.g. ``吉安示范片区``.
        crs: the projected CRS of every coordinate, e.g. ``EPSG:4547``.
        terrain: the ground, if known.
        buildings: by id.
        networks: by kind (at most one network per lifeline).
        sensors: by id, each bound to an asset (``Sensor.asset_id``: a node or link id, prefixed by network).
        spaces: underground spaces by id.
        low_points: road low points and underpasses by id.
        streets: street centrelines (polylines, metres), for the map and the scene.
        street_kinds: each street's class, parallel to *streets*: ``"main"`` (a main road carrying through traffic)
            or ``"local"``; empty when unknown (every street is then local).
        rivers: river polygons (exterior rings), where the outfalls discharge.
    """

    name: str
    crs: str
    terrain: Terrain | None = None
    buildings: dict[str, Building] = field(default_factory=dict)
    networks: dict[NetworkKind, PipeNetwork] = field(default_factory=dict)
    sensors: dict[str, Sensor] = field(default_factory=dict)
    spaces: dict[str, UndergroundSpace] = field(default_factory=dict)
    low_points: dict[str, LowPoint] = field(default_factory=dict)
    streets: list[tuple[tuple[float, float], ...]] = field(default_factory=list)
    street_kinds: list[str] = field(default_factory=list)
    rivers: list[tuple[tuple[float, float], ...]] = field(default_factory=list)


def asset_ref(network: NetworkKind, asset_id: str) -> str:
    """Return the city-wide id of a network asset: ``{network}:{id}`` (ids repeat across networks)."""
    return f"{network.value}:{asset_id}"


def write_text(path: Path, text: str) -> Path:
    """Write *text* as UTF-8 to *path*, creating parent folders; return *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
