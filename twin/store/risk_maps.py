"""Waterlogging risk maps in the store: every map issued is kept; the newest is what the viewer shows.

A map is the GeoJSON FeatureCollection of :func:`models.waterlogging.risk.risk_geojson` (lon/lat, WGS 84): graded
assets (buildings, street segments, low points, underpasses with ``grade``, ``depth_m``, ``eta_s``) and flooded
areas (``kind`` ``pond`` with ``depth_m`` and ``volume_m3``), with ``issued``, ``source`` and ``horizon_s`` in its
``properties``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin.errors import PayloadError


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create ``risk_maps`` (schema migration 8)."""
    conn.execute(
        """
        CREATE TABLE risk_maps (
            id          bigserial PRIMARY KEY,
            issued_at   timestamptz NOT NULL,
            stored_at   timestamptz NOT NULL DEFAULT now(),
            source      text NOT NULL DEFAULT '',
            horizon_s   integer,
            features    integer NOT NULL,
            geojson     jsonb NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX risk_maps_issued ON risk_maps (issued_at DESC, id DESC)")


def check_risk_map(geojson: Any) -> dict[str, Any]:
    """Return *geojson* if it is a FeatureCollection whose features have a geometry and properties.

    Raises:
        PayloadError: reason ``not_risk_map`` with what is wrong.
    """
    if not isinstance(geojson, dict) or geojson.get("type") != "FeatureCollection":
        raise PayloadError("not_risk_map", "a risk map is a GeoJSON FeatureCollection")
    features = geojson.get("features")
    if not isinstance(features, list):
        raise PayloadError("not_risk_map", "'features' must be an array")
    for k, f in enumerate(features):
        if not (isinstance(f, dict) and isinstance(f.get("geometry"), dict) and isinstance(f.get("properties"), dict)):
            raise PayloadError("not_risk_map", f"feature {k} needs a geometry and properties")
    return geojson


def save_risk_map(conn: psycopg.Connection[Any], geojson: dict[str, Any]) -> int:
    """Store a risk map (see the module docstring) and return its id.

    Raises:
        PayloadError: not a FeatureCollection of features with geometry and properties, or a bad ``issued``.
    """
    check_risk_map(geojson)
    props = geojson.get("properties") or {}
    issued_text = props.get("issued")
    try:
        issued = datetime.fromisoformat(issued_text) if isinstance(issued_text, str) else datetime.now(UTC)
    except ValueError as exc:
        raise PayloadError("not_risk_map", f"'issued' {issued_text!r} is not ISO 8601") from exc
    if issued.tzinfo is None:
        raise PayloadError("not_risk_map", "'issued' needs a UTC offset")
    horizon = props.get("horizon_s")
    row = conn.execute(
        """INSERT INTO risk_maps (issued_at, source, horizon_s, features, geojson)
           VALUES (%s, %s, %s, %s, %s) RETURNING id""",
        (
            issued,
            str(props.get("source") or ""),
            int(horizon) if isinstance(horizon, int | float) else None,
            len(geojson["features"]),
            Jsonb(geojson),
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"] if isinstance(row, dict) else row[0])


def latest_risk_map_id(conn: psycopg.Connection[Any]) -> int | None:
    """Return the id of the newest map (latest issued, then latest stored), or None."""
    row = conn.execute("SELECT id FROM risk_maps ORDER BY issued_at DESC, id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return int(row["id"] if isinstance(row, dict) else row[0])


def get_risk_map(conn: psycopg.Connection[Any], map_id: int) -> dict[str, Any] | None:
    """Return map *map_id*: ``id``, ``issued_at``, ``stored_at``, ``source``, ``horizon_s``, ``geojson``; or None."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "SELECT id, issued_at, stored_at, source, horizon_s, features, geojson FROM risk_maps WHERE id = %s",
        (map_id,),
    )
    return cur.fetchone()
