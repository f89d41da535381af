"""The waterlogging risk map: the newest one issued, as GeoJSON, or in the 3D scene's local metres.

Maps are posted here (the GeoJSON that ``lifeline risk nowcast`` and ``whatif`` write, from
:func:`models.waterlogging.risk.risk_geojson`) or stored with :func:`twin.store.risk_maps.save_risk_map`::

    curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
         --data @risk-map.geojson http://127.0.0.1:8080/api/risk/map

``GET /api/risk/whatif?return_period=20&duration_min=120`` answers at once the map a design storm would make, from
the trained surrogate the viewer was started with (``lifeline serve --surrogate DIR``; not stored: a what-if).

``GET /api/risk/map?frame=scene`` answers the same features with coordinates in the scene's frame (metres east and
north of its origin, from the scene metadata), lines and points widened to areas, so the page can draw them
without a projection library.

Rain forecasts from the meteorological service (气象局) are pushed by an operator's or admin's program to
``POST /api/risk/forecast`` (stored by :func:`twin.store.forecasts.save_forecast`, once per source and issue time)
and read back at ``GET /api/risk/forecast/latest``: the forecast the scheduled nowcast would use now::

    curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
         --data '{"source": "气象局", "issued_at": "2026-07-01T08:00:00+08:00", "start": "2026-07-01T08:00:00+08:00",
                  "step_s": 300, "values_mm_h": [12, 30.5, 8]}' http://127.0.0.1:8080/api/risk/forecast
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
import shapely
import shapely.geometry
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pyproj import Transformer
from pyproj.exceptions import CRSError

from twin.errors import ForecastConflictError, ForecastError, PayloadError
from twin.scene import META_NAME
from twin.store.forecasts import DEFAULT_MAX_AGE, RainForecast, latest_forecast, save_forecast
from twin.store.risk_maps import get_risk_map, latest_risk_map_id, save_risk_map
from viewer.auth import Permission, Principal, Role
from viewer.deps import DbDep, Reader, audit, require
from viewer.schemas import RainForecastCreate, RainForecastCurrent, RainForecastStored

router = APIRouter(prefix="/api/risk", tags=["risk"])

Publisher = Annotated[Principal, Depends(require(Permission.ACT_ON_ALERTS))]

FORECAST_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})
"""Who may send rain forecasts: the operations centre's program runs with an operator's (or admin's) token."""


def _forecast_sender(request: Request, who: Annotated[Principal, Depends(require(Permission.READ))]) -> Principal:
    """The caller, if its role may send forecasts (checked before the body, so a refusal never depends on it)."""
    if who.role not in FORECAST_ROLES:
        audit(request, who, f"{request.method} {request.url.path}", "denied", permission="forecast.send")
        allowed = ", ".join(sorted(r.value for r in FORECAST_ROLES))
        raise HTTPException(403, f"role {who.role.value!r} may not send rain forecasts (only: {allowed})")
    return who


ForecastSender = Annotated[Principal, Depends(_forecast_sender)]

LINE_HALF_WIDTH_M = 6.0
"""A street segment at risk is drawn as a band this many metres each side of its centreline."""
POINT_RADIUS_M = 18.0
"""A low point or underpass at risk is drawn as a disc of this radius, metres."""
BUILDING_MARGIN_M = 4.0
"""A building at risk is drawn as its footprint widened by this many metres, so it shows beside the walls."""


Frame = Annotated[
    Literal["lonlat", "scene"], Query(description="lonlat: WGS 84; scene: metres from the 3D scene's origin")
]


def _framed(request: Request, geojson: dict[str, Any], props: dict[str, Any], frame: str) -> bytes:
    """The map's body in *frame*: as it is (lon/lat), or in the scene's metres with lines and points as areas."""
    if frame != "scene":
        return orjson.dumps({**geojson, "properties": props})
    crs, origin = _scene_frame(request)
    return orjson.dumps(
        {
            "type": "FeatureCollection",
            "features": _to_scene(orjson.dumps(geojson["features"]), crs, origin[0], origin[1]),
            "properties": {**props, "frame": "scene", "crs": crs, "origin_m": origin},
        }
    )


@router.get(
    "/map",
    summary="The newest waterlogging risk map (GeoJSON: graded assets and flooded areas)",
    responses={304: {"description": "not changed since the ETag given"}, 404: {"description": "no map yet"}},
)
def risk_map(
    request: Request,
    _who: Reader,
    db: DbDep,
    frame: Frame = "lonlat",
) -> Response:
    map_id = latest_risk_map_id(db)
    if map_id is None:
        raise HTTPException(404, "no risk map stored yet (POST one to /api/risk/map)")
    etag = f'"risk-{map_id}-{frame}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    stored = get_risk_map(db, map_id)
    if stored is None:  # removed in between
        raise HTTPException(404, "no risk map stored yet")
    geojson: dict[str, Any] = stored["geojson"]
    props = {
        **(geojson.get("properties") or {}),
        "id": stored["id"],
        "stored_at": stored["stored_at"].isoformat(),
    }
    return Response(_framed(request, geojson, props, frame), media_type="application/geo+json", headers=headers)


@router.get(
    "/whatif",
    summary="The risk map a design storm would make, from the surrogate at once (not stored)",
    responses={404: {"description": "no surrogate loaded"}, 422: {"description": "a storm parameter out of range"}},
)
def whatif(
    request: Request,
    _who: Reader,
    return_period: Annotated[float, Query(description="years, 0.25–1000 (trained on 1–100)")] = 20.0,
    duration_min: Annotated[int, Query(description="minutes, 10–1440 (trained on 60–180)")] = 120,
    peak_ratio: Annotated[float, Query(description="Chicago peak position, 0–1")] = 0.4,
    antecedent_mm: Annotated[float, Query(description="rain in the hours before, mm")] = 10.0,
    frame: Frame = "lonlat",
) -> Response:
    from datetime import UTC, datetime

    from models.waterlogging.surrogate import StormFeatures
    from twin.errors import ConfigError
    from viewer.whatif import WhatIf

    loaded: WhatIf | None = getattr(request.app.state, "whatif", None)
    if loaded is None:
        raise HTTPException(
            404, "no surrogate loaded: train one (lifeline risk train-surrogate) and serve with --surrogate DIR"
        )
    try:
        storm = StormFeatures(return_period, duration_min, peak_ratio, antecedent_mm)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    geojson = loaded.geojson(storm, issued=datetime.now(UTC).replace(microsecond=0))
    body = _framed(request, geojson, geojson["properties"], frame)
    return Response(body, media_type="application/geo+json", headers={"Cache-Control": "no-store"})


@router.post("/map", status_code=201, summary="Store a risk map (it becomes the newest if issued last)")
def post_risk_map(
    request: Request, who: Publisher, db: DbDep, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    try:
        map_id = save_risk_map(db, body)
    except PayloadError as exc:
        raise HTTPException(422, exc.detail) from exc
    audit(request, who, "risk_map_store", "ok", str(map_id), features=len(body["features"]))
    return {"id": map_id, "features": len(body["features"])}


def _public(forecast: RainForecast) -> dict[str, Any]:
    return {
        "id": forecast.id,
        "source": forecast.source,
        "issued_at": forecast.issued_at,
        "start": forecast.start,
        "values_mm_h": list(forecast.rain_mm_h),
        "received_at": forecast.received_at,
        "sent_by": forecast.sent_by,
        "sent_step_s": forecast.sent_step_s,
    }


@router.post(
    "/forecast",
    status_code=201,
    summary="Store a rain forecast (operator, admin); the same one sent again is stored once",
    responses={
        200: {"description": "the same forecast was already stored: nothing written", "model": RainForecastStored},
        409: {"description": "a different forecast is stored under the same source and issue time"},
        422: {"description": "bad input: the detail says what"},
    },
)
def post_forecast(
    request: Request, response: Response, who: ForecastSender, db: DbDep, body: RainForecastCreate
) -> RainForecastStored:
    clock = request.app.state.clock
    try:
        saved = save_forecast(
            db,
            source=body.source,
            issued_at=body.issued_at,
            start=body.start,
            step_s=body.step_s,
            rain_mm_h=body.values_mm_h,
            sent_by=who.name,
            received_at=clock(),
        )
    except ForecastConflictError as exc:
        audit(request, who, "rain_forecast_store", "refused", reason=exc.reason, message=exc.detail)
        raise HTTPException(409, exc.detail) from exc
    except ForecastError as exc:
        audit(request, who, "rain_forecast_store", "refused", reason=exc.reason, message=exc.detail)
        raise HTTPException(422, exc.detail) from exc
    forecast = saved.forecast
    audit(
        request,
        who,
        "rain_forecast_store",
        "ok" if saved.created else "duplicate",
        str(forecast.id),
        source=forecast.source,
        issued_at=forecast.issued_at.isoformat(),
        minutes=len(forecast.rain_mm_h),
    )
    if not saved.created:
        response.status_code = 200
    return RainForecastStored(**_public(forecast), created=saved.created)


@router.get(
    "/forecast/latest",
    summary="The rain forecast the scheduled nowcast would use now (the newest fresh one covering now)",
    responses={404: {"description": "no forecast issued within max_age_min covers now"}},
)
def get_latest_forecast(
    request: Request,
    _who: Reader,
    db: DbDep,
    max_age_min: Annotated[
        int, Query(ge=1, le=24 * 60, description="how long before now it may have been issued, minutes")
    ] = int(DEFAULT_MAX_AGE.total_seconds() // 60),
) -> RainForecastCurrent:
    current = latest_forecast(db, now=request.app.state.clock(), max_age=timedelta(minutes=max_age_min))
    if current is None:
        raise HTTPException(404, f"no rain forecast issued in the last {max_age_min} min covers now")
    return RainForecastCurrent(
        **_public(current.forecast),
        now=current.now,
        age_s=current.age.total_seconds(),
        values_from_now_mm_h=list(current.rain_mm_h),
    )


def _scene_frame(request: Request) -> tuple[str, list[float]]:
    scene_dir: Path | None = getattr(request.app.state, "scene_dir", None)
    path = Path(scene_dir) / META_NAME if scene_dir is not None else None
    if path is None or not path.is_file():
        raise HTTPException(404, "this server has no 3D scene, so no scene frame (ask for frame=lonlat)")
    meta = orjson.loads(path.read_bytes())
    return str(meta["crs"]), [float(v) for v in meta["origin_m"]]


@lru_cache(maxsize=4)
def _from_lonlat(crs: str) -> Transformer:
    """The transformer from lon/lat to *crs*, made once per CRS (making one costs ~60 ms, using it microseconds)."""
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


@lru_cache(maxsize=8)
def _to_scene(features_json: bytes, crs: str, ox: float, oy: float) -> list[dict[str, Any]]:
    """The features with lon/lat turned into metres from (*ox*, *oy*) in *crs*; lines and points made areas."""

    try:
        to_crs = _from_lonlat(crs)
    except CRSError as exc:
        raise HTTPException(500, f"the scene's CRS {crs!r} is unknown: {exc}") from exc

    def local(lonlat: Any) -> Any:
        x, y = to_crs.transform(lonlat[:, 0], lonlat[:, 1])
        return np.round(np.column_stack([np.asarray(x) - ox, np.asarray(y) - oy]), 2)

    features = []
    for feature in orjson.loads(features_json):
        shape = shapely.geometry.shape(feature["geometry"])
        moved = shapely.transform(shape, local)
        if moved.geom_type in ("LineString", "MultiLineString"):
            moved = moved.buffer(LINE_HALF_WIDTH_M, quad_segs=2)
        elif moved.geom_type in ("Point", "MultiPoint"):
            moved = moved.buffer(POINT_RADIUS_M, quad_segs=4)
        elif feature["properties"].get("kind") == "building":
            moved = moved.buffer(BUILDING_MARGIN_M, join_style="mitre")  # shows round the building's walls
        moved = moved.simplify(0.5)
        if moved.is_empty:
            continue
        features.append(
            {"type": "Feature", "geometry": shapely.geometry.mapping(moved), "properties": feature["properties"]}
        )
    return features
