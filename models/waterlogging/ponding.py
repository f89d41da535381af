"""Surface ponding: where the water that leaves the drainage network at its nodes stands on the ground, how deep.

SWMM reports how much water each node floods (with ``ALLOW_PONDING NO`` that water is lost to the model); this
module puts it on the terrain with a fill-and-spill model, the usual first step before a 2D surface model:

1. **Depressions.** A priority flood from the edge of the DEM (Barnes et al., 2014) gives each cell the level it
   holds water to (the *spill level*) and the neighbour through which its water leaves, so every cell has a path
   downhill to the edge (the river, or beyond the model). Cells whose spill level is above their ground are a
   depression (a lake bed); 8-connected depression cells form one lake with one spill level. A road low point
   (the twin's ``LowPoint``) that the DEM does not show as a depression holds water up to its depth capacity.
2. **Routing.** Water flooded at a node runs down that path from the node's cell to the first lake it meets
   (or off the edge, lost). A lake fills from its lowest cell up (stage–storage curve over its cells); the part
   beyond its capacity spills down the path from its outlet to the next lake, and so on.
3. **Depth.** A lake's water level over each of its cells gives the depth of every cell, m.

What it leaves out: the time water takes on the ground (the ponds are what the volumes would make once settled),
water returning into the network, and flow depth on slopes (a steep road carrying runoff shows no depth).
Nested pits in one lake fill as one (their level is shared). Where the city has no terrain, each node ponds on a
disc of :data:`DEFAULT_POND_AREA_M2` (or the node's ``ponded_area_m2``) instead.

Everything depends only on the terrain and the node positions, so :class:`PondingModel` is built once per city
and :meth:`PondingModel.levels` is a handful of numpy operations: it serves the surrogate's risk map in
milliseconds.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from twin.errors import ConfigError
from twin.model import LowPoint, PipeNetwork, Terrain

log = logging.getLogger(__name__)

DEFAULT_POND_AREA_M2 = 500.0
"""Area a node's flooded water spreads over where there is no terrain, m² (a street junction's width)."""
MIN_LAKE_DEPTH_M = 0.02
"""Depressions shallower than this are not lakes (DEM noise), m."""
LOW_POINT_RADIUS_M = 20.0
"""A road low point outside the terrain's depressions holds water over this radius, m (kerb to kerb and beyond)."""
_OFF_GRID = -1

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Lake:
    """A depression of the terrain that holds water.

    Attributes:
        lake_id: index in :attr:`PondingModel.lakes`.
        cells: flat indices of its cells into the DEM, lowest first.
        ground_m: ground elevation of those cells, ascending, m.
        stored_m3: volume held when the level reaches ``ground_m[k]``, m³ (``stored_m3[0] == 0``).
        spill_m: the level at which it overflows, m; ``capacity_m3`` the volume it holds then, m³.
        downstream: the lake its overflow runs into, or -1 (off the terrain: lost).
    """

    lake_id: int
    cells: IntArray
    ground_m: FloatArray
    stored_m3: FloatArray
    spill_m: float
    capacity_m3: float
    downstream: int


@dataclass(frozen=True, slots=True)
class Ponding:
    """Where the flooded water stands.

    Attributes:
        level_m: water level of each lake, m (NaN for a dry lake); shape (lakes,).
        volume_m3: water held by each lake, m³; shape (lakes,).
        lost_m3: water that ran off the terrain (to the river or beyond the model), m³.
        total_m3: water flooded at the nodes, m³.
    """

    level_m: FloatArray
    volume_m3: FloatArray
    lost_m3: float
    total_m3: float


