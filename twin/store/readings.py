"""Readings in the store: the idempotent batch write and the time-series queries.

Writes stage a batch with binary COPY into a temporary table, then move it into ``readings`` with
``ON CONFLICT DO NOTHING``, so a redelivered reading never makes a second row. In plain-PostgreSQL mode the same
statement folds exactly the newly inserted rows into the 1-minute and 1-hour rollups (count, sum, min, max),
which is what TimescaleDB's continuous aggregates hold in the other mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from twin.errors import LifelineError
from twin.store.schema import StorageMode

ReadingRow = tuple[str, datetime, float, int]
"""One reading as stored: (sensor_id, ts, value in the canonical unit, quality code)."""

_STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage_readings (sensor_id text, ts timestamptz, value float8, quality int2)"

_ROLLUP_CTE = """
, {name} AS (
    INSERT INTO {table} (sensor_id, bucket, n, sum_value, min_value, max_value)
    SELECT sensor_id, date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), count(*),
           sum(value), min(value), max(value)
    FROM ins GROUP BY 1, 2
    ON CONFLICT (sensor_id, bucket) DO UPDATE SET
        n = {table}.n + excluded.n, sum_value = {table}.sum_value + excluded.sum_value,
        min_value = least({table}.min_value, excluded.min_value),
        max_value = greatest({table}.max_value, excluded.max_value)
    RETURNING 1)"""

_MOVE = """
WITH ins AS (
    INSERT INTO readings (sensor_id, ts, value, quality)
    SELECT sensor_id, ts, value, quality FROM stage_readings
    ON CONFLICT (sensor_id, ts) DO NOTHING
    RETURNING sensor_id, ts, value, quality)
{rollups}
, latest AS (
    INSERT INTO sensor_latest (sensor_id, ts, value, quality, received_at)
    SELECT DISTINCT ON (sensor_id) sensor_id, ts, value, quality, now() FROM ins ORDER BY sensor_id, ts DESC
    ON CONFLICT (sensor_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality,
        received_at = excluded.received_at
    WHERE excluded.ts > sensor_latest.ts
    RETURNING 1)
SELECT count(*) FROM ins
"""


def _move_statement(mode: StorageMode) -> str:
    rollups = ""
    if mode is StorageMode.POSTGRESQL:
        rollups = _ROLLUP_CTE.format(name="r1m", table="readings_1m", width="1 minute") + _ROLLUP_CTE.format(
            name="r1h", table="readings_1h", width="1 hour"
        )
    return _MOVE.format(rollups=rollups)


class ReadingStore:
    """Write batches of readings over one connection; the caller owns the transaction.

    Args:
        conn: the connection to write on.
        mode: the schema's storage mode (rollups are written by this class only in ``postgresql`` mode).
        use_copy: stage with binary COPY (fast); False stages with one ``INSERT … unnest`` instead.

    Example:
        >>> store = ReadingStore(conn, mode=StorageMode.POSTGRESQL)     # doctest: +SKIP
        >>> with conn.transaction():                                    # doctest: +SKIP
        ...     inserted = store.write([("D-L-001", ts, 0.42, 0)])
    """

    def __init__(self, conn: psycopg.Connection[Any], *, mode: StorageMode, use_copy: bool = True) -> None:
        self._conn = conn
        self._move = _move_statement(mode)
        self._staged = False
        self._use_copy = use_copy

    def write(self, rows: Sequence[ReadingRow]) -> int:
        """Store *rows* idempotently and return how many were new (duplicates of stored rows are skipped)."""
        if not rows:
            return 0
        cur = self._conn.cursor(row_factory=tuple_row)
        if not self._staged:
            cur.execute(_STAGE + " ON COMMIT DELETE ROWS")
            self._staged = True
        if self._use_copy:
            with cur.copy("COPY stage_readings (sensor_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "timestamptz", "float8", "int2"])
                for row in rows:
                    copy.write_row(row)
        else:
            # For servers without COPY FROM STDIN (some proxies, the WASM TimescaleDB used in tests).
            cur.execute(
                "INSERT INTO stage_readings SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::float8[],"
                " %s::int2[])",
                [list(col) for col in zip(*rows, strict=True)],
            )
        cur.execute(self._move)
        result = cur.fetchone()
        cur.execute("TRUNCATE stage_readings")
        return int(result[0]) if result else 0

    def forget_connection_state(self) -> None:
        """Call after a reconnect: the temporary staging table must be created again."""
        self._staged = False


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a series: at ``ts`` the mean ``value`` of ``n`` readings, with their ``min`` and ``max``."""

    ts: datetime
    value: float
    min: float
    max: float
    n: int


class QueryError(LifelineError, ValueError):
    """A time-series query whose parameters cannot be served."""


MAX_RAW_POINTS = 20_000
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def choose_source(step: timedelta | None) -> str:
    """Return the table that answers a query at *step*: raw ``readings``, ``readings_1m`` or ``readings_1h``."""
    if step is None or step < timedelta(minutes=1) or step % timedelta(minutes=1):
        return "readings"
    if step >= timedelta(hours=1) and not step % timedelta(hours=1):
        return "readings_1h"
    return "readings_1m"


def query_series(
    conn: psycopg.Connection[Any],
    *,
    sensor_id: str,
    start: datetime,
    end: datetime,
    step: timedelta | None = None,
) -> list[SeriesPoint]:
    """Return one sensor's readings in ``[start, end)``, raw or averaged per *step*.

    With a step that is a whole number of minutes (hours) the answer comes from the 1-minute (1-hour) rollup, so
    a month at hourly resolution reads ~720 rows, not ~43,000. Buckets are aligned to 2000-01-01 00:00 UTC and
    included when their start lies in the range.

    Raises:
        QueryError: ``end`` is not after ``start``, *step* is not positive, or a raw query would return more than
            :data:`MAX_RAW_POINTS` points (ask for a step instead).
    """
    if end <= start:
        raise QueryError("'to' must be after 'from'")
    if step is not None and step <= timedelta(0):
        raise QueryError("'step' must be positive")
    source = choose_source(step)
    if step is None:
        rows = conn.execute(
            "SELECT ts, value, value AS min, value AS max, 1 AS n FROM readings"
            " WHERE sensor_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
            (sensor_id, start, end, MAX_RAW_POINTS + 1),
        ).fetchall()
        if len(rows) > MAX_RAW_POINTS:
            raise QueryError(f"more than {MAX_RAW_POINTS} raw readings in range; give a 'step'")
    elif source == "readings":
        rows = conn.execute(
            f"SELECT date_bin(%s, ts, {_ORIGIN}) AS b, avg(value), min(value), max(value), count(*) AS n"  # noqa: S608
            " FROM readings WHERE sensor_id = %s AND ts >= %s AND ts < %s GROUP BY b ORDER BY b",
            (step, sensor_id, start, end),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT date_bin(%s, bucket, {_ORIGIN}) AS b, sum(sum_value) / sum(n) AS avg, min(min_value) AS min,"  # noqa: S608
            f" max(max_value) AS max, sum(n) AS n FROM {source}"
            " WHERE sensor_id = %s AND bucket >= %s AND bucket < %s GROUP BY b ORDER BY b",
            (step, sensor_id, start, end),
        ).fetchall()
    return [_point(row) for row in rows]


def _point(row: Any) -> SeriesPoint:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return SeriesPoint(
        ts=values[0], value=float(values[1]), min=float(values[2]), max=float(values[3]), n=int(values[4])
    )
