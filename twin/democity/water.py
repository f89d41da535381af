"""The demo city's water supply: a looped grid of mains along the streets, a treatment plant and a hill tank.

The plant (水厂) sits on the river bank at the south-west corner: its clear-water reservoir feeds two duty pumps in
parallel that lift into the grid. An elevated tank (高位水塔) on the northern hills floats on the system, filling at
night and helping at the peaks. Mains follow every street (a junction at every intersection and one mid-block on
longer blocks); each building's demand goes to the nearest junction with a residential or a commercial diurnal
pattern. Diameters come from the peak-hour flows along the shortest routes from the plant (larger near the plant),
and every pipe end at an intersection has an isolation valve, as real grids have.

Everything is deterministic: the same layout gives the same network and the same ``.inp`` text.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import networkx as nx
import numpy as np
import wntr
from shapely import Polygon

from twin.democity.layout import Layout
from twin.model import BuildingUse, IsolationValve, LinkKind, NodeKind, PipeNetwork
from twin.water import read_epanet

NETWORK_NAME = "吉安示范片区供水管网"

RESIDENTIAL_L_PER_PERSON_DAY = 200.0
# Non-residential use by floor area, L/m²/day (typical planning figures for Chinese cities).
L_PER_FLOOR_M2_DAY = {
    BuildingUse.COMMERCIAL: 6.0,
    BuildingUse.OFFICE: 4.0,
    BuildingUse.INDUSTRIAL: 10.0,
    BuildingUse.SCHOOL: 3.0,
    BuildingUse.HOSPITAL: 15.0,
    BuildingUse.PUBLIC: 3.0,
}
PER_PERSON_USES = (BuildingUse.RESIDENTIAL, BuildingUse.ELDERLY_CARE)
# Hospitals run day and night like homes; the other non-residential uses follow business hours.
RESIDENTIAL_PATTERN_USES = (*PER_PERSON_USES, BuildingUse.HOSPITAL)

# Hourly multipliers from midnight, normalised to a mean of 1 when built: a morning and an evening peak, a night
# minimum of about 0.4.
RESIDENTIAL_PATTERN = (
    0.45,
    0.40,
    0.40,
    0.40,
    0.45,
    0.65,
    1.10,
    1.55,
    1.45,
    1.15,
    1.00,
    1.05,
    1.20,
    1.05,
    0.90,
    0.85,
    0.95,
    1.15,
    1.45,
    1.55,
    1.40,
    1.15,
    0.85,
    0.60,
)
COMMERCIAL_PATTERN = (
    0.30,
    0.30,
    0.30,
    0.30,
    0.30,
    0.40,
    0.60,
    0.90,
    1.30,
    1.60,
    1.70,
    1.70,
    1.60,
    1.60,
    1.70,
    1.60,
    1.50,
    1.40,
    1.20,
    1.00,
    0.80,
    0.60,
    0.40,
    0.30,
)

MIDBLOCK_MIN_LENGTH_M = 125.0  # street segments at least this long get a mid-block junction
DIAMETERS_MM = (100, 150, 200, 300, 400, 500, 600)
DESIGN_VELOCITY_M_S = 1.0  # the largest velocity at the peak-hour design flow
LOOP_DIAMETER_MM = 150  # mains that close loops carry little design flow; fire flow needs at least this
CLEARWELL_HEAD_M = 40.5  # water level in the plant's clear-water reservoir
TANK_FLOOR_ABOVE_HIGHEST_M = 22.0  # tank floor above the highest junction: at least 22 m of pressure there
TANK_LEVELS_M = (0.5, 4.0, 8.5)  # min, initial, max
TANK_DIAMETER_M = 32.0
TANK_FILL_SHARE = 0.4  # the tank's design inflow, as a share of the mean daily demand
DUTY_PUMPS = 2
VALVE_OFFSET_M = 3.0  # an isolation valve sits this far along the pipe from the intersection


def build_water(layout: Layout) -> tuple[PipeNetwork, str]:
    """Build the demo city's water supply network on *layout*'s streets; return it and its EPANET ``.inp`` text.

    The network is read back from the ``.inp`` text (:func:`twin.water.read_epanet`), so it is exactly what EPANET
    runs; junctions carry their ground elevation (``ground_m`` = ``z_m``) and the network its isolation valves.

    Example:
        >>> from twin.democity.layout import build_layout
        >>> network, inp = build_water(build_layout())
        >>> len(network.nodes) > 200, "[JUNCTIONS]" in inp
        (True, True)
    """
    plan = _Plan(layout)
    wn = plan.model()
    with tempfile.TemporaryDirectory(prefix="lifeline-water-") as tmp:
        path = Path(tmp) / "democity-water.inp"
        wntr.network.write_inpfile(wn, str(path), units="LPS")
        # WNTR stamps the time of writing in a comment; without it the same layout gives the same text.
        written = path.read_text(encoding="utf-8").splitlines(keepends=True)
        inp = "".join(line for line in written if not line.startswith("; Created:"))
        path.write_text(inp, encoding="utf-8")
        network = read_epanet(path)
    network.name = NETWORK_NAME
    for node_id, node in network.nodes.items():
        ground = node.z_m if node.kind is NodeKind.JUNCTION else layout.ground(node.x_m, node.y_m)
        network.nodes[node_id] = replace(node, ground_m=round(ground, 2))
    network.valves = _isolation_valves(network, plan.intersections)
    return network, inp


class _Plan:
    """The demo network's design: junctions, pipes, demands and sizes, before it becomes a WNTR model."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.xy: dict[str, tuple[float, float]] = {}
        self.elevation: dict[str, float] = {}
        self.intersections: set[str] = set()
        self.pipes: list[tuple[str, str]] = []
        self._junctions()
        self.demand_l_s: dict[str, dict[str, float]] = self._demands()
        self.plant_xy, self.station_xy, self.tank_xy, self.tank_junction = self._facilities()

    def _junctions(self) -> None:
        g = self.layout.street_graph
        for _node, data in sorted(g.nodes(data=True)):
            jid = _junction_id(data["i"], data["j"])
            self.xy[jid] = (float(data["x"]), float(data["y"]))
            self.elevation[jid] = round(float(data["z"]), 2)
            self.intersections.add(jid)
        for a, b, length in sorted(_ordered_edges(g)):
            ja, jb = _junction_id(g.nodes[a]["i"], g.nodes[a]["j"]), _junction_id(g.nodes[b]["i"], g.nodes[b]["j"])
            if length < MIDBLOCK_MIN_LENGTH_M:
                self.pipes.append((ja, jb))
                continue
            mid = ja + ("E" if g.nodes[b]["i"] > g.nodes[a]["i"] else "N")
            (xa, ya), (xb, yb) = self.xy[ja], self.xy[jb]
            self.xy[mid] = ((xa + xb) / 2, (ya + yb) / 2)
            self.elevation[mid] = round(self.layout.ground(*self.xy[mid]), 2)
            self.pipes += [(ja, mid), (mid, jb)]

    def _demands(self) -> dict[str, dict[str, float]]:
        """Mean demand per junction and pattern ("RES", "COM"), L/s, from the buildings."""
        ids = sorted(self.xy)
        points = np.array([self.xy[j] for j in ids])
        demand: dict[str, dict[str, float]] = {}
        for building in sorted(self.layout.buildings.values(), key=lambda b: b.building_id):
            footprint = Polygon(building.footprint)
            if building.use in PER_PERSON_USES:
                litres_per_day = building.occupants * RESIDENTIAL_L_PER_PERSON_DAY
            else:
                litres_per_day = footprint.area * building.floors * L_PER_FLOOR_M2_DAY[building.use]
            pattern = "RES" if building.use in RESIDENTIAL_PATTERN_USES else "COM"
            c = footprint.centroid
            nearest = ids[int(np.argmin((points[:, 0] - c.x) ** 2 + (points[:, 1] - c.y) ** 2))]
            per_pattern = demand.setdefault(nearest, {})
            per_pattern[pattern] = per_pattern.get(pattern, 0.0) + litres_per_day / 86_400.0
        return demand

    def _facilities(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float], str]:
        """Place the plant and pump station west of the south-west corner, and the tank on the highest hill."""
        g = self.layout.street_graph
        corner = min(g.nodes, key=lambda n: (g.nodes[n]["i"], g.nodes[n]["j"]))
        cx, cy = float(g.nodes[corner]["x"]), float(g.nodes[corner]["y"])
        plant, station = (cx - 42.0, cy - 24.0), (cx - 24.0, cy - 17.0)
        top = max(data["j"] for _n, data in g.nodes(data=True))
        north = [n for n, data in g.nodes(data=True) if data["j"] == top]
        hill = max(sorted(north), key=lambda n: self.layout.ground(g.nodes[n]["x"], g.nodes[n]["y"] + 60.0))
        tank = (float(g.nodes[hill]["x"]), float(g.nodes[hill]["y"]) + 60.0)
        return plant, station, tank, _junction_id(g.nodes[hill]["i"], g.nodes[hill]["j"])

    def _length(self, a: str, b: str) -> float:
        (xa, ya), (xb, yb) = self.xy[a], self.xy[b]
        return math.hypot(xb - xa, yb - ya)

    def _diameters_mm(self) -> dict[tuple[str, str], int]:
        """Size each main for its peak-hour flow along the shortest routes from the plant (and into the tank)."""
        graph = nx.Graph()
        for a, b in self.pipes:
            graph.add_edge(a, b, length=self._length(a, b))
        peak = max(_normalised(RESIDENTIAL_PATTERN))
        draw = {j: sum(d.values()) * peak / 1000.0 for j, d in self.demand_l_s.items()}  # m³/s
        mean_total = sum(sum(d.values()) for d in self.demand_l_s.values()) / 1000.0
        draw[self.tank_junction] = draw.get(self.tank_junction, 0.0) + TANK_FILL_SHARE * mean_total
        pipe_of = {frozenset(pipe): pipe for pipe in self.pipes}
        paths = nx.shortest_path(graph, _junction_id(0, 0), weight="length")
        flow: dict[tuple[str, str], float] = {}
        for node, q in sorted(draw.items()):
            for step in itertools.pairwise(paths[node]):
                pipe = pipe_of[frozenset(step)]
                flow[pipe] = flow.get(pipe, 0.0) + q
        sizes: dict[tuple[str, str], int] = {}
        for pipe in self.pipes:
            design = flow.get(pipe)
            if design is None:
                sizes[pipe] = LOOP_DIAMETER_MM
                continue
            needed_m = math.sqrt(4.0 * design / (math.pi * DESIGN_VELOCITY_M_S))
            sizes[pipe] = next((d for d in DIAMETERS_MM if d / 1000.0 >= needed_m), DIAMETERS_MM[-1])
        return sizes

    def model(self) -> wntr.network.WaterNetworkModel:
        """Return the network as a WNTR model (SI units), ready to write as ``.inp``."""
        rng = np.random.default_rng(self.layout.seed + 17)
        wn = wntr.network.WaterNetworkModel()
        wn.name = NETWORK_NAME
        options = wn.options
        options.hydraulic.inpfile_units = "LPS"
        options.hydraulic.headloss = "H-W"
        options.time.duration = 24 * 3600
        options.time.hydraulic_timestep = 900
        options.time.pattern_timestep = 3600
        options.time.report_timestep = 3600
        options.quality.parameter = "NONE"
        wn.add_pattern("RES", [round(m, 4) for m in _normalised(RESIDENTIAL_PATTERN)])
        wn.add_pattern("COM", [round(m, 4) for m in _normalised(COMMERCIAL_PATTERN)])

        for jid in sorted(self.xy):
            demands = self.demand_l_s.get(jid, {})
            patterns = sorted(demands) or ["RES"]
            first = patterns[0]
            wn.add_junction(
                jid,
                base_demand=round(demands.get(first, 0.0), 5) / 1000.0,
                demand_pattern=first,
                elevation=self.elevation[jid],
                coordinates=_rounded(self.xy[jid]),
            )
            for pattern in patterns[1:]:
                wn.get_node(jid).add_demand(round(demands[pattern], 5) / 1000.0, pattern)

        mean_total_m3_s = sum(sum(d.values()) for d in self.demand_l_s.values()) / 1000.0
        highest = max(self.elevation.values())
        tank_floor = round(highest + TANK_FLOOR_ABOVE_HIGHEST_M, 1)
        low, init, high = TANK_LEVELS_M
        wn.add_reservoir("WTP", base_head=CLEARWELL_HEAD_M, coordinates=_rounded(self.plant_xy))
        wn.add_junction(
            "PS", elevation=round(self.layout.ground(*self.station_xy), 2), coordinates=_rounded(self.station_xy)
        )
        # The pumps lift from the clear well to the tank's middle level (plus losses) at the mean daily flow, so
        # the tank ends the day about where it began; the shut-off head stays below 60 m of pressure anywhere.
        design_head = tank_floor + init + 2.0 - CLEARWELL_HEAD_M
        design_flow = mean_total_m3_s / DUTY_PUMPS
        wn.add_curve(
            "PUMP",
            "HEAD",
            [
                (0.0, round(design_head * 1.08, 2)),
                (round(design_flow, 4), round(design_head, 2)),
                (round(2.0 * design_flow, 4), round(design_head * 0.72, 2)),
            ],
        )
        for k in range(1, DUTY_PUMPS + 1):
            wn.add_pump(f"PU{k}", "WTP", "PS", pump_type="HEAD", pump_parameter="PUMP")
        wn.add_tank(
            "TANK",
            elevation=tank_floor,
            init_level=init,
            min_level=low,
            max_level=high,
            diameter=TANK_DIAMETER_M,
            coordinates=_rounded(self.tank_xy),
        )
        for pipe_id, a, b, length_m in (
            ("PMAIN", "PS", _junction_id(0, 0), self._length_to(self.station_xy, _junction_id(0, 0))),
            ("PTANK", self.tank_junction, "TANK", self._length_to(self.tank_xy, self.tank_junction)),
        ):
            diameter_m = 0.6 if pipe_id == "PMAIN" else 0.4
            wn.add_pipe(pipe_id, a, b, length=round(length_m, 1), diameter=diameter_m, roughness=130)

        sizes = self._diameters_mm()
        for n, (a, b) in enumerate(self.pipes, start=1):
            diameter_mm = sizes[(a, b)]
            c_range = (120, 131) if diameter_mm >= 400 else (110, 126) if diameter_mm >= 200 else (100, 116)
            wn.add_pipe(
                f"P{n:04d}",
                a,
                b,
                length=round(self._length(a, b), 1),
                diameter=diameter_mm / 1000.0,
                roughness=int(rng.integers(*c_range)),
            )
        return wn

    def _length_to(self, xy: tuple[float, float], node: str) -> float:
        return math.hypot(self.xy[node][0] - xy[0], self.xy[node][1] - xy[1])


