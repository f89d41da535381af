"""The drill registry: which networks a drill puts into drill mode, and when; alerts raised meanwhile are marked.

A drill (演练) publishes simulated readings over MQTT on the twin's real sensor ids, exactly as the sensors
would, so ingest and the detectors treat them like any reading. What sets a drill's alerts apart is this
registry: while a drill runs, its networks are *in drill mode*, and a trigger on ``alerts`` stamps every alert
raised on those networks then with the drill's id (``alerts.drill_id``), whoever writes it (any ingest worker,
a replayed spool, a test). The stamp stays with the alert for life: its clearing, acknowledgement and history
are the drill's too, and it is grouped with the drill's other alerts, never in a real incident
(:func:`separate_incidents`).

A drill's window runs from ``started_at`` to its end plus :data:`GRACE_S` (readings published just before the
end may still be in ingest's batch or spool). Its end is ``stopped_at`` once the viewer has seen the drill stop or
finish, and otherwise ``lease_until``: the viewer renews the lease of the drills it runs every
:data:`RENEW_S`, so the drills of a viewer that died end within :data:`LEASE_S` instead of marking alerts for
ever.

What this does not do: mark individual *readings* (they share ``(sensor_id, ts)`` keys with the real sensors' and
are stored the same way); a reading can be attributed to a drill by its network and arrival within a window
listed by :func:`list_drills`. An alert of a drilled network raised during the window by a real sensor is marked
as a drill: while a drill feeds a network, its real and simulated readings cannot be told apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

LEASE_S = 60.0
"""How long a drill stays in drill mode without the viewer renewing it, seconds."""
RENEW_S = 10.0
"""How often the viewer renews the leases of its running drills, seconds."""
GRACE_S = 60.0
"""After a drill ends, alerts on its networks are still marked for this long, seconds."""


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create ``drills``, ``alerts.drill_id`` and the trigger that marks alerts (schema migration 8)."""
    conn.execute(
        """
        CREATE TABLE drills (
            id          bigserial PRIMARY KEY,
            kind        text NOT NULL,
            networks    text[] NOT NULL,
            params      jsonb NOT NULL DEFAULT '{}',
            started_by  text NOT NULL DEFAULT '',
            started_at  timestamptz NOT NULL DEFAULT now(),
            lease_until timestamptz NOT NULL,
            stopped_at  timestamptz,
            outcome     text
        )"""
    )
    conn.execute("CREATE INDEX drills_open ON drills (started_at) WHERE stopped_at IS NULL")
    conn.execute("ALTER TABLE alerts ADD COLUMN drill_id bigint REFERENCES drills (id)")
    conn.execute("CREATE INDEX alerts_drill ON alerts (drill_id) WHERE drill_id IS NOT NULL")
    # SET search_path FROM CURRENT: the function finds this schema's drills table whoever fires it.
    conn.execute(
        f"""
        CREATE FUNCTION mark_drill_alert() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            IF NEW.drill_id IS NULL THEN
                SELECT d.id INTO NEW.drill_id FROM drills d
                WHERE NEW.network = ANY (d.networks)
                  AND d.started_at <= now()
                  AND now() <= coalesce(d.stopped_at, d.lease_until) + make_interval(secs => {GRACE_S:.0f})
                ORDER BY d.id DESC LIMIT 1;
            END IF;
            RETURN NEW;
        END $$"""  # noqa: S608 - a module constant, no input
    )
    conn.execute(
        "CREATE TRIGGER alerts_mark_drill BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION mark_drill_alert()"
    )


