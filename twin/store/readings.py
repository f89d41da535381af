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

**Deferred fold** (``defer_fold=True``, what ingest uses): folding each batch upserts about one rollup row per
reading in each rollup and one ``sensor_latest`` row per sensor, and with small batches of single readings from many
sensors (50 ms of a stream) that is ~3 upserts per reading, most of the database's work. Instead the batch's
aggregates per (sensor, minute), with the sensor's newest reading in that minute, are appended to the unindexed
``readings_pending`` as one row of parallel arrays, in the same transaction as the readings (binary arrays built by
numpy; the slow path with ``INSERT … SELECT`` from the rows it inserted), and :meth:`ReadingStore.fold_pending`
folds everything pending at once, about once a second: one upsert per (sensor, minute), (sensor, hour) and sensor
for the whole second. The rollups and latest values are then up to that long behind the readings. The fold takes
what it folds with ``DELETE … RETURNING`` in its own transaction, so each pending row is folded exactly once,
whoever folds: two folds at once (a transaction advisory lock makes one wait for, or skip, the other), or a writer
that crashed after its commit and never folded (the next fold of any writer takes its rows).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import errors
from psycopg.adapt import Dumper
from psycopg.pq import Format
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


_MOVE_PENDING = """
WITH ins AS (
    INSERT INTO readings (sensor_id, ts, value, quality)
    SELECT sensor_id, ts, value, quality FROM stage_readings
    ON CONFLICT (sensor_id, ts) DO NOTHING
    RETURNING sensor_id, (extract(epoch FROM ts) * 1000000)::int8 AS us, value, quality)
, g AS (
    SELECT sensor_id, (us - ((us % 60000000) + 60000000) % 60000000) / 1000000 AS bucket_s, count(*)::int4 AS n,
           sum(value) AS sum_value, min(value) AS min_value, max(value) AS max_value, max(us) AS last_us,
           (array_agg(value ORDER BY us DESC))[1] AS last_value,
           (array_agg(quality ORDER BY us DESC))[1] AS last_quality
    FROM ins GROUP BY 1, 2)
, pending AS (
    INSERT INTO readings_pending
        (sensor_id, bucket_s, n, sum_value, min_value, max_value, last_us, last_value, last_quality)
    SELECT array_agg(sensor_id), array_agg(bucket_s), array_agg(n), array_agg(sum_value), array_agg(min_value),
           array_agg(max_value), array_agg(last_us), array_agg(last_value), array_agg(last_quality)
    FROM g HAVING count(*) > 0
    RETURNING 1)
SELECT count(*) FROM ins
"""
"""The slow path with a deferred fold: the newly inserted rows' aggregates per (sensor, minute) and each one's
newest reading go to ``readings_pending`` as one row of parallel arrays (the minute's start in Unix seconds,
floored also before 1970)."""


def _move_statement(mode: StorageMode, *, defer_fold: bool = False) -> str:
    if defer_fold:
        return _MOVE_PENDING
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


_PENDING_COLUMNS = "sensor_id, bucket_s, n, sum_value, min_value, max_value, last_us, last_value, last_quality"
_COPY_PENDING = f"COPY readings_pending ({_PENDING_COLUMNS}) FROM STDIN (FORMAT BINARY)"

_FOLD_LOCK = "SELECT pg_advisory_xact_lock(hashtext('lifeline-fold:' || current_schema()))"
_FOLD_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('lifeline-fold:' || current_schema()))"
"""Folds of one schema are serialised: two at once would each lock rollup rows the other wants (the DELETE alone
would already give each pending row to one of them)."""

_FOLD_PENDING_ROLLUPS = """
, r1m AS (
    INSERT INTO readings_1m (sensor_id, bucket, n, sum_value, min_value, max_value)
    SELECT sensor_id, to_timestamp(bucket_s), n, sum_value, min_value, max_value
    FROM m ORDER BY sensor_id COLLATE "C", bucket_s{merge_1m}
, r1h AS (
    INSERT INTO readings_1h (sensor_id, bucket, n, sum_value, min_value, max_value)
    SELECT sensor_id, to_timestamp(h), sum(n), sum(sum_value), min(min_value), max(max_value)
    FROM (SELECT sensor_id, bucket_s - ((bucket_s % 3600) + 3600) % 3600 AS h, n, sum_value, min_value, max_value
          FROM m) AS mh
    GROUP BY sensor_id, h ORDER BY sensor_id COLLATE "C", h{merge_1h}"""

