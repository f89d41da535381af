"""The demo city's storm drainage (吉安示范片区雨水系统) as a SWMM model.

Manholes stand at every street intersection and every 40–60 m between; a gravity network, a tree over the streets,
takes every manhole's water to one of the outfalls on the Gan River bank (the southern street,
``layout.bank_nodes``). Pipes are sized by the time-area form of the rational method for a design storm (5-year by
default, the upper end of GB 50014-2021 for the centre of a large city) and laid downhill with at least
self-cleansing slope and the minimum cover; where the ground rises towards an outfall they go deeper, and near the
river the outfall level holds them up. Each block between streets
is a subcatchment draining to its nearest manhole. The road underpasses drain into pump stations that lift their
water into the street sewers, as underpasses in Chinese cities do; at the other road low points the road around
drains into gullies whose grates take the design storm's runoff and no more.

Rain comes from the Jiangxi default storm formula of :mod:`twin.storms` (see :func:`storm_intensity_l_s_ha`) as a
Chicago hyetograph (:func:`chicago_storm_mm_h`); the default storm, 50-year and 2-hour (100 mm), overloads the
5-year network: the low points (hollows, riverside dips, underpasses) flood, and about a fifth of the manholes, most
around the hollows, surcharge to the street.

Everything is derived from the layout: the same layout gives the same network, byte for byte.

Example:
    >>> from twin.democity.layout import build_layout
    >>> network, subcatchments, inp_text = build_drainage(build_layout())
    >>> len(network.nodes) >= 300, "[JUNCTIONS]" in inp_text
    (True, True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
from shapely.geometry import LineString, Point
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.ops import unary_union

from twin.democity.layout import ORIGIN_Y_M, RIVER_EDGE_M, ROAD_HALF_WIDTH_M, Layout
from twin.drainage import RainGauge, Subcatchment, write_swmm
from twin.errors import ConfigError
from twin.model import Link, LinkKind, Node, NodeKind, PipeNetwork
from twin.sensors import Network
from twin.storms import DEFAULT_FORMULA, FORMULAS, chicago_storm

NAME = "吉安示范片区雨水系统"

# Ji'an's storm intensity formula: q = A (1 + C lg P) / (t + B)^N, L/(s·ha); t in minutes, P in years.
STORM_FORMULA = FORMULAS[DEFAULT_FORMULA]
L_S_HA_PER_MM_MIN = 1e4 / 60.0  # 1 mm/min over 1 ha is 166.7 L/s

MANHOLE_SPACING_M = 50.0  # target distance between manholes along a street
COVER_M = 1.0  # soil over a pipe's crown under a road (GB 50014 allows 0.7; other utilities cross above)
MIN_DEPTH_M = 1.5  # least depth from rim to invert
MAX_DEPTH_M = 7.0
MANNING_N = 0.013
SELF_CLEANSING_M_S = 0.75  # least full-pipe velocity, sets each size's least slope
# Circular pipes up to 1.5 m; larger sewers are box culverts, first 1.5 m high and wider (the outfall level leaves
# little depth near the river), then taller. Every section in order of size: (full height, box width or None).
DIAMETERS_M = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5)
BOX_CULVERTS_M = (
    (2.0, 1.5),
    (2.5, 1.5),
    (3.0, 1.5),
    (3.5, 1.5),
    (4.0, 1.5),
    (4.5, 1.5),
    (5.0, 1.5),
    (5.0, 1.8),
    (5.0, 2.0),
)
SECTIONS: tuple[tuple[float, float | None], ...] = tuple((d, None) for d in DIAMETERS_M) + tuple(
    (h, w) for w, h in BOX_CULVERTS_M
)
# Runoff coefficients of the design: roofs and paving (GB 50014: 0.85–0.95), and open ground near the storm's peak,
# when the soil has taken 40 minutes of rain and infiltrates little (what SWMM's Horton parameters below give).
RUNOFF_COEFF_IMPERVIOUS = 0.95
RUNOFF_COEFF_PERVIOUS = 0.6
INLET_TIME_MIN = 5.0  # dense city blocks: roofs and paving reach the inlets within minutes
DESIGN_VELOCITY_M_S = 1.0  # travel time in pipes not laid yet; afterwards their full-flow velocity
RIVER_LEVEL_M = 39.0
OUTFALL_INVERT_M = 39.3  # lowest outfall invert: above the river so every outfall runs free
OUTFALL_SETBACK_M = 5.0  # outfalls stand this far back from the river edge
OUTFALL_EVERY = 2  # an outfall at every second bank intersection
RISE_PENALTY = 150.0  # routing cost of making water climb 1 m (in metres of pipe)
PUMP_COST = 300.0  # routing cost of sending water through an underpass pump station (in metres of pipe)
LOW_BANK_M = 2.5  # ground less than this above the outfall level is too low for a trunk sewer...
LOW_BANK_PENALTY = 400.0  # ...and costs this much per metre short
UNDERPASS_CATCHMENT_M = 60.0  # radius of the ground that drains into an underpass
SAG_REACH_M = 60.0  # how far along each street (at most to the next manhole) the road drains to a road low point
SAG_OFFSET_M = 6.0  # gullies stand at the kerb, this far from the manhole in the road's centre
GULLY_DEPTH_M = 1.0  # from the grates down to the outlet to the sewer
INLET_DISCHARGE_COEFF = 0.65
UNDERPASS_RETURN_PERIOD_YR = 3.0
UNDERPASS_INLET_TIME_MIN = 5.0
WET_WELL_DEPTH_M = 5.0
WET_WELL_AREA_M2 = 12.0
PUMP_START_M = 1.0
PUMP_STOP_M = 0.3
PAVED_SHARE_OF_OPEN_LAND = 0.5  # courtyards, car parks and paths between the buildings
SIMULATION_H = 5
START_DATE = "07/01/2026"


def storm_intensity_l_s_ha(return_period_yr: float, duration_min: float) -> float:
    """Return the design storm intensity, L/(s·ha), from the Jiangxi default formula of :mod:`twin.storms`.

    Args:
        return_period_yr: P, years.
        duration_min: t, minutes.
    """
    return STORM_FORMULA.intensity_mm_min(return_period_yr, duration_min) * L_S_HA_PER_MM_MIN


def chicago_storm_mm_h(
    *, return_period_yr: float = 50.0, duration_min: int = 120, peak_ratio: float = 0.4, step_min: int = 1
) -> list[float]:
    """Return the Chicago design hyetograph of :func:`twin.storms.chicago_storm` for the default formula, mm/h."""
    return chicago_storm(
        STORM_FORMULA,
        return_period_years=return_period_yr,
        duration_min=duration_min,
        step_min=step_min,
        peak_ratio=peak_ratio,
    )


def full_flow_m3_s(diameter_m: float, slope: float, *, width_m: float | None = None) -> float:
    """Manning's full-pipe capacity, m³/s, of a circular pipe (or a box culvert *width_m* wide) at *slope* (m/m)."""
    if width_m is None:
        area = math.pi * diameter_m**2 / 4.0
        radius = diameter_m / 4.0
    else:
        area = width_m * diameter_m
        radius = area / (2.0 * (width_m + diameter_m))
    return float(area * radius ** (2.0 / 3.0) * math.sqrt(max(slope, 0.0)) / MANNING_N)


