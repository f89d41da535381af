"""Two ingest workers share one subscription (``$share/<group>/…``): each reading is stored once.

Both workers are ``lifeline ingest`` processes with the same ``LIFELINE_MQTT_SHARED_GROUP`` and their own client
ids (their own persistent sessions). The broker hands each message to one of them. One worker is SIGKILLed in the
middle of the stream and started again with its client id; the messages it held unacknowledged are delivered
again (to its restarted session), and the other worker carries on meanwhile.
"""

from __future__ import annotations

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
    report,
    row_count,
    start_ingest_process,
    time_to_recover,
    wait_stored,
)

pytestmark = pytest.mark.integration

READINGS = 20_000
RATE_PER_S = 800.0


def test_two_workers_on_a_shared_subscription_store_each_reading_once_when_one_is_killed(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    group = f"ingest-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:6]
    env_a = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=broker,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_shared_group=group,
        mqtt_client_id=f"a-{run}",
    )
    env_b = {**env_a, "LIFELINE_MQTT_CLIENT_ID": f"b-{run}"}
    load = Load(READINGS, prefix)
    worker_a = start_ingest_process(env_a, name="worker a")
    worker_b = start_ingest_process(env_b, name="worker b")
    assert f"$share/{group}/{prefix}/#" in "".join(worker_b.lines)
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{run}").start()
    restarted_a = None
    try:
        publisher.wait_sent(READINGS // 3, timeout_s=120)
        worker_a.kill()
        killed_at = (publisher.sent, row_count(db))
        restarted_at = time.monotonic()
        restarted_a = start_ingest_process(env_a, name="worker a (restarted)")
        recover_s = time_to_recover(db, publisher, restarted_at, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        publisher.close()
        for worker in (restarted_a, worker_b, worker_a):
            if worker is not None:
                worker.stop()
    assert restarted_a is not None
    stats_b, stats_a2 = worker_b.ingest_stats(), restarted_a.ingest_stats()
    stored_by_a1 = tally.stored - stats_b["readings_stored"] - stats_a2["readings_stored"]
    redelivered = worker_b.duplicates_ignored() + restarted_a.duplicates_ignored()
    report(
        "two workers on one shared subscription, one SIGKILLed at 1/3 and restarted",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        redelivered=redelivered,
        note=(
            f"stored by worker a before the kill {stored_by_a1}, by worker b {stats_b['readings_stored']}, "
            f"by worker a after the restart {stats_a2['readings_stored']}; "
            f"killed with {killed_at[1]} stored of {killed_at[0]} sent"
        ),
    )
    assert 0 < killed_at[1] < READINGS, "the kill did not land in the middle of the stream"
    assert acked == READINGS
    assert tally.exact, tally
    # Both workers took a share, before and after the kill.
    assert stored_by_a1 > 0
    assert stats_b["readings_stored"] > 0
    assert stats_a2["readings_stored"] > 0
    assert stats_b["dead_letters"] == stats_a2["dead_letters"] == 0


def test_a_dead_workers_share_waits_in_its_session_until_it_returns(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    """Mosquitto 2.0 keeps handing a killed worker its share of the stream (into its persistent session)."""
    group = f"ingest-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:6]
    env_a = lifeline_env(
        pg_url=pg_url,
        schema=schema,
        broker=broker,
        prefix=prefix,
        state_dir=tmp_path,
        mqtt_shared_group=group,
        mqtt_client_id=f"a-{run}",
    )
    env_b = {**env_a, "LIFELINE_MQTT_CLIENT_ID": f"b-{run}"}
    n = 8_000
    load = Load(n, prefix)
    worker_a = start_ingest_process(env_a, name="worker a")
    worker_b = start_ingest_process(env_b, name="worker b")
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{run}").start()
    restarted_a = None
    try:
        publisher.wait_sent(n // 4, timeout_s=120)
        worker_a.kill()
        acked = publisher.finish()
        # The stream is over and worker b has stored all it was given.
        while_down = wait_stored(db, load, timeout_s=60, quiet_s=3.0)
        restarted_at = time.monotonic()
        restarted_a = start_ingest_process(env_a, name="worker a (restarted)")
        tally = wait_stored(db, load, timeout_s=120)
        back_s = time.monotonic() - restarted_at
    finally:
        publisher.close()
        for worker in (restarted_a, worker_b, worker_a):
            if worker is not None:
                worker.stop()
    assert restarted_a is not None
    report(
        "shared subscription: one of two workers SIGKILLed at 1/4 and left down until the stream ended",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=back_s,
        redelivered=worker_b.duplicates_ignored() + restarted_a.duplicates_ignored(),
        note=(
            f"stored while it was down: {while_down.stored} (its share waited in its session); time to recover = "
            f"from its restart to all stored"
        ),
    )
    assert acked == n
    assert tally.exact, tally
    assert while_down.lost > 0, "the broker gave the dead worker's share to the live one: update docs/reliability.md"
    assert restarted_a.ingest_stats()["readings_stored"] == while_down.lost
