"""The deferred fold: batches' aggregates wait in ``readings_pending`` and a fold moves them into the rollups and
``sensor_latest``, exactly once, whoever folds and whenever.

Values are multiples of 1/1024 of modest size, so every sum is exact in float64 whatever the order of the additions:
the rollups written through the pending table are compared for equality with those folded batch by batch, not
within a tolerance.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.readings import ts_to_us
from twin.store.db import DictConnection, connect
from twin.store.readings import COPY_FROM, ReadingRow, ReadingStore, fold_pending
from twin.store.schema import StorageMode, drop_schema, migrate

from .conftest import wait_for

T0 = datetime(2026, 11, 25, 7, 57, 50, tzinfo=UTC)
"""Just before a minute edge, two minutes and ten seconds before an hour edge."""
SENSORS = ["D-L-001", "W-P-001", "G-M-001", "R-001", "W-F-002", "D-L-0003-long-id"]


@pytest.fixture
def other_schema(pg_url: str) -> Iterator[str]:
    """A second freshly migrated schema, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:10]
    with connect(pg_url, schema=name, autocommit=True) as conn:
        migrate(conn, schema=name)
    yield name
    with connect(pg_url, schema=name, autocommit=True) as conn:
        drop_schema(conn, schema=name)


def _value(rng: random.Random) -> float:
    return rng.randint(-8192, 8192) / 1024


def _random_batches(seed: int, count: int = 60) -> list[list[ReadingRow]]:
    """Batches over ~2.5 hours that move forward, jump back (out of order), repeat readings already written
    (redelivery: the slow path) or hold one reading twice, and a sensor's older reading after its newer ones."""
    rng = random.Random(seed)
    batches: list[list[ReadingRow]] = []
    written: list[ReadingRow] = []
    for k in range(count):
        start = T0 + timedelta(seconds=150 * k)
        if k and rng.random() < 0.25:
            start = T0 + timedelta(seconds=rng.randint(0, 150 * k))  # late: buckets already folded
        batch: list[ReadingRow] = [
            (
                rng.choice(SENSORS),
                start + timedelta(microseconds=rng.randint(0, 200 * 10**6)),
                _value(rng),
                rng.choice([0, 0, 0, 1, 2]),
            )
            for _ in range(rng.randint(1, 150))
        ]
        if k % 6 == 5:
            batch += rng.sample(written, min(15, len(written)))
        elif k % 9 == 4:
            batch.append(batch[0])
        elif k % 10 == 7:
            batch = [(SENSORS[0], T0 + timedelta(seconds=rng.randint(0, 60)), _value(rng), 0)]
        batches.append(batch)
        written += batch
    return batches


def _table(db: DictConnection, query: str, *params: object) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in db.execute(query, params or None).fetchall()]


def _contents(db: DictConnection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "readings": _table(db, "SELECT sensor_id, ts, value, quality FROM readings ORDER BY 1, 2"),
        "readings_1m": _table(
            db, "SELECT sensor_id, bucket, n, sum_value, min_value, max_value FROM readings_1m ORDER BY 1, 2"
        ),
        "readings_1h": _table(
            db, "SELECT sensor_id, bucket, n, sum_value, min_value, max_value FROM readings_1h ORDER BY 1, 2"
        ),
        "sensor_latest": _table(db, "SELECT sensor_id, ts, value, quality FROM sensor_latest ORDER BY 1"),
    }


def _pending(db: DictConnection) -> int:
    """How many aggregates wait (each batch's row holds one per (sensor, minute) of the batch)."""
    row = db.execute("SELECT coalesce(sum(cardinality(sensor_id)), 0) AS n FROM readings_pending").fetchone()
    assert row is not None
    return int(row["n"])


