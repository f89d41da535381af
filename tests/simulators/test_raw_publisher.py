"""The load publisher against a real Mosquitto: every message arrives whole, in order, and is acknowledged."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from simulators.raw_publisher import RawPublisher, _varint
from tests.conftest import free_port
from twin.errors import ServiceError
from twin.mqtt import MqttConfig


def _subscribe(broker: MqttConfig, topic: str) -> tuple[mqtt.Client, list[tuple[str, bytes, int]], threading.Event]:
    got: list[tuple[str, bytes, int]] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rawpub-test-{uuid.uuid4().hex[:6]}")
    client.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, m.qos))
    client.on_subscribe = lambda *_a: ready.set()
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    assert ready.wait(10), "subscription not confirmed"
    return client, got, ready


@pytest.mark.parametrize("window", [7, 30_000])
def test_every_message_arrives_in_order_and_is_acknowledged(broker: MqttConfig, prefix: str, window: int) -> None:
    client, got, _ = _subscribe(broker, f"{prefix}/#")
    # Payloads of every size class of the remaining-length varint (1, 2 and 3 bytes), topics of several lengths.
    sizes = [0, 1, 100, 126, 127, 128, 16_000, 16_383, 16_384, 200_000]
    # A window of 7 waits for the broker's acknowledgements at every call (Mosquitto leaves Nagle on: ~45 ms).
    count = 210 if window == 7 else 3000
    sent = [(f"{prefix}/water/S{i:04d}{'x' * (i % 5)}", bytes([i % 251]) * sizes[i % len(sizes)]) for i in range(count)]
    try:
        with RawPublisher(broker.host, broker.port, client_id=f"rawpub-{uuid.uuid4().hex[:6]}", window=window) as pub:
            for start in range(0, len(sent), 7 if window == 7 else 500):
                pub.publish_many(sent[start : start + (7 if window == 7 else 500)])
                assert pub.in_flight <= window
            pub.flush(60.0)
            assert pub.sent == pub.acked == len(sent)
        for _ in range(600):
            if len(got) >= len(sent):
                break
            threading.Event().wait(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [(t, p) for t, p, _q in got] == sent
    assert {q for _t, _p, q in got} == {1}


def test_packet_identifiers_wrap_past_65535(broker: MqttConfig, prefix: str) -> None:
    client, got, _ = _subscribe(broker, f"{prefix}/#")
    try:
        with RawPublisher(broker.host, broker.port, client_id=f"rawpub-{uuid.uuid4().hex[:6]}") as pub:
            for start in range(0, 70_000, 10_000):
                pub.publish_many([(f"{prefix}/t", str(i).encode()) for i in range(start, start + 10_000)])
            pub.flush(60.0)
            assert pub.acked == 70_000
        for _ in range(600):
            if len(got) >= 70_000:
                break
            threading.Event().wait(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [int(p) for _t, p, _q in got] == list(range(70_000))


def test_no_broker_is_a_clear_error() -> None:
    with pytest.raises(ServiceError, match="cannot reach the MQTT broker"):
        RawPublisher("127.0.0.1", free_port(), client_id="nobody").connect()


def test_more_than_the_window_in_one_call_is_refused(broker: MqttConfig) -> None:
    with RawPublisher(broker.host, broker.port, client_id=f"rawpub-{uuid.uuid4().hex[:6]}", window=10) as pub:
        with pytest.raises(ValueError, match="window"):
            pub.publish_many([("t", b"x")] * 11)
        assert pub.sent == 0


def test_remaining_length_encoding_matches_the_standard() -> None:
    # MQTT 3.1.1 section 2.2.3: the boundaries of one to four bytes.
    assert _varint(0) == b"\x00"
    assert _varint(127) == b"\x7f"
    assert _varint(128) == b"\x80\x01"
    assert _varint(16_383) == b"\xff\x7f"
    assert _varint(16_384) == b"\x80\x80\x01"
    assert _varint(2_097_151) == b"\xff\xff\x7f"
    assert _varint(2_097_152) == b"\x80\x80\x80\x01"
