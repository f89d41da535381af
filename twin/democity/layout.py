"""The demo city's ground: terrain, river, streets, blocks, buildings and low points.

About 1.6 km × 1.25 km (2 km²) of central Ji'an on the north bank of the Gan River (赣江). The ground falls from
low hills in the north (~68 m) to the river (~40 m), with three low-lying hollows where rain ponds and two road
underpasses. Streets form a slightly irregular grid; buildings fill the blocks between them. Every network of the
demo city is laid along these streets (see :mod:`twin.democity.networks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from twin.model import Building, BuildingUse, LowPoint, Terrain

CRS = "EPSG:4547"  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
ORIGIN_X_M = 597_600.0
ORIGIN_Y_M = 3_000_000.0
RIVER_EDGE_M = 70.0  # the river bank runs along y = RIVER_EDGE_M (relative to the origin)
STREET_SPACING_X_M = 148.0
STREET_SPACING_Y_M = 113.0
STREETS_PER_SIDE = 11  # north-south and east-west streets of the demo city (scale 1)
ROAD_HALF_WIDTH_M = 10.0

# Hollows (x, y relative; radius m; depth m) and underpasses (street intersection index (i, j); depth m).
_HOLLOWS = [(430.0, 560.0, 110.0, 3.2), (1150.0, 350.0, 95.0, 2.6), (900.0, 900.0, 80.0, 2.2)]
_UNDERPASSES = [((2, 3), 4.5), ((7, 2), 4.0)]


@dataclass(slots=True)
class Layout:
    """The demo city's ground and streets, all in absolute CRS metres.

    Attributes:
        seed: the generator's seed.
        terrain: the DEM (10 m cells).
        river: the river polygon (exterior ring).
        street_graph: intersections as nodes (``x``, ``y``, ``z`` = ground, ``i``, ``j`` = grid index,
            ``underpass`` bool), street segments as edges (``length``).
        buildings: by id.
        low_points: road low points and underpasses by id.
        bank_nodes: ids of the intersections of the southernmost street, next to the river (where outfalls go).
    """

    seed: int
    terrain: Terrain
    river: tuple[tuple[float, float], ...]
    street_graph: nx.Graph
    buildings: dict[str, Building] = field(default_factory=dict)
    low_points: dict[str, LowPoint] = field(default_factory=dict)
    bank_nodes: list[str] = field(default_factory=list)

    def xy(self, node: str) -> tuple[float, float]:
        data = self.street_graph.nodes[node]
        return float(data["x"]), float(data["y"])

    def ground(self, x_m: float, y_m: float) -> float:
        return float(self.terrain.elevation_at(x_m, y_m))

    def streets(self) -> list[tuple[tuple[float, float], ...]]:
        """Street centrelines, one per segment."""
        return [(self.xy(a), self.xy(b)) for a, b in self.street_graph.edges]

    def street_kinds(self) -> list[str]:
        """Each segment's class, in :meth:`streets` order: ``"main"`` on the two main streets (the middle
        north-south and east-west ones, lined with shops and offices), ``"local"`` elsewhere."""
        nodes = self.street_graph.nodes
        mid_i = max(int(d["i"]) for _, d in nodes(data=True)) // 2
        mid_j = max(int(d["j"]) for _, d in nodes(data=True)) // 2
        kinds = []
        for a, b in self.street_graph.edges:
            (ia, ja), (ib, jb) = (nodes[a]["i"], nodes[a]["j"]), (nodes[b]["i"], nodes[b]["j"])
            main = (ia == ib == mid_i) or (ja == jb == mid_j)
            kinds.append("main" if main else "local")
        return kinds


def intersection_id(i: int, j: int) -> str:
    return f"X{i:02d}{j:02d}"


def _street_coords(scale: int) -> tuple[list[float], list[float]]:
    """Relative x of the north-south streets and y of the east-west streets for a city *scale* times the area."""
    n = max(2, round(STREETS_PER_SIDE * math.sqrt(scale)))
    return [60.0 + STREET_SPACING_X_M * i for i in range(n)], [110.0 + STREET_SPACING_Y_M * j for j in range(n)]


def _tiled(scale: int) -> tuple[list[tuple[float, float, float, float]], list[tuple[tuple[int, int], float]]]:
    """Hollows and underpasses, repeated over every demo-sized tile of a larger city."""
    tiles = max(1, round(math.sqrt(scale)))
    hollows, underpasses = [], []
    for tx in range(tiles):
        for ty in range(tiles):
            dx, dy = tx * STREET_SPACING_X_M * STREETS_PER_SIDE, ty * STREET_SPACING_Y_M * STREETS_PER_SIDE
            hollows += [(x + dx, y + dy, r, d) for x, y, r, d in _HOLLOWS]
            underpasses += [((i + tx * STREETS_PER_SIDE, j + ty * STREETS_PER_SIDE), d) for (i, j), d in _UNDERPASSES]
    return hollows, underpasses


def _terrain(rng: np.random.Generator, grid: _Grid) -> Terrain:
    cell = 10.0
    xs = np.arange(-50.0, grid.width_m + 50.0 + cell, cell)
    ys = np.arange(-50.0, grid.height_m + 50.0 + cell, cell)
    gx, gy = np.meshgrid(xs, ys)
    # Slope up from the river, steeper towards the northern hills, with a gentle east-west roll.
    hills = 0.64 * grid.height_m
    z = 41.0 + 0.016 * np.clip(gy - RIVER_EDGE_M, 0, None)
    z += 6.0 * (np.clip(gy - hills, 0, None) / (grid.height_m - hills)) ** 2
    z += 1.2 * np.sin(gx / 260.0) * np.cos(gy / 310.0)
    z[gy < RIVER_EDGE_M] = 38.5 + 0.02 * gy[gy < RIVER_EDGE_M]  # river bed and bank
    for hx, hy, radius, depth in grid.hollows:
        z -= depth * np.exp(-((gx - hx) ** 2 + (gy - hy) ** 2) / (2 * (radius / 1.6) ** 2))
    for (i, j), depth in grid.underpasses:
        ux, uy = grid.xs[i] + grid.jitter[(i, j)][0], grid.ys[j] + grid.jitter[(i, j)][1]
        z -= depth * np.exp(-((gx - ux) ** 2 + (gy - uy) ** 2) / (2 * 18.0**2))
    # Smooth noise: a few random low-frequency waves.
    for _ in range(6):
        kx, ky = rng.uniform(-1, 1, size=2) * 2 * math.pi / rng.uniform(150, 500)
        z += rng.uniform(0.1, 0.35) * np.sin(kx * gx + ky * gy + rng.uniform(0, 2 * math.pi))
    return Terrain(x0_m=ORIGIN_X_M - 50.0, y0_m=ORIGIN_Y_M - 50.0, cell_m=cell, elevation_m=z)


_USE_HEIGHT = {  # floors (min, max)
    BuildingUse.RESIDENTIAL: (4, 26),
    BuildingUse.COMMERCIAL: (2, 8),
    BuildingUse.OFFICE: (6, 20),
    BuildingUse.INDUSTRIAL: (1, 3),
    BuildingUse.SCHOOL: (3, 5),
    BuildingUse.HOSPITAL: (5, 14),
    BuildingUse.ELDERLY_CARE: (3, 6),
    BuildingUse.PUBLIC: (2, 5),
}
_OCCUPANTS_PER_M2 = {
    BuildingUse.RESIDENTIAL: 0.03,
    BuildingUse.COMMERCIAL: 0.08,
    BuildingUse.OFFICE: 0.06,
    BuildingUse.INDUSTRIAL: 0.02,
    BuildingUse.SCHOOL: 0.12,
    BuildingUse.HOSPITAL: 0.07,
    BuildingUse.ELDERLY_CARE: 0.04,
    BuildingUse.PUBLIC: 0.05,
}


def _block_use(rng: np.random.Generator, i: int, j: int) -> list[BuildingUse]:
    """The uses a block's buildings draw from: commerce along the main streets, a few special blocks."""
    special = {
        (2, 4): BuildingUse.SCHOOL,
        (6, 6): BuildingUse.HOSPITAL,
        (4, 2): BuildingUse.ELDERLY_CARE,
        (8, 7): BuildingUse.SCHOOL,
        (1, 7): BuildingUse.ELDERLY_CARE,
        (5, 5): BuildingUse.PUBLIC,
    }
    if (i, j) in special:
        return [special[(i, j)]]
    if j == 0:
        return [BuildingUse.INDUSTRIAL, BuildingUse.COMMERCIAL]
    if i == 5 or j == 5:
        return [BuildingUse.COMMERCIAL, BuildingUse.OFFICE, BuildingUse.RESIDENTIAL]
    return [BuildingUse.RESIDENTIAL] * 5 + [BuildingUse.COMMERCIAL]


