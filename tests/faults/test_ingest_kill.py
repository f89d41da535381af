"""SIGKILL the ingest process in the middle of a stream and start it again: every reading is stored once."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import pytest

from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

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

READINGS = 20_000
RATE_PER_S = 800.0


def test_sigkill_mid_stream_then_restart_stores_every_reading_once(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    env = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=broker,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_client_id=f"ingest-kill-{uuid.uuid4().hex[:8]}",
    )
    load = Load(READINGS, prefix)
    first = start_ingest_process(env, name="ingest (first)")
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}").start()
    second = None
    try:
        publisher.wait_sent(READINGS // 3, timeout_s=120)
        first.kill()
        killed_at = time.time()
        assert first.proc.returncode == -9
        sent_at_kill, stored_at_kill = publisher.sent, row_count(db)
        restarted_at = time.monotonic()
        second = start_ingest_process(env, name="ingest (restarted)")
        subscribed_s = time.monotonic() - restarted_at
        recover_s = time_to_recover(db, publisher, restarted_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        publisher.close()
        if second is not None:
            second.stop()
        first.stop()
    redelivered = second.duplicates_ignored()
    report(
        "ingest SIGKILL at 1/3 of the stream, restarted (same client id)",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=redelivered,
        note=(
            f"killed with {stored_at_kill} stored of {sent_at_kill} sent; "
            f"restarted ingest subscribed after {subscribed_s:.1f} s"
        ),
    )
    assert 0 < stored_at_kill < READINGS, "the kill did not land in the middle of the stream"
    assert acked == READINGS
    if not tally.exact:  # say which readings and what both ingest processes logged, so a rare loss can be traced
        lost = lost_readings(db, load)
        pytest.fail(
            f"{tally}; {len(publisher.unrouted)} acknowledged with no matching subscriber; "
            f"lost readings (index: broker acknowledged it s after the kill): "
            f"{[(k, round((publisher.acked_at(k) or math.nan) - killed_at, 3)) for k in lost[:40]]}; "
            f"first ingest's log:\n{first.tail(120)}\nrestarted ingest's log:\n{second.tail(120)}"
        )
    assert second.proc.returncode == 0, second.tail()
    assert second.ingest_stats()["dead_letters"] == 0
