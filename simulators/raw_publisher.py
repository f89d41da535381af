"""A load publisher: MQTT 3.1.1 at QoS 1 over a plain socket, packets framed here and written in bulk.

paho's publish path costs ~26 µs a message at QoS 1 here (a lock, a message object, a packet and a socket write
each), so a Python publisher built on it tops out near 9,000 messages/s on this machine: less than ingest can
store, so benchmarks built on it measured the publisher. This one frames PUBLISH packets with ``struct`` and writes
thousands in one ``sendall``; it keeps the protocol's promise (every message is acknowledged by the broker before
:meth:`RawPublisher.flush` returns, packet identifiers are never reused while in flight) and nothing more: no
reconnects, no session, no TLS. It is a tool for load tests and benchmarks, not for sensors.

Example:
    >>> with RawPublisher("127.0.0.1", 1883, client_id="load-1") as pub:      # doctest: +SKIP
    ...     pub.publish_many([("lifeline/v1/water/B00001", b'{"ts": 1764028800000, "value": 301.0}')])
    ...     pub.flush(10.0)
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterable
from types import TracebackType

from twin.errors import ServiceError
from twin.mqtt import MqttConfig

_PUBACK, _CONNACK, _PINGRESP = 0x40, 0x20, 0xD0
_MAX_PACKET_ID = 65535


def _varint(n: int) -> bytes:
    """MQTT's remaining-length encoding: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class RawPublisher:
    """A connected MQTT 3.1.1 publisher at QoS 1 (clean session); a context manager.

    Args:
        host, port: the broker.
        client_id: the MQTT client identifier.
        window: messages in flight (sent, not yet acknowledged) at most; below 65,535 so an identifier is never
            reused while its message is in flight (the broker acknowledges QoS 1 messages in order).
        username, password: credentials, if the broker asks for them.

    Attributes:
        sent: messages written to the socket; acked: PUBACKs received.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        window: int = 30_000,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not 0 < window < _MAX_PACKET_ID:
            raise ValueError(f"window must be between 1 and {_MAX_PACKET_ID - 1}, not {window}")
        self.host, self.port, self.client_id, self.window = host, port, client_id, window
        self._username, self._password, self._timeout = username, password, connect_timeout_s
        self._sock: socket.socket | None = None
        self._inbox = bytearray()
        self._next_id = 1
        self.sent = self.acked = 0

    @classmethod
    def from_config(cls, config: MqttConfig, *, client_id: str, window: int = 30_000) -> RawPublisher:
        """A publisher to the broker and with the credentials of *config* (TLS is not supported)."""
        if config.tls:
            raise ServiceError("the load publisher does not speak TLS")
        return cls(
            config.host,
            config.port,
            client_id=client_id,
            window=window,
            username=config.username,
            password=config.password,
        )

    def __enter__(self) -> RawPublisher:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if et is None:
                self.flush()
        finally:
            self.close()

    @property
    def in_flight(self) -> int:
        """Messages sent and not yet acknowledged."""
        return self.sent - self.acked

    def connect(self) -> None:
        """Open the connection and wait for the broker's CONNACK.

        Raises:
            ServiceError: the broker cannot be reached or refuses the connection.
        """
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        except OSError as exc:
            raise ServiceError(f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02  # clean session
        payload = _string(self.client_id.encode())
        if self._username is not None:
            flags |= 0x80
            payload += _string(self._username.encode())
            if self._password is not None:
                flags |= 0x40
                payload += _string(self._password.encode())
        # Keep-alive 0: the broker never disconnects a publisher for being quiet between bursts.
        variable = _string(b"MQTT") + bytes((4, flags)) + struct.pack("!H", 0)
        body = variable + payload
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        self._sock = sock
        deadline = time.monotonic() + self._timeout
        while (packet := self._next_packet()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(f"the MQTT broker at {self.host}:{self.port} did not answer CONNECT")
            self._receive(left)
        kind, data = packet
        if kind != _CONNACK:
            raise ServiceError(f"the MQTT broker answered CONNECT with packet type {kind >> 4}")
        if len(data) < 2 or data[1] != 0:
            code = data[1] if len(data) >= 2 else -1
            raise ServiceError(f"the MQTT broker at {self.host}:{self.port} refused the connection ({code})")
        sock.setblocking(True)
        sock.settimeout(None)

    def publish_many(self, messages: Iterable[tuple[str | bytes, bytes]]) -> int:
        """Frame *messages* (topic, payload) as QoS 1 PUBLISH packets and write them in one go.

        Waits for acknowledgements first when the window would overflow. Returns how many were written.
        """
        sock = self._connected()
        frames: list[bytes] = []
        pid = self._next_id
        for topic, payload in messages:
            t = topic.encode() if isinstance(topic, str) else topic
            frames.append(
                b"\x32" + _varint(len(t) + len(payload) + 4) + struct.pack("!H", len(t)) + t + struct.pack("!H", pid)
            )
            frames.append(payload)
            pid = pid + 1 if pid < _MAX_PACKET_ID else 1
        n = len(frames) // 2
        if n > self.window:
            raise ValueError(f"{n} messages in one call: more than the window of {self.window}")
        while self.in_flight + n > self.window:
            self.poll(0.05)
        sock.sendall(b"".join(frames))
        self._next_id = pid
        self.sent += n
        self.poll(0.0)
        return n

    def poll(self, timeout_s: float) -> int:
        """Read what the broker sent (waiting up to *timeout_s* for something); return the PUBACKs counted."""
        before = self.acked
        if self._receive(timeout_s):
            for kind, _data in self._packets():
                if kind == _PUBACK:
                    self.acked += 1
                elif kind != _PINGRESP:
                    raise ServiceError(f"unexpected MQTT packet type {kind >> 4} from the broker")
        return self.acked - before

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker acknowledged every message sent.

        Raises:
            ServiceError: some are still unacknowledged after *timeout_s*.
        """
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceError(f"{self.in_flight} messages not acknowledged within {timeout_s:.0f} s")
            self.poll(min(left, 0.1))

    def close(self) -> None:
        """Send DISCONNECT and close the socket (idempotent)."""
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._sock.sendall(b"\xe0\x00")
        self._sock.close()
        self._sock = None

    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise ServiceError("the publisher is not connected")
        return self._sock

    def _receive(self, timeout_s: float) -> bool:
        """Append what is waiting on the socket to the inbox; False if nothing came within *timeout_s*."""
        sock = self._connected()
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
        if not ready:
            return False
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ServiceError(f"the MQTT broker at {self.host}:{self.port} closed the connection")
        self._inbox += chunk
        return True

    def _next_packet(self) -> tuple[int, bytes] | None:
        """Cut one whole packet (type, body) off the inbox, or None if it holds less than one."""
        packets = self._packets(limit=1)
        return packets[0] if packets else None

    def _packets(self, limit: int = 0) -> list[tuple[int, bytes]]:
        """Cut the whole packets (type, body) off the inbox, at most *limit* (0: all); one cut at the end, as a
        read of 64 KiB holds ~16,000 four-byte PUBACKs."""
        buf, i, end = self._inbox, 0, len(self._inbox)
        out: list[tuple[int, bytes]] = []
        while end - i >= 2 and not (limit and len(out) >= limit):
            length = shift = 0
            j = i + 1
            while j < end:
                byte = buf[j]
                length |= (byte & 0x7F) << shift
                j += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break
            if end < j + length:
                break
            out.append((buf[i] & 0xF0, bytes(buf[j : j + length])))
            i = j + length
        del buf[:i]
        return out
