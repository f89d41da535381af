"""Alerts and their event log in the store.

An alert is one cause (``cause_key``, e.g. ``threshold:D-L-001:high``) that is *active* while the cause lasts; at most
one active alert exists per cause. Every change is appended to ``alert_events``, whose ids only grow: a websocket
client that remembers the last event id it saw can resume from there without gaps or repeats.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin.alerts import AlertChange
from twin.store.db import alerts_channel

_ALERT_COLUMNS = """a.id, a.cause_key, a.kind, a.sensor_id, a.network, a.district, a.grade, a.active, a.state,
    a.raised_at, a.updated_at, a.cleared_at, a.value, a.threshold, a.peak_value, a.message, a.message_en, a.detail,
    a.escalation_level, a.acknowledged_at, a.assignee, a.incident_id, a.drill_id"""


EVENT_ORDER_LOCK = 0x4C494645  # "LIFE"
"""Advisory lock key taken by every transaction that appends to ``alert_events``."""


def lock_event_order(conn: psycopg.Connection[Any]) -> None:
    """Hold, until the caller's transaction ends, the lock that makes alert events commit in id order.

    ``alert_events.id`` comes from a sequence when the row is inserted, not when it commits: with two writers (two
    ingest workers, or ingest and an operator) a later id could become visible first, and readers that follow the
    ids ("events after the last one seen": the viewer's hub, websocket resume, webhooks) would skip the earlier
    one for good. Taking this lock before the insert serialises the writers' alert transactions (short: a few
    rows), so ids are taken and committed in the same order.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_ORDER_LOCK,))


def apply_change(conn: psycopg.Connection[Any], change: AlertChange, *, schema: str) -> int | None:
    """Record *change* in ``alerts`` and ``alert_events`` and announce it; return the event id.

    A ``raised`` change for a cause that is already active updates that alert instead (so a restart that
    re-detects the same exceedance does not duplicate it). Takes :func:`lock_event_order` until the caller's
    transaction ends. ``updated`` and ``cleared`` for a cause with no
    active alert do nothing and return None. The NOTIFY is delivered when the caller's transaction commits.
    """
    lock_event_order(conn)
    cur = conn.cursor(row_factory=dict_row)
    detail = Jsonb(dict(change.detail)) if change.detail is not None else None
    if change.event == "cleared":
        cur.execute(
            """UPDATE alerts SET active = false, cleared_at = %s, updated_at = %s, value = %s
               WHERE cause_key = %s AND active RETURNING id, grade""",
            (change.ts, change.ts, change.value, change.cause_key),
        )
    else:
        cur.execute(
            """UPDATE alerts SET grade = %s, updated_at = %s, value = %s, threshold = %s, message = %s,
                   message_en = %s, detail = coalesce(%s, detail),
                   peak_value = CASE WHEN peak_value IS NULL OR abs(%s - threshold) > abs(peak_value - threshold)
                                     THEN %s ELSE peak_value END
               WHERE cause_key = %s AND active RETURNING id, grade""",
            (
                change.grade,
                change.ts,
                change.value,
                change.threshold,
                change.message,
                change.message_en,
                detail,
                change.value,
                change.value,
                change.cause_key,
            ),
        )
    row = cur.fetchone()
    event = change.event
    if row is None:
        if change.event != "raised":
            return None
        incident = _incident_for(cur, change)
        cur.execute(
            """INSERT INTO alerts (cause_key, kind, sensor_id, network, district, grade, raised_at, updated_at,
                                   value, threshold, peak_value, message, message_en, detail, incident_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, grade""",
            (
                change.cause_key,
                change.kind,
                change.sensor_id,
                change.network,
                change.district,
                change.grade,
                change.ts,
                change.ts,
                change.value,
                change.threshold,
                change.value,
                change.message,
                change.message_en,
                detail,
                incident,
            ),
        )
        row = cur.fetchone()
        assert row is not None
    elif event == "raised":
        event = "updated"
    cur.execute(
        "INSERT INTO alert_events (alert_id, event, ts, grade, value) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (row["id"], event, change.ts, row["grade"], change.value),
    )
    ev = cur.fetchone()
    assert ev is not None
    cur.execute("SELECT pg_notify(%s, %s)", (alerts_channel(schema), str(ev["id"])))
    return int(ev["id"])


INCIDENT_WINDOW_S = 2 * 3600
"""A new lifeline warning joins the open incident of its network and district updated within this many seconds."""


def _incident_for(cur: psycopg.Cursor[Any], change: AlertChange) -> int | None:
    """Group a new lifeline warning with related ones (the same leak seen by several sensors, a storm flooding
    several points): the open incident of the same network and district, else a new one. Maintenance alerts
    (sensor health) are not grouped."""
    if change.kind == "sensor_health":
        return None
    cur.execute(
        """SELECT id FROM incidents
           WHERE closed_at IS NULL AND network = %s AND district = %s
             AND updated_at >= %s::timestamptz - make_interval(secs => %s)
           ORDER BY id DESC LIMIT 1 FOR UPDATE""",
        (change.network, change.district, change.ts, INCIDENT_WINDOW_S),
    )
    found = cur.fetchone()
    if found is not None:
        cur.execute(
            "UPDATE incidents SET updated_at = greatest(updated_at, %s), alerts = alerts + 1 WHERE id = %s",
            (change.ts, found["id"]),
        )
        return int(found["id"])
    cur.execute(
        """INSERT INTO incidents (network, district, opened_at, updated_at, alerts) VALUES (%s, %s, %s, %s, 1)
           RETURNING id""",
        (change.network, change.district, change.ts, change.ts),
    )
    new = cur.fetchone()
    assert new is not None
    return int(new["id"])


def active_alerts(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Return every active alert (the detectors' state to restore after a restart)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts a WHERE a.active ORDER BY a.id")  # noqa: S608
    return cur.fetchall()


def list_alerts(
    conn: psycopg.Connection[Any],
    *,
    active: bool | None = None,
    network: str | None = None,
    max_grade: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Return alerts, newest first, optionally only active ones, of one network, or of grade *max_grade* or worse."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"""SELECT {_ALERT_COLUMNS} FROM alerts a
            WHERE (%(active)s::boolean IS NULL OR a.active = %(active)s)
              AND (%(network)s::text IS NULL OR a.network = %(network)s)
              AND (%(max_grade)s::int IS NULL OR a.grade <= %(max_grade)s)
            ORDER BY a.updated_at DESC, a.id DESC LIMIT %(limit)s""",  # noqa: S608
        {"active": active, "network": network, "max_grade": max_grade, "limit": limit},
    )
    return cur.fetchall()


def events_after(conn: psycopg.Connection[Any], *, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Return alert events with id greater than *after_id*, oldest first, each with its alert's current row."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"""SELECT e.id AS event_id, e.event, e.ts AS event_ts, e.grade AS event_grade, e.value AS event_value,
                   e.actor AS event_actor, e.note AS event_note, e.detail AS event_detail, {_ALERT_COLUMNS}
            FROM alert_events e JOIN alerts a ON a.id = e.alert_id
            WHERE e.id > %s ORDER BY e.id LIMIT %s""",  # noqa: S608
        (after_id, limit),
    )
    return cur.fetchall()


def last_event_id(conn: psycopg.Connection[Any]) -> int:
    """Return the id of the newest alert event, or 0."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()
    return int(next(iter(row.values())) if isinstance(row, dict) else row[0]) if row else 0
