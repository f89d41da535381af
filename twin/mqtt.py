"""MQTT connection settings and client construction, shared by ingest, simulators and the CLI.

It lives in ``twin`` (the bottom layer) because both ingest and the simulators speak the same wire protocol, and
neither may import the other.
"""

from __future__ import annotations

import logging
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic as time_func
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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
    receive_maximum: int = 10_000
    session_expiry_s: int = 7 * 86400
    shared_group: str | None = None

    @property
    def url(self) -> str:
        """The broker URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


_PUBACK = struct.Struct("!BBH")
_READ_CHUNK = 256 * 1024
"""Bytes asked of the socket at once by :class:`BufferedClient`."""


Publish = tuple[bytes, bytes, int, int]
"""A received PUBLISH as :attr:`BufferedClient.on_publishes` hands it over: (topic, payload, mid, qos)."""


class BufferedClient(mqtt.Client):
    """A paho client that reads the socket in large chunks, and can hand over received messages in lists.

    paho reads each packet with at least three ``recv`` calls (the command byte, the length bytes one by one, then
    the rest) and handles one packet per wake-up of its network loop. For a subscriber receiving thousands of
    messages a second that is most of its cost. This client keeps what one ``recv`` of up to 256 KiB returns in a
    buffer, serves paho's small reads from it, and goes on handling packets while the buffer holds any, so the loop
    makes about one system call per chunk instead of several per message.

    paho then spends 15 µs (MQTT 3.1.1) to 30 µs (MQTT 5) on each PUBLISH: an ``MQTTMessage``, MQTT 5 properties
    parsed into objects, a debug log line formatted, the topic matched against filtered callbacks, three locks.
    With :attr:`on_publishes` set (manual acks only), the PUBLISH packets of QoS 0 and 1 that lie whole in the
    buffer are cut out here instead (fixed header, topic, packet id, the properties skipped) and handed over as one
    list per chunk; everything else (a packet cut by the chunk's end, QoS 2, CONNACK, SUBACK, PINGRESP, anything
    malformed) goes through paho as before, and paho keeps the connection, the session and the acknowledgements.
    A topic alias (MQTT 5) is never used by a broker unless the client allows it, which this one does not.

    It relies on paho 2.x's private ``_sock_recv``, ``_in_packet`` and ``loop_read``; ``tests/test_mqtt_buffered.py``
    checks that it receives every message, in order, across chunk boundaries and reconnects, with and without
    :attr:`on_publishes`, with MQTT 5 properties, for both protocol versions.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None
        self.on_publishes: Callable[[list[Publish]], None] | None = None
        """Called in the network thread with the PUBLISH packets cut out of one chunk (see the class docstring);
        None: every packet goes through paho and ``on_message``."""

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:
            # A new connection: nothing read from an earlier socket belongs to it.
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(_READ_CHUNK)  # raises BlockingIOError when there is nothing to read
            if not data:
                return data  # the connection closed
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos : end]
        self._rpos = end
        return out

    def _fill(self) -> bool:
        """Read a chunk into the empty buffer; True if the buffer holds anything. Errors and the end of the
        connection are left for paho's own read to meet (it reads the same socket next)."""
        if self._rsock is not self._sock:
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos < len(self._rbuf):
            return True
        try:
            data = super()._sock_recv(_READ_CHUNK)
        except OSError:  # BlockingIOError (nothing to read yet) included
            return False
        if not data:
            return False
        self._rbuf, self._rpos = data, 0
        return True

    def ack_many(self, mids: Sequence[int]) -> None:
        """Acknowledge the QoS 1 messages *mids* (manual acks) with one write to the socket.

        ``ack`` queues each PUBACK as its own packet and wakes the network thread for it, so acknowledging a batch
        of thousands of messages costs thousands of system calls; here the PUBACKs go out together, as one
        stream of bytes, which is what the broker reads either way.
        """
        if not mids:
            return
        packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
        self._packet_queue(mqtt.PUBACK, packet, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        deliver = self.on_publishes
        if deliver is not None and self._sock is not None and self._in_packet["command"] == 0 and self._fill():
            # Read here first, so that the first packets of a read are cut out too (at a few messages a read
            # they are most of them); paho reads on only if something is left that is not a whole PUBLISH.
            self._cut_publishes(deliver)
            if self._rpos >= len(self._rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        rc = super().loop_read(max_packets)
        # What is buffered is not visible to the loop's select(): handle it now.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            if self.on_publishes is not None and self._in_packet["command"] == 0:
                self._cut_publishes(self.on_publishes)
                if self._rpos >= len(self._rbuf):
                    break
            rc = super().loop_read(max_packets)
        return rc

    def _cut_publishes(self, deliver: Callable[[list[Publish]], None]) -> None:
        """Cut the whole QoS 0/1 PUBLISH packets at the head of the buffer out of it and deliver them."""
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        v5 = self._protocol == mqtt.MQTTv5
        out: list[Publish] = []
        while pos < end:
            header = buf[pos]
            qos = (header >> 1) & 3
            if header >> 4 != 3 or qos > 1:
                break
            p = pos + 1
            # The remaining length, and below the properties' length: MQTT variable byte integers, decoded inline
            # (a function call per packet costs as much as the decoding).
            length = shift = 0
            while p < end and shift <= 21:
                byte = buf[p]
                p += 1
                length |= (byte & 127) << shift
                shift += 7
                if byte < 128:
                    break
            else:
                break  # cut by the chunk's end, or more than 4 length bytes: paho's turn
            stop = p + length
            if stop > end or length < 2:
                break
            topic_end = p + 2 + ((buf[p] << 8) | buf[p + 1])
            if topic_end == p + 2:
                break  # an empty topic (an alias, or malformed): paho decides
            mid = 0
            q = topic_end
            if qos:
                if q + 2 > stop:
                    break
                mid = (buf[q] << 8) | buf[q + 1]
                q += 2
            if v5:
                size = shift = 0
                while q < stop and shift <= 21:
                    byte = buf[q]
                    q += 1
                    size |= (byte & 127) << shift
                    shift += 7
                    if byte < 128:
                        break
                else:
                    break
                q += size
            if q > stop:
                break
            out.append((buf[p + 2 : topic_end], buf[q:stop], mid, qos))
            pos = stop
        self._rpos = pos
        if out:
            with self._msgtime_mutex:
                self._last_bytes_received = time_func()
            deliver(out)


def make_client(config: MqttConfig, *, client_id: str | None = None, persistent: bool = False) -> mqtt.Client:
    """Build a paho client for *config* (not yet connected).

    With *persistent*, the session survives disconnects: MQTT 3.1.1 ``clean_session=False``; MQTT 5 uses
    ``clean_start=False`` and the session expiry passed to :func:`connect`.
    """
    protocol = mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311
    client = BufferedClient(
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