def min_slope(diameter_m: float) -> float:
    """The least slope (m/m) at which a full pipe of *diameter_m* runs at the self-cleansing velocity."""
    radius = diameter_m / 4.0
    return round(float((SELF_CLEANSING_M_S * MANNING_N / radius ** (2.0 / 3.0)) ** 2), 4)


@dataclass(slots=True)
class _Manhole:
    node_id: str
    x: float
    y: float
    ground: float
    intersection: str | None = None
    low_point: str | None = None
    underpass: bool = False


@dataclass(slots=True)
class _Pipe:
    """A conduit from ``up`` to ``down`` while it is being designed."""

    up: str
    down: str
    length: float
    flow: float  # design flow, m³/s
    ground_slope: float  # fall of the ground from up to down over the length, m/m
    size: int = 0  # index into SECTIONS
    invert_up: float = 0.0
    invert_down: float = 0.0
    held_up: bool = False  # raised above where cover and slope would put it, to keep the outfall above the river

    @property
    def diameter(self) -> float:
        """Full height, m."""
        return SECTIONS[self.size][0]

    @property
    def width(self) -> float | None:
        """Box culvert width, m; None for a circular pipe."""
        return SECTIONS[self.size][1]

    @property
    def slope(self) -> float:
        return (self.invert_up - self.invert_down) / self.length

    @property
    def slope_min(self) -> float:
        return min_slope(self.diameter)

    @property
    def slope_needed(self) -> float:
        """The slope at which the section carries its design flow running full, m/m."""
        return (self.flow / full_flow_m3_s(self.diameter, 1.0, width_m=self.width)) ** 2

    @property
    def full_velocity_m_s(self) -> float:
        """Velocity when running full at the laid slope, m/s."""
        area = self.diameter * self.width if self.width is not None else math.pi * self.diameter**2 / 4.0
        return full_flow_m3_s(self.diameter, self.slope, width_m=self.width) / area


@dataclass(slots=True)
class _Design:
    manholes: dict[str, _Manhole] = field(default_factory=dict)
    outfalls: dict[str, _Manhole] = field(default_factory=dict)
    downstream: dict[str, str] = field(default_factory=dict)  # gravity tree: node → next node
    pumped: dict[str, str] = field(default_factory=dict)  # underpass wet well → receiving manhole
    pump_flow: dict[str, float] = field(default_factory=dict)  # underpass wet well → pump capacity, m³/s
    sags: dict[str, _Manhole] = field(default_factory=dict)  # road low point's manhole → the gullies above it
    inlet_flow: dict[str, float] = field(default_factory=dict)  # gullies → design flow of their inlets, m³/s
    order: list[str] = field(default_factory=list)  # manholes, upstream before downstream
    pipes: dict[str, _Pipe] = field(default_factory=dict)  # by upstream node


