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
from twin.readings import ReadingBatch, ts_to_us
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
SELECT s, TIMESTAMPTZ 'epoch' + t * INTERVAL '1 microsecond', v, q, now()
FROM unnest(%b::text[], %b::int8[], %b::float8[], %b::int2[]) AS u(s, t, v, q)
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

    def write(self, rows: Sequence[ReadingRow] | ReadingBatch) -> int:
        """Store *rows* idempotently and return how many were new (duplicates of stored rows are skipped).

        *rows* are ``(sensor_id, ts, value, quality)`` tuples or a :class:`~twin.readings.ReadingBatch` (what
        ingest writes: its columns go into the COPY without a Python object per reading).
        """
        if not len(rows):
            return 0
        batch = rows if isinstance(rows, ReadingBatch) else _batch_of_rows(rows)
        with self._conn.transaction():
            if self._use_copy and self._write_fast(batch):
                self.fast_batches += 1
                return len(batch)
            self.slow_batches += 1
            return self._write_slow(batch)

    def _write_fast(self, batch: ReadingBatch) -> bool:
        """COPY *batch* straight into ``readings`` and fold it; False (nothing written) if a row was stored already."""
        cur = self._conn.cursor(row_factory=tuple_row)
        data = copy_data(batch)
        try:
            with (
                self._conn.transaction(),
                cur.copy("COPY readings (sensor_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(data)
        except errors.UniqueViolation:
            return False
        cur.execute(self._fold, fold_parameters(batch, rollups=self._mode is StorageMode.POSTGRESQL))
        return True

    def _write_slow(self, batch: ReadingBatch) -> int:
        cur = self._conn.cursor(row_factory=tuple_row)
        if not self._staged:
            cur.execute(_STAGE + " ON COMMIT DELETE ROWS")
            self._staged = True
        if self._use_copy:
            with cur.copy("COPY stage_readings (sensor_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_data(batch))
        else:
            cur.execute(
                "INSERT INTO stage_readings SELECT s, TIMESTAMPTZ 'epoch' + t * INTERVAL '1 microsecond', v, q"
                " FROM unnest(%b::text[], %b::int8[], %b::float8[], %b::int2[]) AS u(s, t, v, q)",
                [batch.sensor_ids, batch.ts_us.tolist(), batch.values.tolist(), batch.quality.tolist()],
            )
        cur.execute(self._move)
        result = cur.fetchone()
        cur.execute("TRUNCATE stage_readings")
        return int(result[0]) if result else 0

    def forget_connection_state(self) -> None:
        """Call after a reconnect: the temporary staging table must be created again."""
        self._staged = False


def fold_parameters(batch: ReadingBatch, *, rollups: bool) -> list[list[Any]]:
    """Return the parameters of the fold statement for *batch* (all new): per rollup the (sensor, bucket) groups'
    sensor ids, bucket starts (Unix seconds), counts, sums, minima and maxima; then each sensor's newest reading
    (its time in microseconds since the epoch)."""
    names_list, first_codes = batch.groups()
    # Codes in the order of the sensor ids, so the rows are upserted in that order: two writers folding batches at
    # once then lock the rollup and latest rows they share in the same order, and cannot deadlock.
    by_name = sorted(range(len(names_list)), key=names_list.__getitem__)
    rank = np.empty(len(names_list), dtype=np.int64)
    rank[by_name] = np.arange(len(names_list))
    codes = rank[first_codes]
    names = np.array([names_list[i] for i in by_name], dtype=object)
    micros = batch.ts_us
    values = batch.values
    params: list[list[Any]] = []
    if rollups:
        for width in _ROLLUP_WIDTHS_S:
            bucket = micros // (width * 1_000_000)
            key = (codes << 32) | (bucket - bucket.min())
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
            sorted_values = values[order]
            group_codes = codes[order][starts]
            counts = np.diff(np.r_[starts, len(codes)])
            params += [
                names[group_codes].tolist(),
                (bucket[order][starts] * width).tolist(),
                counts.tolist(),
                np.add.reduceat(sorted_values, starts).tolist(),
                np.minimum.reduceat(sorted_values, starts).tolist(),
                np.maximum.reduceat(sorted_values, starts).tolist(),
            ]
    # Each sensor's newest reading: the last of its group when sorted by (sensor, time).
    order = np.lexsort((micros, codes))
    last = order[np.flatnonzero(np.r_[codes[order][1:] != codes[order][:-1], True])]
    params += [
        names[codes[last]].tolist(),
        micros[last].tolist(),
        values[last].tolist(),
        batch.quality[last].tolist(),
    ]
    return params


_PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 00:00 UTC, PostgreSQL's epoch for binary timestamps, in microseconds since the Unix epoch."""
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"


def copy_data(batch: ReadingBatch) -> bytes:
    """Return *batch* as the data of a binary ``COPY … (sensor_id, ts, value, quality)``, built by numpy.

    Each row is 4 fields, each a big-endian length and the value: the sensor id's UTF-8 bytes, the time in
    microseconds since 2000-01-01, the value (float8) and the quality (int2). Rows are grouped by the length of
    their sensor id, so each group is one numpy record array (the order of rows in a COPY does not matter).
    """
    names, codes = batch.groups()
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    row_lengths = lengths[codes]
    parts = [_COPY_HEADER]
    for size in np.unique(lengths).tolist():
        at = np.flatnonzero(row_lengths == size) if len(lengths) > 1 else slice(None)
        ids = np.array(encoded, dtype=f"S{size}")
        rows = np.empty(len(codes) if isinstance(at, slice) else len(at), dtype=_copy_dtype(size))
        rows["fields"] = 4
        rows["sid_len"] = size
        rows["sid"] = ids[codes[at]]
        rows["ts_len"] = 8
        rows["ts"] = batch.ts_us[at] - _PG_EPOCH_US
        rows["value_len"] = 8
        rows["value"] = batch.values[at]
        rows["quality_len"] = 2
        rows["quality"] = batch.quality[at]
        parts.append(rows.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _copy_dtype(id_bytes: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("fields", ">i2"),
            ("sid_len", ">i4"),
            ("sid", f"S{id_bytes}"),
            ("ts_len", ">i4"),
            ("ts", ">i8"),
            ("value_len", ">i4"),
            ("value", ">f8"),
            ("quality_len", ">i4"),
            ("quality", ">i2"),
        ]
    )


def _batch_of_rows(rows: Sequence[ReadingRow]) -> ReadingBatch:
    n = len(rows)
    return ReadingBatch(
        [row[0] for row in rows],
        np.fromiter((ts_to_us(row[1]) for row in rows), np.int64, n),
        np.fromiter((row[2] for row in rows), np.float64, n),
        np.fromiter((row[3] for row in rows), np.int16, n),
    )


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