def _buildings(rng: np.random.Generator, layout: Layout, grid: _Grid) -> dict[str, Building]:
    buildings: dict[str, Building] = {}
    n = 0
    xs, ys, jitter = grid.xs, grid.ys, grid.jitter
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            x0 = xs[i] + max(jitter[(i, j)][0], jitter[(i, j + 1)][0]) + ROAD_HALF_WIDTH_M + 6.0
            x1 = xs[i + 1] + min(jitter[(i + 1, j)][0], jitter[(i + 1, j + 1)][0]) - ROAD_HALF_WIDTH_M - 6.0
            y0 = ys[j] + max(jitter[(i, j)][1], jitter[(i + 1, j)][1]) + ROAD_HALF_WIDTH_M + 6.0
            y1 = ys[j + 1] + min(jitter[(i, j + 1)][1], jitter[(i + 1, j + 1)][1]) - ROAD_HALF_WIDTH_M - 6.0
            uses = _block_use(rng, i % STREETS_PER_SIDE, j % STREETS_PER_SIDE)
            # Split the block into a grid of lots.
            nx_lots = int(rng.integers(3, 6))
            ny_lots = int(rng.integers(2, 4))
            lot_w, lot_h = (x1 - x0) / nx_lots, (y1 - y0) / ny_lots
            for a in range(nx_lots):
                for b in range(ny_lots):
                    if rng.random() < 0.12:
                        continue  # a square, a car park, a garden
                    use = uses[int(rng.integers(len(uses)))]
                    w = lot_w * rng.uniform(0.55, 0.85)
                    h = lot_h * rng.uniform(0.55, 0.85)
                    cx = x0 + (a + 0.5) * lot_w + rng.uniform(-0.08, 0.08) * lot_w
                    cy = y0 + (b + 0.5) * lot_h + rng.uniform(-0.08, 0.08) * lot_h
                    ax, ay = ORIGIN_X_M + cx, ORIGIN_Y_M + cy
                    ring = (
                        (ax - w / 2, ay - h / 2),
                        (ax + w / 2, ay - h / 2),
                        (ax + w / 2, ay + h / 2),
                        (ax - w / 2, ay + h / 2),
                    )
                    lo, hi = _USE_HEIGHT[use]
                    floors = int(rng.integers(lo, hi + 1))
                    if use is BuildingUse.RESIDENTIAL and rng.random() < 0.6:
                        floors = min(floors, 7)  # most of the old town is low-rise
                    height = floors * (3.0 if use is BuildingUse.RESIDENTIAL else 3.8)
                    basement = floors >= 10 or (use in (BuildingUse.COMMERCIAL, BuildingUse.HOSPITAL) and floors >= 4)
                    n += 1
                    bid = f"B{n:05d}"
                    buildings[bid] = Building(
                        building_id=bid,
                        footprint=ring,
                        height_m=round(height, 1),
                        floors=floors,
                        ground_m=round(layout.ground(ax, ay), 2),
                        use=use,
                        basement=basement,
                        occupants=int(w * h * floors * _OCCUPANTS_PER_M2[use]),
                    )
    return buildings


