"""Waterlogging risk: ponding depth × exposure per building, road segment and underpass → grade I–IV.

Depth at an asset is the deepest water over the DEM cells it covers (:mod:`models.waterlogging.ponding`):
a building's footprint grown by :data:`ENTRANCE_BUFFER_M` (its entrances and the kerb in front), a road segment's
centreline within :data:`ROAD_HALF_WIDTH_M`, a low point or underpass within :data:`LOW_POINT_RADIUS_M`; without
terrain, each drainage node is an asset on its own disc.

Exposure multiplies the depth: 1 for a local road or a building; :data:`MAIN_ROAD_EXPOSURE` (1.5) for a main road
(``City.street_kinds``: through traffic, buses, the way emergency vehicles come); +1 for a basement or underground
garage (water runs down the ramp), +1 for a school, hospital or elderly care home (people who cannot leave on their
own); 2.5 for an underpass (cars are trapped where the road dips under). The score ``depth_m × exposure`` is graded
(:data:`GRADE_SCORES`): I ≥ 0.9, II ≥ 0.5, III ≥ 0.3, IV ≥ 0.15. The lowest grade starts at 0.15 m of water on a
road, the depth at which GB 51222-2017 (城镇内涝防治技术规范) counts a road as waterlogged.

Each asset also gets the expected time to flooding (the earliest first flooding among the nodes whose water
reaches its pond, through spills as well) and the duration of that flooding (first to last flooding at those
nodes; the pond may stand longer). Alerts are one per pond (:func:`alert_changes`), listing the assets in it;
the risk map goes out as GeoJSON in WGS 84 (:func:`risk_geojson`).

Example:
    >>> assets = RiskAssets.for_city(city, ponding_model)                                   # doctest: +SKIP
    >>> risk = assess(assets, ponding_model.fill(cast.volumes()), eta_s=..., duration_s=...) # doctest: +SKIP
    >>> [(a.ref, a.grade) for a in risk.graded()][:2]                                       # doctest: +SKIP
    [('low_point:LP003', 1), ('building:B00231', 2)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from models.waterlogging.ponding import Ponding, PondingModel
from twin.alerts import AlertChange
from twin.crs import to_lonlat
from twin.errors import ConfigError
from twin.model import BuildingUse, City
from twin.sensors import Network

ENTRANCE_BUFFER_M = 6.0
ROAD_HALF_WIDTH_M = 8.0
LOW_POINT_RADIUS_M = 15.0
UNDERPASS_EXPOSURE = 2.5
MAIN_ROAD_EXPOSURE = 1.5
"""A main road's exposure: more vehicles, buses and the emergency services' routes than a local street."""
VULNERABLE_USES = frozenset({BuildingUse.SCHOOL, BuildingUse.HOSPITAL, BuildingUse.ELDERLY_CARE})
GRADE_SCORES = ((1, 0.9), (2, 0.5), (3, 0.3), (4, 0.15))
"""(grade, lowest depth × exposure in m) from the most severe."""
_GRADE_ZH = {1: "Ⅰ级（红色）", 2: "Ⅱ级（橙色）", 3: "Ⅲ级（黄色）", 4: "Ⅳ级（蓝色）"}
_KIND_ZH = {"building": "建筑", "road": "道路", "underpass": "下穿通道", "low_point": "低洼路段", "node": "检查井"}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def grade_of(score: float) -> int | None:
    """Return the grade (1 = I … 4 = IV) of a depth × exposure score in m, or None below grade IV."""
    for grade, lowest in GRADE_SCORES:
        if score >= lowest:
            return grade
    return None


@dataclass(frozen=True, slots=True)
class RiskAsset:
    """Something that can be flooded: where it is, what it covers, how exposed it is.

    Attributes:
        ref: city-wide id (``building:B00017``, ``road:X0203-X0303``, ``low_point:LP003``, ``drainage:J1``).
        kind: ``building``, ``road``, ``underpass``, ``low_point`` or ``node``.
        name: for people.
        exposure: the depth multiplier (≥ 1).
        reasons: why the exposure is what it is (``basement``, ``school``…).
        geometry: plan geometry in the city CRS, metres.
    """

    ref: str
    kind: str
    name: str
    exposure: float
    reasons: tuple[str, ...]
    geometry: Any


class RiskAssets:
    """The assets of a city with the ponding cells each covers, laid out for a vectorised depth lookup."""

    def __init__(self, assets: Sequence[RiskAsset], cells: Sequence[IntArray], model: PondingModel) -> None:
        if len(assets) != len(cells):
            raise ValueError("one cell list per asset")
        self.assets = tuple(assets)
        self.model = model
        self.exposure = np.array([a.exposure for a in assets], dtype=float)
        lengths = np.array([max(len(c), 1) for c in cells])
        self._flat = np.concatenate([c if len(c) else np.array([0]) for c in cells]).astype(np.int64)
        self._starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self._empty = np.array([len(c) == 0 for c in cells])
        self._lakes_of = [np.unique(model.lake_of_cells(c)) for c in cells]

    @classmethod
    def for_city(cls, city: City, model: PondingModel) -> RiskAssets:
        """Return the buildings, street segments, low points and underpasses of *city* (or its nodes without
        terrain) with the cells they cover."""
        assets: list[RiskAsset] = []
        cells: list[IntArray] = []
        if not model.has_terrain:
            for node_id in model.node_ids:
                network = city.networks[Network.DRAINAGE]
                node = network.nodes[node_id]
                assets.append(
                    RiskAsset(f"drainage:{node_id}", "node", node_id, 1.0, (), shapely.Point(node.x_m, node.y_m))
                )
                cells.append(model.node_cells(node_id))
            return cls(assets, cells, model)
        for bid in sorted(city.buildings):
            b = city.buildings[bid]
            reasons = []
            if b.basement:
                reasons.append("basement")
            if b.use in VULNERABLE_USES:
                reasons.append(b.use.value)
            polygon = shapely.Polygon(b.footprint)
            assets.append(
                RiskAsset(f"building:{bid}", "building", b.name or bid, 1.0 + len(reasons), tuple(reasons), polygon)
            )
            cells.append(_cells_in(model, polygon.buffer(ENTRANCE_BUFFER_M)))
        for k, street in enumerate(city.streets):
            line = shapely.LineString(street)
            main = k < len(city.street_kinds) and city.street_kinds[k] == "main"
            exposure, why = (MAIN_ROAD_EXPOSURE, ("traffic", "main road")) if main else (1.0, ("traffic",))
            assets.append(RiskAsset(f"road:{k:04d}", "road", f"road segment {k}", exposure, why, line))
            cells.append(_cells_in(model, line.buffer(ROAD_HALF_WIDTH_M)))
        for pid in sorted(city.low_points):
            p = city.low_points[pid]
            underpass = p.kind == "underpass"
            kind = "underpass" if underpass else "low_point"
            assets.append(
                RiskAsset(
                    f"low_point:{pid}",
                    kind,
                    p.name,
                    UNDERPASS_EXPOSURE if underpass else 1.0,
                    ("vehicles trapped",) if underpass else ("traffic",),
                    shapely.Point(p.x_m, p.y_m),
                )
            )
            cells.append(model.cells_near(p.x_m, p.y_m, LOW_POINT_RADIUS_M))
        return cls(assets, cells, model)

    def depths(self, ponding: Ponding) -> FloatArray:
        """Return the deepest water over each asset, m, in :attr:`assets` order."""
        depth = self.model.depth_at_cells(ponding, self._flat)
        out = np.maximum.reduceat(depth, self._starts)
        return np.where(self._empty, 0.0, out)

    def lakes_of(self, index: int) -> IntArray:
        """Return the lakes whose water reaches asset *index*."""
        return self._lakes_of[index]


def _cells_in(model: PondingModel, polygon: Any) -> IntArray:
    """The DEM cells whose centre lies in *polygon* (at least the cell under its centroid)."""
    terrain = model.terrain
    if terrain is None:
        raise ConfigError("cells of a polygon need terrain")
    rows, cols = terrain.elevation_m.shape
    xmin, ymin, xmax, ymax = polygon.bounds
    c0, c1 = (int(np.clip(np.floor((v - terrain.x0_m) / terrain.cell_m), 0, cols - 1)) for v in (xmin, xmax + 1e-9))
    r0, r1 = (int(np.clip(np.floor((v - terrain.y0_m) / terrain.cell_m), 0, rows - 1)) for v in (ymin, ymax + 1e-9))
    cc, rr = np.meshgrid(np.arange(c0, c1 + 2), np.arange(r0, r1 + 2))
    cc, rr = np.clip(cc.ravel(), 0, cols - 1), np.clip(rr.ravel(), 0, rows - 1)
    inside = shapely.contains_xy(polygon, terrain.x0_m + cc * terrain.cell_m, terrain.y0_m + rr * terrain.cell_m)
    found = np.unique(rr[inside] * cols + cc[inside])
    if len(found) == 0:
        centre = polygon.centroid
        found = np.array([model.cell_of(centre.x, centre.y)])
    return found.astype(np.int64)


@dataclass(frozen=True, slots=True)
class RiskMap:
    """Risk of every asset at one time.

    Attributes:
        issued: when the forecast it comes from was made (aware UTC).
        source: ``nowcast`` (SWMM) or ``surrogate``.
        depth_m, score, grade (0 = not graded, 1 = I … 4 = IV), eta_s (NaN: no flooding expected),
        duration_s: per asset, in :attr:`RiskAssets.assets` order.
        ponding: the ponds.
    """

    assets: RiskAssets
    issued: datetime
    source: str
    depth_m: FloatArray
    score: FloatArray
    grade: npt.NDArray[np.int64]
    eta_s: FloatArray
    duration_s: FloatArray
    ponding: Ponding

    def graded(self) -> list[dict[str, Any]]:
        """Return the graded assets, most severe first, as JSON-ready rows."""
        order = np.lexsort((-self.score, np.where(self.grade > 0, self.grade, 9)))
        rows = []
        for i in order:
            if self.grade[i] == 0:
                break
            a = self.assets.assets[i]
            rows.append(
                {
                    "ref": a.ref,
                    "kind": a.kind,
                    "name": a.name,
                    "grade": int(self.grade[i]),
                    "depth_m": round(float(self.depth_m[i]), 3),
                    "exposure": a.exposure,
                    "reasons": list(a.reasons),
                    "eta_s": None if math.isnan(self.eta_s[i]) else int(self.eta_s[i]),
                    "duration_s": int(self.duration_s[i]),
                }
            )
        return rows


def assess(
    assets: RiskAssets,
    ponding: Ponding,
    *,
    issued: datetime,
    source: str,
    node_eta_s: FloatArray | None = None,
    node_duration_s: FloatArray | None = None,
) -> RiskMap:
    """Grade every asset from the ponds, with its expected time to flooding and duration.

    Args:
        assets: the city's assets.
        ponding: where the water stands.
        issued: the forecast's time (aware).
        source: ``nowcast`` or ``surrogate``.
        node_eta_s: seconds from *issued* to each node's first flooding (NaN: none), in
            ``assets.model.node_ids`` order; None leaves times unknown (NaN).
        node_duration_s: seconds of flooding per node; None leaves durations 0.
    """
    depth = assets.depths(ponding)
    score = depth * assets.exposure
    grade = np.zeros(len(depth), dtype=np.int64)
    for g, lowest in reversed(GRADE_SCORES):
        grade[score >= lowest] = g
    eta = np.full(len(depth), np.nan)
    duration = np.zeros(len(depth))
    if node_eta_s is not None:
        lake_eta, lake_end = _lake_times(assets.model, node_eta_s, node_duration_s)
        for i in np.flatnonzero(grade > 0):
            lakes = assets.lakes_of(int(i))
            lakes = lakes[lakes >= 0]
            if len(lakes):
                first = np.nanmin(lake_eta[lakes]) if np.isfinite(lake_eta[lakes]).any() else np.nan
                last = np.nanmax(lake_end[lakes]) if np.isfinite(lake_end[lakes]).any() else np.nan
                eta[i] = first
                duration[i] = max(0.0, last - first) if math.isfinite(first) and math.isfinite(last) else 0.0
    return RiskMap(assets, issued, source, depth, score, grade, eta, duration, ponding)


def _lake_times(
    model: PondingModel, node_eta_s: FloatArray, node_duration_s: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    """Earliest first flooding and latest end of flooding among the nodes reaching each lake (through spills)."""
    n = len(model.lakes)
    eta = np.full(n, np.nan)
    end = np.full(n, np.nan)
    durations = node_duration_s if node_duration_s is not None else np.zeros(len(node_eta_s))
    for i, node_id in enumerate(model.node_ids):
        if not math.isfinite(node_eta_s[i]):
            continue
        lake = model.node_lake(node_id)
        seen = 0
        while lake >= 0 and seen < n:  # the water may spill on: every lake downstream can receive it
            eta[lake] = np.fmin(eta[lake], node_eta_s[i])
            end[lake] = np.fmax(end[lake], node_eta_s[i] + durations[i])
            lake = model.lakes[lake].downstream
            seen += 1
    return eta, end


def alert_changes(
    risk: RiskMap, previous: Mapping[str, int], *, district: str = ""
) -> tuple[list[AlertChange], dict[str, int]]:
    """Turn a risk map into alert changes, one cause per pond, against the grades active before.

    A pond's cause key is ``waterlogging:{first low point in it}``, or ``waterlogging:lake{n}`` / the node id
    without terrain; its grade is its worst asset's. ``detail`` holds ``eta_s``, ``depth_m``, ``duration_s``,
    ``source`` and ``affected`` (asset refs, worst first, at most 50).

    Args:
        risk: the new risk map.
        previous: grade by cause key of the alerts active before (from the last call's second return value).
        district: the alerts' district.

    Returns:
        (changes: ``raised`` for a new cause, ``updated`` for a changed grade, ``cleared`` for a cause no longer
        graded; the grades now active by cause key).
    """
    by_cause: dict[str, list[int]] = {}
    model = risk.assets.model
    for i in np.flatnonzero(risk.grade > 0):
        lakes = risk.assets.lakes_of(int(i))
        lakes = lakes[lakes >= 0]
        if len(lakes) == 0:
            continue
        wettest = int(lakes[np.argmax(np.nan_to_num(risk.ponding.volume_m3[lakes]))])
        by_cause.setdefault(_cause_key(risk, model, wettest), []).append(int(i))
    changes: list[AlertChange] = []
    current: dict[str, int] = {}
    for cause, members in sorted(by_cause.items()):
        members.sort(key=lambda i: (int(risk.grade[i]), -float(risk.score[i])))
        worst = members[0]
        grade = int(risk.grade[worst])
        current[cause] = grade
        if previous.get(cause) == grade:
            continue
        asset = risk.assets.assets[worst]
        depth = float(risk.depth_m[worst])
        eta = float(np.nanmin(risk.eta_s[members])) if np.isfinite(risk.eta_s[members]).any() else math.nan
        when_zh = f"预计{round(eta / 60)}分钟后开始积水" if math.isfinite(eta) and eta > 0 else "正在积水"
        when_en = f"expected in {round(eta / 60)} min" if math.isfinite(eta) and eta > 0 else "flooding now"
        detail = {
            "eta_s": None if not math.isfinite(eta) else int(eta),
            "depth_m": round(depth, 3),
            "duration_s": int(risk.duration_s[worst]),
            "source": risk.source,
            "affected": [risk.assets.assets[i].ref for i in members[:50]],
            "affected_count": len(members),
        }
        changes.append(
            AlertChange(
                event="raised" if cause not in previous else "updated",
                cause_key=cause,
                kind="waterlogging",
                sensor_id=None,
                network=Network.DRAINAGE.value,
                district=district,
                grade=grade,
                ts=risk.issued,
                value=round(depth, 3),
                threshold=dict(GRADE_SCORES)[grade],
                message=(
                    f"内涝{_GRADE_ZH[grade]}预警：{_KIND_ZH.get(asset.kind, asset.kind)}{asset.name}积水约"
                    f"{depth:.2f}米，{when_zh}，影响{len(members)}处"
                ),
                message_en=(
                    f"Waterlogging grade {grade}: {asset.kind} {asset.name} about {depth:.2f} m deep, {when_en}, "
                    f"{len(members)} assets affected"
                ),
                detail=detail,
            )
        )
    for cause in sorted(set(previous) - set(current)):
        changes.append(
            AlertChange(
                event="cleared",
                cause_key=cause,
                kind="waterlogging",
                sensor_id=None,
                network=Network.DRAINAGE.value,
                district=district,
                grade=previous[cause],
                ts=risk.issued,
                value=0.0,
                threshold=None,
                message="内涝预警解除：预报不再积水",
                message_en="Waterlogging warning cleared: no ponding forecast",
                detail={"source": risk.source},
            )
        )
    return changes, current


def _cause_key(risk: RiskMap, model: PondingModel, lake: int) -> str:
    if not model.has_terrain:
        return f"waterlogging:{model.node_ids[lake]}"
    for i, asset in enumerate(risk.assets.assets):
        if asset.kind in ("underpass", "low_point") and lake in risk.assets.lakes_of(i):
            return f"waterlogging:{asset.ref.removeprefix('low_point:')}"
    return f"waterlogging:lake{lake}"


def risk_geojson(risk: RiskMap, crs: str, *, horizon: timedelta | None = None) -> dict[str, Any]:
    """Return the graded assets and the ponds as a GeoJSON FeatureCollection in WGS 84 (lon, lat).

    Assets carry ``ref``, ``kind``, ``name``, ``grade``, ``depth_m``, ``eta_s``, ``duration_s``; ponds
    (``kind`` ``pond``) carry ``depth_m`` (deepest) and ``volume_m3``.
    """
    features: list[dict[str, Any]] = []
    for row in risk.graded():
        index = next(i for i, a in enumerate(risk.assets.assets) if a.ref == row["ref"])
        geometry = _lonlat(risk.assets.assets[index].geometry, crs)
        features.append({"type": "Feature", "geometry": geometry, "properties": row})
    model = risk.assets.model
    if model.has_terrain and model.terrain is not None:
        terrain = model.terrain
        grid = model.depth_grid(risk.ponding)
        for k, lake in enumerate(model.lakes):
            if not risk.ponding.volume_m3[k] > 0:
                continue
            wet = [int(c) for c in lake.cells if grid.ravel()[c] > 0.01]
            if not wet:
                continue
            cols = terrain.elevation_m.shape[1]
            half = terrain.cell_m / 2
            boxes = [
                shapely.box(
                    terrain.x0_m + (c % cols) * terrain.cell_m - half,
                    terrain.y0_m + (c // cols) * terrain.cell_m - half,
                    terrain.x0_m + (c % cols) * terrain.cell_m + half,
                    terrain.y0_m + (c // cols) * terrain.cell_m + half,
                )
                for c in wet
            ]
            features.append(
                {
                    "type": "Feature",
                    "geometry": _lonlat(shapely.union_all(boxes), crs),
                    "properties": {
                        "kind": "pond",
                        "lake": k,
                        "depth_m": round(float(grid.ravel()[wet].max()), 3),
                        "volume_m3": round(float(risk.ponding.volume_m3[k]), 1),
                    },
                }
            )
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "issued": risk.issued.isoformat(),
            "source": risk.source,
            "horizon_s": int(horizon.total_seconds()) if horizon else None,
        },
    }


def _lonlat(geometry: Any, crs: str) -> dict[str, Any]:
    """A shapely geometry in *crs* as a GeoJSON geometry in lon/lat."""
    moved = shapely.transform(geometry, lambda xy: np.array([to_lonlat(crs, float(x), float(y)) for x, y in xy]))
    mapping: dict[str, Any] = shapely.geometry.mapping(moved)
    return mapping
