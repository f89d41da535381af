"""Per-zone multivariate models in the store (table ``zone_models``): every fit is a new version; the newest runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def save_model(
    conn: psycopg.Connection[Any],
    zone: str,
    model: bytes,
    *,
    sensors: list[str],
    threshold: float,
    period_from: datetime,
    period_to: datetime,
    hours: int,
) -> int:
    """Store a fitted zone model (its bytes, as :func:`models.offline.dump_detector` writes them) as the zone's
    next version; return the version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"zone_models:{zone}",))
        row = conn.execute("SELECT coalesce(max(version), 0) + 1 AS v FROM zone_models WHERE zone = %s", (zone,))
        found = row.fetchone()
        version = int(found["v"] if isinstance(found, dict) else found[0])  # type: ignore[index]
        conn.execute(
            """INSERT INTO zone_models (zone, version, period_from, period_to, hours, sensors, threshold, model)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                zone,
                version,
                period_from,
                period_to,
                hours,
                Jsonb(sensors),
                float(threshold),
                model,
            ),
        )
    return version


def latest_models(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, bytes]]:
    """Return each zone's newest model: zone → (version, model bytes)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("""SELECT DISTINCT ON (zone) zone, version, model FROM zone_models ORDER BY zone, version DESC""")
    return {r["zone"]: (int(r["version"]), bytes(r["model"])) for r in cur.fetchall()}


def list_models(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every stored model version without its bytes, newest first per zone."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT zone, version, fitted_at, period_from, period_to, hours, jsonb_array_length(sensors) AS sensors,
                  threshold FROM zone_models ORDER BY zone, version DESC"""
    )
    return cur.fetchall()
