"""How long raw readings are kept, on plain PostgreSQL: the application's side of TimescaleDB's retention policy.

On TimescaleDB the schema's retention policy (:class:`twin.store.schema.RetentionPolicy`, 800 days) drops raw
chunks, and the continuous aggregates keep their buckets (their refresh windows reach back 2–3 days only). On plain
PostgreSQL nothing did, and ``readings`` grew without end (the demo city's 638 sensors at one reading a minute add
about 335 million rows a year). :func:`prune_readings` does the same there: it deletes the raw readings older than
the cutoff and keeps ``readings_1m``, ``readings_1h`` and ``sensor_latest``, so charts over long ranges (which
read the rollups) are unchanged and a query of raw data before the cutoff finds nothing, as on TimescaleDB.

How, and why:

- **In time slices, oldest first, each in its own transaction** (one hour of readings by default): a slice is
  found through the BRIN index on ``ts`` (readings arrive roughly in time order, so a slice is a run of pages),
  holds its locks briefly beside ingest's writes, and a run that is stopped or fails keeps what it deleted and
  starts the next time from the oldest reading left.
- **The oldest reading** is looked up per sensor through the primary key ``(sensor_id, ts)`` (one index probe per
  sensor in ``sensors``; ingest stores no reading of an unknown sensor): ``min(ts)`` over the whole table would
  read all of it. The first slice deletes everything before its end, so a reading older than that is not missed.
- **One pruner at a time** per schema (a session advisory lock): several ingest workers may each schedule it.
- Deleted rows leave space that autovacuum makes reusable; the table does not shrink on disk by itself.

``lifeline db prune`` runs it by hand; ``lifeline ingest`` runs it once a day (``LIFELINE_RAW_RETENTION_DAYS``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import SchemaError
from twin.store.db import DictConnection
from twin.store.schema import StorageMode, current_mode

log = logging.getLogger(__name__)

SLICE = timedelta(hours=1)
"""Readings deleted per transaction, as a span of time."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a pruning run did.

    Attributes:
        mode: the schema's storage mode.
        cutoff: readings before this were to go (UTC).
        oldest: the oldest reading found before the run (None: no reading, or not looked for).
        deleted: rows deleted.
        slices: slices (transactions) done.
        seconds: how long the run took.
        skipped: why nothing was done (TimescaleDB's own policy applies, another process is pruning), or None.
        stopped: the run was asked to stop before it reached the cutoff.
        planned: slices the run needed.
        to_delete: for a dry run, the raw readings before the cutoff (None otherwise).
    """

    mode: StorageMode
    cutoff: datetime
    oldest: datetime | None
    deleted: int
    slices: int
    seconds: float
    skipped: str | None = None
    stopped: bool = False
    planned: int = 0
    to_delete: int | None = None


Progress = Callable[[datetime, int, int, int], None]
"""Called after each slice with the slice's end, the rows deleted so far, the slices done and the slices planned."""


def prune_readings(
    conn: DictConnection,
    *,
    schema: str,
    keep: timedelta,
    now: datetime | None = None,
    slice_span: timedelta = SLICE,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Delete the raw readings older than *keep* before *now*, on plain PostgreSQL (see the module docstring).

    Args:
        conn: an autocommit connection to the store (:func:`twin.store.db.connect`).
        schema: the store's schema (for its storage mode and the lock's name).
        keep: how much raw history to keep; must be positive.
        now: the time the cutoff is counted back from (default: the current time).
        slice_span: the span of time deleted per transaction.
        stop: when set, the run ends after the current slice (``stopped`` in the result).
        progress: called after each slice.
        dry_run: delete nothing; count the raw readings before the cutoff (``to_delete``) and the slices needed.

    Returns:
        What was done. On TimescaleDB nothing is (its policy does it): ``skipped`` says so.

    Raises:
        SchemaError: the schema is not migrated.
        ValueError: *keep* or *slice_span* is not positive.
        psycopg.Error: the database failed; the slices before the failure stay deleted.
    """
    if keep <= timedelta(0) or slice_span <= timedelta(0):
        raise ValueError(f"keep and slice_span must be positive: {keep}, {slice_span}")
    began = time.monotonic()
    cutoff = (now or datetime.now(UTC)) - keep
    mode = current_mode(conn, schema=schema)
    if mode is None:
        raise SchemaError(f"schema {schema!r} is not migrated: run 'lifeline db migrate'")

    def result(
        oldest: datetime | None,
        deleted: int,
        slices: int,
        *,
        skipped: str | None = None,
        stopped: bool = False,
        planned: int = 0,
        to_delete: int | None = None,
    ) -> PruneResult:
        seconds = time.monotonic() - began
        return PruneResult(mode, cutoff, oldest, deleted, slices, seconds, skipped, stopped, planned, to_delete)

    if mode is StorageMode.TIMESCALEDB:
        return result(None, 0, 0, skipped="TimescaleDB's retention policy drops old chunks itself")
    if not conn.autocommit:
        raise ValueError("prune_readings needs an autocommit connection (each slice commits on its own)")
    lock = f"lifeline-retention:{schema}"
    got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s)) AS got", (lock,)).fetchone()
    if got is None or not got["got"]:
        return result(None, 0, 0, skipped="another process is pruning this schema")
    try:
        oldest = oldest_raw_reading(conn)
        if oldest is None or oldest >= cutoff:
            return result(oldest, 0, 0, to_delete=0 if dry_run else None)
        ends = _slice_ends(oldest, cutoff, slice_span)
        if dry_run:
            counted = conn.execute("SELECT count(*) AS n FROM readings WHERE ts < %s", (cutoff,)).fetchone()
            return result(oldest, 0, 0, planned=len(ends), to_delete=int(counted["n"]) if counted else 0)
        deleted = 0
        start: datetime | None = None
        for k, end in enumerate(ends):
            if stop is not None and stop.is_set():
                return result(oldest, deleted, k, stopped=True, planned=len(ends))
            with conn.transaction():
                if start is None:
                    cur = conn.execute("DELETE FROM readings WHERE ts < %s", (end,))
                else:
                    cur = conn.execute("DELETE FROM readings WHERE ts >= %s AND ts < %s", (start, end))
                n = max(cur.rowcount, 0)
                deleted += n
                # In the same transaction: what is recorded as deleted always is.
                conn.execute(
                    """INSERT INTO raw_retention (deleted_before, deleted_rows) VALUES (%s, %s)
                       ON CONFLICT (id) DO UPDATE SET
                           deleted_before = greatest(raw_retention.deleted_before, excluded.deleted_before),
                           deleted_rows = raw_retention.deleted_rows + excluded.deleted_rows, updated_at = now()""",
                    (end, n),
                )
            start = end
            if progress is not None:
                progress(end, deleted, k + 1, len(ends))
        log.info(
            "schema %s: deleted %d raw readings before %s in %d slices, %.1f s (rollups kept)",
            schema,
            deleted,
            cutoff.isoformat(timespec="seconds"),
            len(ends),
            time.monotonic() - began,
        )
        return result(oldest, deleted, len(ends), planned=len(ends))
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))


def raw_deleted_before(conn: psycopg.Connection[Any], *, schema: str | None = None) -> datetime | None:
    """Return the time before which raw readings have been deleted, or None if none were.

    *schema*: the store's schema (default: the connection's current schema).

    Plain PostgreSQL: as far as :func:`prune_readings` has reached (recorded with each slice). TimescaleDB: now
    less the retention policy's interval (the policy drops whole days of chunks once a day, so a little less may
    be gone). The rollups are kept either way: what is missing is what only raw readings give.
    """
    cur = conn.cursor(row_factory=dict_row)  # whatever rows the connection gives
    if schema is None:
        current = cur.execute("SELECT current_schema() AS s").fetchone()
        schema = str(current["s"]) if current is not None else "public"
    mode = current_mode(conn, schema=schema)
    if mode is StorageMode.TIMESCALEDB:
        row = cur.execute(
            """SELECT now() - (config->>'drop_after')::interval AS before FROM timescaledb_information.jobs
               WHERE proc_name = 'policy_retention' AND hypertable_schema = %s AND hypertable_name = 'readings'""",
            (schema,),
        ).fetchone()
    elif mode is StorageMode.POSTGRESQL:
        row = cur.execute("SELECT deleted_before AS before FROM raw_retention").fetchone()
    else:
        return None
    value = None if row is None else row["before"]
    return value if isinstance(value, datetime) else None


def oldest_raw_reading(conn: psycopg.Connection[Any]) -> datetime | None:
    """The oldest raw reading's time (None: no reading): one primary-key probe per known sensor."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            """SELECT min(first.ts) AS oldest FROM sensors s CROSS JOIN LATERAL
           (SELECT r.ts FROM readings r WHERE r.sensor_id = s.sensor_id ORDER BY r.ts LIMIT 1) first"""
        )
        .fetchone()
    )
    value = None if row is None else row["oldest"]
    return value if isinstance(value, datetime) else None


def _slice_ends(oldest: datetime, cutoff: datetime, span: timedelta) -> list[datetime]:
    """The ends of the slices from *oldest* to *cutoff*: on whole multiples of *span* since the epoch, the last one
    the cutoff itself."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    step = span.total_seconds()
    first = epoch + timedelta(seconds=(int((oldest - epoch).total_seconds() // step) + 1) * step)
    ends = []
    end = first
    while end < cutoff:
        ends.append(end)
        end += span
    ends.append(cutoff)
    return ends
