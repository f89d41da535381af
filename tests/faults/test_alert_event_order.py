"""Alert events from two writers all reach websocket clients, in id order.

``alert_events.id`` is taken from a sequence when the row is inserted, not when the transaction commits. With two
writers — two ingest workers on a shared subscription, or ingest and an operator acting on an alert — a later id
could become visible before an earlier one, and the viewer's hub (and a client resuming with ``?after=<id>``),
which read "events after the last id seen", would never push the earlier one. Every writer therefore takes an
advisory lock before appending (``twin.store.alerts.lock_event_order``): the second writer waits for the first to
commit, so ids are committed in order.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from twin.alerts import AlertChange
from twin.store.alerts import apply_change
from twin.store.db import connect

from ..conftest import wait_for
from .harness import ResumingAlertClient

pytestmark = pytest.mark.integration


def _raised(sensor_id: str) -> AlertChange:
    return AlertChange(
        event="raised",
        cause_key=f"threshold:{sensor_id}:high",
        kind="threshold",
        sensor_id=sensor_id,
        network="drainage",
        district="吉州区",
        grade=4,
        ts=datetime.now(UTC),
        value=0.9,
        threshold=0.8,
        message=f"{sensor_id} 水位超过Ⅳ级阈值",
        message_en=f"{sensor_id} level above grade IV",
    )


def test_two_writers_commit_events_in_id_order_and_both_reach_the_websocket(
    pg_url: str, schema: str, viewer_url: str
) -> None:
    client = ResumingAlertClient(viewer_url.replace("http", "ws") + "/ws/alerts").start()
    try:
        wait_for(lambda: client.first_message_at, timeout=10, what="the websocket client to connect")
        with connect(pg_url, schema=schema) as slow, connect(pg_url, schema=schema) as fast:
            earlier = apply_change(slow, _raised("D-L-001"), schema=schema)  # worker 1, still writing its batch
            assert earlier is not None
            later: list[int | None] = []
            second = threading.Thread(
                target=lambda: later.append(apply_change(fast, _raised("D-L-002"), schema=schema))
            )
            second.start()
            second.join(1.5)
            assert second.is_alive(), "the second writer must wait for the first to commit"
            slow.commit()
            second.join(10)
            assert later and later[0] is not None and later[0] > earlier
            fast.commit()
        wait_for(
            lambda: earlier in client.event_ids and later[0] in client.event_ids,
            timeout=10,
            what="both events on the websocket",
        )
        assert client.event_ids.index(earlier) < client.event_ids.index(later[0])
    finally:
        client.stop()
