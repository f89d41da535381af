"""Raw-reading retention on plain PostgreSQL: old raw readings go, the rest and every rollup stay.

Real PostgreSQL (the test schema is in plain mode). Ten days of 10-minute readings of four sensors are stored
through the reading store (which keeps the rollups); pruning to three days must delete exactly the readings before
the cutoff, in slices, leave every later reading and the 1-minute and 1-hour rollups and latest values as they
were, resume after a stop, step aside for a pruner that holds the lock, and run from ingest and the command line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

import ingest.retention
from ingest.retention import RetentionThread
from ingest.service import IngestService
from lifeline.cli import cli
from twin.errors import SchemaError
from twin.store.db import DictConnection, connect
from twin.store.readings import ReadingRow, ReadingStore
from twin.store.retention import prune_readings, raw_deleted_before
from twin.store.schema import StorageMode, current_mode
from twin.store.status import store_status

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SENSORS = ["D-L-001", "W-P-001", "G-M-001", "R-001"]


def _fill(db: DictConnection, end: datetime = NOW, days: int = 10) -> list[ReadingRow]:
    """Store *days* of readings every 10 minutes up to *end*, in time order as ingest would."""
    schema = db.execute("SELECT current_schema() AS s").fetchone()["s"]  # type: ignore[index]
    mode = current_mode(db, schema=schema)
    assert mode is StorageMode.POSTGRESQL
    store = ReadingStore(db, mode=mode)
    start = end - timedelta(days=days)
    rows: list[ReadingRow] = []
    for k in range(days * 144):
        ts = start + timedelta(minutes=10 * k)
        rows += [(sid, ts, float(k % 97) + j, 0) for j, sid in enumerate(SENSORS)]
    for k in range(0, len(rows), 2_000):
        with db.transaction():
            store.write(rows[k : k + 2_000])
    return rows


def _snapshot(db: DictConnection, table: str) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()]  # noqa: S608


def test_old_raw_readings_go_in_slices_and_everything_else_stays(db: DictConnection, schema: str) -> None:
    rows = _fill(db)
    assert raw_deleted_before(db, schema=schema) is None  # nothing pruned yet
    rollups = {t: _snapshot(db, t) for t in ("readings_1m", "readings_1h", "sensor_latest")}
    cutoff = NOW - timedelta(days=3)
    seen: list[tuple[datetime, int, int, int]] = []
    result = prune_readings(db, schema=schema, keep=timedelta(days=3), now=NOW, progress=lambda *a: seen.append(a))
    expected_gone = sum(1 for _s, ts, _v, _q in rows if ts < cutoff)
    assert result.mode is StorageMode.POSTGRESQL and result.skipped is None and not result.stopped
    assert result.cutoff == cutoff and result.oldest == NOW - timedelta(days=10)
    assert result.deleted == expected_gone == 7 * 144 * len(SENSORS)
    assert result.slices == 7 * 24 == len(seen)  # one hour a slice, on whole hours
    ends = [end for end, *_ in seen]
    assert ends == sorted(ends) and ends[-1] == cutoff and seen[-1][1] == expected_gone
    left = db.execute("SELECT count(*) AS n, min(ts) AS first FROM readings").fetchone()
    assert left is not None and left["n"] == len(rows) - expected_gone and left["first"] >= cutoff
    for table, before in rollups.items():
        assert _snapshot(db, table) == before, table  # the rollups keep the history; latest values unchanged
    assert raw_deleted_before(db, schema=schema) == cutoff  # recorded for the health check
    recorded = db.execute("SELECT deleted_rows FROM raw_retention").fetchone()
    assert recorded is not None and recorded["deleted_rows"] == expected_gone

    again = prune_readings(db, schema=schema, keep=timedelta(days=3), now=NOW)
    assert again.deleted == 0 and again.slices == 0 and again.oldest is not None and again.oldest >= cutoff


def test_a_stopped_run_keeps_what_it_deleted_and_the_next_goes_on(db: DictConnection, schema: str) -> None:
    rows = _fill(db, days=4)
    stop = threading.Event()

    def progress(end: datetime, deleted: int, done: int, planned: int) -> None:
        if done == 5:
            stop.set()

    first = prune_readings(db, schema=schema, keep=timedelta(days=1), now=NOW, stop=stop, progress=progress)
    assert first.stopped and first.slices == 5
    # What is recorded as deleted is what was: up to the fifth slice's end.
    assert raw_deleted_before(db, schema=schema) == NOW - timedelta(days=4) + timedelta(hours=5)
    assert first.deleted == sum(1 for _s, ts, _v, _q in rows if ts < NOW - timedelta(days=4) + timedelta(hours=5))
    rest = prune_readings(db, schema=schema, keep=timedelta(days=1), now=NOW)
    assert not rest.stopped and first.deleted + rest.deleted == sum(1 for r in rows if r[1] < NOW - timedelta(days=1))


def test_one_pruner_at_a_time_and_clear_errors(db: DictConnection, schema: str, pg_url: str) -> None:
    _fill(db, days=2)
    with connect(pg_url, schema=schema, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"lifeline-retention:{schema}",))
        busy = prune_readings(db, schema=schema, keep=timedelta(days=1), now=NOW)
        assert busy.skipped == "another process is pruning this schema" and busy.deleted == 0
    assert prune_readings(db, schema=schema, keep=timedelta(days=1), now=NOW).deleted == 144 * len(SENSORS)
    with pytest.raises(ValueError, match="positive"):
        prune_readings(db, schema=schema, keep=timedelta(0))
    with connect(pg_url, schema=schema, autocommit=False) as not_auto, pytest.raises(ValueError, match="autocommit"):
        prune_readings(not_auto, schema=schema, keep=timedelta(days=1))
    with (
        connect(pg_url, schema="t_never_migrated", autocommit=True) as bare,
        pytest.raises(SchemaError, match="migrate"),
    ):
        prune_readings(bare, schema="t_never_migrated", keep=timedelta(days=1))


def test_ingest_prunes_on_its_schedule(
    db: DictConnection, schema: str, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _fill(db, days=3)

    def open_store() -> tuple[DictConnection, StorageMode]:
        return connect(pg_url, schema=schema, autocommit=True), StorageMode.POSTGRESQL

    with caplog.at_level(logging.INFO, logger="twin.store.retention"):
        pruner = RetentionThread(open_store, schema=schema, keep_days=2, clock=lambda: NOW, first_s=0.05, every_s=3600)
        try:
            deadline = time.monotonic() + 30
            while pruner.runs < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            pruner.close()
    assert pruner.runs == 1 and not pruner.thread.is_alive()
    assert pruner.deleted == sum(1 for r in rows if r[1] < NOW - timedelta(days=2)) == 144 * len(SENSORS)
    assert "raw readings before" in caplog.text and "rollups kept" in caplog.text

    def no_database() -> tuple[DictConnection, StorageMode]:
        raise psycopg.OperationalError("connection refused")

    with caplog.at_level(logging.WARNING, logger="ingest.retention"):
        failing = RetentionThread(no_database, schema=schema, keep_days=2, clock=lambda: NOW, first_s=0.01, retry_s=60)
        deadline = time.monotonic() + 30
        while "no database connection" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        failing.close()
    assert failing.runs == 0 and "no database connection" in caplog.text and "trying again in 1 h" in caplog.text


def test_the_command_prunes_and_says_what_it_did(db: DictConnection, schema: str, pg_url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows = _fill(db, end=now, days=3)
    env = {"LIFELINE_DATABASE_URL": pg_url, "LIFELINE_DB_SCHEMA": schema, "LIFELINE_RAW_RETENTION_DAYS": "2"}
    dry = CliRunner().invoke(cli, ["db", "prune", "--dry-run"], env=env)
    assert dry.exit_code == 0 and "would delete" in dry.output and "nothing deleted" in dry.output, dry.output
    kept = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert kept is not None and kept["n"] == len(rows)  # a dry run deletes nothing
    out = CliRunner().invoke(cli, ["db", "prune", "--slice-hours", "6"], env=env)
    assert out.exit_code == 0, out.output
    gone = sum(1 for r in rows if r[1] < now - timedelta(days=2))
    # The command counts back from its own clock, a moment later than `now`: a reading at the edge may go too.
    left = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert left is not None and len(rows) - left["n"] in (gone, gone + len(SENSORS))
    assert f"{len(rows) - left['n']:,} raw readings before" in out.output and "rollups are kept" in out.output
    assert f"would delete {len(rows) - left['n']:,} raw readings" in dry.output
    assert "slice 5/5" in out.output  # progress: 24 h in slices of 6 h, the last one ending at the cutoff
    again = CliRunner().invoke(cli, ["db", "prune", "--keep-days", "2"], env=env)
    assert again.exit_code == 0 and "nothing before" in again.output
    off = CliRunner().invoke(cli, ["db", "prune"], env={**env, "LIFELINE_RAW_RETENTION_DAYS": "0"})
    assert off.exit_code == 2 and "give --keep-days" in off.output


def test_a_running_ingest_prunes_its_store(
    db: DictConnection, start_ingest: Callable[..., IngestService], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _fill(db, days=3)
    monkeypatch.setattr(ingest.retention, "FIRST_RUN_S", 0.05)
    svc = start_ingest(raw_retention_days=2, clock=lambda: NOW)
    deadline = time.monotonic() + 30
    while db.execute("SELECT min(ts) AS t FROM readings").fetchone()["t"] < NOW - timedelta(days=2):  # type: ignore[index]
        assert time.monotonic() < deadline, "ingest did not prune within 30 s"
        time.sleep(0.1)
    left = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert left is not None and left["n"] == sum(1 for r in rows if r[1] >= NOW - timedelta(days=2))
    svc.stop()
    assert svc._retention is not None and not svc._retention.thread.is_alive()


def test_db_status_shows_what_the_store_holds(db: DictConnection, schema: str, pg_url: str) -> None:
    rows = _fill(db, days=3)
    status = store_status(db, schema=schema)
    sizes = {t.name: t for t in status.tables}
    assert status.mode is StorageMode.POSTGRESQL and status.pending == () and status.version >= 13
    assert sizes["readings"].rows == len(rows) and sizes["readings"].bytes > 0  # not analysed yet: counted
    assert status.oldest_raw == NOW - timedelta(days=3) and status.newest_raw == rows[-1][1]
    assert status.raw_deleted_before is None
    prune_readings(db, schema=schema, keep=timedelta(days=1), now=NOW)
    db.execute("ANALYZE readings")
    after = store_status(db, schema=schema)
    assert after.raw_deleted_before == NOW - timedelta(days=1) and after.oldest_raw == NOW - timedelta(days=1)
    estimated = {t.name: t for t in after.tables}["readings"].rows
    assert abs(estimated - 144 * len(SENSORS)) <= 0.1 * 144 * len(SENSORS)  # PostgreSQL's estimate after ANALYZE
    env = {"LIFELINE_DATABASE_URL": pg_url, "LIFELINE_DB_SCHEMA": schema}
    out = CliRunner().invoke(cli, ["db", "status"], env=env)
    assert out.exit_code == 0, out.output
    assert "postgresql, migration" in out.output and "up to date" in out.output and "readings_1h" in out.output
    assert "deleted by retention before 2026-11-25T12:00" in out.output
    missing = CliRunner().invoke(cli, ["db", "status"], env={**env, "LIFELINE_DB_SCHEMA": "t_never_migrated"})
    assert missing.exit_code == 1 and "not migrated" in missing.output