def build_drainage(
    layout: Layout,
    *,
    storm_mm_h: Sequence[float] | None = None,
    design_return_period_yr: float = 5.0,
) -> tuple[PipeNetwork, list[Subcatchment], str]:
    """Build the demo city's storm drainage on *layout*.

    Args:
        layout: the demo city's ground and streets.
        storm_mm_h: rain intensity at 1-minute steps, mm/h, for both rain gauges; None for the 50-year, 2-hour
            Chicago storm of :func:`chicago_storm_mm_h`. The simulation lasts 5 hours or the storm plus 3 hours.
        design_return_period_yr: the return period the sewers are sized for, years (GB 50014: 2–5 in city
            centres).

    Returns:
        The network (``source`` is the ``.inp`` text; nodes at the layout's low points carry
        ``attrs["low_point"]``), the subcatchments (one per block, one per underpass, one per road low point), and
        the ``.inp`` text (SI units, ``FLOW_UNITS CMS``), which SWMM runs as it is.

    Raises:
        ConfigError: the layout would need a sewer deeper than :data:`MAX_DEPTH_M`.
    """
    design = _Design()
    _place_manholes(design, layout)
    _route(design, layout)
    subcatchments = _subcatchments(design, layout)
    _size_and_lay(design, subcatchments, design_return_period_yr)
    network = _network(design)
    deepest = max(network.nodes.values(), key=lambda n: n.depth_m)
    if deepest.depth_m > MAX_DEPTH_M:
        raise ConfigError(
            f"the layout needs manhole {deepest.node_id} {deepest.depth_m:.1f} m deep (> {MAX_DEPTH_M} m)"
        )
    rain = list(storm_mm_h) if storm_mm_h is not None else chicago_storm_mm_h()
    gauges = _rain_gauges(design)
    hours = max(SIMULATION_H, math.ceil(len(rain) / 60.0) + 3)
    series = [(k / 60.0, value) for k, value in enumerate(rain)] + [(len(rain) / 60.0, 0.0)]
    text = write_swmm(
        network,
        subcatchments,
        gauges,
        options=_options(hours),
        timeseries={gauge.series: series for gauge in gauges},
        curves=_pump_curves(design),
        title=f"{NAME}: storm drainage of the Ji'an demo city (seed {layout.seed})",
    )
    network.source = text
    return network, subcatchments, text


# --------------------------------------------------------------------------------------------------------------
# Manholes and the gravity tree


def _place_manholes(design: _Design, layout: Layout) -> None:
    graph = layout.street_graph
    low_points = {}
    for point in layout.low_points.values():
        nearest = min(graph.nodes, key=lambda n: math.dist(layout.xy(n), (point.x_m, point.y_m)))
        low_points[nearest] = point.point_id
    for node, data in sorted(graph.nodes(data=True)):
        node_id = f"MH{node}"
        design.manholes[node_id] = _Manhole(
            node_id,
            float(data["x"]),
            float(data["y"]),
            layout.ground(data["x"], data["y"]),
            intersection=node,
            low_point=low_points.get(node),
            underpass=bool(data["underpass"]),
        )
    for a, b in sorted(tuple(sorted(edge)) for edge in graph.edges):
        (xa, ya), (xb, yb) = layout.xy(a), layout.xy(b)
        parts = max(1, round(math.dist((xa, ya), (xb, yb)) / MANHOLE_SPACING_M))
        side = "E" if graph.nodes[b]["i"] > graph.nodes[a]["i"] else "N"
        for k in range(1, parts):
            x, y = xa + (xb - xa) * k / parts, ya + (yb - ya) * k / parts
            node_id = f"MH{a}-{side}{k}"
            design.manholes[node_id] = _Manhole(node_id, x, y, layout.ground(x, y))
    for manhole in list(design.manholes.values()):
        if manhole.low_point and not manhole.underpass:
            x = manhole.x + SAG_OFFSET_M
            design.sags[manhole.node_id] = _Manhole(
                f"GU{manhole.intersection}", x, manhole.y, manhole.ground, manhole.intersection, manhole.low_point
            )
    for bank in layout.bank_nodes[::OUTFALL_EVERY]:
        x, _y = layout.xy(bank)
        y = ORIGIN_Y_M + RIVER_EDGE_M + OUTFALL_SETBACK_M
        design.outfalls[f"OF{bank}"] = _Manhole(f"OF{bank}", x, y, layout.ground(x, y), intersection=bank)


def _street_segments(design: _Design, layout: Layout) -> list[tuple[str, str]]:
    """Consecutive manholes along every street segment."""
    segments = []
    for a, b in sorted(tuple(sorted(edge)) for edge in layout.street_graph.edges):
        side = "E" if layout.street_graph.nodes[b]["i"] > layout.street_graph.nodes[a]["i"] else "N"
        chain = [f"MH{a}"]
        k = 1
        while f"MH{a}-{side}{k}" in design.manholes:
            chain.append(f"MH{a}-{side}{k}")
            k += 1
        chain.append(f"MH{b}")
        segments += list(itertools.pairwise(chain))
    return segments


