"""The treatment ledger (台账): problems from the diagnosis, their treatment tasks, and re-checks.

A problem is ``open`` when the diagnosis finds it, ``treating`` once it has a task, and a re-check compares the
indicator over a later period with the value that opened it: back in the green band closes the problem, anything
else reopens it (``reopened``). Tables: :mod:`twin.store.healthcheck`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from models.healthcheck.index import Problem, band
from models.healthcheck.indicators import Definitions, IndicatorValue
from twin.errors import LifelineError

TASK_STATUSES = ("planned", "in_progress", "done")


class UnknownProblemError(LifelineError, KeyError):
    """No problem (or task) with that id in the ledger."""


class LedgerError(LifelineError, ValueError):
    """A ledger change that does not fit: a bad status, or a re-check of another indicator."""


def open_problems(
    conn: psycopg.Connection[Any], problems: Iterable[Problem], *, start: datetime, end: datetime
) -> list[int]:
    """Record *problems* found over ``start`` … ``end``; return their ids (a problem already recorded keeps its id)."""
    ids: list[int] = []
    cur = conn.cursor(row_factory=dict_row)
    for p in problems:
        cur.execute(
            """INSERT INTO hc_problems (indicator_id, district, period_start, period_end, value, target, band,
                                        evidence)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (indicator_id, district, period_start, period_end) DO UPDATE SET value = excluded.value
               RETURNING id""",
            (
                p.indicator_id,
                p.district,
                start,
                end,
                p.value,
                p.target,
                p.band,
                Jsonb({**p.evidence.as_json(), "detail": p.detail}),
            ),
        )
        row = cur.fetchone()
        assert row is not None  # INSERT … RETURNING always returns the row
        ids.append(int(row["id"]))
    return ids


def add_task(conn: psycopg.Connection[Any], problem_id: int, *, title: str, owner: str, deadline: date) -> int:
    """Give a problem a treatment task with an *owner* and a *deadline*; return the task id.

    Raises:
        UnknownProblemError: no such problem.
    """
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        "UPDATE hc_problems SET status = 'treating' WHERE id = %s AND status <> 'closed' RETURNING id", (problem_id,)
    )
    if cur.fetchone() is None:
        cur.execute("SELECT 1 FROM hc_problems WHERE id = %s", (problem_id,))
        if cur.fetchone() is None:
            raise UnknownProblemError(problem_id)
    cur.execute(
        "INSERT INTO hc_tasks (problem_id, title, owner, deadline) VALUES (%s, %s, %s, %s) RETURNING id",
        (problem_id, title, owner, deadline),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row["id"])


def set_task_status(conn: psycopg.Connection[Any], task_id: int, status: str) -> None:
    """Set a task's status (``planned``, ``in_progress``, ``done``).

    Raises:
        LedgerError: an unknown status.
        UnknownProblemError: no such task.
    """
    if status not in TASK_STATUSES:
        raise LedgerError(f"task status must be one of {TASK_STATUSES}, not {status!r}")
    cur = conn.execute("UPDATE hc_tasks SET status = %s, updated_at = now() WHERE id = %s", (status, task_id))
    if cur.rowcount == 0:
        raise UnknownProblemError(f"task {task_id}")


def recheck(conn: psycopg.Connection[Any], problem_id: int, after: IndicatorValue, *, definitions: Definitions) -> str:
    """Compare the indicator *after* treatment with the value that opened the problem; close or reopen it.

    Returns:
        ``closed`` (the indicator is back in its green band) or ``reopened``.

    Raises:
        UnknownProblemError: no such problem.
        LedgerError: *after* is another indicator or district than the problem's, or has no value.
    """
    cur = conn.cursor(row_factory=dict_row)
    cur.execute("SELECT indicator_id, district, value FROM hc_problems WHERE id = %s FOR UPDATE", (problem_id,))
    row = cur.fetchone()
    if row is None:
        raise UnknownProblemError(problem_id)
    if (row["indicator_id"], row["district"]) != (after.indicator_id, after.district):
        raise LedgerError(
            f"problem {problem_id} is {row['indicator_id']} in {row['district'] or 'the city'!r}; "
            f"the re-check is {after.indicator_id} in {after.district or 'the city'!r}"
        )
    if after.value is None:
        raise LedgerError(f"re-check of problem {problem_id}: the indicator has no value ({dict(after.detail)})")
    colour = band(definitions[after.indicator_id], after.value)
    outcome = "closed" if colour == "green" else "reopened"
    cur.execute(
        """INSERT INTO hc_rechecks (problem_id, period_start, period_end, before_value, after_value, band, outcome,
                                    evidence)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            problem_id,
            after.start,
            after.end,
            row["value"],
            after.value,
            colour,
            outcome,
            Jsonb({**after.evidence.as_json(), "detail": dict(after.detail)}),
        ),
    )
    cur.execute(
        "UPDATE hc_problems SET status = %s, closed_at = CASE WHEN %s THEN now() END WHERE id = %s",
        (outcome, outcome == "closed", problem_id),
    )
    return outcome


def ledger(conn: psycopg.Connection[Any], *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Return the problems opened for periods within ``start`` … ``end``, each with its tasks and re-checks."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        """SELECT p.*,
               coalesce((SELECT jsonb_agg(to_jsonb(t) ORDER BY t.id) FROM hc_tasks t WHERE t.problem_id = p.id),
                        '[]') AS tasks,
               coalesce((SELECT jsonb_agg(to_jsonb(c) ORDER BY c.id) FROM hc_rechecks c
                         WHERE c.problem_id = p.id), '[]') AS rechecks
           FROM hc_problems p WHERE p.period_start >= %s AND p.period_end <= %s ORDER BY p.id""",
        (start, end),
    )
    return cur.fetchall()
