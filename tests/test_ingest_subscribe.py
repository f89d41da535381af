"""Ingest says it is ready (``wait_ready``, the "subscribed to" log line) only once the broker has its subscription.

A QoS 1 message that reaches the broker before ingest's SUBSCRIBE matches no subscription: the broker drops it and
still acknowledges it to its publisher (MQTT 5 reason "No matching subscribers"), so a publisher that starts on
ingest's word loses its first messages if ingest speaks on the CONNACK. The fault tests start their stream on the log
line, and lost their first readings that way whenever ingest's network thread was held right after the connect (a
loaded machine; ingest's start-up garbage collection runs just then). Here a proxy holds ingest's packets after its
CONNECT for a second, as a held network thread would, so the SUBSCRIBE reaches the broker late every time.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.service import IngestService
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection

from .conftest import wait_for

pytestmark = pytest.mark.integration

HOLD_S = 1.0


class _LateSubscribe:
    """A TCP proxy to the broker that passes the client's first read (its CONNECT) at once and everything after it
    (the SUBSCRIBE) only *hold_s* seconds later; the broker's side passes at once."""

    def __init__(self, host: str, port: int, hold_s: float) -> None:
        self.upstream = (host, port)
        self.hold_s = hold_s
        self.released_at: float | None = None
        """``time.time()`` when the held bytes went on to the broker."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            broker = socket.create_connection(self.upstream)
            self._sockets += [client, broker]
            threading.Thread(target=self._pump, args=(broker, client, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, broker, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, hold: bool) -> None:
        reads = 0
        try:
            while data := src.recv(65536):
                reads += 1
                if hold and reads == 2:
                    time.sleep(self.hold_s)
                    self.released_at = time.time()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@contextmanager
def _ingest_behind(proxy: _LateSubscribe, pg_url: str, schema: str, prefix: str) -> Iterator[IngestService]:
    config = MqttConfig(
        host="127.0.0.1", port=proxy.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}", session_expiry_s=300
    )
    svc = IngestService(conninfo=pg_url, schema=schema, mqtt_config=config, prefix=prefix)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _publish_one(broker: MqttConfig, topic: str, payload: bytes) -> int:
    """Publish *payload* at QoS 1 over MQTT 5 and return the reason code of the broker's PUBACK."""
    acked = threading.Event()
    reasons: list[int] = []

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, reason: Any, _p: object = None) -> None:
        reasons.append(reason.value)
        acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1)
        assert acked.wait(10), "no PUBACK within 10 s"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


def test_ready_only_once_the_broker_has_acknowledged_the_subscription(
    pg_url: str, schema: str, broker: MqttConfig, prefix: str, db: DictConnection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.service")
    proxy = _LateSubscribe(broker.host, broker.port, HOLD_S)
    ts = datetime.now(UTC) - timedelta(minutes=5)
    payload = orjson.dumps({"ts": ts.isoformat(), "value": 0.42, "unit": "m"})
    try:
        with _ingest_behind(proxy, pg_url, schema, prefix) as svc:
            assert svc.wait_ready(10 + HOLD_S), "ingest did not subscribe"
            # What the fault tests wait for before they publish: it must come after the broker had the SUBSCRIBE.
            said = [r.created for r in caplog.records if "subscribed to" in r.getMessage()]
            assert said and proxy.released_at is not None and said[0] >= proxy.released_at, (said, proxy.released_at)
            # Published the moment ingest says it is ready: the broker must route it to ingest, and ingest store it.
            reason = _publish_one(broker, f"{prefix}/drainage/D-L-001", payload)
            assert reason == 0, f"PUBACK reason {reason} (16: no matching subscribers): ingest was not subscribed"

            def stored() -> bool:
                row = db.execute("SELECT count(*) AS n FROM readings WHERE sensor_id = 'D-L-001'").fetchone()
                return row is not None and int(row["n"]) == 1

            wait_for(stored, timeout=15, what="the reading published on ingest's word to be stored")
    finally:
        proxy.close()