def _cost(down: _Manhole, up: _Manhole) -> float:
    """Cost of a pipe that takes *up*'s water to *down*: its length, plus penalties for climbing ground and for
    ground too low near the river to bury a trunk sewer in."""
    rise = max(0.0, down.ground - up.ground)
    shortfall = max(0.0, LOW_BANK_M - (down.ground - OUTFALL_INVERT_M))
    return math.dist((up.x, up.y), (down.x, down.y)) + RISE_PENALTY * rise + LOW_BANK_PENALTY * shortfall


def _route(design: _Design, layout: Layout) -> None:
    """Find each manhole's downstream neighbour: least-cost paths to the outfalls (a spanning forest).

    An underpass is a pump station: nothing flows through it by gravity. It pumps to the neighbour from which the
    way to an outfall costs least; streets around it that would otherwise have to climb drain into it.
    """
    underpasses = sorted(m.node_id for m in design.manholes.values() if m.underpass)
    segments = _street_segments(design, layout)
    search = nx.DiGraph()  # edges point upstream: the search walks from the outfalls up the network
    for a, b in segments:
        if a in underpasses or b in underpasses:
            continue
        ma, mb = design.manholes[a], design.manholes[b]
        search.add_edge(b, a, weight=_cost(mb, ma))
        search.add_edge(a, b, weight=_cost(ma, mb))
    for outfall in design.outfalls.values():
        bank = design.manholes[f"MH{outfall.intersection}"]
        search.add_edge(outfall.node_id, bank.node_id, weight=math.dist(_xy(outfall), _xy(bank)))
    gravity_distance = nx.multi_source_dijkstra_path_length(search, sorted(design.outfalls))
    for underpass in underpasses:
        station = design.manholes[underpass]
        neighbours = sorted(b if a == underpass else a for a, b in segments if underpass in (a, b))
        target = min(neighbours, key=lambda n: gravity_distance[n] + math.dist(_xy(design.manholes[n]), _xy(station)))
        design.pumped[underpass] = target
        search.add_edge(target, underpass, weight=math.dist(_xy(design.manholes[target]), _xy(station)) + PUMP_COST)
        for neighbour in neighbours:
            search.add_edge(underpass, neighbour, weight=math.dist(_xy(station), _xy(design.manholes[neighbour])))
    distance, paths = nx.multi_source_dijkstra(search, sorted(design.outfalls))
    for node_id, path in paths.items():
        if len(path) > 1 and node_id not in design.pumped:
            design.downstream[node_id] = path[-2]
    design.order = sorted((n for n in distance if n in design.manholes), key=lambda n: (-distance[n], n))


def _xy(manhole: _Manhole) -> tuple[float, float]:
    return manhole.x, manhole.y


# --------------------------------------------------------------------------------------------------------------
# Subcatchments


def _subcatchments(design: _Design, layout: Layout) -> list[Subcatchment]:
    """One subcatchment per block (centreline to centreline, draining to the manhole nearest its centre), one per
    underpass (the ground sloping into it, to its pump station) and one per road low point (the road around it,
    to its gullies)."""
    graph = layout.street_graph
    by_index = {(d["i"], d["j"]): n for n, d in graph.nodes(data=True)}
    n_i = 1 + max(i for i, _j in by_index)
    n_j = 1 + max(j for _i, j in by_index)
    special: dict[str, Any] = {}  # outlet → the area draining to it
    for manhole in design.manholes.values():
        if manhole.underpass:
            special[manhole.node_id] = Point(manhole.x, manhole.y).buffer(UNDERPASS_CATCHMENT_M, quad_segs=8)
    segments = _street_segments(design, layout)
    for node_id, sag in design.sags.items():
        manhole = design.manholes[node_id]
        neighbours = [design.manholes[b if a == node_id else a] for a, b in segments if node_id in (a, b)]
        arms = [LineString([_xy(manhole), _towards(manhole, neighbour)]) for neighbour in neighbours]
        special[sag.node_id] = unary_union([arm.buffer(ROAD_HALF_WIDTH_M, cap_style="flat") for arm in arms])
    taken = unary_union(list(special.values())) if special else None
    footprints = [ShapelyPolygon(b.footprint) for b in layout.buildings.values()]
    centre_y = float(np.mean([d["y"] for _n, d in graph.nodes(data=True)]))
    street_manholes = [m for m in design.manholes.values() if not m.underpass]
    result: list[Subcatchment] = []
    for i in range(n_i - 1):
        for j in range(n_j - 1):
            corners = [by_index[(i, j)], by_index[(i + 1, j)], by_index[(i + 1, j + 1)], by_index[(i, j + 1)]]
            ring = [layout.xy(c) for c in corners]
            block = ShapelyPolygon(ring)
            land = block.difference(taken) if taken is not None else block
            built = sum(shape.intersection(land).area for shape in footprints if shape.intersects(land))
            centroid = block.centroid
            outlet = _block_outlet(street_manholes, (centroid.x, centroid.y))
            result.append(
                _subcatchment(
                    f"S{i:02d}{j:02d}",
                    gauge="RG-N" if centroid.y > centre_y else "RG-S",
                    outlet=outlet.node_id,
                    area_m2=land.area,
                    imperv_pct=_imperviousness(land.area, built, block),
                    flow_length_m=min(math.dist(ring[0], ring[1]), math.dist(ring[0], ring[3])) / 2.0,
                    slope_pct=_slope_pct(layout, ring),
                    polygon=_ring(land),
                )
            )
    for outlet_id, area in sorted(special.items()):
        is_sag = outlet_id.startswith("GU")
        centre = area.centroid
        result.append(
            _subcatchment(
                f"S{outlet_id[2:]}-{'RD' if is_sag else 'UP'}",
                gauge="RG-N" if centre.y > centre_y else "RG-S",
                outlet=outlet_id,
                area_m2=area.area,
                imperv_pct=95.0 if is_sag else 90.0,  # road; road, ramps and the paving around them
                flow_length_m=SAG_REACH_M if is_sag else UNDERPASS_CATCHMENT_M,
                slope_pct=2.0 if is_sag else 4.0,  # street camber and fall; the ramps
                polygon=_ring(area),
            )
        )
    return result


