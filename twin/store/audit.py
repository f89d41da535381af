"""The audit log: every sign-in, refusal and action taken through the viewer (table ``audit_log``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def record(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    role: str,
    action: str,
    outcome: str,
    target: str = "",
    remote: str = "",
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry; return its id. ``outcome`` is ``ok``, ``denied``, ``failed`` …; never pass secrets."""
    row = conn.execute(
        """INSERT INTO audit_log (actor, role, action, target, outcome, remote, detail)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (actor, role, action, target, outcome, remote, Jsonb(dict(detail)) if detail is not None else None),
    ).fetchone()
    assert row is not None
    return int(next(iter(row.values())) if isinstance(row, dict) else row[0])


def entries(conn: psycopg.Connection[Any], *, limit: int = 200, actor: str | None = None) -> list[dict[str, Any]]:
    """Return the newest entries first, optionally of one actor."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT id, ts, actor, role, action, target, outcome, remote, detail FROM audit_log
           WHERE (%(actor)s::text IS NULL OR actor = %(actor)s) ORDER BY id DESC LIMIT %(limit)s""",
        {"actor": actor, "limit": limit},
    )
    return cur.fetchall()
