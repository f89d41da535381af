"""MQTT connection settings and client construction, shared by ingest, simulators and the CLI.

It lives in ``twin`` (the bottom layer) because both ingest and the simulators speak the same wire protocol, and
neither may import the other.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Where and how to connect.

    Attributes:
        host, port: the broker.
        username, password: credentials, if the broker wants them.
        tls: connect with TLS (system trust store).
        client_id: the MQTT client id; a persistent session is keyed by it.
        protocol: ``"5"`` (MQTT 5, default) or ``"3.1.1"`` (for brokers without MQTT 5, such as amqtt).
        keepalive_s: keep-alive interval, seconds.
        receive_maximum: MQTT 5 only: unacknowledged QoS 1 messages the broker may send us at once.
        session_expiry_s: MQTT 5 only: how long the broker keeps our session (and queues for us) while we are away.
        shared_group: subscribe through ``$share/<group>/`` so several workers split the stream.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    client_id: str = "lifeline"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = 30
    receive_maximum: int = 1000
    session_expiry_s: int = 7 * 86400
    shared_group: str | None = None

    @property
    def url(self) -> str:
        """The broker URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def make_client(config: MqttConfig, *, client_id: str | None = None, persistent: bool = False) -> mqtt.Client:
    """Build a paho client for *config* (not yet connected).

    With *persistent*, the session survives disconnects: MQTT 3.1.1 ``clean_session=False``; MQTT 5 uses
    ``clean_start=False`` and the session expiry passed to :func:`connect`.
    """
    protocol = mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or config.client_id,
        protocol=protocol,
        clean_session=(not persistent) if protocol == mqtt.MQTTv311 else None,
    )
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=15)
    # Never drop outgoing messages silently: no cap on paho's own queue (the default 0 means unlimited).
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    return client


def connect(client: mqtt.Client, config: MqttConfig, *, persistent: bool = False, blocking: bool = False) -> None:
    """Connect *client* (asynchronously unless *blocking*), asking for a persistent session if *persistent*."""
    kwargs: dict[str, object] = {}
    if config.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = config.receive_maximum
        if persistent:
            props.SessionExpiryInterval = config.session_expiry_s
        kwargs = {"clean_start": not persistent, "properties": props}
    if blocking:
        client.connect(config.host, config.port, keepalive=config.keepalive_s, **kwargs)  # type: ignore[arg-type]
    else:
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s, **kwargs)  # type: ignore[arg-type]
