"""Readings in the store: the idempotent batch write and the time-series queries.

A batch is written in one of two ways, with the same result:

- **Fast path** (the usual case): binary COPY straight into ``readings`` inside a savepoint. The primary key
  ``(sensor_id, ts)`` refuses a reading that is already stored, and then the savepoint is rolled back and the
  batch takes the slow path, so nothing is stored twice. When the COPY succeeds every row was new, so the rollups
  and ``sensor_latest`` are folded from aggregates computed here (numpy, one row per sensor and bucket), in one
  statement.
- **Slow path** (a redelivered message, a batch with a reading twice): stage the batch with COPY into a temporary
  table, then move it into ``readings`` with ``ON CONFLICT DO NOTHING``; the same statement folds exactly the newly
  inserted rows into the rollups and ``sensor_latest``.

In plain-PostgreSQL mode the rollups are the 1-minute and 1-hour tables (count, sum, min, max), which is what
TimescaleDB's continuous aggregates hold in the other mode; there only ``sensor_latest`` is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import errors
from psycopg.rows import tuple_row

from twin.errors import LifelineError
from twin.store.schema import StorageMode

ReadingRow = tuple[str, datetime, float, int]
"""One reading as stored: (sensor_id, ts, value in the canonical unit, quality code)."""

_STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage_readings (sensor_id text, ts timestamptz, value float8, quality int2)"

_ROLLUP_MERGE = """
    ON CONFLICT (sensor_id, bucket) DO UPDATE SET
        n = {table}.n + excluded.n, sum_value = {table}.sum_value + excluded.sum_value,
        min_value = least({table}.min_value, excluded.min_value),
        max_value = greatest({table}.max_value, excluded.max_value)
    RETURNING 1)"""
"""How a batch's aggregates are merged into a rollup row that already holds earlier readings of its bucket."""

_ROLLUP_CTE = """
, {name} AS (
    INSERT INTO {table} (sensor_id, bucket, n, sum_value, min_value, max_value)
    SELECT sensor_id, date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'), count(*),
           sum(value), min(value), max(value)
    FROM ins GROUP BY 1, 2{merge}"""

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
        rollups = "".join(
            _ROLLUP_CTE.format(name=name, table=table, width=width, merge=_ROLLUP_MERGE.format(table=table))
            for name, table, width in (("r1m", "readings_1m", "1 minute"), ("r1h", "readings_1h", "1 hour"))
        )
    return _MOVE.format(rollups=rollups)


_FOLD_ROLLUP = """
, {name} AS (
    INSERT INTO {table} (sensor_id, bucket, n, sum_value, min_value, max_value)
    SELECT s, to_timestamp(b), n, sm, mn, mx
    FROM unnest(%b::text[], %b::int8[], %b::int8[], %b::float8[], %b::float8[], %b::float8[])
        AS u(s, b, n, sm, mn, mx){merge}"""

_FOLD_LATEST = """
INSERT INTO sensor_latest (sensor_id, ts, value, quality, received_at)
SELECT s, t, v, q, now() FROM unnest(%b::text[], %b::timestamptz[], %b::float8[], %b::int2[]) AS u(s, t, v, q)
ON CONFLICT (sensor_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality,
    received_at = excluded.received_at
WHERE excluded.ts > sensor_latest.ts
"""

# The parameters are sent in binary (%b): for a batch of single readings from many sensors the arrays are as
# long as the batch, and binary arrays cost a third of the CPU of text ones to send.
_ROLLUP_WIDTHS_S = (60, 3600)
"""Widths of the 1-minute and 1-hour rollups, seconds (their buckets are aligned to 2000-01-01 00:00 UTC, which
is aligned to both, so a bucket starts at a multiple of its width in Unix time)."""


def _fold_statement(mode: StorageMode) -> str:
    if mode is not StorageMode.POSTGRESQL:
        return _FOLD_LATEST
    ctes = "".join(
        _FOLD_ROLLUP.format(name=name, table=table, merge=_ROLLUP_MERGE.format(table=table))
        for name, table in (("r1m", "readings_1m"), ("r1h", "readings_1h"))
    )
    return "WITH" + ctes.lstrip().removeprefix(",") + _FOLD_LATEST


