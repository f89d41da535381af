"""Ingest decodes only so far ahead of its writer: past ``queue_max_bytes`` the network thread waits, and nothing
is lost or held up for good."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from simulators.raw_publisher import RawPublisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration

MESSAGES, PER_MESSAGE = 400, 50


def test_a_backlog_is_decoded_no_further_ahead_than_the_bound(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: DictConnection
) -> None:
    svc = start_ingest(queue_max_bytes=4_000, db_writers=0)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    bodies = [
        orjson.dumps(
            {
                "unit": "m",
                "readings": [
                    {"ts": (t0 + timedelta(seconds=(k * PER_MESSAGE + j) / 10)).isoformat(), "value": 0.4 + j / 1000}
                    for j in range(PER_MESSAGE)
                ],
            }
        )
        for k in range(MESSAGES)
    ]
    with RawPublisher(broker.host, broker.port, client_id=f"bp-{uuid.uuid4().hex[:6]}") as pub:
        pub.publish_many([(f"{prefix}/drainage/D-L-001", body) for body in bodies])
        pub.flush(30.0)

    def stored() -> int:
        row = db.execute("SELECT count(*) AS n FROM readings WHERE sensor_id = 'D-L-001'").fetchone()
        return int(row["n"]) if row else 0

    wait_for(lambda: stored() == MESSAGES * PER_MESSAGE, timeout=60, what="every reading stored")
    wait_for(lambda: svc._queued_bytes == 0, timeout=10, what="the queue's count back to zero")
    total = sum(map(len, bodies))
    # One socket read (at most 256 KiB) is admitted whole once the queue is below the bound.
    assert svc._queued_peak <= 4_000 + 256 * 1024
    assert svc._queued_peak < total / 3, (svc._queued_peak, total)
    assert svc.stats.readings_stored == MESSAGES * PER_MESSAGE