def _block_outlet(manholes: Sequence[_Manhole], centre: tuple[float, float]) -> _Manhole:
    """The manhole a block drains to: the nearest to its centre, unless that one stands on ground too low above the
    outfall level for a block's sewer and another is nearly as near (within half as far again)."""
    by_distance = sorted(manholes, key=lambda m: (math.dist(_xy(m), centre), m.node_id))
    reach = 1.5 * math.dist(_xy(by_distance[0]), centre)
    near = [m for m in by_distance if math.dist(_xy(m), centre) <= reach]
    return min(near, key=lambda m: m.ground - OUTFALL_INVERT_M < LOW_BANK_M)


def _towards(start: _Manhole, end: _Manhole) -> tuple[float, float]:
    """The point :data:`SAG_REACH_M` from *start* towards *end*, or *end* if that is nearer."""
    length = math.dist(_xy(start), _xy(end))
    share = min(1.0, SAG_REACH_M / length)
    return start.x + (end.x - start.x) * share, start.y + (end.y - start.y) * share


def _imperviousness(land_m2: float, built_m2: float, block: ShapelyPolygon) -> float:
    """Impervious share of a block, percent: its half of the surrounding streets, the roofs, part of the rest."""
    inner = block.buffer(-ROAD_HALF_WIDTH_M)  # each block holds half of every street along its edge
    road = max(0.0, float(block.area - inner.area)) * land_m2 / float(block.area)
    open_land = max(0.0, land_m2 - road - built_m2)
    paved = road + built_m2 + PAVED_SHARE_OF_OPEN_LAND * open_land
    return round(min(95.0, 100.0 * paved / land_m2), 1)


def _slope_pct(layout: Layout, ring: Sequence[tuple[float, float]]) -> float:
    """Average ground slope of a block from its corners' elevations (a least-squares plane), percent."""
    xs = np.array([p[0] for p in ring])
    ys = np.array([p[1] for p in ring])
    zs = np.array([layout.ground(x, y) for x, y in ring])
    matrix = np.column_stack([xs - xs.mean(), ys - ys.mean(), np.ones_like(xs)])
    (gx, gy, _c), *_rest = np.linalg.lstsq(matrix, zs, rcond=None)
    return round(max(0.5, 100.0 * math.hypot(float(gx), float(gy))), 2)


def _ring(shape: object) -> tuple[tuple[float, float], ...]:
    polygon = shape if isinstance(shape, ShapelyPolygon) else max(getattr(shape, "geoms", []), key=lambda g: g.area)
    coords = list(polygon.exterior.coords)[:-1]
    return tuple((round(x, 2), round(y, 2)) for x, y in coords)


def _subcatchment(
    subcatchment_id: str,
    *,
    gauge: str,
    outlet: str,
    area_m2: float,
    imperv_pct: float,
    flow_length_m: float,
    slope_pct: float,
    polygon: tuple[tuple[float, float], ...],
) -> Subcatchment:
    return Subcatchment(
        subcatchment_id=subcatchment_id,
        rain_gauge=gauge,
        outlet=outlet,
        area_ha=round(area_m2 / 1e4, 4),
        imperv_pct=imperv_pct,
        width_m=round(area_m2 / flow_length_m, 1),
        slope_pct=slope_pct,
        polygon=polygon,
        attrs={
            "subarea": {
                "n_imperv": 0.013,
                "n_perv": 0.15,
                "storage_imperv": 2.0,  # mm
                "storage_perv": 5.0,
                "pct_zero": 25.0,
                "route_to": "OUTLET",
            },
            # Horton: max and min rate mm/h, decay 1/h, drying time days, max volume mm (0 = none).
            "infiltration": {"rate_max": 75.0, "rate_min": 5.0, "decay": 4.0, "time_dry": 7.0, "volume_max": 0.0},
        },
    )


def _rain_gauges(design: _Design) -> list[RainGauge]:
    xs = [m.x for m in design.manholes.values()]
    ys = [m.y for m in design.manholes.values()]
    x = (min(xs) + max(xs)) / 2.0
    return [
        RainGauge("RG-N", x, min(ys) + 0.75 * (max(ys) - min(ys)), "INTENSITY", 1.0, "TIMESERIES", "STORM-N"),
        RainGauge("RG-S", x, min(ys) + 0.25 * (max(ys) - min(ys)), "INTENSITY", 1.0, "TIMESERIES", "STORM-S"),
    ]


