"""A bounded, crash-safe disk spool for batches that could not be written while the database is away.

Layout: one directory per ingest worker holding append-only segment files ``{seq:012d}.seg`` and a lock file.
A segment starts with an 8-byte magic (``LLSPOOL1``); each record after it is::

    length   u32 little-endian   bytes of payload
    crc32    u32 little-endian   CRC-32 of the 8 bytes of spooled_at and the payload
    spooled_at i64 little-endian  microseconds since the Unix epoch (UTC)
    payload  length bytes        one encoded batch (:func:`encode_batch`)

:meth:`Spool.append` writes one record and syncs it to disk (``fsync``) before returning, so a caller that
acknowledges its messages only afterwards keeps the at-least-once contract. A record cut short by a crash fails its
checksum (or is shorter than its header says) and is ignored on reading: it was never acknowledged, so the broker
delivers its messages again. A process never appends to a segment it did not create, so a torn record can only be a
tail.

Records are handed out in order with :meth:`Spool.pending` and given back with :meth:`Spool.mark_replayed` once
they are committed; a segment file is deleted only when every record in it has been replayed. Replaying a record
twice (a crash between the commit and the deletion) is harmless because every store write is idempotent.

Example:
    >>> import tempfile
    >>> with Spool(Path(tempfile.mkdtemp()), max_bytes=1 << 20) as spool:
    ...     spool.append(b"batch 1")
    ...     [r.payload for r in spool.pending()]
    [b'batch 1']
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import orjson

from twin.alerts import AlertChange
from twin.errors import LifelineError, PayloadError
from twin.readings import Reading
from twin.store.dead_letter import DeadLetter

log = logging.getLogger(__name__)

MAGIC = b"LLSPOOL1"
_HEADER = struct.Struct("<IIq")
RECORD_OVERHEAD = _HEADER.size
"""Bytes each record adds to its payload on disk."""
DEFAULT_MAX_BYTES = 1 << 30
"""Default bound of the spool on disk: 1 GiB."""
DEFAULT_SEGMENT_BYTES = 16 << 20
"""A segment is closed and a new one started once it holds this many bytes (16 MiB)."""
MAX_RECORD_BYTES = (1 << 32) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMAT = 1


class SpoolError(LifelineError, OSError):
    """The spool cannot be used: its directory cannot be written, or another process holds it."""


class SpoolFullError(SpoolError):
    """The record does not fit within ``max_bytes``; nothing was written."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from the spool.

    Attributes:
        segment: sequence number of the segment file holding it.
        index: its position in that segment, from 0.
        spooled_at: when it was appended (aware UTC).
        payload: the bytes appended.
    """

    segment: int
    index: int
    spooled_at: datetime
    payload: bytes


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int = 0
    """Bytes on disk, header and torn tail included."""
    records: list[tuple[int, int, datetime]] = field(default_factory=list)
    """(offset, payload length, spooled_at) of each valid record."""
    replayed: int = 0
    """Records at the front already committed to the store."""
    corrupt: bool = False
    """Unreadable bytes follow the last valid record and are not a torn tail: keep the file when done."""


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What the spool holds now.

    Attributes:
        bytes: bytes of segment files on disk (replayed records not yet deleted included).
        records: records not yet replayed.
        oldest: when the oldest record not yet replayed was appended (aware UTC), or None.
        segments: segment files on disk.
    """

    bytes: int
    records: int
    oldest: datetime | None
    segments: int