@dataclass(slots=True)
class _Grid:
    xs: list[float]
    ys: list[float]
    jitter: dict[tuple[int, int], tuple[float, float]]
    hollows: list[tuple[float, float, float, float]]
    underpasses: list[tuple[tuple[int, int], float]]

    @property
    def width_m(self) -> float:
        return self.xs[-1] + 60.0

    @property
    def height_m(self) -> float:
        return self.ys[-1] + 50.0


def build_layout(seed: int = 2026, *, scale: int = 1) -> Layout:
    """Generate the demo city's ground and streets from *seed*; the same seed gives the same city.

    Args:
        seed: random seed.
        scale: area multiple: 1 is the demo city (~2 km², ~850 buildings); 10 makes a city ten times larger for
            benchmarks, repeating the demo's hollows and underpasses on every demo-sized tile.
    """
    rng = np.random.default_rng(seed)
    xs, ys = _street_coords(scale)
    jitter = {
        (i, j): (float(rng.uniform(-9, 9)), float(rng.uniform(-7, 7))) for i in range(len(xs)) for j in range(len(ys))
    }
    hollows, underpass_list = _tiled(scale)
    grid = _Grid(xs, ys, jitter, hollows, underpass_list)
    terrain = _terrain(rng, grid)
    river = (
        (ORIGIN_X_M - 50.0, ORIGIN_Y_M - 50.0),
        (ORIGIN_X_M + grid.width_m + 50.0, ORIGIN_Y_M - 50.0),
        (ORIGIN_X_M + grid.width_m + 50.0, ORIGIN_Y_M + RIVER_EDGE_M - 15.0),
        (ORIGIN_X_M - 50.0, ORIGIN_Y_M + RIVER_EDGE_M - 15.0),
    )
    graph = nx.Graph()
    underpasses = {ij for ij, _d in underpass_list}
    for i, sx in enumerate(xs):
        for j, sy in enumerate(ys):
            x = ORIGIN_X_M + sx + jitter[(i, j)][0]
            y = ORIGIN_Y_M + sy + jitter[(i, j)][1]
            graph.add_node(
                intersection_id(i, j),
                x=x,
                y=y,
                z=float(terrain.elevation_at(x, y)),
                i=i,
                j=j,
                underpass=(i, j) in underpasses,
            )
    for i in range(len(xs)):
        for j in range(len(ys)):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < len(xs) and j + dj < len(ys):
                    a, b = intersection_id(i, j), intersection_id(i + di, j + dj)
                    pa, pb = graph.nodes[a], graph.nodes[b]
                    graph.add_edge(a, b, length=math.hypot(pa["x"] - pb["x"], pa["y"] - pb["y"]))
    layout = Layout(seed=seed, terrain=terrain, river=river, street_graph=graph)
    layout.bank_nodes = [intersection_id(i, 0) for i in range(len(xs))]
    layout.buildings = _buildings(rng, layout, grid)
    layout.low_points = _low_points(layout, grid)
    return layout


