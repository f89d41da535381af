"""Ingest's extra database writers: their connections are killed mid-stream and nothing is lost or stored twice.

With ``LIFELINE_INGEST_DB_WRITERS`` (2 by default) the batches that change no alert are written by extra
connections while the writer thread collects and judges the next batch. Here another session terminates those
connections' backends (``pg_terminate_backend``, as a failover or an administrator would) three times while
readings stream: each writer hands its batch back to the writer thread, which stores it in order, and the writers
reconnect for the batches that follow.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from ..conftest import wait_for
from .harness import Load, LoadPublisher, lifeline_env, report, start_ingest_process, time_to_recover, wait_stored

pytestmark = pytest.mark.integration

READINGS = 12_000
RATE_PER_S = 1_500.0


def _writer_backends(db: DictConnection, client_id: str) -> list[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'ingest-db-%%' AND application_name LIKE %s",
        [f"%{client_id}"],
    ).fetchall()
    return [int(row["pid"]) for row in rows]


def test_killed_writer_connections_hand_their_batches_back(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    client_id = f"ingest-dbw-{uuid.uuid4().hex[:8]}"
    env = lifeline_env(
        pg_url=pg_url, schema=schema, broker=broker, prefix=prefix, state_dir=tmp_path, mqtt_client_id=client_id
    )
    load = Load(READINGS, prefix)
    ingest = start_ingest_process(env)
    publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}").start()
    killed = 0
    try:
        for third in (1, 2, 3):
            publisher.wait_sent(READINGS * third // 4, timeout_s=120)
            wait_for(lambda: bool(_writer_backends(db, client_id)), timeout=20, what="ingest's database writers")
            for pid in _writer_backends(db, client_id):
                row = db.execute("SELECT pg_terminate_backend(%s) AS ok", [pid]).fetchone()
                killed += bool(row and row["ok"])
        fault_end = time.monotonic()
        recover_s = time_to_recover(db, publisher, fault_end, timeout_s=120)
        acked = publisher.finish()
        tally = wait_stored(db, load, timeout_s=120)
    finally:
        ingest.stop()
    handed_back = ingest.count("the batch goes back to the writer thread")
    report(
        "database writers' connections terminated 3 times mid-stream",
        tally,
        acked=acked,
        unrouted=len(publisher.unrouted),
        recover_s=recover_s,
        note=f"{killed} writer backends terminated, {handed_back} batches handed back to the writer thread",
    )
    assert killed >= 3
    assert tally.lost == 0 and tally.duplicated == 0 and tally.unexpected == 0
    assert tally.stored == READINGS