_FOLD_PENDING = """
WITH p AS (
    DELETE FROM readings_pending RETURNING {columns})
, d AS (
    SELECT u.* FROM p, unnest({unnest}) AS u({columns}))
, m AS (
    SELECT sensor_id, bucket_s, sum(n) AS n, sum(sum_value) AS sum_value, min(min_value) AS min_value,
           max(max_value) AS max_value, max(last_us) AS last_us
    FROM d GROUP BY sensor_id, bucket_s){rollups}
, newest AS (
    SELECT sensor_id, max(last_us) AS last_us FROM m GROUP BY sensor_id)
, latest AS (
    INSERT INTO sensor_latest (sensor_id, ts, value, quality, received_at)
    SELECT DISTINCT ON (d.sensor_id COLLATE "C") d.sensor_id,
           TIMESTAMPTZ 'epoch' + d.last_us * INTERVAL '1 microsecond', d.last_value, d.last_quality, now()
    FROM d JOIN newest USING (sensor_id, last_us) ORDER BY d.sensor_id COLLATE "C"
    ON CONFLICT (sensor_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality,
        received_at = excluded.received_at
    WHERE excluded.ts > sensor_latest.ts
    RETURNING 1)
SELECT count(*) FROM d
"""
"""The pending rows are grouped once per (sensor, minute) (``m``); the hours and each sensor's newest time come from
those groups, and the newest reading's value from the pending row that holds it (found by a hash join rather than
sorting every pending row). ``DISTINCT ON`` keeps one row per sensor even if two pending rows ever held the same
reading: an upsert that meets its own row twice would fail every fold."""


def _fold_pending_statement(mode: StorageMode) -> str:
    """The fold of everything pending: rows ordered by sensor id as the direct fold's are (code points: the ``C``
    collation, also the cheapest to sort), so that a fold and a writer folding directly lock the rows they share in
    the same order."""
    rollups = ""
    if mode is StorageMode.POSTGRESQL:
        rollups = _FOLD_PENDING_ROLLUPS.format(
            merge_1m=_ROLLUP_MERGE.format(table="readings_1m"), merge_1h=_ROLLUP_MERGE.format(table="readings_1h")
        )
    unnest = ", ".join(f"p.{name}" for name in _PENDING_COLUMNS.split(", "))
    return _FOLD_PENDING.format(columns=_PENDING_COLUMNS, unnest=unnest, rollups=rollups)


def fold_pending(
    conn: psycopg.Connection[Any], *, mode: StorageMode, wait: bool = True, lock_timeout_s: float | None = None
) -> int | None:
    """Fold every committed ``readings_pending`` row into the rollups and ``sensor_latest``; return how many
    (None: *wait* was False and another fold was running, so nothing was done).

    One transaction of its own (a savepoint inside the caller's), so what it folds is deleted in the same commit
    that adds it to the rollups: a failure (the database away) leaves the rows pending for the next fold, nothing
    is lost or counted twice. Rows of transactions not yet committed are left for a later fold.

    Args:
        conn: the connection to fold on.
        mode: the schema's storage mode (in ``timescaledb`` mode only ``sensor_latest`` is written).
        wait: wait for a fold running elsewhere to finish (it may have left rows committed after it began);
            False: return None at once if one is running (it may leave rows committed after it began: fold again
            later).
        lock_timeout_s: give up (``LockNotAvailable``) when a lock (the other fold's, a rollup row's) is not had
            within this many seconds, so a caller that has other work does not wait long; None: the session's.
    """
    with conn.transaction():
        cur = conn.cursor(row_factory=tuple_row)
        if lock_timeout_s is not None:
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, round(lock_timeout_s * 1000))}ms",))
        locked = cur.execute(_FOLD_LOCK if wait else _FOLD_TRY_LOCK).fetchone()
        if not wait and not (locked and locked[0]):
            return None
        row = cur.execute(_fold_pending_statement(mode)).fetchone()
    return int(row[0]) if row else 0