# --------------------------------------------------------------------------------------------------------------
# Sizing and laying the pipes


def _size_and_lay(design: _Design, subcatchments: Sequence[Subcatchment], return_period_yr: float) -> None:
    """Size the conduits and set their inverts, again until every conduit carries its design flow at its laid slope
    (travel times, and so design flows, follow the velocities of the pipes as laid)."""
    for _round in range(12):
        _design_flows(design, subcatchments, return_period_yr)
        changed = _choose_sizes(design)
        _lay(design)
        if not changed:
            return


def _design_flows(design: _Design, subcatchments: Sequence[Subcatchment], return_period_yr: float) -> None:
    """Set every conduit's design flow by the time-area form of the rational method; create the conduits first time.

    Each subcatchment's runoff area, ψ_imp A_imp + ψ_perv A_perv, reaches a conduit after the inlet time plus its
    travel time in the pipes between (at the pipes' full-flow velocities; before they are laid,
    :data:`DESIGN_VELOCITY_M_S`). The design flow is the largest q(P, t) × (runoff area arriving within t) over t:
    the plain rational method's value for the whole area at the longest time, or more where the nearer part of
    the area with its shorter time gives more.
    """
    arriving: dict[str, list[tuple[float, float]]] = {}  # node → (minutes to reach it, runoff area ha)
    manhole_of = {sag.node_id: node_id for node_id, sag in design.sags.items()}
    for sc in subcatchments:
        inlet = UNDERPASS_INLET_TIME_MIN if sc.outlet in design.pumped else INLET_TIME_MIN
        runoff_ha = sc.area_ha * (
            RUNOFF_COEFF_IMPERVIOUS * sc.imperv_pct / 100.0 + RUNOFF_COEFF_PERVIOUS * (1.0 - sc.imperv_pct / 100.0)
        )
        if sc.outlet in manhole_of:
            design.inlet_flow[sc.outlet] = _time_area_flow(return_period_yr, [(inlet, runoff_ha)])
        arriving.setdefault(manhole_of.get(sc.outlet, sc.outlet), []).append((inlet, runoff_ha))
    everything = {**design.manholes, **design.outfalls}
    for node_id in design.order:
        down_id = design.downstream.get(node_id) or design.pumped[node_id]
        here = arriving.get(node_id, [])
        if node_id in design.pumped:  # an underpass: its wet well is the node, its outflow a pump
            design.pump_flow[node_id] = _time_area_flow(UNDERPASS_RETURN_PERIOD_YR, here)
            arriving.setdefault(down_id, []).extend(here)
            continue
        pipe = design.pipes.get(node_id)
        if pipe is None:
            manhole, down = design.manholes[node_id], everything[down_id]
            length = math.dist(_xy(manhole), _xy(down))
            ground_slope = (manhole.ground - down.ground) / length if down_id in design.manholes else 0.0
            pipe = design.pipes[node_id] = _Pipe(node_id, down_id, round(length, 2), 0.0, ground_slope)
        pipe.flow = _time_area_flow(return_period_yr, here)
        velocity = pipe.full_velocity_m_s if pipe.invert_up > pipe.invert_down else DESIGN_VELOCITY_M_S
        travel = pipe.length / velocity / 60.0
        arriving.setdefault(down_id, []).extend((minutes + travel, area) for minutes, area in here)


def _time_area_flow(return_period_yr: float, arriving: Sequence[tuple[float, float]]) -> float:
    """max over t of q(P, t) × (runoff area arriving within t minutes), m³/s; *arriving*: (minutes, ha) pairs."""
    best = 0.0
    area_ha = 0.0
    for minutes, runoff_ha in sorted(arriving):
        area_ha += runoff_ha
        best = max(best, storm_intensity_l_s_ha(return_period_yr, minutes) * area_ha / 1000.0)
    return best


def _choose_sizes(design: _Design) -> bool:
    """Give every conduit the smallest section, no smaller than any upstream, that carries its design flow full at
    the slope it can have: the ground's, at least the section's least slope, and no more than it was laid at where
    the outfall level held it up. Say whether any section grew."""
    changed = False
    largest_in: dict[str, int] = {}
    for node_id in design.order:
        pipe = design.pipes.get(node_id)
        if pipe is None:
            continue
        size = max(pipe.size, largest_in.get(node_id, 0))
        while size < len(SECTIONS) - 1:
            height, width = SECTIONS[size]
            slope = max(min_slope(height), pipe.ground_slope)
            if pipe.held_up:
                slope = min(slope, pipe.slope)
            if full_flow_m3_s(height, slope, width_m=width) >= pipe.flow:
                break
            size += 1
        changed = changed or size != pipe.size
        pipe.size = size
        largest_in[pipe.down] = max(largest_in.get(pipe.down, 0), size)
    return changed


