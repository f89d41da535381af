"""Alerts and their event log in the store.

An alert is one cause (``cause_key``, e.g. ``threshold:D-L-001:high``) that is *active* while the cause lasts; at most
one active alert exists per cause. Every change is appended to ``alert_events``, whose ids only grow: a websocket
client that remembers the last event id it saw can resume from there without gaps or repeats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row, tuple_row
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
    return apply_changes(conn, [change], schema=schema)[0]


class AppliedChange(NamedTuple):
    """What recording one alert change did: its event, and the drill the alert belongs to (None: a real alert)."""

    event_id: int
    drill_id: int | None


def apply_changes(conn: psycopg.Connection[Any], changes: Sequence[AlertChange], *, schema: str) -> list[int | None]:
    """Record *changes* in order, as :func:`apply_change` does each; return their event ids (None: nothing done).

    :func:`apply_changes_marked` does the same and also says which alerts a drill raised.
    """
    return [None if done is None else done.event_id for done in apply_changes_marked(conn, changes, schema=schema)]


def apply_changes_marked(
    conn: psycopg.Connection[Any], changes: Sequence[AlertChange], *, schema: str
) -> list[AppliedChange | None]:
    """Record *changes* in order; return each one's event id and its alert's drill (None: nothing done).

    Each change is one statement (:data:`_RAISE`, :data:`_UPDATE`, :data:`_CLEAR`: the alert, a new alert's
    incident, the event and its NOTIFY together), and all of them go to the server in one pipeline, so a storm
    batch of hundreds of changes costs one round trip, not five a change (~0.1 ms a change instead of 0.5–1).
    They still run one after another in the caller's transaction: a raise sees the incident the one before it
    opened. The drill is the alert's ``drill_id`` as stored (the trigger stamps it when a drill feeds the alert's
    network), so whoever publishes the change can mark it as a drill.
    """
    if not changes:
        return []
    lock_event_order(conn)
    channel = alerts_channel(schema)
    cursors: list[psycopg.Cursor[Any]] = []
    with conn.pipeline():
        for change in changes:
            cur = conn.cursor(row_factory=tuple_row)
            statement = _CLEAR if change.event == "cleared" else _RAISE if change.event == "raised" else _UPDATE
            cur.execute(statement, _parameters(change, channel))
            cursors.append(cur)
    out: list[AppliedChange | None] = []
    for cur in cursors:
        row = cur.fetchone()
        out.append(AppliedChange(int(row[0]), None if row[2] is None else int(row[2])) if row is not None else None)
    return out


def _parameters(change: AlertChange, channel: str) -> dict[str, Any]:
    """The statement's parameters: every field of *change* by name, and what the statements add."""
    params = {field.name: getattr(change, field.name) for field in dataclasses.fields(change)}
    params.update(
        detail=Jsonb(dict(change.detail)) if change.detail is not None else None,
        group=change.kind != "sensor_health",  # maintenance alerts join no incident
        window_s=INCIDENT_WINDOW_S,
        channel=channel,
    )
    return params


_SET_ACTIVE = """
    UPDATE alerts SET grade = %(grade)s, updated_at = %(ts)s, value = %(value)s, threshold = %(threshold)s,
        message = %(message)s, message_en = %(message_en)s, detail = coalesce(%(detail)s::jsonb, detail),
        peak_value = CASE WHEN peak_value IS NULL
                               OR abs(%(value)s::float8 - threshold) > abs(peak_value - threshold)
                          THEN %(value)s::float8 ELSE peak_value END
    WHERE cause_key = %(cause_key)s AND active RETURNING id, grade, drill_id"""

_EVENT_AND_NOTIFY = """
, ev AS (
    INSERT INTO alert_events (alert_id, event, ts, grade, value)
    SELECT id, event, %(ts)s, grade, %(value)s FROM changed
    RETURNING id)
SELECT id, pg_notify(%(channel)s, id::text), (SELECT drill_id FROM changed LIMIT 1) FROM ev"""

_UPDATE = (
    "WITH upd AS ("  # noqa: S608 (constant pieces, no input)
    + _SET_ACTIVE
    + """)
, changed AS (SELECT id, grade, %(event)s::text AS event, drill_id FROM upd)"""
    + _EVENT_AND_NOTIFY
)
"""An ``updated`` change: the active alert of its cause, if any, and its event."""

_CLEAR = (
    """WITH upd AS (
    UPDATE alerts SET active = false, cleared_at = %(ts)s, updated_at = %(ts)s, value = %(value)s
    WHERE cause_key = %(cause_key)s AND active RETURNING id, grade, drill_id)
, changed AS (SELECT id, grade, 'cleared'::text AS event, drill_id FROM upd)"""  # noqa: S608 (constant pieces)
    + _EVENT_AND_NOTIFY
)
"""A ``cleared`` change: the active alert of its cause, if any, made inactive, and its event."""

_RAISE = (
    "WITH upd AS ("  # noqa: S608 (constant pieces, no input)
    + _SET_ACTIVE
    + """)
, need AS (SELECT 1 AS one WHERE NOT EXISTS (SELECT 1 FROM upd))
, found AS (
    SELECT id FROM incidents
    WHERE %(group)s AND EXISTS (SELECT 1 FROM need) AND closed_at IS NULL AND network = %(network)s
      AND district = %(district)s AND updated_at >= %(ts)s::timestamptz - make_interval(secs => %(window_s)s)
    ORDER BY id DESC LIMIT 1 FOR UPDATE)
, grown AS (
    UPDATE incidents SET updated_at = greatest(updated_at, %(ts)s), alerts = alerts + 1
    WHERE id IN (SELECT id FROM found) RETURNING id)
, opened AS (
    INSERT INTO incidents (network, district, opened_at, updated_at, alerts)
    SELECT %(network)s, %(district)s, %(ts)s, %(ts)s, 1
    WHERE %(group)s AND EXISTS (SELECT 1 FROM need) AND NOT EXISTS (SELECT 1 FROM found)
    RETURNING id)
, ins AS (
    INSERT INTO alerts (cause_key, kind, sensor_id, network, district, grade, raised_at, updated_at, value,
                        threshold, peak_value, message, message_en, detail, incident_id)
    SELECT %(cause_key)s, %(kind)s, %(sensor_id)s, %(network)s, %(district)s, %(grade)s, %(ts)s, %(ts)s,
           %(value)s, %(threshold)s, %(value)s, %(message)s, %(message_en)s, %(detail)s::jsonb,
           (SELECT id FROM grown UNION ALL SELECT id FROM opened LIMIT 1)
    FROM need
    RETURNING id, grade, drill_id)
, changed AS (
    SELECT id, grade, 'updated'::text AS event, drill_id FROM upd
    UNION ALL SELECT id, grade, 'raised', drill_id FROM ins)"""
    + _EVENT_AND_NOTIFY
)
"""A ``raised`` change: the active alert of its cause updated if there is one (the event is then ``updated``);
otherwise a new alert, in the open incident of its network and district updated within ``INCIDENT_WINDOW_S``
(else a new incident; maintenance alerts join none), and its event."""


INCIDENT_WINDOW_S = 2 * 3600
"""A new lifeline warning joins the open incident of its network and district updated within this many seconds."""


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