COPY_FROM = 2000
"""Batches of at least this many readings are written by :meth:`ReadingStore.write_alone` with COPY (see there)."""


class ReadingStore:
    """Write batches of readings over one connection, idempotently (see the module docstring for how).

    Each :meth:`write` is atomic: inside the caller's transaction it is a savepoint, otherwise its own transaction.

    Args:
        conn: the connection to write on.
        mode: the schema's storage mode (rollups are written by this class only in ``postgresql`` mode).
        use_copy: write with binary COPY (fast); False stages with one ``INSERT … unnest`` and always takes the
            slow path (for servers without COPY FROM STDIN: some proxies, the WASM TimescaleDB used in tests).
        defer_fold: append each batch's aggregates to ``readings_pending`` instead of folding them into the rollups
            and ``sensor_latest``; someone must call :meth:`fold_pending` (ingest does, about once a second). The
            schema must have ``readings_pending`` (migration 10).
        copy_from: batches of at least this many readings go by COPY in :meth:`write_alone`.

    Attributes:
        fast_batches, slow_batches: batches written by each path since this store was made.

    Example:
        >>> store = ReadingStore(conn, mode=StorageMode.POSTGRESQL)     # doctest: +SKIP
        >>> with conn.transaction():                                    # doctest: +SKIP
        ...     inserted = store.write([("D-L-001", ts, 0.42, 0)])
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        mode: StorageMode,
        use_copy: bool = True,
        defer_fold: bool = False,
        copy_from: int = COPY_FROM,
    ) -> None:
        self._conn = conn
        self._copy_from = copy_from
        self._mode = mode
        self._defer_fold = defer_fold
        conn.adapters.register_dumper(_PackedArray, _PackedArrayDumper)
        self._move = _move_statement(mode, defer_fold=defer_fold)
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

    def write_alone(self, rows: Sequence[ReadingRow] | ReadingBatch) -> int:
        """Store *batch* as :meth:`write` does, in a transaction of its own, with the fewest round trips.

        For a connection in autocommit mode with no transaction open (ingest's database writers): with deferred
        folds the fast path is then one statement, its own transaction, that inserts the readings and their
        pending aggregates from binary arrays built by numpy (:data:`_WRITE_ALONE`). Against BEGIN, two COPYs and
        COMMIT it costs a batch of 200 readings 0.25 ms of client CPU instead of 0.43, and the database ~0.5 µs a
        reading less. From *copy_from* readings on it is those four round trips after all: COPY inserts rows in
        bulk where ``INSERT … SELECT`` inserts them one by one, and at 5,000 readings that saves the database
        more (draining 50-reading messages: 2.1 against 2.4 µs a reading). A reading already stored aborts
        either; the batch then takes the slow path in a new transaction, so the result is the same.
        """
        conn = self._conn
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if not (self._use_copy and self._defer_fold and conn.autocommit and idle):
            return self.write(rows)
        if not len(rows):
            return 0
        batch = rows if isinstance(rows, ReadingBatch) else _batch_of_rows(rows)
        try:
            if len(batch) >= self._copy_from:
                cur = conn.cursor(row_factory=tuple_row)
                with conn.transaction():
                    with cur.copy("COPY readings (sensor_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.write(copy_data(batch))
                    with cur.copy(_COPY_PENDING) as copy:
                        copy.write(pending_copy_data(batch))
            else:
                conn.execute(_WRITE_ALONE, [*reading_arrays(batch), *map(_PackedArray, pending_arrays(batch))])
        except errors.UniqueViolation:
            with conn.transaction():
                self.slow_batches += 1
                return self._write_slow(batch)
        self.fast_batches += 1
        return len(batch)

    @property
    def defer_fold(self) -> bool:
        """Whether batches' aggregates wait in ``readings_pending`` for :meth:`fold_pending`."""
        return self._defer_fold

    def fold_pending(self, *, wait: bool = True, lock_timeout_s: float | None = None) -> int | None:
        """Fold what is pending into the rollups and ``sensor_latest`` (see :func:`fold_pending`); return how
        many pending rows were folded (None: not waiting, and another fold was running)."""
        return fold_pending(self._conn, mode=self._mode, wait=wait, lock_timeout_s=lock_timeout_s)

    def _write_fast(self, batch: ReadingBatch) -> bool:
        """COPY *batch* straight into ``readings`` and fold it (or append its aggregates to ``readings_pending``);
        False (nothing written) if a row was stored already."""
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
        if self._defer_fold:
            with cur.copy(_COPY_PENDING) as copy:
                copy.write(pending_copy_data(batch))
        else:
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
    microseconds since 2000-01-01, the value (float8) and the quality (int2).
    """
    names, codes = batch.groups()
    return _binary_copy(
        names,
        codes,
        [
            ("ts", ">i8", batch.ts_us - _PG_EPOCH_US),
            ("value", ">f8", batch.values),
            ("quality", ">i2", batch.quality),
        ],
    )


def pending_copy_data(batch: ReadingBatch) -> bytes:
    """Return the aggregates of *batch* (all new readings) as the data of a binary ``COPY readings_pending``: one
    row of the arrays of :func:`pending_arrays`."""
    fields = pending_arrays(batch)
    parts = [_COPY_HEADER, _FIELD_COUNT.pack(len(fields))]
    for field in fields:
        parts.append(_FIELD_LENGTH.pack(len(field)))
        parts.append(field)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def pending_arrays(batch: ReadingBatch) -> list[bytes]:
    """Return the aggregates of *batch* (all new readings) as the binary arrays of a ``readings_pending`` row.

    One element per sensor and minute: the sensor id, the minute's start (Unix seconds), the count, sum, minimum
    and maximum of the values, and the newest reading's time (microseconds since the Unix epoch), value and
    quality. Elements are ordered by the length of their sensor id (so each length is one numpy record array in
    the text array); the fold does not care about the order.
    """
    names, codes = batch.groups()
    micros = batch.ts_us
    minute = micros // 60_000_000
    key = (codes << 32) | (minute - minute.min())
    order = np.lexsort((micros, key))  # by (sensor, minute), then time: each group's last row is its newest
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    newest = order[np.r_[starts[1:], len(order)] - 1]
    sorted_values = batch.values[order]
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    group_codes = codes[order][starts]
    by_length = np.argsort(lengths[group_codes], kind="stable")
    group_codes = group_codes[by_length]
    columns = [
        (">i8", minute[newest] * 60),
        (">i4", np.diff(np.r_[starts, len(order)])),
        (">f8", np.add.reduceat(sorted_values, starts)),
        (">f8", np.minimum.reduceat(sorted_values, starts)),
        (">f8", np.maximum.reduceat(sorted_values, starts)),
        (">i8", micros[newest]),
        (">f8", batch.values[newest]),
        (">i2", batch.quality[newest]),
    ]
    fields = [_text_array(encoded, lengths, group_codes)]
    fields.extend(_binary_array(kind, column[by_length]) for kind, column in columns)
    return fields


_FIELD_COUNT = struct.Struct(">h")
_FIELD_LENGTH = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiIii")
"""A one-dimensional array without NULLs in binary: dimensions (1), has-nulls flag (0), element type, length,
lower bound (1)."""
_ELEMENT_TYPES = {">i2": 21, ">i4": 23, ">i8": 20, ">f8": 701}
_TEXT_TYPE = 25
_TIMESTAMPTZ_TYPE = 1184


def _binary_array(kind: str, values: npt.NDArray[Any], *, element_type: int | None = None) -> bytes:
    """Return *values* as a binary one-dimensional array of the PostgreSQL type of numpy type *kind* (or of
    *element_type*, an OID, whose binary form is that of *kind*)."""
    elements = np.empty(len(values), dtype=[("len", ">i4"), ("value", kind)])
    elements["len"] = np.dtype(kind).itemsize
    elements["value"] = values
    oid = _ELEMENT_TYPES[kind] if element_type is None else element_type
    return _ARRAY_HEADER.pack(1, 0, oid, len(values), 1) + elements.tobytes()


def _text_array(encoded: list[bytes], lengths: npt.NDArray[np.int64], codes: npt.NDArray[np.int64]) -> bytes:
    """Return ``encoded[codes[i]]`` as a binary ``text[]``; *codes* must be ordered by ``lengths[codes]``."""
    parts = [_ARRAY_HEADER.pack(1, 0, _TEXT_TYPE, len(codes), 1)]
    row_lengths = lengths[codes]
    bounds = np.flatnonzero(np.r_[True, row_lengths[1:] != row_lengths[:-1], True])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        size = int(row_lengths[lo])
        ids = np.array(encoded, dtype=f"S{size}")  # longer ids cut short: only ids of this length are taken
        elements = np.empty(hi - lo, dtype=[("len", ">i4"), ("value", f"S{size}")])
        elements["len"] = size
        elements["value"] = ids[codes[lo:hi]]
        parts.append(elements.tobytes())
    return b"".join(parts)


class _PackedArray:
    """A one-dimensional array already in PostgreSQL's binary form, sent as a binary parameter as it is (the
    statement casts it to its type)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _PackedArrayDumper(Dumper):
    format = Format.BINARY
    oid = 0  # unknown: the server takes the type from the statement's cast

    def dump(self, obj: Any) -> bytes:
        return obj.data  # type: ignore[no-any-return]


