"""Recordings: what a scenario put on the wire, one JSON line per message; and replaying them over MQTT.

A line: ``{"at": "<ISO time>", "topic": "...", "payload": "<UTF-8 text>", "label": null | "<fault>"}``; a payload
that is not UTF-8 is kept as ``"payload_b64"``. Keys are sorted and numbers formatted the same way every time,
so the same scenario and seed give a byte-identical file.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from simulators.faults import WireMessage
from simulators.publisher import Publisher
from twin.errors import ModelImportError

log = logging.getLogger(__name__)


def encode_line(message: WireMessage) -> bytes:
    """Return the recording line of *message* (with its newline)."""
    record: dict[str, Any] = {
        "at": message.at.isoformat(),
        "label": message.label,
        "sensor_id": message.sensor_id,
        "topic": message.topic,
    }
    try:
        record["payload"] = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        record["payload_b64"] = base64.b64encode(message.payload).decode("ascii")
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"


class RecordingWriter:
    """Write a recording line by line; a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[bytes] | None = None

    def __enter__(self) -> RecordingWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb")
        return self

    def write(self, message: WireMessage) -> None:
        assert self._file is not None
        self._file.write(encode_line(message))
        self.count += 1

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()


def read_recording(path: Path) -> Iterator[WireMessage]:
    """Yield the messages of a recording in file order.

    Raises:
        ModelImportError: a line is not a recording line (the message names the file and line).
    """
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                payload = (
                    base64.b64decode(record["payload_b64"])
                    if "payload_b64" in record
                    else str(record["payload"]).encode("utf-8")
                )
                yield WireMessage(
                    datetime.fromisoformat(record["at"]),
                    str(record["topic"]),
                    payload,
                    str(record.get("sensor_id", "")),
                    record.get("label"),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ModelImportError(str(path), f"not a recording line: {exc}", line=number) from exc


def play(
    messages: Iterable[WireMessage],
    *,
    publisher: Publisher | None,
    speed: float | None,
    stop: threading.Event | None = None,
    on_message: Callable[[WireMessage], None] | None = None,
) -> int:
    """Publish *messages* paced by their ``at`` times divided by *speed* (None: as fast as the broker takes them).

    With no *publisher* nothing is sent (``--no-publish``): *on_message* still sees every message. Returns the
    number of messages handled; stops early when *stop* is set.
    """
    first: datetime | None = None
    wall0 = time.monotonic()
    count = 0
    for message in messages:
        if stop is not None and stop.is_set():
            break
        if publisher is not None and speed is not None:
            first = first or message.at
            due = wall0 + (message.at - first).total_seconds() / speed
            delay = due - time.monotonic()
            if delay > 0:
                publisher.flush()
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
        if publisher is not None:
            publisher.publish(message.topic, message.payload)
        if on_message is not None:
            on_message(message)
        count += 1
    if publisher is not None:
        publisher.flush()
    return count