def _low_points(layout: Layout, grid: _Grid) -> dict[str, LowPoint]:
    """Underpasses, street intersections lower than all their neighbours, and the intersection nearest each hollow."""
    points: dict[str, LowPoint] = {}
    g = layout.street_graph
    in_hollow = set()
    for hx, hy, _r, _d in grid.hollows:
        ax, ay = ORIGIN_X_M + hx, ORIGIN_Y_M + hy
        in_hollow.add(min(g.nodes, key=lambda n: (g.nodes[n]["x"] - ax) ** 2 + (g.nodes[n]["y"] - ay) ** 2))
    names = {
        0: "沿江路",
        1: "永叔路",
        2: "阳明路",
        3: "井冈山大道",
        4: "文山路",
        5: "庐陵大道",
        6: "韶山路",
        7: "青原路",
        8: "吉州大道",
        9: "后河路",
        10: "北门路",
    }
    k = 0
    for node, data in sorted(g.nodes(data=True)):
        neighbours = [g.nodes[m]["z"] for m in g.neighbors(node)]
        is_sink = all(data["z"] < z for z in neighbours)
        if not (data["underpass"] or is_sink or node in in_hollow):
            continue
        k += 1
        kind = "underpass" if data["underpass"] else "road_low_point"
        label = f"{names[data['j'] % STREETS_PER_SIDE]}{'下穿通道' if data['underpass'] else '低洼路段'}（{node}）"
        points[f"LP{k:03d}"] = LowPoint(
            point_id=f"LP{k:03d}",
            name=label,
            x_m=data["x"],
            y_m=data["y"],
            ground_m=round(data["z"], 2),
            kind=kind,
            depth_capacity_m=4.5 if data["underpass"] else 0.5,
        )
    return points