class Spool:
    """An append-only spool of records in segment files under *directory*, bounded to *max_bytes* on disk.

    Args:
        directory: where the segments live; created if missing. One process at a time (an exclusive lock).
        max_bytes: :meth:`append` raises :class:`SpoolFullError` rather than grow the files beyond this, bytes.
        segment_bytes: a segment holding this many bytes is closed and the next record starts a new one, bytes.

    Raises:
        SpoolError: the directory cannot be created or locked (another process uses it).
    """

    def __init__(
        self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        if max_bytes <= len(MAGIC) + RECORD_OVERHEAD:
            raise ValueError(f"max_bytes must be more than {len(MAGIC) + RECORD_OVERHEAD}, got {max_bytes}")
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._file: BinaryIO | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.directory / "lock", "a+b")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            raise SpoolError(f"spool directory {self.directory} is in use by another process") from exc
        self._load()

    # -- reading what is on disk ------------------------------------------------------------------------------

    def _load(self) -> None:
        for path in sorted(self.directory.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                log.warning("spool: ignoring %s (not a segment name)", path)
                continue
            segment = self._scan(seq, path)
            if segment.records:
                self._segments.append(segment)
            elif segment.corrupt:
                path.rename(path.with_suffix(".corrupt"))
            else:
                path.unlink()
        status = self.status()
        if status.records:
            log.warning(
                "spool %s holds %d records (%d bytes in %d segments) from before, oldest %s",
                self.directory,
                status.records,
                status.bytes,
                status.segments,
                status.oldest.isoformat() if status.oldest else "-",
            )

    def _scan(self, seq: int, path: Path) -> _Segment:
        data = path.read_bytes()
        segment = _Segment(seq, path, size=len(data))
        if not data.startswith(MAGIC):
            if len(data) >= len(MAGIC):
                log.error("spool: %s is not a spool segment (bad magic); kept as .corrupt", path)
                segment.corrupt = True
            return segment
        offset = len(MAGIC)
        while offset < len(data):
            if len(data) - offset < RECORD_OVERHEAD:
                break
            length, crc, at_us = _HEADER.unpack_from(data, offset)
            end = offset + RECORD_OVERHEAD + length
            if end > len(data):
                break
            body = data[offset + 8 : end]
            if zlib.crc32(body) != crc:
                if end < len(data):
                    # More data follows a bad record: not a write cut short by a crash, so say so loudly.
                    log.error(
                        "spool: %s has a bad checksum at byte %d with %d bytes after it; the records before it are"
                        " replayed and the file is kept as .corrupt",
                        path,
                        offset,
                        len(data) - end,
                    )
                    segment.corrupt = True
                break
            segment.records.append((offset, length, _EPOCH + timedelta(microseconds=at_us)))
            offset = end
        if offset < len(data) and not segment.corrupt:
            log.warning(
                "spool: ignoring a torn record of %d bytes at the end of %s (cut short by a crash, never"
                " acknowledged, so the broker delivers it again)",
                len(data) - offset,
                path,
            )
        return segment

    # -- appending --------------------------------------------------------------------------------------------

    def append(self, payload: bytes, *, at: datetime | None = None) -> None:
        """Append one record and make it durable (``fsync``) before returning.

        Args:
            payload: the bytes to keep.
            at: when it was spooled (aware UTC; default now).

        Raises:
            SpoolFullError: the spool would grow beyond ``max_bytes``; nothing was written.
            SpoolError: the write failed (e.g. the disk is full); nothing of it will be read back.
        """
        size = RECORD_OVERHEAD + len(payload)
        if len(payload) > MAX_RECORD_BYTES:
            raise SpoolFullError(f"a record of {len(payload)} bytes is larger than a spool record can be")
        new_segment = self._active is None or self._active.size >= self.segment_bytes
        needed = size + (len(MAGIC) if new_segment else 0)
        used = self.status().bytes
        if used + needed > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} is full: {used} of {self.max_bytes} bytes used, {needed} more needed"
            )
        at_us = (at or datetime.now(UTC)) - _EPOCH
        at_us_int = at_us // timedelta(microseconds=1)
        body = struct.pack("<q", at_us_int) + payload
        record = struct.pack("<II", len(payload), zlib.crc32(body)) + body
        if new_segment:
            self._start_segment()
        segment, file = self._active, self._file
        assert segment is not None and file is not None
        offset = segment.size
        try:
            file.write(record)
            file.flush()
            os.fsync(file.fileno())
        except OSError as exc:
            self._undo_partial_write(offset)
            raise SpoolError(f"cannot write to spool {segment.path}: {exc}") from exc
        segment.size += len(record)
        segment.records.append((offset, len(payload), _EPOCH + timedelta(microseconds=at_us_int)))

    def _start_segment(self) -> None:
        self._close_active()
        seq = max((s.seq for s in self._segments), default=0) + 1
        path = self.directory / f"{seq:012d}.seg"
        try:
            file = open(path, "xb")  # noqa: SIM115 - kept open while the segment is active
            file.write(MAGIC)
            file.flush()
            os.fsync(file.fileno())
            _fsync_directory(self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise SpoolError(f"cannot create spool segment {path}: {exc}") from exc
        segment = _Segment(seq, path, size=len(MAGIC))
        self._segments.append(segment)
        self._active, self._file = segment, file

    def _undo_partial_write(self, offset: int) -> None:
        """Cut a failed write off, or, if that fails too, stop appending to this segment (its tail is torn)."""
        file = self._file
        assert file is not None
        try:
            file.truncate(offset)
            file.seek(offset)
        except OSError:
            self._close_active()

    def _close_active(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file, self._active = None, None

    # -- replaying --------------------------------------------------------------------------------------------

    def pending(self, *, max_bytes: int = 64 << 20) -> list[SpoolRecord]:
        """Return the next records not yet replayed, oldest first: at least one (if any), at most ~*max_bytes*.

        They stay pending until :meth:`mark_replayed`; a second call returns the same records.
        """
        out: list[SpoolRecord] = []
        total = 0
        for segment in self._segments:
            todo = segment.records[segment.replayed :]
            if not todo:
                continue
            if self._active is segment and self._file is not None:
                self._file.flush()
            with open(segment.path, "rb") as file:
                for i, (offset, length, at) in enumerate(todo, start=segment.replayed):
                    if out and total + length > max_bytes:
                        return out
                    file.seek(offset + RECORD_OVERHEAD)
                    payload = file.read(length)
                    out.append(SpoolRecord(segment.seq, i, at, payload))
                    total += length
        return out

    def mark_replayed(self, records: Iterable[SpoolRecord]) -> None:
        """Record that *records* (from :meth:`pending`, in order) are committed; delete segments now done.

        Raises:
            ValueError: the records are not the next pending ones.
        """
        by_seq = {s.seq: s for s in self._segments}
        for record in records:
            segment = by_seq.get(record.segment)
            if segment is None or record.index != segment.replayed:
                raise ValueError(f"record {record.segment}:{record.index} is not the next one pending")
            segment.replayed += 1
        for segment in list(self._segments):
            if segment.replayed < len(segment.records):
                continue
            if segment is self._active:
                self._close_active()
            try:
                if segment.corrupt:
                    segment.path.rename(segment.path.with_suffix(".corrupt"))
                else:
                    segment.path.unlink()
            except FileNotFoundError:
                pass
            self._segments.remove(segment)

    # -- state ------------------------------------------------------------------------------------------------

    def status(self) -> SpoolStatus:
        """Return bytes on disk, records pending and the time of the oldest pending record."""
        records = 0
        oldest: datetime | None = None
        for segment in self._segments:
            left = len(segment.records) - segment.replayed
            if left and oldest is None:
                oldest = segment.records[segment.replayed][2]
            records += left
        return SpoolStatus(sum(s.size for s in self._segments), records, oldest, len(self._segments))

    @property
    def empty(self) -> bool:
        """True when nothing is waiting to be replayed."""
        return all(s.replayed >= len(s.records) for s in self._segments)

    def close(self) -> None:
        """Close the active segment and release the directory (a second call does nothing)."""
        self._close_active()
        if self._lock.closed:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- what a record holds: one batch --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch as spooled: its accepted readings, its dead letters and the alert changes the detectors made of it.

    The changes are applied to the store in order on replay, after the readings of the same record.
    """

    readings: Sequence[Reading]
    dead_letters: Sequence[DeadLetter]
    changes: Sequence[AlertChange]


def encode_batch(batch: SpooledBatch) -> bytes:
    """Return *batch* as compact JSON bytes (times as integer microseconds, so they come back exactly)."""
    doc = {
        "format": _FORMAT,
        "readings": [[r.sensor_id, _us(r.ts), r.value, r.quality, r.seq] for r in batch.readings],
        "dead_letters": [
            [
                d.topic,
                base64.b64encode(d.raw).decode("ascii"),
                d.raw_size,
                d.digest.hex(),
                d.item_index,
                d.reason,
                d.detail,
            ]
            for d in batch.dead_letters
        ],
        "changes": [
            {
                "event": c.event,
                "cause_key": c.cause_key,
                "kind": c.kind,
                "sensor_id": c.sensor_id,
                "network": c.network,
                "district": c.district,
                "grade": c.grade,
                "ts_us": _us(c.ts),
                "value": c.value,
                "threshold": c.threshold,
                "message": c.message,
                "message_en": c.message_en,
                "detail": dict(c.detail) if c.detail is not None else None,
            }
            for c in batch.changes
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_batch(payload: bytes) -> SpooledBatch:
    """Read a batch written by :func:`encode_batch`.

    Raises:
        PayloadError: reason ``spool_record``: the bytes are not a spooled batch of a known format.
    """
    try:
        doc = orjson.loads(payload)
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError(f"format {doc.get('format') if isinstance(doc, dict) else None!r} is not {_FORMAT}")
        readings = [
            Reading(str(s), _from_us(ts), float(v), int(q), None if seq is None else int(seq))
            for s, ts, v, q, seq in doc["readings"]
        ]
        letters = [
            DeadLetter(str(t), base64.b64decode(raw), int(size), bytes.fromhex(digest), int(i), str(reason), str(det))
            for t, raw, size, digest, i, reason, det in doc["dead_letters"]
        ]
        changes = [_change(c) for c in doc["changes"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise PayloadError("spool_record", f"not a spooled batch: {exc}") from exc
    return SpooledBatch(readings, letters, changes)


def _change(c: Mapping[str, Any]) -> AlertChange:
    return AlertChange(
        event=c["event"],
        cause_key=c["cause_key"],
        kind=c["kind"],
        sensor_id=c["sensor_id"],
        network=c["network"],
        district=c["district"],
        grade=int(c["grade"]),
        ts=_from_us(c["ts_us"]),
        value=c["value"],
        threshold=c["threshold"],
        message=c["message"],
        message_en=c["message_en"],
        detail=c["detail"],
    )


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))
