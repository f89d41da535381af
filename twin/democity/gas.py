"""The demo city's gas network: a city gate, a medium-pressure ring, four regulator stations and low-pressure grids.

Natural gas (pandapipes ``hgas``) arrives at the city gate (门站) on the east edge at 0.3 MPa gauge (中压A) and runs
along a medium-pressure steel ring with a cross on the two main streets. Four regulator stations (区域调压站) on the
ring's corners each feed a low-pressure PE grid in one quarter of the city at 2.8 kPa gauge. Buildings draw gas
from service junctions in the middle of the blocks: homes by occupants, the others by floor area, at the design
peak hour (``sink.scaling``). Every medium-pressure pipe end at an intersection has an isolation valve (a pandapipes
pipe valve, ``et = "pi"``), in a valve well.

Next to the pipes are the underground spaces where leaked gas gathers: the regulator vaults and valve wells, the
gas compartments of the utility tunnel (综合管廊) under the east-west main street, sewer manholes and the basements
of buildings near a gas pipe. The demo has no drainage network to take the manholes from, so they stand in for
it: one per gas street segment, a few metres off the pipe.

Everything is deterministic: the same layout gives the same net and the same spaces.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx
import pandapipes
from shapely import LineString, Point, Polygon, STRtree

from twin.democity.layout import Layout
from twin.gas import read_pandapipes
from twin.model import BuildingUse, LinkKind, PipeNetwork, SpaceKind, UndergroundSpace, asset_ref
from twin.sensors import Network

NETWORK_NAME = "吉安示范片区燃气管网"
FLUID = "hgas"  # the H-gas of China's trunk pipelines; about 0.71 kg/m³ at 10 °C
GAS_DENSITY_KG_M3 = 0.7  # to turn daily volumes into mass flows
GAS_TEMPERATURE_K = 283.15

GATE_PRESSURE_BAR = 3.0  # 0.3 MPa gauge
LP_SETPOINT_BAR = 0.028  # 2.8 kPa gauge at the regulator outlets
NATURAL_GAS_M3_PER_PERSON_DAY = 0.4
# Non-residential use by floor area, m³/m²/day (kitchens, hot water; no district heating in Jiangxi).
M3_PER_FLOOR_M2_DAY = {
    BuildingUse.COMMERCIAL: 0.03,
    BuildingUse.OFFICE: 0.005,
    BuildingUse.INDUSTRIAL: 0.05,
    BuildingUse.SCHOOL: 0.01,
    BuildingUse.HOSPITAL: 0.03,
    BuildingUse.PUBLIC: 0.005,
}
PER_PERSON_USES = (BuildingUse.RESIDENTIAL, BuildingUse.ELDERLY_CARE)
DESIGN_PEAK_FACTOR = 2.5  # design peak-hour flow over the mean (the sinks' scaling)

MP_COVER_M, LP_COVER_M = 1.2, 0.9
MP_ROUGHNESS_MM, LP_ROUGHNESS_MM = 0.1, 0.02  # steel, PE
MP_GATE_DIAMETER_MM, MP_RING_DIAMETER_MM, MP_CROSS_DIAMETER_MM = 300, 250, 200
LP_DIAMETERS_MM = (100, 150, 200, 250, 300)
LP_DESIGN_VELOCITY_M_S = 4.0  # the largest LP velocity at the design flow
GATE_OFFSET_M = 80.0  # the gate station lies this far east of the last intersection of the main street

VALVE_WELL_VOLUME_M3, VALVE_WELL_DEPTH_M = 6.0, 2.0
REGULATOR_VAULT_VOLUME_M3, REGULATOR_VAULT_DEPTH_M = 18.0, 2.5
REGULATOR_VAULT_OFFSET_M = 8.0  # the vault sits in the block corner, this far east and north of the intersection
MANHOLE_VOLUME_M3, MANHOLE_DEPTH_M, MANHOLE_OFFSET_M = 2.0, 2.5, 2.5
MANHOLE_REACH_M = 15.0  # gas pipes this close to a manhole are "near" it
TUNNEL_GAS_COMPARTMENT_M2, TUNNEL_FLOOR_DEPTH_M = 5.3, 5.0  # 2.2 m × 2.4 m gas compartment
BASEMENT_REACH_M = 30.0  # basements this close to a gas pipe are spaces of the gas network
BASEMENT_LEVEL_M = 3.6


@dataclass(slots=True)
class _Design:
    """Names and roles decided before the net is built (grid indices of the ring, the cross and the zones)."""

    layout: Layout
    lo_i: int = 0
    hi_i: int = 0
    mid_i: int = 0
    lo_j: int = 0
    hi_j: int = 0
    mid_j: int = 0
    node_of: dict[tuple[int, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = self.layout.street_graph
        n_i = 1 + max(int(d["i"]) for _n, d in g.nodes(data=True))
        n_j = 1 + max(int(d["j"]) for _n, d in g.nodes(data=True))
        self.lo_i, self.lo_j = round(0.2 * (n_i - 1)), round(0.2 * (n_j - 1))
        self.hi_i, self.hi_j = n_i - 1 - self.lo_i, n_j - 1 - self.lo_j
        self.mid_i, self.mid_j = (n_i - 1) // 2, (n_j - 1) // 2
        self.node_of = {(int(d["i"]), int(d["j"])): n for n, d in g.nodes(data=True)}

    def xy(self, ij: tuple[int, int]) -> tuple[float, float]:
        return self.layout.xy(self.node_of[ij])

    def is_mp(self, a: tuple[int, int], b: tuple[int, int]) -> str | None:
        """The role of a medium-pressure street segment (``ring``, ``cross``), or None for the others."""
        (ia, ja), (ib, jb) = a, b
        if ja == jb and ja in (self.lo_j, self.hi_j) and self.lo_i <= min(ia, ib) and max(ia, ib) <= self.hi_i:
            return "ring"
        if ia == ib and ia in (self.lo_i, self.hi_i) and self.lo_j <= min(ja, jb) and max(ja, jb) <= self.hi_j:
            return "ring"
        if ja == jb == self.mid_j and min(ia, ib) >= self.lo_i:
            return "cross"
        if ia == ib == self.mid_i and self.lo_j <= min(ja, jb) and max(ja, jb) <= self.hi_j:
            return "cross"
        return None

    def zone(self, ij: tuple[int, int]) -> int:
        """The low-pressure zone (0–3, one per regulator) of an intersection."""
        return int(ij[0] > self.mid_i) + 2 * int(ij[1] > self.mid_j)

    def regulators(self) -> list[tuple[int, int]]:
        """Regulator stations on the ring's corners, one per zone, in zone order."""
        return [(self.lo_i, self.lo_j), (self.hi_i, self.lo_j), (self.lo_i, self.hi_j), (self.hi_i, self.hi_j)]

    def in_tunnel(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        """The utility tunnel runs under the east-west main street inside the ring."""
        return a[1] == b[1] == self.mid_j and self.lo_i <= min(a[0], b[0]) and max(a[0], b[0]) <= self.hi_i


def build_gas(layout: Layout) -> tuple[PipeNetwork, Any, list[UndergroundSpace]]:
    """Build the demo city's gas network on *layout*'s streets.

    Returns:
        The twin's gas network (read from the net by :func:`twin.gas.read_pandapipes`, with ground elevations),
        the pandapipes net, and the underground spaces next to the gas pipes (``near``: ``gas:`` pipe ids,
        nearest first).

    Example:
        >>> from twin.democity.layout import build_layout
        >>> network, net, spaces = build_gas(build_layout())
        >>> len(net.press_control), len(spaces) >= 40
        (4, True)
    """
    design = _Design(layout)
    net = _net(design)
    network = read_pandapipes(net)
    network.name = NETWORK_NAME
    for node_id, node in network.nodes.items():
        network.nodes[node_id] = replace(node, ground_m=round(layout.ground(node.x_m, node.y_m), 2))
    spaces = _spaces(design, network)
    return network, net, spaces


def _ij(node: str) -> tuple[int, int]:
    return int(node[1:3]), int(node[3:5])


def _name(prefix: str, ij: tuple[int, int]) -> str:
    return f"{prefix}{ij[0]:02d}{ij[1]:02d}"


def _net(design: _Design) -> Any:
    """Build the pandapipes net (elements are created table by table: one at a time is ~50× slower)."""
    layout = design.layout
    g = layout.street_graph
    segments = sorted((min(_ij_of(g, a), _ij_of(g, b)), max(_ij_of(g, a), _ij_of(g, b))) for a, b in g.edges)
    mp_segments = [(a, b, role) for a, b in segments if (role := design.is_mp(a, b)) is not None]
    lp_segments = [(a, b) for a, b in segments if design.zone(a) == design.zone(b)]
    east = max(ij for ij in design.node_of if ij[1] == design.mid_j)

    # Junctions: medium pressure (the ring and the cross, the gate), low pressure (intersections, mid-block).
    junctions: dict[str, tuple[tuple[float, float], bool]] = {}
    for ij in sorted({ij for a, b, _r in mp_segments for ij in (a, b)}):
        junctions[_name("M", ij)] = (design.xy(ij), True)
    junctions["GATE"] = ((design.xy(east)[0] + GATE_OFFSET_M, design.xy(east)[1]), True)
    for ij in sorted({ij for seg in lp_segments for ij in seg}):
        junctions[_name("L", ij)] = (design.xy(ij), False)
    lp_pipes: list[tuple[str, str]] = []
    for a, b in lp_segments:
        service = _name("S", a) + ("E" if b[0] > a[0] else "N")
        (xa, ya), (xb, yb) = design.xy(a), design.xy(b)
        junctions[service] = (((xa + xb) / 2, (ya + yb) / 2), False)
        lp_pipes += [(_name("L", a), service), (service, _name("L", b))]
    names = list(junctions)
    xy = [junctions[n][0] for n in names]
    medium = [junctions[n][1] for n in names]
    net = pandapipes.create_empty_network(name=NETWORK_NAME, fluid=FLUID)
    created = pandapipes.create_junctions(
        net,
        len(names),
        pn_bar=[GATE_PRESSURE_BAR if m else LP_SETPOINT_BAR for m in medium],
        tfluid_k=GAS_TEMPERATURE_K,
        height_m=[
            round(layout.ground(*p) - (MP_COVER_M if m else LP_COVER_M), 2) for p, m in zip(xy, medium, strict=True)
        ],
        name=names,
        geodata=[(round(x, 2), round(y, 2)) for x, y in xy],
    )
    junction = {n: int(j) for n, j in zip(names, created, strict=True)}
    pandapipes.create_ext_grid(net, junction["GATE"], p_bar=GATE_PRESSURE_BAR, t_k=GAS_TEMPERATURE_K, name="城市门站")

    # Medium-pressure pipes, with isolation valves on every end at an intersection.
    mp_pipes = [("GATE", _name("M", east), "gate")] + [(_name("M", a), _name("M", b), r) for a, b, r in mp_segments]
    diameters = {"gate": MP_GATE_DIAMETER_MM, "ring": MP_RING_DIAMETER_MM, "cross": MP_CROSS_DIAMETER_MM}
    mp_index = _create_pipes(
        net,
        junction,
        [(a, b) for a, b, _r in mp_pipes],
        diameters_mm=[diameters[r] for _a, _b, r in mp_pipes],
        k_mm=MP_ROUGHNESS_MM,
        names=[f"MP{n:03d}" for n in range(1, len(mp_pipes) + 1)],
        pressure_level="MP",
        laid_in=[
            "utility_tunnel" if r != "gate" and design.in_tunnel(_ij(a), _ij(b)) else "buried" for a, b, r in mp_pipes
        ],
    )
    valve_ends = [
        (junction[end], index, diameters[r])
        for (a, b, r), index in zip(mp_pipes, mp_index, strict=True)
        for end in (a, b)
        if end != "GATE"
    ]
    pandapipes.create_valves(
        net,
        [j for j, _p, _d in valve_ends],
        [p for _j, p, _d in valve_ends],
        et="pi",
        inner_diameter_mm=[float(d) for _j, _p, d in valve_ends],
        name=[f"GV{n:03d}" for n in range(1, len(valve_ends) + 1)],
    )

    # Regulator stations, then the low-pressure grids sized for the buildings' sinks.
    regulators = design.regulators()
    pandapipes.create_pressure_controls(
        net,
        [junction[_name("M", ij)] for ij in regulators],
        [junction[_name("L", ij)] for ij in regulators],
        [junction[_name("L", ij)] for ij in regulators],
        controlled_p_bar=LP_SETPOINT_BAR,
        name=[f"RS{k}" for k in range(1, len(regulators) + 1)],
    )
    design_flow = _add_sinks(net, layout, {n: j for n, j in junction.items() if n.startswith("S")})
    sizes = _lp_diameters(net, design, junction, lp_pipes, design_flow)
    _create_pipes(
        net,
        junction,
        lp_pipes,
        diameters_mm=[sizes[p] for p in lp_pipes],
        k_mm=LP_ROUGHNESS_MM,
        names=[f"LP{n:04d}" for n in range(1, len(lp_pipes) + 1)],
        pressure_level="LP",
        laid_in=["buried"] * len(lp_pipes),
    )
    return net


def _create_pipes(
    net: Any,
    junction: dict[str, int],
    ends: list[tuple[str, str]],
    *,
    diameters_mm: list[int],
    k_mm: float,
    names: list[str],
    pressure_level: str,
    laid_in: list[str],
) -> list[int]:
    """Create straight pipes between named junctions; return their indices."""
    lengths_km = [_distance(net, junction[a], junction[b]) / 1000.0 for a, b in ends]
    created = pandapipes.create_pipes_from_parameters(
        net,
        [junction[a] for a, _b in ends],
        [junction[b] for _a, b in ends],
        length_km=lengths_km,
        inner_diameter_mm=[float(d) for d in diameters_mm],
        k_mm=k_mm,
        name=names,
        pressure_level=pressure_level,
        laid_in=laid_in,
    )
    return [int(i) for i in created]


def _ij_of(g: nx.Graph, node: str) -> tuple[int, int]:
    return int(g.nodes[node]["i"]), int(g.nodes[node]["j"])


def _distance(net: Any, a: int, b: int) -> float:
    geo = net.junction_geodata
    return float(math.hypot(geo.at[a, "x"] - geo.at[b, "x"], geo.at[a, "y"] - geo.at[b, "y"]))


def _add_sinks(net: Any, layout: Layout, services: dict[str, int]) -> dict[int, float]:
    """One sink per building at the nearest service junction (mean flow, scaled to the design peak hour).

    Returns the design flow per service junction, m³/s.
    """
    names = sorted(services)
    geo = net.junction_geodata
    tree = STRtree([Point(float(geo.at[services[n], "x"]), float(geo.at[services[n], "y"])) for n in names])
    sinks: list[tuple[int, float, str]] = []
    design: dict[int, float] = {}
    for building in sorted(layout.buildings.values(), key=lambda b: b.building_id):
        footprint = Polygon(building.footprint)
        if building.use in PER_PERSON_USES:
            m3_per_day = building.occupants * NATURAL_GAS_M3_PER_PERSON_DAY
        else:
            m3_per_day = footprint.area * building.floors * M3_PER_FLOOR_M2_DAY[building.use]
        if m3_per_day <= 0:
            continue
        j = services[names[int(tree.nearest(footprint.centroid))]]
        sinks.append((j, m3_per_day * GAS_DENSITY_KG_M3 / 86_400.0, building.building_id))
        design[j] = design.get(j, 0.0) + m3_per_day * DESIGN_PEAK_FACTOR / 86_400.0
    pandapipes.create_sinks(
        net,
        [j for j, _m, _b in sinks],
        mdot_kg_per_s=[m for _j, m, _b in sinks],
        scaling=DESIGN_PEAK_FACTOR,
        name=[b for _j, _m, b in sinks],
    )
    return design


def _lp_diameters(
    net: Any,
    design: _Design,
    junction: dict[str, int],
    pipes: list[tuple[str, str]],
    design_flow: dict[int, float],
) -> dict[tuple[str, str], int]:
    """Size each LP pipe for its design flow along the shortest routes from its zone's regulator."""
    graph = nx.Graph()
    for a, b in pipes:
        graph.add_edge(a, b, length=_distance(net, junction[a], junction[b]))
    pipe_of = {frozenset(p): p for p in pipes}
    flow: dict[tuple[str, str], float] = {}
    for ij in design.regulators():
        paths = nx.shortest_path(graph, _name("L", ij), weight="length")
        for node, route in sorted(paths.items()):
            q = design_flow.get(junction[node], 0.0)
            for step in itertools.pairwise(route):
                pipe = pipe_of[frozenset(step)]
                flow[pipe] = flow.get(pipe, 0.0) + q
    sizes = {}
    for pipe in pipes:
        needed_m = math.sqrt(4.0 * flow.get(pipe, 0.0) / (math.pi * LP_DESIGN_VELOCITY_M_S))
        sizes[pipe] = next((d for d in LP_DIAMETERS_MM if d / 1000.0 >= needed_m), LP_DIAMETERS_MM[-1])
    return sizes


# --- underground spaces ---------------------------------------------------------------------------------------------

_Near = Callable[[Any, float], tuple[str, ...]]  # (geometry, reach m) → ``gas:`` ids of the pipes within reach


def _spaces(design: _Design, network: PipeNetwork) -> list[UndergroundSpace]:
    """Regulator vaults, valve wells, utility tunnel compartments, manholes and basements, in that order."""
    layout = design.layout
    pipes = sorted(lid for lid, link in network.links.items() if link.kind is LinkKind.PIPE)
    lines = [LineString(network.polyline(network.links[lid])) for lid in pipes]
    tree = STRtree(lines)

    def near(geometry: Any, reach_m: float) -> tuple[str, ...]:
        hits = [int(k) for k in tree.query(geometry, predicate="dwithin", distance=reach_m)]
        hits.sort(key=lambda k: (lines[k].distance(geometry), pipes[k]))
        return tuple(asset_ref(Network.GAS, pipes[k]) for k in hits)

    def links_at(node_id: str) -> list[str]:
        return sorted(lid for lid, link in network.links.items() if node_id in (link.from_id, link.to_id))

    spaces: list[UndergroundSpace] = []
    regulators = sorted(lid for lid, link in network.links.items() if link.kind is LinkKind.REGULATOR)
    for k, reg in enumerate(regulators, 1):
        link = network.links[reg]
        node = network.nodes[link.from_id]
        x, y = node.x_m + REGULATOR_VAULT_OFFSET_M, node.y_m + REGULATOR_VAULT_OFFSET_M
        refs = [asset_ref(Network.GAS, lid) for lid in (*links_at(link.from_id), *links_at(link.to_id))]
        spaces.append(
            UndergroundSpace(
                f"RV{k}",
                SpaceKind.UTILITY_VAULT,
                round(x, 2),
                round(y, 2),
                round(layout.ground(x, y) - REGULATOR_VAULT_DEPTH_M, 2),
                REGULATOR_VAULT_VOLUME_M3,
                tuple(dict.fromkeys(refs)),
            )
        )
    wells: dict[str, list[str]] = {}
    for valve in network.valves.values():
        wells.setdefault(valve.near_node_id, []).append(asset_ref(Network.GAS, valve.link_id))
    for k, node_id in enumerate(sorted(wells), 1):
        node = network.nodes[node_id]
        spaces.append(
            UndergroundSpace(
                f"VW{k:02d}",
                SpaceKind.UTILITY_VAULT,
                node.x_m,
                node.y_m,
                round((node.ground_m or node.z_m) - VALVE_WELL_DEPTH_M, 2),
                VALVE_WELL_VOLUME_M3,
                tuple(sorted(set(wells[node_id]))),
            )
        )
    tunnel = sorted(lid for lid, link in network.links.items() if link.attrs.get("laid_in") == "utility_tunnel")
    for k, lid in enumerate(sorted(tunnel, key=lambda t: network.nodes[network.links[t].from_id].x_m), 1):
        link = network.links[lid]
        a, b = network.endpoints(link)
        x, y = (a.x_m + b.x_m) / 2, (a.y_m + b.y_m) / 2
        spaces.append(
            UndergroundSpace(
                f"UT1-{k:02d}",
                SpaceKind.UTILITY_TUNNEL,
                round(x, 2),
                round(y, 2),
                round(layout.ground(x, y) - TUNNEL_FLOOR_DEPTH_M, 2),
                round(link.length_m * TUNNEL_GAS_COMPARTMENT_M2, 1),
                (
                    asset_ref(Network.GAS, lid),
                    *(r for r in near(Point(x, y), MANHOLE_REACH_M) if r != asset_ref(Network.GAS, lid)),
                ),
            )
        )
    spaces += _manholes(design, near)
    spaces += _basements(layout, near)
    return spaces


def _manholes(design: _Design, near: _Near) -> list[UndergroundSpace]:
    """Stand-ins for sewer manholes: one per street segment with a gas pipe, a third of the way along it."""
    out: list[UndergroundSpace] = []
    g = design.layout.street_graph
    for a, b in sorted((min(_ij_of(g, u), _ij_of(g, v)), max(_ij_of(g, u), _ij_of(g, v))) for u, v in g.edges):
        (xa, ya), (xb, yb) = design.xy(a), design.xy(b)
        length = math.hypot(xb - xa, yb - ya)
        x = xa + (xb - xa) / 3 - (yb - ya) / length * MANHOLE_OFFSET_M
        y = ya + (yb - ya) / 3 + (xb - xa) / length * MANHOLE_OFFSET_M
        refs = near(Point(x, y), MANHOLE_REACH_M)
        if not refs:
            continue
        out.append(
            UndergroundSpace(
                f"MH{len(out) + 1:03d}",
                SpaceKind.MANHOLE,
                round(x, 2),
                round(y, 2),
                round(design.layout.ground(x, y) - MANHOLE_DEPTH_M, 2),
                MANHOLE_VOLUME_M3,
                refs,
            )
        )
    return out


def _basements(layout: Layout, near: _Near) -> Iterable[UndergroundSpace]:
    """The basement of every building that has one within ``BASEMENT_REACH_M`` of a gas pipe."""
    for building in sorted(layout.buildings.values(), key=lambda b: b.building_id):
        if not building.basement:
            continue
        footprint = Polygon(building.footprint)
        refs = near(footprint, BASEMENT_REACH_M)
        if not refs:
            continue
        levels = 2 if building.floors >= 18 else 1
        c = footprint.centroid
        yield UndergroundSpace(
            f"BS-{building.building_id}",
            SpaceKind.BASEMENT,
            round(c.x, 2),
            round(c.y, 2),
            round(building.ground_m - levels * BASEMENT_LEVEL_M, 2),
            round(footprint.area * levels * BASEMENT_LEVEL_M, 1),
            refs,
        )