def _lay(design: _Design) -> None:
    """Set every conduit's inverts: as shallow as cover allows, at the slope its design flow needs (no less than the
    section's least slope, steeper where the ground falls faster and the cover allows), crowns matched where pipes
    meet; then hold up the pipes that would take an outfall below the river (there a pipe's invert need only be no
    lower than that of the pipe it drains into)."""
    arriving: dict[str, list[_Pipe]] = {}
    for pipe in design.pipes.values():
        arriving.setdefault(pipe.down, []).append(pipe)
    for node_id in design.order:
        if node_id not in design.pipes:
            continue
        pipe = design.pipes[node_id]
        manhole = design.manholes[node_id]
        invert = manhole.ground - max(MIN_DEPTH_M, COVER_M + pipe.diameter)
        for incoming in arriving.get(node_id, []):
            invert = min(invert, incoming.invert_down, incoming.invert_down + incoming.diameter - pipe.diameter)
        pipe.invert_up = invert
        pipe.invert_down = invert - max(pipe.slope_min, pipe.slope_needed) * pipe.length
        if pipe.down in design.manholes:
            pipe.invert_down = min(pipe.invert_down, design.manholes[pipe.down].ground - COVER_M - pipe.diameter)
    # Lower bounds, downstream first: the outfall above the river, every pipe above the one it drains into.
    lowest_down: dict[str, float] = {}
    for node_id in reversed(design.order):
        if node_id not in design.pipes:
            continue
        pipe = design.pipes[node_id]
        if pipe.down in design.outfalls:
            lowest_down[node_id] = OUTFALL_INVERT_M
        elif pipe.down in design.pumped:  # a wet well is as deep as its inflow needs
            lowest_down[node_id] = -math.inf
        else:
            lowest_down[node_id] = _lowest_up(design.pipes[pipe.down], lowest_down[pipe.down])
        lowest_up = _lowest_up(pipe, lowest_down[node_id])
        pipe.held_up = pipe.held_up or pipe.invert_down < lowest_down[node_id] or pipe.invert_up < lowest_up
        pipe.invert_down = round(max(pipe.invert_down, lowest_down[node_id]), 3)
        pipe.invert_up = round(max(pipe.invert_up, lowest_up), 3)


def _lowest_up(pipe: _Pipe, lowest_down: float) -> float:
    """The lowest upstream invert of *pipe* given the lowest downstream one, m."""
    return lowest_down + pipe.slope_min * pipe.length


# --------------------------------------------------------------------------------------------------------------
# The network


def _network(design: _Design) -> PipeNetwork:
    network = PipeNetwork(kind=Network.DRAINAGE, name=NAME, source_format="swmm-inp")
    inverts: dict[str, float] = {node_id: pipe.invert_up for node_id, pipe in design.pipes.items()}
    for pipe in design.pipes.values():
        if pipe.down in design.outfalls:
            inverts[pipe.down] = min(inverts.get(pipe.down, math.inf), pipe.invert_down)
    for manhole in design.manholes.values():
        attrs: dict[str, object] = {}
        if manhole.low_point and manhole.underpass:
            attrs["low_point"] = manhole.low_point
        if manhole.intersection:
            attrs["intersection"] = manhole.intersection
        ground = round(manhole.ground, 3)
        if manhole.node_id in design.pumped:
            invert = _wet_well_floor(design, manhole.node_id)
            attrs.update(
                role="pump station wet well", storage_shape="FUNCTIONAL", storage_data=[0.0, 0.0, WET_WELL_AREA_M2]
            )
            kind = NodeKind.STORAGE
        else:
            invert = inverts[manhole.node_id]
            kind = NodeKind.JUNCTION
        network.nodes[manhole.node_id] = Node(
            node_id=manhole.node_id,
            kind=kind,
            x_m=round(manhole.x, 2),
            y_m=round(manhole.y, 2),
            z_m=invert,
            depth_m=round(ground - invert, 3),
            ground_m=ground,
            attrs=attrs,
        )
    for outfall in design.outfalls.values():
        invert = inverts[outfall.node_id]
        network.nodes[outfall.node_id] = Node(
            node_id=outfall.node_id,
            kind=NodeKind.OUTFALL,
            x_m=round(outfall.x, 2),
            y_m=round(outfall.y, 2),
            z_m=invert,
            depth_m=0.0,
            ground_m=round(outfall.ground, 3),
            attrs={"outfall_type": "FREE", "river_level_m": RIVER_LEVEL_M},
        )
    for node_id, pipe in design.pipes.items():
        up, down = network.nodes[pipe.up], network.nodes[pipe.down]
        shape = "CIRCULAR" if pipe.width is None else "RECT_CLOSED"
        network.links[f"P{node_id[2:]}"] = Link(
            link_id=f"P{node_id[2:]}",
            kind=LinkKind.CONDUIT,
            from_id=pipe.up,
            to_id=pipe.down,
            diameter_m=pipe.diameter,
            length_m=pipe.length,
            roughness=MANNING_N,
            attrs={
                "shape": shape,
                "geom": [pipe.diameter, pipe.width or 0.0, 0.0, 0.0],
                "in_offset_m": round(pipe.invert_up - up.z_m, 3),
                "out_offset_m": round(pipe.invert_down - down.z_m, 3),
                "invert_up_m": pipe.invert_up,
                "invert_down_m": pipe.invert_down,
                "width_m": pipe.width or pipe.diameter,
            },
        )
    for node_id, target in design.pumped.items():
        network.links[f"PU{node_id[2:]}"] = Link(
            link_id=f"PU{node_id[2:]}",
            kind=LinkKind.PUMP,
            from_id=node_id,
            to_id=target,
            diameter_m=0.0,
            length_m=0.0,
            attrs={
                "curve": f"PUMP-{node_id[2:]}",
                "status": "ON",
                "startup_depth_m": PUMP_START_M,
                "shutoff_depth_m": PUMP_STOP_M,
            },
        )
    for node_id, sag in design.sags.items():
        ground = round(sag.ground, 3)
        network.nodes[sag.node_id] = Node(
            node_id=sag.node_id,
            kind=NodeKind.JUNCTION,
            x_m=round(sag.x, 2),
            y_m=round(sag.y, 2),
            z_m=round(ground - GULLY_DEPTH_M, 3),
            depth_m=GULLY_DEPTH_M,
            ground_m=ground,
            attrs={"low_point": sag.low_point, "intersection": sag.intersection, "role": "road low point gullies"},
        )
        diameter = _inlet_diameter_m(design.inlet_flow[sag.node_id])
        network.links[f"IN{sag.intersection}"] = Link(
            link_id=f"IN{sag.intersection}",
            kind=LinkKind.ORIFICE,
            from_id=sag.node_id,
            to_id=node_id,
            diameter_m=diameter,
            length_m=0.0,
            attrs={
                "role": "gully grates and their connections to the sewer",
                "orientation": "SIDE",
                "in_offset_m": 0.0,
                "discharge_coefficient": INLET_DISCHARGE_COEFF,
                "flap_gate": False,
                "shape": "CIRCULAR",
                "geom": [diameter, 0.0, 0.0, 0.0],
            },
        )
    return network


