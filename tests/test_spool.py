"""The disk spool on its own: append, read back in order, torn and corrupt records, the bound, deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest.spool import (
    MAGIC,
    RECORD_OVERHEAD,
    Spool,
    SpooledBatch,
    SpoolError,
    SpoolFullError,
    decode_batch,
    encode_batch,
)
from twin.alerts import AlertChange
from twin.errors import PayloadError
from twin.readings import Reading
from twin.store.dead_letter import DeadLetter, digest_of

T0 = datetime(2026, 11, 25, 0, 0, 0, 123456, tzinfo=UTC)


def _payloads(spool: Spool) -> list[bytes]:
    return [r.payload for r in spool.pending()]


def test_records_come_back_in_order_after_reopening(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64) as spool:
        for i in range(10):
            spool.append(f"record {i}".encode(), at=T0 + timedelta(seconds=i))
        status = spool.status()
        assert (status.records, status.oldest) == (10, T0)
        assert status.segments > 1  # 64-byte segments: several files
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64) as spool:
        assert _payloads(spool) == [f"record {i}".encode() for i in range(10)]
        assert spool.status().oldest == T0


def test_pending_is_bounded_and_repeats_until_marked(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        for i in range(5):
            spool.append(bytes([i]) * 100)
        first = spool.pending(max_bytes=250)
        assert [r.index for r in first] == [0, 1]
        assert spool.pending(max_bytes=250) == first
        spool.mark_replayed(first)
        assert [r.payload[0] for r in spool.pending(max_bytes=10)] == [2]  # at least one record, even if larger
        with pytest.raises(ValueError, match="not the next one"):
            spool.mark_replayed(spool.pending()[1:])


def test_replayed_segments_are_deleted_and_appends_continue(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=50) as spool:
        for i in range(6):
            spool.append(bytes([i]) * 60)
        files = sorted(tmp_path.glob("*.seg"))
        assert len(files) == 6
        spool.mark_replayed(spool.pending()[:3])
        assert sorted(tmp_path.glob("*.seg")) == files[3:]
        spool.append(b"late")
        spool.mark_replayed(spool.pending())
        assert spool.empty
        assert list(tmp_path.glob("*.seg")) == []
        assert spool.status().bytes == 0
        spool.append(b"after")
        assert _payloads(spool) == [b"after"]


def test_torn_last_record_is_ignored_and_the_rest_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(b"first")
        spool.append(b"second, cut short by a crash")
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert _payloads(spool) == [b"first"]
        assert "torn record" in caplog.text
        spool.append(b"third")  # goes to a new segment, never after the torn tail
        assert _payloads(spool) == [b"first", b"third"]
        assert len(list(tmp_path.glob("*.seg"))) == 2
        spool.mark_replayed(spool.pending())
        assert list(tmp_path.glob("*")) == [tmp_path / "lock"]


def test_torn_header_and_checksum_mismatch_at_the_tail_are_ignored(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        spool.append(b"kept")
        spool.append(b"flipped")
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF  # the last record's payload no longer matches its checksum
    segment.write_bytes(bytes(data) + b"\x07\x00")  # and half a header after it
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert _payloads(spool) == [b"kept"]


def test_corruption_before_the_tail_is_reported_and_the_file_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        for word in (b"one", b"two", b"three"):
            spool.append(word)
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = len(MAGIC) + RECORD_OVERHEAD + 3
    data[second + RECORD_OVERHEAD] ^= 0xFF
    segment.write_bytes(bytes(data))
    with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert _payloads(spool) == [b"one"]
        assert "bad checksum" in caplog.text
        spool.mark_replayed(spool.pending())
    assert segment.with_suffix(".corrupt").exists()


def test_full_spool_refuses_without_writing_and_accepts_after_replay(tmp_path: Path) -> None:
    limit = len(MAGIC) + 3 * (RECORD_OVERHEAD + 100)
    with Spool(tmp_path, max_bytes=limit) as spool:
        for _ in range(3):
            spool.append(b"x" * 100)
        before = spool.status()
        with pytest.raises(SpoolFullError, match="full"):
            spool.append(b"y")
        assert spool.status() == before
        assert isinstance(SpoolFullError("x"), OSError)
        spool.mark_replayed(spool.pending())
        spool.append(b"y" * 100)
        assert _payloads(spool) == [b"y" * 100]


def test_a_second_process_cannot_share_the_directory(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20)
    Spool(tmp_path, max_bytes=1 << 20).close()  # released on close


def test_batch_round_trips_exactly() -> None:
    raw = b'{"ts": "yesterday", "value": 1}'
    batch = SpooledBatch(
        readings=[
            Reading("D-L-001", T0, 0.1 + 0.2, 0, 17),
            Reading("W-P-001", T0 + timedelta(microseconds=1), -3e-9, 2),
        ],
        dead_letters=[DeadLetter("t/x", raw, len(raw), digest_of("t/x", raw), -1, "bad_timestamp", "'ts' …")],
        changes=[
            AlertChange(
                event="raised",
                cause_key="threshold:D-L-001:high",
                kind="threshold",
                sensor_id="D-L-001",
                network="drainage",
                district="吉州区",
                grade=2,
                ts=T0,
                value=1.72,
                threshold=1.6,
                message="Ⅱ级",
                message_en="grade II",
                detail={"candidates": [{"asset": "water:node:J1", "score": 0.93}]},
            )
        ],
    )
    assert decode_batch(encode_batch(batch)) == batch


def test_unreadable_record_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="spool_record"):
        decode_batch(b'{"format": 99}')
    with pytest.raises(PayloadError, match="spool_record"):
        decode_batch(b"\xff")
