"""The TimescaleDB path, proven on a real TimescaleDB engine, and the same queries on plain PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from twin.demo import demo_sensors
from twin.store.readings import ReadingStore, query_series
from twin.store.retention import prune_readings, raw_deleted_before
from twin.store.schema import StorageMode, migrate
from twin.store.sensors import upsert_sensors
from twin.store.status import store_status

from .conftest import connect_timescaledb

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
# Two hours of one reading every 20 s for two sensors, with a duplicate and an out-of-order batch.
ROWS = [
    (sid, T0 + timedelta(seconds=20 * i), float(i % 50) + (0.5 if sid == "D-L-002" else 0.0), 0)
    for sid in ("D-L-001", "D-L-002")
    for i in range(360)
]


def _load(conn: psycopg.Connection[Any], mode: StorageMode, *, defer_fold: bool = False) -> int:
    store = ReadingStore(conn, mode=mode, use_copy=mode is StorageMode.POSTGRESQL, defer_fold=defer_fold)
    inserted = 0
    late, early = ROWS[:100], ROWS[100:]
    for chunk in (early, late, ROWS[:10]):  # out of order, then a redelivered chunk
        with conn.transaction():
            inserted += store.write(chunk)
    if defer_fold:
        # One pending row per sensor and minute of each chunk that stored anything (the redelivered one did not).
        minutes = [{(sid, ts.replace(second=0)) for sid, ts, _v, _q in chunk} for chunk in (early, late)]
        assert store.fold_pending() == sum(map(len, minutes))
    return inserted


def _expected(sensor_id: str, step: timedelta) -> list[tuple[datetime, float, int]]:
    buckets: dict[datetime, list[float]] = {}
    for sid, ts, value, _q in ROWS:
        if sid == sensor_id:
            start = T0 + ((ts - T0) // step) * step
            buckets.setdefault(start, []).append(value)
    return [(b, sum(v) / len(v), len(v)) for b, v in sorted(buckets.items())]


def _check_queries(conn: psycopg.Connection[Any]) -> None:
    end = T0 + timedelta(hours=2)
    for step in (timedelta(minutes=5), timedelta(hours=1), timedelta(seconds=40)):
        points = query_series(conn, sensor_id="D-L-002", start=T0, end=end, step=step)
        assert [(p.ts, p.n) for p in points] == [(b, n) for b, _v, n in _expected("D-L-002", step)], step
        assert [p.value for p in points] == pytest.approx([v for _b, v, _n in _expected("D-L-002", step)])
    raw = query_series(conn, sensor_id="D-L-001", start=T0, end=T0 + timedelta(minutes=1))
    assert [(p.ts, p.value) for p in raw] == [(T0 + timedelta(seconds=20 * i), float(i)) for i in range(3)]
    latest = conn.execute("SELECT sensor_id, ts FROM sensor_latest ORDER BY sensor_id").fetchall()
    assert [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in latest] == [
        ("D-L-001", ROWS[359][1]),
        ("D-L-002", ROWS[-1][1]),
    ]


def test_timescaledb_schema_runs_on_real_timescaledb(timescaledb_port: int, caplog: pytest.LogCaptureFixture) -> None:
    with connect_timescaledb(timescaledb_port) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        conn.execute("DROP SCHEMA IF EXISTS tsdb CASCADE")
        with caplog.at_level(logging.INFO, logger="twin.store.schema"):
            mode = migrate(conn, schema="tsdb", mode="auto")
        assert mode is StorageMode.TIMESCALEDB
        assert "storage mode: timescaledb" in caplog.text
        conn.execute("SET search_path TO tsdb, public")
        upsert_sensors(conn, demo_sensors())
        hyper = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'tsdb'"
        ).fetchall()
        assert hyper == [{"hypertable_name": "readings", "compression_enabled": True}]
        caggs = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = 'tsdb' ORDER BY view_name"
        ).fetchall()
        assert caggs == [
            {"view_name": "readings_1h", "materialized_only": False},
            {"view_name": "readings_1m", "materialized_only": False},
        ]
        jobs = conn.execute(
            "SELECT job_id, proc_name FROM timescaledb_information.jobs WHERE hypertable_schema IN"
            " ('tsdb', '_timescaledb_internal') ORDER BY job_id"
        ).fetchall()
        assert sorted(j["proc_name"] for j in jobs) == [
            "policy_compression",
            "policy_refresh_continuous_aggregate",
            "policy_refresh_continuous_aggregate",
            "policy_retention",
        ]

        assert _load(conn, StorageMode.TIMESCALEDB) == len(ROWS)
        # The application's pruning is for plain PostgreSQL: here the retention policy above does it.
        pruned = prune_readings(conn, schema="tsdb", keep=timedelta(days=1))  # type: ignore[arg-type]
        assert pruned.skipped is not None and "TimescaleDB" in pruned.skipped and pruned.deleted == 0
        # What the health check is told is gone: now less the policy's 800 days.
        gone = raw_deleted_before(conn, schema="tsdb")  # type: ignore[arg-type]
        assert gone is not None and abs((datetime.now(UTC) - gone) - timedelta(days=800)) < timedelta(hours=1)
        # `lifeline db status` measures the hypertable and the aggregates with TimescaleDB's own functions.
        status = store_status(conn, schema="tsdb")  # type: ignore[arg-type]
        sizes = {t.name: t for t in status.tables}
        assert status.mode is StorageMode.TIMESCALEDB and status.pending == ()
        assert {"readings", "readings_1m", "readings_1h"} <= sizes.keys() and sizes["readings"].bytes > 0
        assert status.oldest_raw == ROWS[0][1] and status.raw_deleted_before is not None
        assert abs(status.raw_deleted_before - gone) < timedelta(minutes=1)  # now() less 800 days, a moment later
        # Real-time aggregation answers before any refresh; then run every policy job as the scheduler would.
        _check_queries(conn)
        for job in jobs:
            conn.execute("CALL run_job(%s)", (job["job_id"],))
        materialized = conn.execute("SELECT count(*) AS n FROM readings_1m").fetchone()
        assert materialized is not None and materialized["n"] == 2 * 120
        _check_queries(conn)
        again = ReadingStore(conn, mode=StorageMode.TIMESCALEDB, use_copy=False)
        with conn.transaction():
            assert again.write(ROWS[:5]) == 0
        conn.execute("DROP SCHEMA tsdb CASCADE")


def test_deferred_fold_on_real_timescaledb(timescaledb_port: int) -> None:
    """Ingest's deferred fold (the slow path, as this engine has no COPY FROM STDIN): the pending aggregates of a
    hypertable's readings fold into ``sensor_latest`` only; the continuous aggregates answer the rollup queries."""
    with connect_timescaledb(timescaledb_port) as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        conn.execute("DROP SCHEMA IF EXISTS tsdb_defer CASCADE")
        assert migrate(conn, schema="tsdb_defer", mode="auto") is StorageMode.TIMESCALEDB
        conn.execute("SET search_path TO tsdb_defer, public")
        assert _load(conn, StorageMode.TIMESCALEDB, defer_fold=True) == len(ROWS)
        assert conn.execute("SELECT count(*) AS n FROM readings_pending").fetchone() == {"n": 0}
        _check_queries(conn)
        conn.execute("DROP SCHEMA tsdb_defer CASCADE")


def test_plain_postgresql_deferred_fold_gives_the_same_answers(db: Any) -> None:
    assert _load(db, StorageMode.POSTGRESQL, defer_fold=True) == len(ROWS)
    _check_queries(db)
    rollup = db.execute("SELECT sum(n) AS n FROM readings_1h").fetchone()
    assert rollup["n"] == len(ROWS)


def test_plain_postgresql_gives_the_same_answers(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert _load(db, StorageMode.POSTGRESQL) == len(ROWS)
    _check_queries(db)
    rollup = db.execute("SELECT sum(n) AS n FROM readings_1h").fetchone()
    assert rollup["n"] == len(ROWS)  # the redelivered chunk was not counted twice
