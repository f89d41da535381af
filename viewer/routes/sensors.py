"""Sensors and their time series."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, Response

from twin.store.readings import QueryError, choose_source, query_series
from twin.store.sensors import sensor_records
from viewer.deps import DbDep
from viewer.schemas import SensorPublic, SeriesPublic

router = APIRouter(prefix="/api/sensors", tags=["sensors"])

_STEP = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_STEP_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_step(text: str) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h``, ``1d`` or a number of seconds.

    Raises:
        HTTPException: 422 when *text* is not of that form or not positive.
    """
    match = _STEP.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise HTTPException(422, f"step {text!r} must be like 30s, 5m, 1h, 1d or a number of seconds")
    return timedelta(seconds=float(match.group(1)) * _STEP_UNIT_S[match.group(2)])


@router.get("", response_model=list[SensorPublic], summary="All sensors with their latest reading")
def list_sensors(db: DbDep) -> list[dict[str, object]]:
    return sensor_records(db)


@router.get("/{sensor_id}/readings", response_model=SeriesPublic, summary="One sensor's readings over a period")
def sensor_readings(
    db: DbDep,
    sensor_id: str,
    from_: Annotated[datetime | None, Query(alias="from", description="ISO 8601; default: 'to' minus 6 h")] = None,
    to: Annotated[datetime | None, Query(description="ISO 8601; default: now")] = None,
    step: Annotated[str | None, Query(description="bucket width: 30s, 5m, 1h, 1d; omit for raw readings")] = None,
) -> Response:
    row = db.execute("SELECT unit FROM sensors WHERE sensor_id = %s", (sensor_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"unknown sensor {sensor_id!r}")
    end = _aware(to) if to else datetime.now(UTC)
    start = _aware(from_) if from_ else end - timedelta(hours=6)
    width = parse_step(step) if step else None
    try:
        points = query_series(db, sensor_id=sensor_id, start=start, end=end, step=width)
    except QueryError as exc:
        raise HTTPException(422, str(exc)) from exc
    # Encoded here with orjson, in the shape of SeriesPublic: validating tens of thousands of points through the
    # response model took ~20 µs a point (0.85 s for 30 days at 1 minute), this ~1 µs.
    body = {
        "sensor_id": sensor_id,
        "unit": row["unit"],
        "source": choose_source(width),
        "step_s": width.total_seconds() if width else None,
        "points": [{"ts": p.ts, "value": p.value, "min": p.min, "max": p.max, "n": p.n} for p in points],
    }
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")


def _aware(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise HTTPException(422, "timestamps need a UTC offset, e.g. 2026-11-25T08:00:00+08:00")
    return ts
