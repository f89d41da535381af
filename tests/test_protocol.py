"""The payload decoder: accepted forms, unit conversion, and a precise reason for every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from ingest.protocol import PayloadDecoder, PayloadLimits, parse_topic, parse_ts
from twin.demo import demo_sensors
from twin.errors import PayloadError
from twin.sensors import SensorRegistry

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PREFIX = "lifeline/v1"


@pytest.fixture
def decoder() -> PayloadDecoder:
    return PayloadDecoder(
        sensors=SensorRegistry(demo_sensors()),
        prefix=PREFIX,
        limits=PayloadLimits(max_payload_bytes=4096, max_batch_items=10),
        clock=lambda: NOW,
    )


def _one(decoder: PayloadDecoder, topic: str, payload: bytes) -> str:
    out = decoder.decode(topic, payload)
    assert not out.readings, out.readings
    assert len(out.rejected) == 1
    return out.rejected[0].reason


def test_single_reading_in_iso_time_is_stored_in_utc() -> None:
    dec = PayloadDecoder(sensors=SensorRegistry(demo_sensors()), clock=lambda: NOW)
    out = dec.decode(
        "lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T17:59:00+08:00", "value": 1.25, "unit": "m", "seq": 3}'
    )
    assert not out.rejected
    (r,) = out.readings
    assert (r.sensor_id, r.ts, r.value, r.quality, r.seq) == (
        "D-L-001",
        datetime(2026, 11, 25, 9, 59, tzinfo=UTC),
        1.25,
        0,
        3,
    )


def test_epoch_milliseconds_and_unit_conversion(decoder: PayloadDecoder) -> None:
    ms = int((NOW - timedelta(minutes=1)).timestamp() * 1000)
    out = decoder.decode("lifeline/v1/water/W-P-001", orjson.dumps({"ts": ms, "value": 0.31, "unit": "MPa"}))
    (r,) = out.readings
    assert r.ts == NOW - timedelta(minutes=1)
    assert r.value == pytest.approx(310.0)
    out = decoder.decode("lifeline/v1/gas/G-M-001", orjson.dumps({"ts": ms, "value": 5000, "unit": "ppm"}))
    assert out.readings[0].value == pytest.approx(10.0)  # 5,000 ppm CH4 = 10 %LEL


def test_value_outside_valid_range_is_kept_with_bad_quality(decoder: PayloadDecoder) -> None:
    out = decoder.decode(
        "lifeline/v1/drainage/D-L-001", orjson.dumps({"ts": NOW.isoformat(), "value": 99.0, "unit": "m"})
    )
    assert out.readings[0].quality == 2


def test_batch_with_items_for_other_sensors_and_batch_unit(decoder: PayloadDecoder) -> None:
    body = {
        "unit": "kPa",
        "readings": [
            {"ts": NOW.isoformat(), "value": 300},
            {"sensor": "W-P-002", "ts": NOW.isoformat(), "value": 290.5, "quality": "uncertain"},
        ],
    }
    out = decoder.decode("lifeline/v1/water/W-P-001", orjson.dumps(body))
    assert not out.rejected
    assert [(r.sensor_id, r.value, r.quality) for r in out.readings] == [("W-P-001", 300.0, 0), ("W-P-002", 290.5, 1)]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("lifeline/v1/drainage/D-L-001", b"level=1.2", "not_json"),
        ("lifeline/v1/drainage/D-L-001", b"\xff\xfe\x00garbage", "not_json"),
        ("lifeline/v1/drainage/D-L-001", b"[1, 2, 3]", "not_object"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": "1.2", "unit": "m"}', "wrong_type"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": true, "unit": "m"}', "wrong_type"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": NaN, "unit": "m"}', "non_finite"),
        (
            "lifeline/v1/drainage/D-L-001",
            b'{"ts": "2026-11-25T10:00:00Z", "value": Infinity, "unit": "m"}',
            "non_finite",
        ),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": 1e400, "unit": "m"}', "non_finite"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "unit": "m"}', "missing_field"),
        ("lifeline/v1/drainage/D-L-001", b'{"value": 1.0, "unit": "m"}', "missing_field"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0}', "missing_field"),
        (
            "lifeline/v1/drainage/D-L-001",
            b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "furlong"}',
            "unknown_unit",
        ),
        (
            "lifeline/v1/drainage/D-L-001",
            b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "kPa"}',
            "unit_mismatch",
        ),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T12:00:00Z", "value": 1.0, "unit": "m"}', "ts_in_future"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2020-01-01T00:00:00Z", "value": 1.0, "unit": "m"}', "ts_too_old"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "2026-11-25T10:00:00", "value": 1.0, "unit": "m"}', "bad_timestamp"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": "yesterday", "value": 1.0, "unit": "m"}', "bad_timestamp"),
        ("lifeline/v1/drainage/D-L-001", b'{"ts": 1e30, "value": 1.0, "unit": "m"}', "bad_timestamp"),
        (
            "lifeline/v1/drainage/D-L-001",
            b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "m", "seq": -1}',
            "wrong_type",
        ),
        (
            "lifeline/v1/drainage/D-L-001",
            b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "m", "quality": 9}',
            "bad_quality",
        ),
        ("lifeline/v1/drainage/D-L-001", b'{"x": "' + b"a" * 5000 + b'"}', "oversized"),
        ("lifeline/v1/drainage", b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "m"}', "topic_shape"),
        ("lifeline/v1/drainage/D-L-001/extra", b"{}", "topic_shape"),
        ("other/drainage/D-L-001", b"{}", "topic_shape"),
        ("lifeline/v1/sewage/D-L-001", b"{}", "unknown_network"),
        ("lifeline/v1/drainage/NOPE-1", b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "m"}', "unknown_sensor"),
        ("lifeline/v1/gas/D-L-001", b'{"ts": "2026-11-25T10:00:00Z", "value": 1.0, "unit": "m"}', "network_mismatch"),
        ("lifeline/v1/drainage/D-L-001", b'{"readings": []}', "empty_batch"),
        ("lifeline/v1/drainage/D-L-001", b'{"readings": {"a": 1}}', "wrong_type"),
        ("lifeline/v1/drainage/D-L-001", orjson.dumps({"readings": [{"ts": 1, "value": 1}] * 11}), "batch_too_long"),
    ],
)
def test_bad_message_gets_its_reason(decoder: PayloadDecoder, topic: str, payload: bytes, reason: str) -> None:
    assert _one(decoder, topic, payload) == reason


def test_mixed_batch_keeps_good_items_and_rejects_bad_ones_by_index(decoder: PayloadDecoder) -> None:
    body = {
        "readings": [
            {"ts": NOW.isoformat(), "value": 0.5, "unit": "m"},
            {"ts": NOW.isoformat(), "value": "high", "unit": "m"},
            {"sensor": "GHOST", "ts": NOW.isoformat(), "value": 0.5, "unit": "m"},
            {"ts": (NOW - timedelta(seconds=60)).isoformat(), "value": 52, "unit": "cm"},
            17,
        ]
    }
    out = decoder.decode("lifeline/v1/drainage/D-L-002", orjson.dumps(body))
    assert [(r.sensor_id, r.value) for r in out.readings] == [("D-L-002", 0.5), ("D-L-002", pytest.approx(0.52))]
    assert [(d.item_index, d.reason) for d in out.rejected] == [
        (1, "wrong_type"),
        (2, "unknown_sensor"),
        (4, "not_object"),
    ]
    assert orjson.loads(out.rejected[1].raw)["sensor"] == "GHOST"
    assert len({d.digest for d in out.rejected}) == 1


def test_oversized_message_keeps_its_size_and_capped_raw_bytes() -> None:
    dec = PayloadDecoder(
        sensors=SensorRegistry(demo_sensors()),
        limits=PayloadLimits(max_payload_bytes=100, dead_letter_max_raw_bytes=10),
    )
    (letter,) = dec.decode("lifeline/v1/rain/R-001", b"x" * 500).rejected
    assert (letter.reason, letter.raw_size, letter.raw) == ("oversized", 500, b"x" * 10)


def test_parse_topic_and_ts_raise_typed_errors() -> None:
    with pytest.raises(PayloadError) as err:
        parse_topic("lifeline/v1/water")
    assert err.value.reason == "topic_shape"
    assert isinstance(err.value, ValueError)
    with pytest.raises(PayloadError):
        parse_ts(None)
    assert parse_ts("2026-11-25T10:00:00Z") == NOW
