"""The operations centre's summary: open alerts by network and grade, sensors online, rainfall, response times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

ONLINE_INTERVALS = 3
"""A sensor is online while its newest reading arrived within this many of its intervals (at least 3 minutes)."""


def summary(conn: psycopg.Connection[Any], *, now: datetime) -> dict[str, Any]:
    """Return the dashboard figures at *now* (aware UTC).

    Keys: ``active`` (alerts whose cause is present, ``{network: {grade: n}}``), ``awaiting_response`` (raised,
    not acknowledged), ``escalated`` and ``maintenance``, of real alerts only; ``drill`` (``active``,
    ``awaiting_response``, ``escalated`` of the alerts raised in drills), ``sensors`` (``{"total", "online"}`` per
    network and overall), ``rain`` (mean of the rain gauges: ``now_mm_h``, ``last_1h_mm``, ``last_3h_mm``; None
    without gauges or data), and ``response`` over the last 24 h: alerts raised, acknowledged, median minutes to
    acknowledge and to resolve.
    """
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT network, grade, drill_id IS NOT NULL AS drill, count(*) AS n FROM alerts
           WHERE active AND kind <> 'sensor_health' GROUP BY network, grade, drill_id IS NOT NULL"""
    )
    active: dict[str, dict[str, int]] = {}
    drill_active: dict[str, dict[str, int]] = {}
    for r in cur.fetchall():
        counted = drill_active if r["drill"] else active
        network = counted.setdefault(r["network"], {})
        network[str(r["grade"])] = network.get(str(r["grade"]), 0) + int(r["n"])
    cur.execute(
        """SELECT count(*) FILTER (WHERE state = 'raised' AND drill_id IS NULL) AS awaiting,
                  count(*) FILTER (WHERE state = 'raised' AND escalation_level > 0 AND drill_id IS NULL) AS escalated,
                  count(*) FILTER (WHERE active AND kind = 'sensor_health' AND drill_id IS NULL) AS maintenance,
                  count(*) FILTER (WHERE state = 'raised' AND drill_id IS NOT NULL) AS drill_awaiting,
                  count(*) FILTER (WHERE state = 'raised' AND escalation_level > 0 AND drill_id IS NOT NULL)
                      AS drill_escalated
           FROM alerts WHERE state <> 'closed'"""
    )
    counts = cur.fetchone() or {}
    cur.execute(
        """SELECT s.network, count(*) AS total,
                  count(l.sensor_id) FILTER (
                      WHERE l.received_at >= %(now)s::timestamptz - make_interval(
                          secs => greatest(%(k)s * s.interval_s, 180))) AS online
           FROM sensors s LEFT JOIN sensor_latest l USING (sensor_id) GROUP BY s.network""",
        {"now": now, "k": ONLINE_INTERVALS},
    )
    sensors = {r["network"]: {"total": int(r["total"]), "online": int(r["online"])} for r in cur.fetchall()}
    sensors["all"] = {
        "total": sum(v["total"] for v in sensors.values()),
        "online": sum(v["online"] for v in sensors.values()),
    }
    return {
        "at": now.isoformat(),
        "active": active,
        "awaiting_response": int(counts.get("awaiting") or 0),
        "escalated": int(counts.get("escalated") or 0),
        "maintenance": int(counts.get("maintenance") or 0),
        "drill": {
            "active": drill_active,
            "awaiting_response": int(counts.get("drill_awaiting") or 0),
            "escalated": int(counts.get("drill_escalated") or 0),
        },
        "sensors": sensors,
        "rain": _rain(cur, now),
        "response": _response(cur, now),
    }


def _rain(cur: psycopg.Cursor[dict[str, Any]], now: datetime) -> dict[str, float | None]:
    """Mean over the rain gauges: the newest rate, and the depth fallen in the last 1 and 3 hours (from the
    1-minute rollups: each minute's mean rate in mm/h over 60)."""
    cur.execute(
        """SELECT avg(l.value) AS now_mm_h FROM sensors s JOIN sensor_latest l USING (sensor_id)
           WHERE s.quantity = 'rain_rate' AND l.ts >= %s""",
        (now - timedelta(minutes=15),),
    )
    row = cur.fetchone() or {}
    out: dict[str, float | None] = {"now_mm_h": _round(row.get("now_mm_h"))}
    for hours in (1, 3):
        cur.execute(
            """SELECT avg(depth) AS mm FROM (
                   SELECT r.sensor_id, sum(r.sum_value / r.n) / 60.0 AS depth
                   FROM readings_1m r JOIN sensors s USING (sensor_id)
                   WHERE s.quantity = 'rain_rate' AND r.bucket >= %s AND r.bucket < %s GROUP BY r.sensor_id) g""",
            (now - timedelta(hours=hours), now),
        )
        found = cur.fetchone() or {}
        out[f"last_{hours}h_mm"] = _round(found.get("mm"))
    return out


def _response(cur: psycopg.Cursor[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """How fast people answered the last 24 h's real lifeline warnings (from when each reached the store)."""
    cur.execute(
        """WITH recent AS (
               SELECT a.id, greatest(a.raised_at, a.created_at) AS since, a.acknowledged_at,
                      (SELECT min(e.ts) FROM alert_events e WHERE e.alert_id = a.id AND e.event = 'resolve')
                          AS resolved_at
               FROM alerts a WHERE a.kind <> 'sensor_health' AND a.drill_id IS NULL
                                   AND greatest(a.raised_at, a.created_at) >= %s)
           SELECT count(*) AS raised, count(acknowledged_at) AS acknowledged, count(resolved_at) AS resolved,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - since))
                      FILTER (WHERE acknowledged_at IS NOT NULL) AS ack_s,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM resolved_at - since))
                      FILTER (WHERE resolved_at IS NOT NULL) AS resolve_s
           FROM recent""",
        (now - timedelta(hours=24),),
    )
    r = cur.fetchone() or {}
    return {
        "raised": int(r.get("raised") or 0),
        "acknowledged": int(r.get("acknowledged") or 0),
        "resolved": int(r.get("resolved") or 0),
        "median_ack_min": None if r.get("ack_s") is None else round(float(r["ack_s"]) / 60.0, 1),
        "median_resolve_min": None if r.get("resolve_s") is None else round(float(r["resolve_s"]) / 60.0, 1),
    }


def _round(value: object) -> float | None:
    return None if value is None else round(float(value), 2)  # type: ignore[arg-type]