def _inlet_diameter_m(flow_m3_s: float) -> float:
    """The opening, as one circular orifice, that passes *flow_m3_s* with the gully full to the grates, m."""
    diameter = 0.1
    for _round in range(5):  # the head is measured to the opening's centre, which depends on its size
        head = GULLY_DEPTH_M - diameter / 2.0
        area = flow_m3_s / (INLET_DISCHARGE_COEFF * math.sqrt(2.0 * 9.81 * head))
        diameter = math.sqrt(4.0 * area / math.pi)
    return round(diameter, 3)


def _wet_well_floor(design: _Design, node_id: str) -> float:
    """A pump station's wet-well floor, m: :data:`WET_WELL_DEPTH_M` below the road, or lower where the sewers
    arriving need it (they come in above the level at which the pumps start)."""
    arriving = [p.invert_down for p in design.pipes.values() if p.down == node_id]
    floor = design.manholes[node_id].ground - WET_WELL_DEPTH_M
    return round(min([floor, *(invert - PUMP_START_M for invert in arriving)]), 3)


def _pump_curves(design: _Design) -> Mapping[str, tuple[str, Sequence[tuple[float, float]]]]:
    """Each underpass pump station's curve (SWMM ``PUMP4``): flow (m³/s) against wet-well depth (m)."""
    curves: dict[str, tuple[str, Sequence[tuple[float, float]]]] = {}
    for node_id in sorted(design.pumped):
        flow = round(design.pump_flow[node_id], 3)
        depth = design.manholes[node_id].ground - _wet_well_floor(design, node_id)
        curves[f"PUMP-{node_id[2:]}"] = ("PUMP4", [(0.0, 0.0), (PUMP_START_M, flow), (round(depth, 3), flow)])
    return curves


def _options(hours: int) -> dict[str, str | int | float]:
    return {
        "FLOW_UNITS": "CMS",
        "INFILTRATION": "HORTON",
        "FLOW_ROUTING": "DYNWAVE",
        "LINK_OFFSETS": "DEPTH",
        "MIN_SLOPE": 0,
        "ALLOW_PONDING": "NO",
        "SKIP_STEADY_STATE": "NO",
        "START_DATE": START_DATE,
        "START_TIME": "00:00:00",
        "REPORT_START_DATE": START_DATE,
        "REPORT_START_TIME": "00:00:00",
        "END_DATE": START_DATE,
        "END_TIME": f"{hours:02d}:00:00",
        "SWEEP_START": "01/01",
        "SWEEP_END": "12/31",
        "DRY_DAYS": 5,
        "REPORT_STEP": "00:05:00",
        "WET_STEP": "00:01:00",
        "DRY_STEP": "00:01:00",
        "ROUTING_STEP": 5,
        "RULE_STEP": "00:00:00",
        "INERTIAL_DAMPING": "PARTIAL",
        "NORMAL_FLOW_LIMITED": "BOTH",
        "FORCE_MAIN_EQUATION": "H-W",
        "VARIABLE_STEP": 0.75,
        "LENGTHENING_STEP": 0,
        "MIN_SURFAREA": 1.167,
        "MAX_TRIALS": 8,
        "HEAD_TOLERANCE": 0.0015,
        "SYS_FLOW_TOL": 5,
        "LAT_FLOW_TOL": 5,
        "MINIMUM_STEP": 0.5,
        "THREADS": 1,
    }
