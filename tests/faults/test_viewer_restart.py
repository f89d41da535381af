"""Restart the viewer while alerts stream: websocket clients reconnect, resume from their last id, miss nothing.

The viewer runs as ``lifeline serve`` in a subprocess and is stopped with a real signal (SIGTERM: uvicorn's
graceful shutdown; SIGKILL: the connection just drops) while ingest keeps raising alerts. The client reconnects
with ``?after=<last event id>``; it must end up with every event in ``alert_events`` exactly once, in order,
including those raised while the viewer was down.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from ..conftest import free_port, wait_for
from .harness import (
    LifelineProcess,
    Load,
    LoadPublisher,
    ResumingAlertClient,
    Tally,
    lifeline_env,
    report,
    wait_stored,
)

pytestmark = pytest.mark.integration

READINGS = 360
"""Readings of the drainage level sensors, each making one alert event (raised, updated, cleared)."""
RATE_PER_S = 20.0
DOWN_S = 3.0


def _start_viewer(env: dict[str, str], port: int) -> tuple[LifelineProcess, float]:
    """Start ``lifeline serve`` on *port*; return it and the seconds it took to answer ``/healthz``."""
    started = time.monotonic()
    viewer = LifelineProcess(["serve", "--port", str(port)], env, name="viewer")

    def healthy() -> bool:
        if viewer.proc.poll() is not None:
            pytest.fail(f"viewer exited with {viewer.proc.returncode}:\n{viewer.tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=60, what="the viewer to answer /healthz", interval=0.1)
    return viewer, time.monotonic() - started


def _event_ids(db: DictConnection) -> list[int]:
    return [int(r["id"]) for r in db.execute("SELECT id FROM alert_events ORDER BY id").fetchall()]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_viewer_restart_client_resumes_from_last_id_and_misses_nothing(
    stop_signal: signal.Signals,
    start_ingest: Any,
    pg_url: str,
    schema: str,
    broker: MqttConfig,
    prefix: str,
    db: DictConnection,
    tmp_path: Path,
) -> None:
    start_ingest()
    port = free_port()
    env = lifeline_env(pg_url=pg_url, schema=schema, broker=broker, prefix=prefix, state_dir=tmp_path, auth="off")
    viewer, _ = _start_viewer(env, port)
    client = ResumingAlertClient(f"ws://127.0.0.1:{port}/ws/alerts").start()
    load = Load.live(READINGS, prefix, rate_per_s=RATE_PER_S, alerting=True)
    publisher = None
    try:
        wait_for(lambda: client.connections, timeout=10, what="the websocket client to connect")
        publisher = LoadPublisher(broker, load, rate_per_s=RATE_PER_S, client_id=f"load-{uuid.uuid4().hex[:8]}")
        publisher.start()
        publisher.wait_sent(READINGS // 3, timeout_s=60)
        wait_for(lambda: client.event_ids, timeout=20, what="the first alert on the websocket")
        viewer.proc.send_signal(stop_signal)
        viewer.proc.wait(20)
        seen_before_stop = client.last_id
        time.sleep(DOWN_S)
        raised_while_down = [i for i in _event_ids(db) if i > seen_before_stop]
        restart_at = time.monotonic()
        viewer, startup_s = _start_viewer(env, port)
        wait_for(lambda: len(client.first_message_at) >= 2, timeout=30, what="the client to reconnect")
        recover_s = client.first_message_at[-1] - restart_at
        acked = publisher.finish()
        readings = wait_stored(db, load, timeout_s=60)
        expected = _event_ids(db)
        wait_for(lambda: client.last_id >= expected[-1], timeout=30, what="the client to receive every event")
        time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        client.stop()
        if publisher is not None:
            publisher.close()
        viewer.stop()
    received = client.event_ids
    tally = Tally(
        published=len(expected),
        stored=len(set(received) & set(expected)),
        duplicated=len(received) - len(set(received)),
        lost=len(set(expected) - set(received)),
        unexpected=len(set(received) - set(expected)),
        wrong_value=0,
    )
    report(
        f"viewer restart ({stop_signal.name}, down {DOWN_S:.0f} s) while alerts stream",
        tally,
        acked=acked,
        recover_s=recover_s,
        note=(
            f"counts are alert events (published = in alert_events, stored = received by the websocket client); "
            f"{len(raised_while_down)} raised while the viewer was down; viewer up again in {startup_s:.1f} s"
        ),
    )
    assert readings.exact, readings
    assert len(raised_while_down) > 0, "no alert was raised while the viewer was down: the test proves nothing"
    assert len(client.connections) == 2, client.errors
    assert tally.exact, tally
    assert received == sorted(received), "events out of order"
