"""Spatial queries over the city: what is near a point, inside a polygon, or within N metres of a pipe.

Backed by shapely's STRtree (a packed R-tree), built once per city; queries never scan every asset.
Asset references are city-wide ids: ``building:B00017``, ``drainage:J123``, ``water:P45`` (links),
``sensor:D-L-001``, ``space:V07``, ``low_point:LP003``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from twin.errors import UnknownAssetError
from twin.model import City, asset_ref


@dataclass(frozen=True, slots=True)
class Hit:
    """One asset found by a query, with its distance from the query geometry in metres (0 inside it)."""

    ref: str
    distance_m: float


class SpatialIndex:
    """An R-tree over every asset of a :class:`City`.

    Example:
        >>> index = SpatialIndex(city)                                           # doctest: +SKIP
        >>> [h.ref for h in index.near(598_400.0, 3_000_600.0, radius_m=50)]     # doctest: +SKIP
        ['building:B00102', 'drainage:J0412', 'sensor:DL-J0412']
    """

    def __init__(self, city: City) -> None:
        refs: list[str] = []
        geoms: list[BaseGeometry] = []
        for bid, b in city.buildings.items():
            refs.append(f"building:{bid}")
            geoms.append(shapely.Polygon(b.footprint))
        for kind, net in city.networks.items():
            for nid, node in net.nodes.items():
                refs.append(asset_ref(kind, nid))
                geoms.append(shapely.Point(node.x_m, node.y_m))
            for lid, link in net.links.items():
                refs.append(asset_ref(kind, lid))
                geoms.append(shapely.LineString(net.polyline(link)))
            for vid, valve in net.valves.items():
                refs.append(asset_ref(kind, vid))
                geoms.append(shapely.Point(valve.x_m, valve.y_m))
        for sid, s in city.sensors.items():
            refs.append(f"sensor:{sid}")
            geoms.append(shapely.Point(s.x_m, s.y_m))
        for sid, space in city.spaces.items():
            refs.append(f"space:{sid}")
            geoms.append(shapely.Point(space.x_m, space.y_m))
        for pid, p in city.low_points.items():
            refs.append(f"low_point:{pid}")
            geoms.append(shapely.Point(p.x_m, p.y_m))
        self._refs = np.array(refs, dtype=object)
        self._geoms = np.array(geoms, dtype=object)
        self._by_ref = {ref: i for i, ref in enumerate(refs)}
        self._tree = STRtree(self._geoms)

    def __len__(self) -> int:
        return len(self._refs)

    def geometry(self, ref: str) -> BaseGeometry:
        """Return the plan geometry of asset *ref*.

        Raises:
            UnknownAssetError: no asset has that reference (also a ``KeyError``).
        """
        try:
            return self._geoms[self._by_ref[ref]]
        except KeyError as exc:
            raise UnknownAssetError(ref) from exc

    def within_distance(self, geometry: BaseGeometry, distance_m: float, *, prefixes: Sequence[str] = ()) -> list[Hit]:
        """Return assets within *distance_m* of *geometry*, nearest first, optionally only refs with a prefix."""
        idx = self._tree.query(geometry, predicate="dwithin", distance=distance_m)
        return self._hits(idx, geometry, prefixes)

    def near(self, x_m: float, y_m: float, *, radius_m: float, prefixes: Sequence[str] = ()) -> list[Hit]:
        """Return assets within *radius_m* of the point (x, y), nearest first."""
        return self.within_distance(shapely.Point(x_m, y_m), radius_m, prefixes=prefixes)

    def inside(
        self, polygon: Sequence[tuple[float, float]] | BaseGeometry, *, prefixes: Sequence[str] = ()
    ) -> list[Hit]:
        """Return assets that intersect *polygon* (a ring of (x, y) metres or a shapely geometry)."""
        geom = polygon if isinstance(polygon, BaseGeometry) else shapely.Polygon(polygon)
        idx = self._tree.query(geom, predicate="intersects")
        return self._hits(idx, geom, prefixes)

    def buildings_near_asset(self, ref: str, distance_m: float) -> list[Hit]:
        """Return buildings within *distance_m* of a pipe, manhole or any other asset, nearest first."""
        return self.within_distance(self.geometry(ref), distance_m, prefixes=("building:",))

    def _hits(self, idx: Iterable[int], geometry: BaseGeometry, prefixes: Sequence[str]) -> list[Hit]:
        found = [int(i) for i in idx]
        if prefixes:
            found = [i for i in found if str(self._refs[i]).startswith(tuple(prefixes))]
        if not found:
            return []
        dist = shapely.distance(self._geoms[found], geometry)
        order = np.argsort(dist, kind="stable")
        return [Hit(str(self._refs[found[k]]), float(dist[k])) for k in order]


def sensors_observing(city: City, ref: str) -> list[str]:
    """Return the ids of the sensors bound to asset *ref* (``drainage:J123``), sorted."""
    return sorted(sid for sid, s in city.sensors.items() if s.asset_id == ref)
