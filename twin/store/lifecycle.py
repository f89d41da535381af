"""People acting on alerts, escalation of unacknowledged ones, and an alert's history, in the store.

Every action and escalation is an ``alert_events`` row (with actor, note and detail) and a NOTIFY, so the page,
the websocket clients and the webhooks see it like any detector event. The rules are in :mod:`twin.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from twin.lifecycle import Action, EscalationPolicy, State, TransitionError, next_state
from twin.store.alerts import lock_event_order
from twin.store.db import alerts_channel


class UnknownAlertError(LookupError):
    """No alert has that id."""


def apply_action(
    conn: psycopg.Connection[Any],
    alert_id: int,
    action: Action,
    *,
    actor: str,
    note: str = "",
    detail: Mapping[str, Any] | None = None,
    now: datetime,
    schema: str,
) -> dict[str, Any]:
    """Take *action* on an alert for *actor*; return ``{"event_id", "state"}``.

    ``dispatch`` needs ``detail["assignee"]`` (who goes) and ``detail["task"]`` (what to do): the work order.

    Raises:
        UnknownAlertError: no such alert.
        TransitionError: the action cannot be taken from the alert's state, or the work order is incomplete.
    """
    with conn.transaction():
        lock_event_order(conn)
        cur = conn.cursor(row_factory=dict_row)
        cur.execute("SELECT id, state, grade, incident_id FROM alerts WHERE id = %s FOR UPDATE", (alert_id,))
        row = cur.fetchone()
        if row is None:
            raise UnknownAlertError(f"no alert {alert_id}")
        target = next_state(State(row["state"]), action)
        info = dict(detail or {})
        assignee = None
        if action is Action.DISPATCH:
            assignee = str(info.get("assignee") or "").strip()
            if not assignee or not str(info.get("task") or "").strip():
                raise TransitionError("a dispatch needs a work order: 'assignee' (who) and 'task' (what)")
        cur.execute(
            """UPDATE alerts SET state = %s,
                   acknowledged_at = CASE WHEN %s AND acknowledged_at IS NULL THEN %s ELSE acknowledged_at END,
                   assignee = coalesce(%s, assignee)
               WHERE id = %s""",
            (target.value, action in (Action.ACKNOWLEDGE, Action.DISPATCH), now, assignee, alert_id),
        )
        cur.execute(
            """INSERT INTO alert_events (alert_id, event, ts, grade, value, actor, note, detail)
               VALUES (%s, %s, %s, %s, NULL, %s, %s, %s) RETURNING id""",
            (alert_id, action.value, now, row["grade"], actor, note[:2000], Jsonb(info) if info else None),
        )
        event = cur.fetchone()
        assert event is not None
        if target is State.CLOSED and row["incident_id"] is not None:
            cur.execute(
                """UPDATE incidents SET closed_at = %s WHERE id = %s AND closed_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM alerts WHERE incident_id = %s AND state <> 'closed')""",
                (now, row["incident_id"], row["incident_id"]),
            )
        cur.execute("SELECT pg_notify(%s, %s)", (alerts_channel(schema), str(event["id"])))
    return {"event_id": int(event["id"]), "state": target.value}


def escalate_due(conn: psycopg.Connection[Any], policy: EscalationPolicy, *, now: datetime, schema: str) -> list[int]:
    """Escalate every unacknowledged alert whose deadline has passed; return the new event ids.

    The deadlines count from when the alert was raised, or from when it reached the store if that was later (a
    gateway delivering hours of buffered readings does not make their alerts overdue at once). Safe to run from
    several processes at once: each step is a conditional update on the current level.
    """
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT id, grade, greatest(raised_at, created_at) AS since, escalation_level FROM alerts
           WHERE state = 'raised' ORDER BY id"""
    )
    events: list[int] = []
    for alert in cur.fetchall():
        due = policy.due_level(int(alert["grade"]), alert["since"], now)
        if due <= alert["escalation_level"]:
            continue
        with conn.transaction():
            lock_event_order(conn)
            cur.execute(
                """UPDATE alerts SET escalation_level = %s WHERE id = %s AND escalation_level = %s
                   AND state = 'raised' RETURNING grade""",
                (due, alert["id"], alert["escalation_level"]),
            )
            if cur.fetchone() is None:
                continue  # acknowledged or escalated meanwhile
            contact = policy.contact(due)
            cur.execute(
                """INSERT INTO alert_events (alert_id, event, ts, grade, actor, note, detail)
                   VALUES (%s, 'escalated', %s, %s, 'system', %s, %s) RETURNING id""",
                (
                    alert["id"],
                    now,
                    alert["grade"],
                    f"未叫应，升级至 {contact}",
                    Jsonb({"level": due, "contact": contact}),
                ),
            )
            event = cur.fetchone()
            assert event is not None
            cur.execute("SELECT pg_notify(%s, %s)", (alerts_channel(schema), str(event["id"])))
            events.append(int(event["id"]))
    return events


def history(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    """Return every event of an alert, oldest first (who, when, what, note; ``drill_id`` when raised in a drill).

    Raises:
        UnknownAlertError: no such alert.
    """
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT drill_id FROM alerts WHERE id = %s", (alert_id,))
    found = cur.fetchone()
    if found is None:
        raise UnknownAlertError(f"no alert {alert_id}")
    cur.execute(
        """SELECT id AS event_id, event, ts, grade, value, actor, note, detail FROM alert_events
           WHERE alert_id = %s ORDER BY id""",
        (alert_id,),
    )
    return [{**r, "drill_id": found["drill_id"]} for r in cur.fetchall()]


def incident(conn: psycopg.Connection[Any], incident_id: int) -> dict[str, Any] | None:
    """Return an incident with its alerts (ids, grades, states), or None."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,))
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        """SELECT id, cause_key, sensor_id, grade, state, active, raised_at FROM alerts WHERE incident_id = %s
           ORDER BY id""",
        (incident_id,),
    )
    row["members"] = cur.fetchall()
    return row