class PondingModel:
    """Fill-and-spill ponding on a city's terrain, built once (see the module docstring).

    Args:
        network: the drainage network; its nodes (positions) are where water comes out.
        low_points: the city's road low points and underpasses; one outside every depression of the DEM holds
            water up to its ``depth_capacity_m`` over :data:`LOW_POINT_RADIUS_M` (a 10 m DEM misses kerbs).
        terrain: the DEM; None: every node ponds on its own disc of ``attrs["ponded_area_m2"]`` or
            :data:`DEFAULT_POND_AREA_M2`.

    Example:
        >>> model = PondingModel(city.networks[Network.DRAINAGE], city.terrain)           # doctest: +SKIP
        >>> ponds = model.fill({"MHX0203": 330.0})                                        # doctest: +SKIP
        >>> float(model.depth_at_cells(ponds, model.cells_near(598_030.0, 3_000_560.0, 5.0)).max())  # doctest: +SKIP
        0.41
    """

    def __init__(self, network: PipeNetwork, terrain: Terrain | None, low_points: Iterable[LowPoint] = ()) -> None:
        started = time.perf_counter()
        self.terrain = terrain
        self.node_ids: tuple[str, ...] = tuple(sorted(network.nodes))
        self._node_index = {n: i for i, n in enumerate(self.node_ids)}
        if terrain is None:
            self._build_discs(network)
        else:
            self._build_lakes(network, terrain, list(low_points))
        # Each lake before the one it spills into: a lake downstream never has a higher spill level.
        self._order = sorted(range(len(self.lakes)), key=lambda k: -self.lakes[k].spill_m)
        log.info(
            "ponding model: %d lakes, %d nodes routed, built in %.2f s",
            len(self.lakes),
            len(self.node_ids),
            time.perf_counter() - started,
        )

    # ---------------------------------------------------------------------------------------------- building

    def _build_discs(self, network: PipeNetwork) -> None:
        lakes: list[Lake] = []
        areas: list[float] = []
        for i, node_id in enumerate(self.node_ids):
            node = network.nodes[node_id]
            areas.append(float(node.attrs.get("ponded_area_m2") or DEFAULT_POND_AREA_M2))
            ground = node.ground_m if node.ground_m is not None else node.z_m + node.depth_m
            # A disc never spills: its level rises by volume / area.
            lakes.append(Lake(i, np.array([i]), np.array([ground]), np.array([0.0]), np.inf, np.inf, -1))
        self.lakes = lakes
        self._cell_area_m2 = np.array(areas)
        self._node_lake = np.arange(len(self.node_ids), dtype=np.int64)
        self._cell_lake = np.arange(len(self.node_ids), dtype=np.int64)
        self._ground_flat = np.array([lk.ground_m[0] for lk in lakes])

    def _build_lakes(self, network: PipeNetwork, terrain: Terrain, low_points: Sequence[LowPoint]) -> None:
        z = np.asarray(terrain.elevation_m, dtype=float)
        if z.ndim != 2 or min(z.shape) < 3 or not np.all(np.isfinite(z)):
            raise ConfigError("the terrain must be a finite 2-D grid of at least 3 × 3 cells")
        rows, cols = z.shape
        spill, parent = _priority_flood(z)
        mask = (spill - z.ravel()) > 1e-6
        labels, count = ndimage.label(mask.reshape(rows, cols), structure=np.ones((3, 3), dtype=int))
        flat_labels = labels.ravel() - 1  # -1 outside lakes
        lakes: list[Lake] = []
        cell_area = terrain.cell_m**2
        for label in range(count):
            cells = np.flatnonzero(flat_labels == label)
            level = float(spill[cells].max())
            if level - float(z.ravel()[cells].min()) < MIN_LAKE_DEPTH_M:
                continue
            ground = z.ravel()[cells]
            order = np.argsort(ground, kind="stable")
            cells, ground = cells[order], ground[order]
            # Volume when the level reaches ground[k]: Σ_{i<k} (ground[k] − ground[i]) · cell area.
            stored = (np.arange(len(ground)) * ground - np.concatenate(([0.0], np.cumsum(ground)[:-1]))) * cell_area
            capacity = float(np.sum(level - ground) * cell_area)
            lakes.append(Lake(len(lakes), cells, ground, stored, level, capacity, -1))
        cell_lake = np.full(rows * cols, -1, dtype=np.int64)
        for lake in lakes:
            cell_lake[lake.cells] = lake.lake_id
        floor = z.ravel().copy()
        for point in sorted(low_points, key=lambda p: p.point_id):
            # A road low point outside every lake holds water over its neighbourhood up to its depth capacity.
            cells = self.cells_near(point.x_m, point.y_m, LOW_POINT_RADIUS_M)
            cells = cells[cell_lake[cells] < 0]
            level = point.ground_m + point.depth_capacity_m
            # The road's own level is the pond's floor: a 10 m DEM cell next to it may lie lower.
            ground = np.maximum(z.ravel()[cells], point.ground_m)
            cells, ground = cells[ground < level], ground[ground < level]
            if len(cells) == 0:
                continue
            order = np.argsort(ground, kind="stable")
            cells, ground = cells[order], ground[order]
            stored = (np.arange(len(ground)) * ground - np.concatenate(([0.0], np.cumsum(ground)[:-1]))) * cell_area
            lakes.append(Lake(len(lakes), cells, ground, stored, level, float(np.sum(level - ground) * cell_area), -1))
            cell_lake[cells] = len(lakes) - 1
            floor[cells] = ground

        def downhill(cell: int, own: int) -> int:
            """The first lake other than *own* on the path from *cell* down to the edge, or -1."""
            steps = 0
            while cell != _OFF_GRID and steps <= rows * cols:
                if cell_lake[cell] >= 0 and cell_lake[cell] != own:
                    return int(cell_lake[cell])
                cell = int(parent[cell])
                steps += 1
            return -1

        self.lakes = [
            Lake(
                lk.lake_id,
                lk.cells,
                lk.ground_m,
                lk.stored_m3,
                lk.spill_m,
                lk.capacity_m3,
                downhill(int(lk.cells[0]), lk.lake_id),
            )
            for lk in lakes
        ]
        node_lake = np.full(len(self.node_ids), -1, dtype=np.int64)
        for i, node_id in enumerate(self.node_ids):
            node = network.nodes[node_id]
            node_lake[i] = downhill(self.cell_of(node.x_m, node.y_m), -2)
        self._node_lake = node_lake
        self._cell_lake = cell_lake
        self._ground_flat = floor
        self._cell_area_m2 = np.full(len(self.lakes), cell_area)

    # ------------------------------------------------------------------------------------------------ queries

    def cell_of(self, x_m: float, y_m: float) -> int:
        """Return the flat index of the DEM cell nearest (x, y); points outside take the nearest edge cell."""
        t = self._require_terrain()
        rows, cols = (int(v) for v in t.elevation_m.shape)
        c = int(np.clip(round((x_m - t.x0_m) / t.cell_m), 0, cols - 1))
        r = int(np.clip(round((y_m - t.y0_m) / t.cell_m), 0, rows - 1))
        return r * cols + c

    def cells_near(self, x_m: float, y_m: float, radius_m: float) -> IntArray:
        """Return the flat indices of the DEM cells whose centre is within *radius_m* of (x, y), at least one."""
        t = self._require_terrain()
        rows, cols = t.elevation_m.shape
        reach = int(np.ceil(radius_m / t.cell_m))
        c0 = round((x_m - t.x0_m) / t.cell_m)
        r0 = round((y_m - t.y0_m) / t.cell_m)
        out = [self.cell_of(x_m, y_m)]
        for r in range(max(0, r0 - reach), min(rows, r0 + reach + 1)):
            for c in range(max(0, c0 - reach), min(cols, c0 + reach + 1)):
                cx, cy = t.x0_m + c * t.cell_m, t.y0_m + r * t.cell_m
                if (cx - x_m) ** 2 + (cy - y_m) ** 2 <= radius_m**2:
                    out.append(r * cols + c)
        return np.unique(np.array(out, dtype=np.int64))

    def node_cells(self, node_id: str) -> IntArray:
        """Return the cells that stand for a node where there is no terrain (its disc), as a one-element array.

        Raises:
            KeyError: no such node.
        """
        return np.array([self._node_index[node_id]], dtype=np.int64)

    @property
    def has_terrain(self) -> bool:
        """Whether ponds lie on a DEM (True) or on one disc per node (False)."""
        return self.terrain is not None

    def node_lake(self, node_id: str) -> int:
        """Return the lake a node's flooded water first runs into, or -1 if it runs off the terrain."""
        return int(self._node_lake[self._node_index[node_id]])

    def lake_of_cells(self, cells: IntArray) -> IntArray:
        """Return the lake of each cell (-1 outside lakes)."""
        return self._cell_lake[cells]

    # ------------------------------------------------------------------------------------------------ filling

    def volumes_by_lake(self, flood_m3: Mapping[str, float] | Sequence[float] | FloatArray) -> tuple[FloatArray, float]:
        """Sum node flood volumes by the lake they run into; return (volume per lake, m³; volume lost, m³).

        Args:
            flood_m3: by node id, or an array in :attr:`node_ids` order, m³ (negative values count as 0).
        """
        if isinstance(flood_m3, Mapping):
            volumes = np.zeros(len(self.node_ids))
            for node_id, v in flood_m3.items():
                i = self._node_index.get(node_id)
                if i is not None:
                    volumes[i] = v
        else:
            volumes = np.asarray(flood_m3, dtype=float)
            if volumes.shape != (len(self.node_ids),):
                raise ConfigError(f"expected {len(self.node_ids)} node volumes, got shape {volumes.shape}")
        volumes = np.clip(np.nan_to_num(volumes), 0.0, None)
        into = self._node_lake
        per_lake = np.bincount(into[into >= 0], weights=volumes[into >= 0], minlength=len(self.lakes))
        return per_lake.astype(float), float(volumes[into < 0].sum())

    def fill(self, flood_m3: Mapping[str, float] | Sequence[float] | FloatArray) -> Ponding:
        """Put the nodes' flooded water on the ground: fill each lake, pass its overflow downstream.

        Args:
            flood_m3: flooded volume by node id, or an array in :attr:`node_ids` order, m³.
        """
        incoming, lost = self.volumes_by_lake(flood_m3)
        total = float(incoming.sum() + lost)
        held = np.zeros(len(self.lakes))
        level = np.full(len(self.lakes), np.nan)
        for k in self._order:
            lake = self.lakes[k]
            v = incoming[k]
            if v <= 0.0:
                continue
            if v >= lake.capacity_m3:
                held[k] = lake.capacity_m3
                level[k] = lake.spill_m
                if lake.downstream >= 0:
                    incoming[lake.downstream] += v - lake.capacity_m3
                else:
                    lost += v - lake.capacity_m3
                continue
            held[k] = v
            level[k] = _level_for(lake, v, float(self._cell_area_m2[k]))
        return Ponding(level_m=level, volume_m3=held, lost_m3=float(lost), total_m3=total)

    def depth_at_cells(self, ponding: Ponding, cells: IntArray) -> FloatArray:
        """Return the water depth over each cell, m (0 where dry)."""
        lakes = self._cell_lake[cells]
        level = np.where(lakes >= 0, ponding.level_m[np.clip(lakes, 0, None)], np.nan)
        depth = level - self._ground_flat[cells]
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0)

    def depth_grid(self, ponding: Ponding) -> FloatArray:
        """Return the water depth over the whole DEM, m, shaped like ``terrain.elevation_m``.

        Raises:
            ConfigError: the model has no terrain.
        """
        t = self._require_terrain()
        return self.depth_at_cells(ponding, np.arange(t.elevation_m.size)).reshape(t.elevation_m.shape)

    def _require_terrain(self) -> Terrain:
        if self.terrain is None:
            raise ConfigError("this ponding model has no terrain (each node ponds on its own disc)")
        return self.terrain