_WRITE_ALONE = """
WITH r AS (
    INSERT INTO readings (sensor_id, ts, value, quality)
    SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::float8[], %b::int2[]))
INSERT INTO readings_pending (sensor_id, bucket_s, n, sum_value, min_value, max_value, last_us, last_value,
                              last_quality)
VALUES (%b::text[], %b::int8[], %b::int4[], %b::float8[], %b::float8[], %b::float8[], %b::int8[], %b::float8[],
        %b::int2[])
"""
"""A batch and its pending aggregates in one statement (see :meth:`ReadingStore.write_alone`)."""


def reading_arrays(batch: ReadingBatch) -> list[_PackedArray]:
    """Return *batch*'s columns as the binary arrays of :data:`_WRITE_ALONE`: sensor ids, times (``timestamptz``:
    microseconds since 2000-01-01), values, qualities, in the order of the sensor ids' lengths."""
    names, codes = batch.groups()
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    order = np.argsort(lengths[codes], kind="stable")
    times = _binary_array(">i8", batch.ts_us[order] - _PG_EPOCH_US, element_type=_TIMESTAMPTZ_TYPE)
    return [
        _PackedArray(_text_array(encoded, lengths, codes[order])),
        _PackedArray(times),
        _PackedArray(_binary_array(">f8", batch.values[order])),
        _PackedArray(_binary_array(">i2", batch.quality[order])),
    ]


