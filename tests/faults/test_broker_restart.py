"""Restart the MQTT broker in the middle of a stream: publisher and ingest reconnect, nothing is lost.

The broker is a private Mosquitto with the settings of ``deploy/mosquitto.conf`` (``persistence true``,
``autosave_interval 10``, queues of 100,000 messages). Stopped with SIGTERM it writes its persistence file — the
sessions, their subscriptions and every queued or in-flight QoS 1 message — and reads it back on start, so a clean
restart loses nothing. (A broker killed outright loses what arrived since its last autosave: docs/reliability.md.)
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from twin.store.db import DictConnection

from .harness import (
    Load,
    LoadPublisher,
    RestartableMosquitto,
    lifeline_env,
    report,
    row_count,
    start_ingest_process,
    time_to_recover,
    wait_stored,
)

pytestmark = pytest.mark.integration

READINGS = 15_000
RATE_PER_S = 800.0
DOWN_S = 3.0
"""How long the broker stays down, seconds."""


def test_broker_restart_mid_stream_loses_nothing(
    pg_url: str, schema: str, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    mosquitto = RestartableMosquitto(tmp_path)
    mosquitto.start()
    env = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=mosquitto.config,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_client_id=f"ingest-brk-{uuid.uuid4().hex[:8]}",
    )
    load = Load(READINGS, prefix)
    ingest = start_ingest_process(env)
    publisher = LoadPublisher(
        mosquitto.config, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}"
    ).start()
    try:
        publisher.wait_sent(READINGS // 3, timeout_s=120)
        mosquitto.stop()
        stopped_at = (publisher.sent, row_count(db))
        assert mosquitto.persistence_file.exists(), "Mosquitto wrote no persistence file on SIGTERM"
        time.sleep(DOWN_S)
        mosquitto.start()
        back_at = time.monotonic()
        recover_s = time_to_recover(db, publisher, back_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        publisher.close()
        ingest.stop()
        mosquitto.stop()
    report(
        f"broker restart (SIGTERM, down {DOWN_S:.0f} s, persistence on) at 1/3 of the stream",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=ingest.duplicates_ignored(),
        note=f"broker stopped with {stopped_at[1]} stored of {stopped_at[0]} sent",
    )
    assert 0 < stopped_at[1] < READINGS, "the restart did not land in the middle of the stream"
    assert acked == READINGS
    assert tally.exact, tally
    # Both clients came back: ingest subscribed again on its new connection, the publisher reconnected.
    assert ingest.count("subscribed to") >= 2, ingest.tail()
    assert publisher.connects >= 2
    assert ingest.proc.returncode == 0, ingest.tail()
    assert ingest.ingest_stats()["dead_letters"] == 0