def _level_for(lake: Lake, volume_m3: float, cell_area_m2: float) -> float:
    """The water level at which *lake* holds *volume_m3* (below its capacity), m."""
    k = int(np.searchsorted(lake.stored_m3, volume_m3, side="right")) - 1
    k = max(k, 0)
    wet_area = (k + 1) * cell_area_m2
    return float(lake.ground_m[k] + (volume_m3 - lake.stored_m3[k]) / wet_area)


def _priority_flood(z: FloatArray) -> tuple[FloatArray, IntArray]:
    """Priority flood from the DEM's edge: return (spill level of each cell, m; the cell its water leaves to).

    Edge cells leave the grid (:data:`_OFF_GRID`). Every other cell's parent is the neighbour it was reached
    from, so following parents from any cell leads downhill (or level, across a lake) to the edge.
    """
    rows, cols = z.shape
    flat = z.ravel()
    spill = np.full(rows * cols, np.nan)
    parent = np.full(rows * cols, _OFF_GRID, dtype=np.int64)
    done = np.zeros(rows * cols, dtype=bool)
    heap: list[tuple[float, int]] = []
    for r in range(rows):
        for c in range(cols):
            if r in (0, rows - 1) or c in (0, cols - 1):
                i = r * cols + c
                heap.append((float(flat[i]), i))
                done[i] = True
                spill[i] = flat[i]
    heapq.heapify(heap)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    while heap:
        level, i = heapq.heappop(heap)
        r, c = divmod(i, cols)
        for dr, dc in offsets:
            rr, cc = r + dr, c + dc
            if 0 <= rr < rows and 0 <= cc < cols:
                j = rr * cols + cc
                if not done[j]:
                    done[j] = True
                    parent[j] = i
                    spill[j] = max(level, float(flat[j]))
                    heapq.heappush(heap, (float(spill[j]), j))
    return spill, parent