def _binary_copy(names: list[str], codes: npt.NDArray[np.int64], fields: list[tuple[str, str, Any]]) -> bytes:
    """Return rows as the data of a binary COPY: the sensor id (``names[codes[i]]``), then *fields* (name,
    big-endian numpy type, column).

    Each field is a big-endian length and the value. Rows are grouped by the length of their sensor id, so each
    group is one numpy record array (the order of rows in a COPY does not matter).
    """
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    row_lengths = lengths[codes]
    parts = [_COPY_HEADER]
    for size in np.unique(lengths).tolist():
        at = np.flatnonzero(row_lengths == size) if len(lengths) > 1 else slice(None)
        ids = np.array(encoded, dtype=f"S{size}")
        rows = np.empty(len(codes) if isinstance(at, slice) else len(at), dtype=_copy_dtype(size, fields))
        rows["fields"] = 1 + len(fields)
        rows["sid_len"] = size
        rows["sid"] = ids[codes[at]]
        for name, kind, column in fields:
            rows[f"{name}_len"] = np.dtype(kind).itemsize
            rows[name] = column[at]
        parts.append(rows.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _copy_dtype(id_bytes: int, fields: list[tuple[str, str, Any]]) -> np.dtype[Any]:
    return np.dtype(
        [
            ("fields", ">i2"),
            ("sid_len", ">i4"),
            ("sid", f"S{id_bytes}"),
            *[part for name, kind, _column in fields for part in ((f"{name}_len", ">i4"), (name, kind))],
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
