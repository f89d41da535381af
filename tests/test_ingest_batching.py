"""How ingest closes a batch: the window, and early when it keeps up (``live_batch_messages``), while a backlog
still fills batches. The collector runs on its own here, fed through its queue as the network thread feeds it."""

from __future__ import annotations

import time

from ingest.protocol import Decoded, PayloadDecoder
from ingest.service import IngestService, _Message
from twin.mqtt import MqttConfig


def _service(**kwargs: object) -> IngestService:
    svc = IngestService(
        conninfo="postgresql://127.0.0.1:1/none", schema="unused", mqtt_config=MqttConfig(), batch_idle_s=0, **kwargs
    )  # type: ignore[arg-type]
    svc._decoder = PayloadDecoder(sensors={})
    svc.stats.database_ok = False  # no registry refresh: nothing here talks to a database
    return svc


def _reads(svc: IngestService, messages: int, per_read: int) -> None:
    """Queue *messages* as the network thread does, one list per socket read."""
    for start in range(0, messages, per_read):
        svc._queue.put([_Message(mid, 1, 0, Decoded(), 0) for mid in range(start, min(messages, start + per_read))])


def _collect(svc: IngestService) -> tuple[int, float]:
    started = time.monotonic()
    batch = svc._collect()
    assert batch is not None
    return len(batch.messages), time.monotonic() - started


def test_a_batch_that_reached_the_live_size_closes_when_nothing_more_waits() -> None:
    svc = _service(flush_interval_s=0.5, live_batch_messages=500)
    _reads(svc, 600, 600)
    count, took = _collect(svc)
    assert count == 600 and took < 0.25  # not the 0.5 s window


def test_below_the_live_size_or_without_it_a_batch_waits_out_its_window() -> None:
    for live, messages in ((500, 300), (0, 600)):
        svc = _service(flush_interval_s=0.3, live_batch_messages=live)
        _reads(svc, messages, messages)
        count, took = _collect(svc)
        assert count == messages and took >= 0.28, (live, messages)


def test_a_backlog_still_fills_the_batch() -> None:
    svc = _service(flush_interval_s=0.5, live_batch_messages=500)
    _reads(svc, 3000, 20)  # a backlog: many reads already waiting
    count, _took = _collect(svc)
    assert count == 3000
