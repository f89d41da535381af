"""Exactly-once storage: duplicates and QoS 1 redelivery after a crash between commit and ack."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration


def _rows(db: DictConnection) -> int:
    row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert row is not None
    return int(row["n"])


def test_same_message_published_twice_leaves_one_row(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    svc = start_ingest()
    payload = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 12.5, "unit": "mm/h"})
    with Publisher(broker, client_id=f"dup-{uuid.uuid4().hex[:6]}") as pub:
        pub.publish(f"{prefix}/rain/R-001", payload)
        pub.publish(f"{prefix}/rain/R-001", payload)
    wait_for(lambda: svc.stats.messages == 2, what="both messages processed")
    assert _rows(db) == 1
    assert (svc.stats.readings_stored, svc.stats.readings_duplicate) == (1, 1)


class _Proc:
    """`lifeline ingest` in a subprocess, with its log collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lifeline", "ingest"],
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_crash_after_commit_before_ack_is_redelivered_and_stored_once(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LIFELINE_SPOOL_DIR": str(tmp_path / "spool"),
        "LIFELINE_DATABASE_URL": pg_url,
        "LIFELINE_MQTT_URL": broker.url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": prefix,
        "LIFELINE_MQTT_CLIENT_ID": f"ingest-crash-{uuid.uuid4().hex[:8]}",
        "LIFELINE_MQTT_SESSION_EXPIRY_S": "300",
    }
    first = _Proc({**env, "LIFELINE_INGEST_FAILPOINT": "crash_after_commit"})
    try:
        wait_for(lambda: first.saw("subscribed to"), timeout=20, what="first ingest subscribed")
        with Publisher(broker, client_id=f"crash-pub-{uuid.uuid4().hex[:6]}") as pub:
            pub.publish(
                f"{prefix}/water/W-F-001",
                orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 75.0, "unit": "L/s"}),
            )
        assert first.proc.wait(20) == 70, "".join(first.lines[-20:])
    finally:
        first.stop()
    assert first.saw("failpoint crash_after_commit")
    assert _rows(db) == 1  # committed before the crash, never acknowledged

    second = _Proc(env)
    try:
        wait_for(
            lambda: second.saw("1 duplicates ignored"),
            timeout=20,
            what="the broker to redeliver the unacknowledged message",
        )
        time.sleep(0.5)
    finally:
        second.stop()
    assert _rows(db) == 1
    assert second.proc.returncode == 0, "".join(second.lines[-20:])