def _assert_folded_from_readings(db: DictConnection, *, rollups: bool = True) -> None:
    """The rollups equal aggregates computed with SQL from ``readings`` (exactly: the sums are exact), and
    ``sensor_latest`` holds each sensor's newest reading; nothing is pending."""
    assert _pending(db) == 0
    for table, width in (("readings_1m", "1 minute"), ("readings_1h", "1 hour")):
        truth = _table(
            db,
            f"SELECT sensor_id, date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,"  # noqa: S608
            " count(*), sum(value), min(value), max(value) FROM readings GROUP BY 1, 2 ORDER BY 1, 2",
        )
        stored = _table(
            db,
            f"SELECT sensor_id, bucket, n, sum_value, min_value, max_value FROM {table} ORDER BY 1, 2",  # noqa: S608
        )
        assert stored == (truth if rollups else []), table
    newest = _table(
        db,
        "SELECT DISTINCT ON (sensor_id) sensor_id, ts, value, quality FROM readings ORDER BY sensor_id, ts DESC",
    )
    assert _table(db, "SELECT sensor_id, ts, value, quality FROM sensor_latest ORDER BY 1") == newest


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("mode", "use_copy"),
    [
        (StorageMode.POSTGRESQL, True),
        (StorageMode.POSTGRESQL, False),
        (StorageMode.TIMESCALEDB, True),
        (StorageMode.TIMESCALEDB, False),
    ],
)
@pytest.mark.parametrize("alone", [False, True, "copy"])
def test_deferred_write_and_fold_give_what_the_direct_fold_gives(
    pg_url: str, schema: str, other_schema: str, seed: int, mode: StorageMode, use_copy: bool, alone: bool | str
) -> None:
    """Same batches into two schemas: folded batch by batch in one, through ``readings_pending`` with folds at
    random moments in the other, by :meth:`ReadingStore.write` in a transaction or by
    :meth:`ReadingStore.write_alone` (in one statement, or with COPY as it writes large batches). (In
    ``timescaledb`` mode the store writes only ``sensor_latest``, its rollups being continuous aggregates; here
    both schemas are plain tables, so the rollups stay empty in both.)"""
    rng = random.Random(seed * 101)
    with (
        connect(pg_url, schema=schema, autocommit=True) as direct_db,
        connect(pg_url, schema=other_schema, autocommit=True) as deferred_db,
    ):
        direct = ReadingStore(direct_db, mode=mode, use_copy=use_copy)
        copy_from = 1 if alone == "copy" else COPY_FROM
        deferred = ReadingStore(deferred_db, mode=mode, use_copy=use_copy, defer_fold=True, copy_from=copy_from)
        folded = most_pending = 0
        for batch in _random_batches(seed):
            with direct_db.transaction():
                inserted = direct.write(batch)
            if alone:
                # As ingest's database writers store a batch: a transaction of its own, no savepoints.
                assert deferred.write_alone(batch) == inserted
            else:
                with deferred_db.transaction():
                    assert deferred.write(batch) == inserted
            most_pending = max(most_pending, _pending(deferred_db))
            if rng.random() < 0.3:
                folded += deferred.fold_pending() or 0
        folded += deferred.fold_pending() or 0
        assert most_pending > 1
        assert folded > 0 and _pending(deferred_db) == 0
        if use_copy:
            assert deferred.fast_batches >= 30 and deferred.slow_batches >= 10
        assert _contents(deferred_db) == _contents(direct_db)
        _assert_folded_from_readings(deferred_db, rollups=mode is StorageMode.POSTGRESQL)
        assert deferred.fold_pending() == 0


