"""Buildings from GeoJSON: polygons with a height, in any CRS, into the city's projected CRS.

Accepted properties (first found wins): height ``height_m`` / ``height`` (m) or ``floors`` / ``levels``
(× 3 m); ``use`` / ``building`` (mapped onto :class:`~twin.model.BuildingUse`); ``basement`` (bool);
``occupants``; ``name``; ``ground_m`` (else taken from the terrain, else 0); ``id``. A FeatureCollection's
``crs`` member (GeoJSON 2008) names its CRS; without it, RFC 7946 says WGS 84 lon/lat.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import shapely

from twin.crs import from_crs, is_geographic
from twin.errors import ModelImportError
from twin.model import Building, BuildingUse, Terrain

_USE_ALIASES = {
    "house": BuildingUse.RESIDENTIAL,
    "apartments": BuildingUse.RESIDENTIAL,
    "residential": BuildingUse.RESIDENTIAL,
    "retail": BuildingUse.COMMERCIAL,
    "commercial": BuildingUse.COMMERCIAL,
    "office": BuildingUse.OFFICE,
    "industrial": BuildingUse.INDUSTRIAL,
    "warehouse": BuildingUse.INDUSTRIAL,
    "school": BuildingUse.SCHOOL,
    "kindergarten": BuildingUse.SCHOOL,
    "university": BuildingUse.SCHOOL,
    "hospital": BuildingUse.HOSPITAL,
    "elderly_care": BuildingUse.ELDERLY_CARE,
    "nursing_home": BuildingUse.ELDERLY_CARE,
    "public": BuildingUse.PUBLIC,
    "civic": BuildingUse.PUBLIC,
    "yes": BuildingUse.RESIDENTIAL,
}
FLOOR_HEIGHT_M = 3.0


def read_buildings_geojson(path: Path, *, crs: str, terrain: Terrain | None = None) -> list[Building]:
    """Read buildings from a GeoJSON FeatureCollection of Polygons/MultiPolygons into *crs* (metres).

    A MultiPolygon becomes one building per part (ids ``{id}-{k}``).

    Raises:
        ModelImportError: the file cannot be read or parsed, or a feature lacks a polygon or a height; the message
            names the file, the feature (as ``line`` = its index in ``features``) and the field.
    """
    where = str(path)
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ModelImportError(where, f"cannot read: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ModelImportError(where, f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ModelImportError(where, "not a GeoJSON FeatureCollection", field="type")
    src = _source_crs(doc, where)
    convert = src.upper() not in (crs.upper(),)
    out: list[Building] = []
    for index, feature in enumerate(doc.get("features") or []):
        props = feature.get("properties") or {}
        geom = feature.get("geometry") or {}
        fid = str(feature.get("id") or props.get("id") or f"F{index:05d}")
        if geom.get("type") == "Polygon":
            parts = [geom.get("coordinates")]
        elif geom.get("type") == "MultiPolygon":
            parts = list(geom.get("coordinates") or [])
        else:
            raise ModelImportError(
                where, f"feature {fid}: geometry {geom.get('type')!r} is not a polygon", line=index, field="geometry"
            )
        height = _height(props, where, index)
        for k, rings in enumerate(parts):
            try:
                ring = [(float(p[0]), float(p[1])) for p in (rings or [])[0]]
            except (TypeError, ValueError, IndexError) as exc:
                raise ModelImportError(
                    where, f"feature {fid}: bad coordinates ({exc})", line=index, field="geometry.coordinates"
                ) from exc
            if convert:
                ring = [from_crs(src, crs, x, y) for x, y in ring]
            poly = shapely.Polygon(ring)
            if poly.is_empty or poly.area <= 0 or not math.isfinite(poly.area):
                raise ModelImportError(
                    where, f"feature {fid}: empty or degenerate polygon", line=index, field="geometry.coordinates"
                )
            poly = shapely.geometry.polygon.orient(poly, sign=1.0)
            coords = tuple((float(x), float(y)) for x, y in list(poly.exterior.coords)[:-1])
            centre = poly.centroid
            ground = props.get("ground_m")
            if ground is None:
                ground = terrain.elevation_at(centre.x, centre.y) if terrain is not None else 0.0
            use = _USE_ALIASES.get(
                str(props.get("use") or props.get("building") or "residential").lower(), BuildingUse.RESIDENTIAL
            )
            floors = int(props.get("floors") or props.get("levels") or max(1, round(height / FLOOR_HEIGHT_M)))
            out.append(
                Building(
                    building_id=fid if len(parts) == 1 else f"{fid}-{k}",
                    footprint=coords,
                    height_m=height,
                    floors=floors,
                    ground_m=float(ground),
                    use=use,
                    basement=bool(props.get("basement", False)),
                    occupants=int(props.get("occupants") or 0),
                    name=str(props.get("name") or ""),
                )
            )
    return out


def _source_crs(doc: dict[str, Any], where: str) -> str:
    crs_member = doc.get("crs")
    if crs_member is None:
        return "EPSG:4326"
    try:
        name = str(crs_member["properties"]["name"])
    except (KeyError, TypeError) as exc:
        raise ModelImportError(where, "the 'crs' member has no properties.name", field="crs") from exc
    if name.upper().startswith("URN:OGC:DEF:CRS:OGC:1.3:CRS84"):
        return "EPSG:4326"
    if name.upper().startswith("URN:OGC:DEF:CRS:EPSG::"):
        return "EPSG:" + name.rsplit(":", 1)[1]
    is_geographic(name)  # raises ConfigError for an unknown CRS name
    return name


def _height(props: dict[str, Any], where: str, index: int) -> float:
    for key in ("height_m", "height"):
        if props.get(key) is not None:
            try:
                value = float(props[key])
            except (TypeError, ValueError) as exc:
                raise ModelImportError(
                    where, f"{key} {props[key]!r} is not a number", line=index, field=f"properties.{key}"
                ) from exc
            if not math.isfinite(value) or value <= 0:
                raise ModelImportError(where, f"{key} must be positive", line=index, field=f"properties.{key}")
            return value
    for key in ("floors", "levels"):
        if props.get(key) is not None:
            try:
                return float(int(props[key])) * FLOOR_HEIGHT_M
            except (TypeError, ValueError) as exc:
                raise ModelImportError(
                    where, f"{key} {props[key]!r} is not a whole number", line=index, field=f"properties.{key}"
                ) from exc
    raise ModelImportError(
        where, "no height: give properties.height_m, height, floors or levels", line=index, field="properties.height_m"
    )
