"""Publish sensor messages over MQTT and wait until the broker has them."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import paho.mqtt.client as mqtt

from twin.errors import ServiceError
from twin.mqtt import MqttConfig, connect, make_client

log = logging.getLogger(__name__)


class Publisher:
    """A connected MQTT publisher; a context manager.

    Example:
        >>> with Publisher(MqttConfig(), client_id="sim-1") as pub:        # doctest: +SKIP
        ...     pub.publish("lifeline/v1/rain/R-001", b'{"ts": 1764028800000, "value": 3.2, "unit": "mm/h"}')
    """

    def __init__(self, config: MqttConfig, *, client_id: str, connect_timeout_s: float = 10.0) -> None:
        self.config = config
        self._client = make_client(config, client_id=client_id)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._timeout = connect_timeout_s
        self._pending: list[mqtt.MQTTMessageInfo] = []

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object = None) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()

    def __enter__(self) -> Publisher:
        try:
            connect(self._client, self.config, blocking=True)
        except OSError as exc:
            raise ServiceError(f"cannot reach the MQTT broker at {self.config.url}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(self._timeout):
            self._client.loop_stop()
            raise ServiceError(f"the MQTT broker at {self.config.url} did not accept the connection")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.flush()
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Queue one message; :meth:`flush` waits for the broker's acknowledgements."""
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            raise ServiceError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self._pending.append(info)
        if len(self._pending) >= 10_000:
            self.flush()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued QoS 1 message is acknowledged by the broker."""
        for info in self._pending:
            info.wait_for_publish(timeout=timeout_s)
        self._pending.clear()