def _pending_groups(batch: list[ReadingRow]) -> int:
    """How many ``readings_pending`` rows a batch of new readings adds: one per sensor and minute."""
    return len({(sensor, ts_to_us(ts) // 60_000_000) for sensor, ts, _v, _q in batch})


def test_concurrent_folds_fold_every_pending_row_exactly_once(pg_url: str, schema: str) -> None:
    """One connection writes deferred batches while two others fold as fast as they can (waiting for each other
    or skipping when the other is folding): the rows they fold add up to the rows written, and the rollups equal
    the readings'."""
    rng = random.Random(7)
    sensors = [f"S-{k:04d}" for k in range(300)]
    batches: list[list[ReadingRow]] = []
    for k in range(150):
        at = T0 + timedelta(seconds=2 * k)  # five minutes, across the hour edge
        chosen = rng.sample(sensors, 200)
        batches.append([(s, at + timedelta(microseconds=rng.randint(0, 1_999_999)), _value(rng), 0) for s in chosen])
    expected_pending = sum(_pending_groups(batch) for batch in batches)
    writing = threading.Event()
    writing.set()
    folded = [0, 0]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with connect(pg_url, schema=schema, autocommit=True) as conn:
                store = ReadingStore(conn, mode=StorageMode.POSTGRESQL, defer_fold=True)
                for batch in batches:
                    with conn.transaction():
                        assert store.write(batch) == len(batch)
                assert store.fast_batches == len(batches)
        except BaseException as exc:
            errors.append(exc)
        finally:
            writing.clear()

    def fold(k: int) -> None:
        try:
            with connect(pg_url, schema=schema, autocommit=True) as conn:
                n = 0
                while writing.is_set():
                    n += 1
                    folded[k] += fold_pending(conn, mode=StorageMode.POSTGRESQL, wait=n % 2 == 0) or 0
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write),
        threading.Thread(target=fold, args=(0,)),
        threading.Thread(target=fold, args=(1,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    with connect(pg_url, schema=schema, autocommit=True) as db:
        last = fold_pending(db, mode=StorageMode.POSTGRESQL)
        assert last is not None
        assert folded[0] > 0 and folded[1] > 0, folded  # both folded, at the same time as the writes
        assert folded[0] + folded[1] + last == expected_pending
        row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
        assert row == {"n": sum(len(b) for b in batches)}
        _assert_folded_from_readings(db)


_CRASHING_WRITER = textwrap.dedent(
    """
    import random, sys
    from datetime import UTC, datetime, timedelta
    from twin.store.db import connect
    from twin.store.readings import ReadingStore
    from twin.store.schema import StorageMode

    url, schema = sys.argv[1], sys.argv[2]
    rng = random.Random(5)
    t0 = datetime(2026, 11, 25, 7, 59, 0, tzinfo=UTC)
    with connect(url, schema=schema, autocommit=True) as conn:
        store = ReadingStore(conn, mode=StorageMode.POSTGRESQL, defer_fold=True)
        for k in range(100_000):
            at = t0 + timedelta(seconds=k)
            batch = [(f"D-L-{s:03d}", at + timedelta(microseconds=s), rng.randint(-4096, 4096) / 1024, 0)
                     for s in range(50)]
            with conn.transaction():
                store.write(batch)
            print("committed", k, flush=True)
    """
)


def test_rows_a_crashed_writer_left_pending_are_folded_by_the_next_ingest_at_start(
    pg_url: str, schema: str, start_ingest: Callable[..., Any], db: DictConnection
) -> None:
    """A connection closed without folding, then a process SIGKILLed while writing (after commits, before any
    fold; maybe inside a transaction): the next ingest folds what they committed as it starts."""
    with connect(pg_url, schema=schema, autocommit=True) as conn:
        store = ReadingStore(conn, mode=StorageMode.POSTGRESQL, defer_fold=True)
        for batch in _random_batches(9, count=20):
            with conn.transaction():
                store.write(batch)
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, pg_url, schema], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        commits = 0
        while commits < 30:
            line = proc.stdout.readline()
            assert line, "the writer ended before 30 commits"
            commits += line.startswith("committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert _pending(db) > 0
    assert db.execute("SELECT count(*) AS n FROM readings_1m").fetchone() == {"n": 0}
    start_ingest(fold_interval_s=3600.0)  # the periodic fold never comes: only the one at start
    _assert_folded_from_readings(db)


def _publish(broker: MqttConfig, prefix: str, readings: list[tuple[str, str, datetime, float]]) -> None:
    with Publisher(broker, client_id=f"pub-{uuid.uuid4().hex[:8]}") as pub:
        for network, sensor, ts, value in readings:
            pub.publish(
                f"{prefix}/{network}/{sensor}", orjson.dumps({"ts": ts.isoformat(), "value": value, "unit": "m"})
            )


def _stored(db: DictConnection) -> int:
    row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert row is not None
    return int(row["n"])


def _quiet_readings(n: int) -> list[tuple[str, str, datetime, float]]:
    """*n* drainage levels per sensor, well below every limit (no alert), the newest now."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        ("drainage", sensor, now - timedelta(seconds=n - k), 0.25 + k / 1024)
        for k in range(n)
        for sensor in ("D-L-001", "D-L-002", "D-L-003")
    ]


def test_ingest_folds_when_idle_within_its_interval(
    start_ingest: Callable[..., Any], broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    svc = start_ingest(fold_interval_s=0.5)
    readings = _quiet_readings(40)
    _publish(broker, prefix, readings)
    wait_for(lambda: _stored(db) == len(readings), what="the readings stored")
    stored_at = time.monotonic()
    newest = max(ts for _n, _s, ts, _v in readings)
    wait_for(
        lambda: _table(db, "SELECT count(*) FROM sensor_latest WHERE ts = %s", newest) == [(3,)],
        timeout=5,
        what="the newest readings in sensor_latest",
    )
    assert time.monotonic() - stored_at < 3.0
    wait_for(lambda: _pending(db) == 0, timeout=5, what="nothing pending")
    _assert_folded_from_readings(db)
    assert svc.stats.pending_folded > 0 and svc.stats.last_fold is not None


def test_ingest_folds_what_is_pending_when_it_stops(
    start_ingest: Callable[..., Any], broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    svc = start_ingest(fold_interval_s=3600.0)
    readings = _quiet_readings(20)
    _publish(broker, prefix, readings)
    wait_for(lambda: _stored(db) == len(readings), what="the readings stored")
    assert _pending(db) > 0
    assert db.execute("SELECT count(*) AS n FROM readings_1m").fetchone() == {"n": 0}
    svc.stop()
    _assert_folded_from_readings(db)


def test_a_fold_that_cannot_have_its_locks_leaves_the_readings_flowing_and_catches_up(
    pg_url: str, schema: str, start_ingest: Callable[..., Any], broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    """Another session holds ``sensor_latest`` locked: each fold waits out its lock timeout and rolls back (its rows
    stay pending), the batches go on being stored meanwhile, and once the lock is gone a fold takes everything."""
    svc = start_ingest(fold_interval_s=0.2)
    first = _quiet_readings(10)
    _publish(broker, prefix, first)
    wait_for(lambda: _stored(db) == len(first), what="the first readings stored")
    wait_for(lambda: _pending(db) == 0, timeout=5, what="the first readings folded")
    with connect(pg_url, schema=schema) as locker:
        locker.execute("LOCK TABLE sensor_latest IN EXCLUSIVE MODE")
        more = [
            (network, sensor, ts - timedelta(minutes=10), value + 0.5)
            for network, sensor, ts, value in _quiet_readings(60)
        ]
        _publish(broker, prefix, more)
        wait_for(lambda: _stored(db) == len(first) + len(more), timeout=20, what="the readings stored while locked")
        folded_before = svc.stats.pending_folded
        time.sleep(1.0)  # a fold or two waits for the lock and gives up
        assert _pending(db) > 0 and svc.stats.pending_folded == folded_before
        locker.rollback()
    wait_for(lambda: _pending(db) == 0, timeout=60, what="the pending rows folded once the lock is gone")
    _assert_folded_from_readings(db)


def test_rows_pending_in_the_old_layout_are_carried_over_by_migration_11(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema at migration 10 (a row per sensor and minute) with aggregates pending when it is upgraded: the
    migration packs them into one row of arrays, and the fold then gives the rollups of every stored reading."""
    from twin.store import schema as schema_module

    name = "t_" + uuid.uuid4().hex[:10]
    rows = [row for batch in _random_batches(seed=7, count=20) for row in batch]
    with connect(pg_url, schema=name, autocommit=True) as db:
        try:
            monkeypatch.setattr(schema_module, "MIGRATIONS", tuple(m for m in schema_module.MIGRATIONS if m[0] <= 10))
            migrate(db, schema=name, mode="postgresql")
            store = ReadingStore(db, mode=StorageMode.POSTGRESQL, use_copy=False, defer_fold=True)
            # The version-10 slow path: newly inserted readings and their old-layout pending rows.
            db.execute("CREATE TEMP TABLE stage_readings (sensor_id text, ts timestamptz, value float8, quality int2)")
            with db.cursor() as cur:
                cur.executemany("INSERT INTO stage_readings VALUES (%s, %s, %s, %s)", rows)
            db.execute(
                """
                WITH ins AS (
                    INSERT INTO readings (sensor_id, ts, value, quality)
                    SELECT sensor_id, ts, value, quality FROM stage_readings
                    ON CONFLICT (sensor_id, ts) DO NOTHING
                    RETURNING sensor_id, (extract(epoch FROM ts) * 1000000)::int8 AS us, value, quality)
                INSERT INTO readings_pending
                    (sensor_id, bucket_s, n, sum_value, min_value, max_value, last_us, last_value, last_quality)
                SELECT sensor_id, (us - ((us % 60000000) + 60000000) % 60000000) / 1000000, count(*), sum(value),
                       min(value), max(value), max(us), (array_agg(value ORDER BY us DESC))[1],
                       (array_agg(quality ORDER BY us DESC))[1]
                FROM ins GROUP BY 1, 2"""
            )
            old_rows = db.execute("SELECT count(*) AS n FROM readings_pending").fetchone()
            assert old_rows is not None and old_rows["n"] > 20
            monkeypatch.undo()
            migrate(db, schema=name)
            assert _table(db, "SELECT count(*) FROM readings_pending") == [(1,)]
            assert _pending(db) == old_rows["n"]
            assert store.fold_pending() == old_rows["n"]
            _assert_folded_from_readings(db)
        finally:
            drop_schema(db, schema=name)
