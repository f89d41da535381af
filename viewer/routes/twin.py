"""The city twin over HTTP: its layers, an asset's details, and spatial queries."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from twin.crs import to_lonlat
from twin.errors import UnknownAssetError
from twin.model import City, NodeKind
from twin.sensors import Network
from twin.spatial import SpatialIndex, sensors_observing
from twin.store.assets import layer_versions, load_city
from twin.store.sensors import load_registry
from twin.topology import isolate, path_to_outfall
from viewer.deps import DbDep

router = APIRouter(prefix="/api/twin", tags=["twin"])


class TwinCache:
    """The city loaded from the store, rebuilt when a layer gets a new version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[tuple[str, int], ...] = ()
        self.city: City | None = None
        self.index: SpatialIndex | None = None

    def get(self, db: Any) -> tuple[City, SpatialIndex]:
        key = tuple(sorted((row["layer"], row["version"]) for row in layer_versions(db)))
        with self._lock:
            if self.city is None or self.index is None or key != self._key:
                city = load_city(db)
                city.sensors = dict(load_registry(db).items())
                self.city, self.index, self._key = city, SpatialIndex(city), key
            return self.city, self.index


def _cache(request: Request) -> TwinCache:
    cache: TwinCache | None = getattr(request.app.state, "twin_cache", None)
    if cache is None:
        cache = request.app.state.twin_cache = TwinCache()
    return cache


@router.get("", summary="The twin's layers with their current version and counts")
def twin_info(db: DbDep) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    for row in layer_versions(db):
        entry = layers.setdefault(
            row["layer"],
            {
                "version": row["version"],
                "name": row["name"],
                "crs": row["crs"],
                "counts": row["counts"],
                "imported_at": row["imported_at"],
                "versions": 0,
            },
        )
        entry["versions"] += 1
    return {"layers": layers}


@router.get("/assets/{ref}", summary="One asset: attributes, position (also lon/lat), sensors, topology")
def asset(db: DbDep, request: Request, ref: str) -> dict[str, Any]:
    """*ref* is ``building:B00017``, ``drainage:J123``, ``water:P45``, ``gas:…``, ``space:…`` or ``low_point:…``."""
    city, index = _cache(request).get(db)
    try:
        geom = index.geometry(ref)
    except UnknownAssetError as exc:
        raise HTTPException(404, f"unknown asset {ref!r}") from exc
    layer, _, ident = ref.partition(":")
    body: dict[str, Any] = {"ref": ref, "sensors": sensors_observing(city, ref)}
    centre = geom.centroid
    body["x_m"], body["y_m"] = centre.x, centre.y
    body["lon"], body["lat"] = to_lonlat(city.crs, centre.x, centre.y) if city.crs else (None, None)
    if layer == "building":
        body["building"] = asdict(city.buildings[ident])
    elif layer == "space":
        body["space"] = asdict(city.spaces[ident])
    elif layer == "low_point":
        body["low_point"] = asdict(city.low_points[ident])
    elif layer == "sensor":
        body["sensor"] = city.sensors[ident].to_record()
    else:
        net = city.networks[Network(layer)]
        if ident in net.nodes:
            node = net.nodes[ident]
            body["node"] = asdict(node)
            if net.kind is Network.DRAINAGE and node.kind is not NodeKind.OUTFALL:
                body["path_to_outfall"] = path_to_outfall(net, ident)
        elif ident in net.links:
            body["link"] = asdict(net.links[ident])
            if net.valves:
                iso = isolate(net, ident)
                body["isolation"] = {"valves": sorted(iso.valves), "links": len(iso.links), "nodes": len(iso.nodes)}
        else:
            body["valve"] = asdict(net.valves[ident])
    return body


@router.get("/near", summary="Assets within a radius of a point, nearest first")
def near(
    db: DbDep,
    request: Request,
    x: Annotated[float, Query(description="x in the twin's CRS, m")],
    y: Annotated[float, Query(description="y in the twin's CRS, m")],
    radius: Annotated[float, Query(gt=0, le=5000, description="m")] = 50.0,
    kind: Annotated[str | None, Query(description="only refs starting with this, e.g. building or water")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    _city, index = _cache(request).get(db)
    hits = index.near(x, y, radius_m=radius, prefixes=(f"{kind}:",) if kind else ())
    return [{"ref": h.ref, "distance_m": round(h.distance_m, 2)} for h in hits[:limit]]