class ReadingStore:
    """Write batches of readings over one connection, idempotently (see the module docstring for how).

    Each :meth:`write` is atomic: inside the caller's transaction it is a savepoint, otherwise its own transaction.

    Args:
        conn: the connection to write on.
        mode: the schema's storage mode (rollups are written by this class only in ``postgresql`` mode).
        use_copy: write with binary COPY (fast); False stages with one ``INSERT … unnest`` and always takes the
            slow path (for servers without COPY FROM STDIN: some proxies, the WASM TimescaleDB used in tests).

    Attributes:
        fast_batches, slow_batches: batches written by each path since this store was made.

    Example:
        >>> store = ReadingStore(conn, mode=StorageMode.POSTGRESQL)     # doctest: +SKIP
        >>> with conn.transaction():                                    # doctest: +SKIP
        ...     inserted = store.write([("D-L-001", ts, 0.42, 0)])
    """

    def __init__(self, conn: psycopg.Connection[Any], *, mode: StorageMode, use_copy: bool = True) -> None:
        self._conn = conn
        self._mode = mode
        self._move = _move_statement(mode)
        self._fold = _fold_statement(mode)
        self._staged = False
        self._use_copy = use_copy
        self.fast_batches = 0
        self.slow_batches = 0

    def write(self, rows: Sequence[ReadingRow]) -> int:
        """Store *rows* idempotently and return how many were new (duplicates of stored rows are skipped)."""
        if not rows:
            return 0
        with self._conn.transaction():
            if self._use_copy and self._write_fast(rows):
                self.fast_batches += 1
                return len(rows)
            self.slow_batches += 1
            return self._write_slow(rows)

    def _write_fast(self, rows: Sequence[ReadingRow]) -> bool:
        """COPY *rows* straight into ``readings`` and fold them; False (nothing written) if one was stored already."""
        cur = self._conn.cursor(row_factory=tuple_row)
        try:
            with (
                self._conn.transaction(),
                cur.copy("COPY readings (sensor_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "timestamptz", "float8", "int2"])
                for row in rows:
                    copy.write_row(row)
        except errors.UniqueViolation:
            return False
        cur.execute(self._fold, fold_parameters(rows, rollups=self._mode is StorageMode.POSTGRESQL))
        return True

    def _write_slow(self, rows: Sequence[ReadingRow]) -> int:
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


def fold_parameters(rows: Sequence[ReadingRow], *, rollups: bool) -> list[list[Any]]:
    """Return the parameters of the fold statement for *rows* (all new): per rollup the (sensor, bucket) groups'
    sensor ids, bucket starts (Unix seconds), counts, sums, minima and maxima; then each sensor's newest reading."""
    sensor_ids = [row[0] for row in rows]
    codes_of: dict[str, int] = {}
    codes = np.fromiter(
        (codes_of.setdefault(sid, len(codes_of)) for sid in sensor_ids), dtype=np.int64, count=len(rows)
    )
    names = np.array(list(codes_of), dtype=object)
    seconds = np.fromiter((row[1].timestamp() for row in rows), dtype=np.float64, count=len(rows))
    values = np.fromiter((row[2] for row in rows), dtype=np.float64, count=len(rows))
    params: list[list[Any]] = []
    if rollups:
        for width in _ROLLUP_WIDTHS_S:
            bucket = np.floor(seconds / width).astype(np.int64)
            key = (codes << 32) | (bucket - bucket.min())
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
            sorted_values = values[order]
            group_codes = codes[order][starts]
            counts = np.diff(np.r_[starts, len(rows)])
            params += [
                names[group_codes].tolist(),
                (bucket[order][starts] * width).tolist(),
                counts.tolist(),
                np.add.reduceat(sorted_values, starts).tolist(),
                np.minimum.reduceat(sorted_values, starts).tolist(),
                np.maximum.reduceat(sorted_values, starts).tolist(),
            ]
    # Each sensor's newest reading: the last of its group when sorted by (sensor, time).
    order = np.lexsort((seconds, codes))
    last = order[np.flatnonzero(np.r_[codes[order][1:] != codes[order][:-1], True])]
    newest = [rows[i] for i in last.tolist()]
    params += [[r[0] for r in newest], [r[1] for r in newest], [r[2] for r in newest], [r[3] for r in newest]]
    return params


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
