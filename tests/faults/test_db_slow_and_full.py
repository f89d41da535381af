"""A slow database and a full disk under PostgreSQL while readings stream: ingest waits or retries, nothing is lost.

Slow: another session holds ``LOCK TABLE readings IN EXCLUSIVE MODE`` (reads go on, every write waits) for
:data:`HOLD_S` seconds, as a long migration, a vacuum full or an overloaded server would. Within ingest's statement
timeout (``LIFELINE_INGEST_STATEMENT_TIMEOUT_S``, 30 s by default) its write simply waits and nothing is
acknowledged meanwhile, so the broker holds what comes in (at most ``receive_maximum`` in flight to ingest). Past
the timeout the database counts as away: ingest spools and acknowledges, so a long stall cannot fill the broker's
queue for it (which would drop messages), and replays once writes go through again.

Full disk: a statement trigger on ``readings`` (in the test's own schema) raises what PostgreSQL raises when it
cannot extend a file — SQLSTATE 53100 ``disk_full``, "No space left on device" — for :data:`HOLD_S` seconds. The
write fails. Ingest counts it (an ``OperationalError``) as the database being unusable: with its disk spool on (the
default) it spools the batches to its own disk, acknowledges them and replays them once writes succeed again; with
the spool off (``LIFELINE_SPOOL_MAX_BYTES=0``) it retries with backoff and acknowledges nothing meanwhile.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from twin.mqtt import MqttConfig
from twin.store.db import DictConnection, connect

from ..conftest import wait_for
from .harness import (
    Load,
    LoadPublisher,
    lifeline_env,
    lost_readings,
    report,
    row_count,
    start_ingest_process,
    time_to_recover,
    wait_stored,
)

pytestmark = pytest.mark.integration

READINGS = 8_000
RATE_PER_S = 800.0
HOLD_S = 6.0
"""How long the database stays slow or full, seconds."""


@pytest.mark.parametrize("timeout_s", ["30", "1.5"], ids=["waits", "times-out-and-spools"])
def test_writes_blocked_by_a_lock_wait_or_spool_and_lose_nothing(
    timeout_s: str, pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    env = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=broker,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_client_id=f"ingest-slow-{uuid.uuid4().hex[:8]}",
        ingest_statement_timeout_s=timeout_s,
    )
    load = Load(READINGS, prefix)
    ingest = start_ingest_process(env)
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}").start()
    try:
        publisher.wait_sent(READINGS // 3, timeout_s=120)
        with connect(pg_url, schema=schema) as locker:
            locker.execute("LOCK TABLE readings IN EXCLUSIVE MODE")
            locked_at = time.time()
            locked = (publisher.sent, row_count(db))
            # The lock is held: ingest's next write must be waiting for it.
            wait_for(lambda: _waiting_on_lock(db, schema), timeout=10, what="ingest's write to wait for the lock")
            time.sleep(HOLD_S)
            rows_while_locked = row_count(db) - locked[1]
            locker.rollback()
        released_at = time.monotonic()
        recover_s = time_to_recover(db, publisher, released_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        publisher.close()
        ingest.stop()
    report(
        f"slow database: writes blocked by a table lock for {HOLD_S:.0f} s (statement timeout {timeout_s} s)",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=ingest.duplicates_ignored(),
        note=(
            f"locked with {locked[1]} stored of {locked[0]} sent, {publisher.sent - locked[0]} sent while locked, "
            f"{rows_while_locked} stored while locked"
        ),
    )
    assert 0 < locked[1] < READINGS, "the lock did not land in the middle of the stream"
    assert rows_while_locked == 0
    assert acked == READINGS
    if not tally.exact:  # say which readings and what ingest logged, so a rare loss can be traced
        lost = lost_readings(db, load)
        pytest.fail(
            f"{tally}; {len(publisher.unrouted)} acknowledged with no matching subscriber; "
            f"lost readings (index: broker acknowledged it s after the lock): "
            f"{[(k, round((publisher.acked_at(k) or math.nan) - locked_at, 2)) for k in lost[:40]]}; "
            f"ingest's log:\n{ingest.tail(200)}"
        )
    stats = ingest.ingest_stats()
    assert stats["dead_letters"] == 0
    if float(timeout_s) < HOLD_S:
        assert stats["readings_spooled"] > 0 and stats["readings_replayed"] == stats["readings_spooled"], stats
    else:
        assert stats["readings_spooled"] == 0, stats
    assert ingest.proc.returncode == 0, ingest.tail()


def _waiting_on_lock(db: DictConnection, schema: str) -> bool:
    """Whether a session is waiting for a lock on this schema's ``readings`` (ingest's write, blocked)."""
    row = db.execute(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT l.granted AND c.relname = 'readings' AND n.nspname = %s",
        (schema,),
    ).fetchone()
    return row is not None and int(row["n"]) > 0


_DISK_FULL = """
CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file "base/16384/24576": No space left on device'
        USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';
END $$;
CREATE TRIGGER fault_disk_full BEFORE INSERT ON {readings} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


@pytest.mark.parametrize("spool", [True, False], ids=["spool", "no-spool"])
def test_disk_full_errors_are_spooled_or_retried_and_lose_nothing(
    spool: bool, pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    env = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=broker,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_client_id=f"ingest-full-{uuid.uuid4().hex[:8]}",
        **({} if spool else {"spool_max_bytes": "0"}),
    )
    load = Load(READINGS, prefix)
    ingest = start_ingest_process(env)
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}").start()
    function = sql.Identifier(schema, "fault_disk_full")
    readings = sql.Identifier(schema, "readings")
    try:
        publisher.wait_sent(READINGS // 3, timeout_s=120)
        db.execute(sql.SQL(_DISK_FULL).format(function=function, readings=readings))
        full = (publisher.sent, row_count(db))
        wait_for(lambda: ingest.count("No space left on device"), timeout=10, what="ingest to hit the full disk")
        time.sleep(HOLD_S)
        rows_while_full = row_count(db) - full[1]
        db.execute(sql.SQL("DROP TRIGGER fault_disk_full ON {}").format(readings))
        freed_at = time.monotonic()
        recover_s = time_to_recover(db, publisher, freed_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        publisher.close()
        ingest.stop()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS fault_disk_full ON {}").format(readings))
    failures = ingest.count("No space left on device")
    stats = ingest.ingest_stats()
    report(
        f"disk full (SQLSTATE 53100 on every write) for {HOLD_S:.0f} s, {'spool on' if spool else 'spool off'}",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=ingest.duplicates_ignored(),
        note=(
            f"full with {full[1]} stored of {full[0]} sent, {rows_while_full} stored while full, "
            f"{failures} failed writes logged, {stats['readings_spooled']} readings spooled"
        ),
    )
    assert 0 < full[1] < READINGS, "the fault did not land in the middle of the stream"
    assert rows_while_full == 0
    assert acked == READINGS
    assert tally.exact, tally
    assert stats["db_errors"] >= 1
    assert stats["dead_letters"] == 0
    # With a spool the failed batches went to disk (and were acknowledged) and were replayed; without one they
    # were retried and the broker kept them.
    assert (stats["readings_spooled"] > 0) is spool
    assert ingest.proc.returncode == 0, ingest.tail()