def _isolation_valves(network: PipeNetwork, intersections: set[str]) -> dict[str, IsolationValve]:
    """An isolation valve on every pipe end at an intersection, ``VALVE_OFFSET_M`` along the pipe from it."""
    valves: dict[str, IsolationValve] = {}
    for link in sorted(network.links.values(), key=lambda k: k.link_id):
        if link.kind is not LinkKind.PIPE:
            continue
        for near, far in ((link.from_id, link.to_id), (link.to_id, link.from_id)):
            if near not in intersections:
                continue
            vid = f"V{len(valves) + 1:04d}"
            valves[vid] = IsolationValve(vid, link.link_id, near, *_along(network, near, far))
    return valves


def _along(network: PipeNetwork, near: str, far: str) -> tuple[float, float]:
    """The point ``VALVE_OFFSET_M`` from node *near* towards node *far* (at most half way)."""
    a, b = network.nodes[near], network.nodes[far]
    length = math.hypot(b.x_m - a.x_m, b.y_m - a.y_m) or 1.0
    t = min(VALVE_OFFSET_M / length, 0.5)
    return round(a.x_m + t * (b.x_m - a.x_m), 2), round(a.y_m + t * (b.y_m - a.y_m), 2)


def _junction_id(i: int, j: int) -> str:
    return f"J{i:02d}{j:02d}"


def _ordered_edges(g: nx.Graph) -> list[tuple[str, str, float]]:
    """Street segments, each from its west or south end."""
    out = []
    for a, b, data in g.edges(data=True):
        if (g.nodes[a]["i"], g.nodes[a]["j"]) > (g.nodes[b]["i"], g.nodes[b]["j"]):
            a, b = b, a
        out.append((a, b, float(data["length"])))
    return out


def _normalised(pattern: tuple[float, ...]) -> list[float]:
    mean = sum(pattern) / len(pattern)
    return [m / mean for m in pattern]


def _rounded(xy: tuple[float, float]) -> tuple[float, float]:
    return round(xy[0], 2), round(xy[1], 2)