def separate_incidents(conn: psycopg.Connection[Any], *, window_s: float) -> None:
    """Keep drill alerts and real alerts in separate incidents (schema migration 9).

    A new alert joins the open incident of its network and district (:mod:`twin.store.alerts`), which may be a
    real one for a drill alert or a drill's for a real alert. After the drill stamp, the trigger moves such an
    alert to an open incident of its own kind (the same drill, or real) updated within *window_s* seconds, or opens
    one; the incident it left loses it again (and goes if it was opened for this alert alone).
    """
    conn.execute("ALTER TABLE incidents ADD COLUMN drill_id bigint REFERENCES drills (id)")
    conn.execute(
        f"""
        CREATE OR REPLACE FUNCTION mark_drill_alert() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        DECLARE
            joined incidents%ROWTYPE;
            found_id bigint;
        BEGIN
            IF NEW.drill_id IS NULL THEN
                SELECT d.id INTO NEW.drill_id FROM drills d
                WHERE NEW.network = ANY (d.networks)
                  AND d.started_at <= now()
                  AND now() <= coalesce(d.stopped_at, d.lease_until) + make_interval(secs => {GRACE_S:.0f})
                ORDER BY d.id DESC LIMIT 1;
            END IF;
            IF NEW.incident_id IS NULL THEN
                RETURN NEW;
            END IF;
            SELECT * INTO joined FROM incidents WHERE id = NEW.incident_id;
            IF NOT FOUND OR joined.drill_id IS NOT DISTINCT FROM NEW.drill_id THEN
                RETURN NEW;
            END IF;
            IF joined.alerts <= 1 AND NOT EXISTS (SELECT 1 FROM alerts WHERE incident_id = joined.id) THEN
                IF NEW.drill_id IS NOT NULL AND joined.opened_at = NEW.raised_at THEN
                    UPDATE incidents SET drill_id = NEW.drill_id WHERE id = joined.id;  -- opened for this alert
                    RETURN NEW;
                END IF;
                DELETE FROM incidents WHERE id = joined.id;
            ELSE
                UPDATE incidents SET alerts = alerts - 1 WHERE id = joined.id;
            END IF;
            SELECT id INTO found_id FROM incidents
            WHERE closed_at IS NULL AND network = NEW.network AND district = NEW.district
              AND drill_id IS NOT DISTINCT FROM NEW.drill_id
              AND updated_at >= NEW.raised_at - make_interval(secs => {window_s:.0f})
            ORDER BY id DESC LIMIT 1 FOR UPDATE;
            IF FOUND THEN
                UPDATE incidents SET updated_at = greatest(updated_at, NEW.raised_at), alerts = alerts + 1
                WHERE id = found_id;
            ELSE
                INSERT INTO incidents (network, district, opened_at, updated_at, alerts, drill_id)
                VALUES (NEW.network, NEW.district, NEW.raised_at, NEW.raised_at, 1, NEW.drill_id)
                RETURNING id INTO found_id;
            END IF;
            NEW.incident_id := found_id;
            RETURN NEW;
        END $$"""  # noqa: S608 - module constants, no input
    )


def open_drill(
    conn: psycopg.Connection[Any],
    *,
    kind: str,
    networks: Sequence[str],
    params: dict[str, Any],
    started_by: str = "",
    lease_s: float = LEASE_S,
) -> int:
    """Register a drill starting now on *networks*; return its id (alerts of those networks are marked from now)."""
    row = conn.execute(
        """INSERT INTO drills (kind, networks, params, started_by, lease_until)
           VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING id""",
        (kind, list(networks), Jsonb(params), started_by, lease_s),
    ).fetchone()
    assert row is not None
    return int(row["id"] if isinstance(row, dict) else row[0])


def renew(conn: psycopg.Connection[Any], drill_ids: Iterable[int], *, lease_s: float = LEASE_S) -> None:
    """Extend the lease of the running drills *drill_ids* to now + *lease_s*."""
    ids = list(drill_ids)
    if ids:
        conn.execute(
            """UPDATE drills SET lease_until = now() + make_interval(secs => %s)
               WHERE id = ANY(%s) AND stopped_at IS NULL""",
            (lease_s, ids),
        )


def close_drill(conn: psycopg.Connection[Any], drill_id: int, *, outcome: str) -> None:
    """Record that drill *drill_id* ended now with *outcome* (``stopped``, ``finished``, ``failed (1)``, …)."""
    conn.execute(
        "UPDATE drills SET stopped_at = now(), outcome = %s WHERE id = %s AND stopped_at IS NULL",
        (outcome, drill_id),
    )


def list_drills(conn: psycopg.Connection[Any], *, limit: int = 50) -> list[dict[str, Any]]:
    """Return the registered drills, newest first, with their windows and how many alerts each marked."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT d.id, d.kind, d.networks, d.params, d.started_by, d.started_at, d.lease_until, d.stopped_at,
                  d.outcome, (SELECT count(*) FROM alerts a WHERE a.drill_id = d.id) AS alerts
           FROM drills d ORDER BY d.id DESC LIMIT %s""",
        (limit,),
    )
    return cur.fetchall()


def in_drill_mode(conn: psycopg.Connection[Any], *, at: datetime | None = None) -> list[str]:
    """Return the networks in drill mode now (or at *at*), sorted."""
    row = conn.execute(
        f"""SELECT coalesce(array_agg(DISTINCT n ORDER BY n), '{{}}') FROM drills d, unnest(d.networks) n
            WHERE d.started_at <= coalesce(%(at)s, now())
              AND coalesce(%(at)s, now()) <= coalesce(d.stopped_at, d.lease_until)
                                             + make_interval(secs => {GRACE_S:.0f})""",  # noqa: S608
        {"at": at},
    ).fetchone()
    if row is None:
        return []
    value = next(iter(row.values())) if isinstance(row, dict) else row[0]
    return list(value)
