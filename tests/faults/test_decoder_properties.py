"""Property-based tests of the payload decoder: any bytes on any topic are decoded or refused with a reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from operator import attrgetter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.protocol import PayloadDecoder, PayloadLimits, parse_topic
from twin.demo import demo_sensors
from twin.sensors import SensorRegistry

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DECODER = PayloadDecoder(
    sensors=SensorRegistry(demo_sensors()), limits=PayloadLimits(max_payload_bytes=4096), clock=lambda: NOW
)
TOPICS = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "lifeline/v1/drainage/D-L-001",
            "lifeline/v1/water/W-P-001",
            "lifeline/v1/gas/G-M-001",
            "lifeline/v1/rain/R-001",
            "lifeline/v1/water",
            "lifeline/v1//x",
        ]
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def _check(topic: str, payload: bytes) -> None:
    out = DECODER.decode(topic, payload)
    assert out.readings or out.rejected, "a message must yield readings or refusals"
    for reading in out.readings:
        assert math.isfinite(reading.value) and reading.ts.tzinfo is not None
        assert reading.quality in (0, 1, 2)
    for letter in out.rejected:
        assert letter.reason and letter.detail
        assert letter.raw_size >= 0 and len(letter.digest) == 32


@settings(max_examples=400, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=600))
def test_any_bytes_on_any_topic_are_decoded_or_refused(topic: str, payload: bytes) -> None:
    _check(topic, payload)


@settings(max_examples=400, deadline=None)
@given(
    topic=TOPICS,
    doc=st.dictionaries(
        st.sampled_from(["ts", "value", "unit", "seq", "quality", "readings", "sensor", "x"]), JSON_VALUES, max_size=6
    ),
)
def test_any_json_object_is_decoded_or_refused(topic: str, doc: dict[str, object]) -> None:
    _check(topic, json.dumps(doc).encode())  # stdlib: integers of any size, as a sender might write


@settings(max_examples=300, deadline=None)
@given(
    value=st.floats(allow_nan=False, allow_infinity=False, width=64),
    offset_s=st.integers(min_value=-40 * 86400, max_value=3600),
    unit=st.sampled_from(["m", "cm", "mm", "kPa", "furlong"]),
)
def test_well_formed_readings_are_stored_exactly_when_within_limits(value: float, offset_s: int, unit: str) -> None:
    ts = NOW + timedelta(seconds=offset_s)
    out = DECODER.decode(
        "lifeline/v1/drainage/D-L-003", orjson.dumps({"ts": ts.isoformat(), "value": value, "unit": unit})
    )
    accepted = unit in ("m", "cm", "mm") and -30 * 86400 <= offset_s <= 300
    assert bool(out.readings) == accepted, out.rejected
    if accepted:
        factor = {"m": 1.0, "cm": 0.01, "mm": 0.001}[unit]
        assert out.readings[0].value == value * factor and out.readings[0].ts == ts


GENERAL = PayloadDecoder(
    sensors=SensorRegistry(demo_sensors()), limits=PayloadLimits(max_payload_bytes=4096), clock=lambda: NOW
)
GENERAL.fast_path = False
NOW_MS = int(NOW.timestamp() * 1000)
PLAIN_TS = st.one_of(
    st.integers(min_value=NOW_MS - 31 * 86_400_000, max_value=NOW_MS + 400_000),
    st.integers(min_value=-(2**40), max_value=2**45),
    st.datetimes(
        min_value=datetime(2026, 10, 1), max_value=datetime(2026, 12, 31), timezones=st.sampled_from([UTC, None])
    ).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-25T09:59:00Z", "2026-11-25T17:59:00+08:00", "not a time", "", True, 1.5e12, None]),
)
PLAIN_VALUE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([1e308, -1e308, True, "1.0", None]),
)
PLAIN_ITEM = st.one_of(
    st.fixed_dictionaries({"ts": PLAIN_TS, "value": PLAIN_VALUE}),
    st.fixed_dictionaries({"ts": PLAIN_TS, "value": PLAIN_VALUE, "quality": st.sampled_from(["good", "bad", 7])}),
    st.fixed_dictionaries(
        {"sensor": st.sampled_from(["W-P-001", "D-L-001", "W-P-002", "nope"]), "ts": PLAIN_TS, "value": PLAIN_VALUE}
    ),
    JSON_VALUES,
)


@settings(max_examples=500, deadline=None)
@given(
    topic=st.sampled_from(["lifeline/v1/water/W-P-001", "lifeline/v1/drainage/D-L-001", "lifeline/v1/gas/W-P-001"]),
    unit=st.sampled_from(["kPa", "MPa", "m", "mm", "bar", "psi", 3]),
    items=st.lists(PLAIN_ITEM, min_size=1, max_size=8),
)
def test_fast_batch_path_gives_what_the_general_path_gives(topic: str, unit: object, items: list[object]) -> None:
    payload = json.dumps({"unit": unit, "readings": items}).encode()
    fast, general = DECODER.decode(topic, payload), GENERAL.decode(topic, payload)
    assert list(fast.readings) == general.readings
    assert [(r.reason, r.item_index, r.detail) for r in fast.rejected] == [
        (r.reason, r.item_index, r.detail) for r in general.rejected
    ]


def test_plain_batches_take_the_fast_path() -> None:
    ts = NOW_MS - 60_000
    items: list[dict[str, object]] = [{"ts": ts + 1000 * k, "value": 300.0 + k} for k in range(50)]
    items += [{"ts": datetime.fromtimestamp((ts + 60_000 + k) / 1000, UTC).isoformat(), "value": 2} for k in range(3)]
    fast = DECODER._simple_batch(items, parse_topic("lifeline/v1/water/W-P-001"), {"unit": "kPa"}, NOW)
    assert fast is not None and len(fast) == 53
    general = GENERAL.decode("lifeline/v1/water/W-P-001", orjson.dumps({"unit": "kPa", "readings": items}))
    assert fast == general.readings
    assert fast[0].ts == datetime.fromtimestamp(ts / 1000, UTC) and fast[0].value == 300.0


def _iso(ms: int, shape: str) -> str:
    ts = datetime.fromtimestamp(ms / 1000, UTC)
    text = ts.isoformat(timespec={"s": "seconds", "ms": "milliseconds", "us": "microseconds"}[shape[0:2].strip()])
    return text.replace("+00:00", "Z") if shape.endswith("Z") else text


COLUMN_SHAPES = st.sampled_from(["int", "s Z", "msZ", "usZ", "s +", "ms+", "us+"])


@st.composite
def _uniform_batches(draw: st.DrawFn) -> list[dict[str, object]]:
    """Batches whose timestamps are all of one shape, as sensors send them, with now and then one odd item."""
    shape = draw(COLUMN_SHAPES)
    with_sensor = draw(st.booleans())
    times = draw(
        st.lists(st.integers(min_value=NOW_MS - 32 * 86_400_000, max_value=NOW_MS + 400_000), min_size=1, max_size=8)
    )
    values = draw(st.lists(PLAIN_VALUE, min_size=len(times), max_size=len(times)))
    items: list[dict[str, object]] = []
    for ms, value in zip(times, values, strict=True):
        item: dict[str, object] = {"ts": ms if shape == "int" else _iso(ms, shape), "value": value}
        if with_sensor:
            item = {"sensor": "W-P-001", **item}
        items.append(item)
    if draw(st.integers(0, 4)) == 0:
        items[draw(st.integers(0, len(items) - 1))] = draw(PLAIN_ITEM)
    return items


@settings(max_examples=500, deadline=None)
@given(unit=st.sampled_from(["kPa", "MPa", "m"]), items=_uniform_batches())
def test_column_path_gives_what_the_general_path_gives(unit: str, items: list[object]) -> None:
    topic = "lifeline/v1/water/W-P-001"
    payload = json.dumps({"unit": unit, "readings": items}).encode()
    fast, general = DECODER.decode(topic, payload), GENERAL.decode(topic, payload)
    assert list(fast.readings) == general.readings
    assert [(r.reason, r.item_index, r.detail) for r in fast.rejected] == [
        (r.reason, r.item_index, r.detail) for r in general.rejected
    ]


@pytest.mark.parametrize("shape", ["int", "s Z", "msZ", "usZ", "s +", "ms+", "us+"])
def test_uniform_batches_are_decoded_as_columns(shape: str) -> None:
    ts = NOW_MS - 60_000
    items = [
        {"ts": ts + 1001 * k if shape == "int" else _iso(ts + 1001 * k, shape), "value": 300 + k} for k in range(50)
    ]
    out = DECODER.decode("lifeline/v1/water/W-P-001", orjson.dumps({"unit": "kPa", "readings": items}))
    assert out.columns is not None and len(out.columns) == 50 and not out.rows
    general = GENERAL.decode("lifeline/v1/water/W-P-001", orjson.dumps({"unit": "kPa", "readings": items}))
    assert list(out.readings) == general.readings


@pytest.mark.parametrize(
    "stamps",
    [
        ["2026-11-25 09:59:00Z"],  # numpy reads a space for T; the general path decides
        ["+026-11-25T09:59:00Z"],
        ["2026-11-25T09:59:00Z", "2026-11-25T09:59:00.5Z"],  # mixed shapes
        ["2026-11-25T17:59:00+08:00"],
        ["2026-11-25T09:59:00Ｚ"],
    ],
)
def test_other_timestamp_shapes_leave_the_column_path(stamps: list[str]) -> None:
    items = [{"ts": s, "value": 1.0} for s in stamps]
    out = DECODER.decode("lifeline/v1/water/W-P-001", orjson.dumps({"unit": "kPa", "readings": items}))
    general = GENERAL.decode("lifeline/v1/water/W-P-001", orjson.dumps({"unit": "kPa", "readings": items}))
    assert out.columns is None
    assert list(out.readings) == general.readings


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(_uniform_batches(), min_size=1, max_size=6), unit=st.sampled_from(["kPa", "MPa"]))
def test_many_plain_batches_finished_together_give_what_each_gives_alone(
    batches: list[list[object]], unit: str
) -> None:
    topic = "lifeline/v1/water/W-P-001"
    payloads = [json.dumps({"unit": unit, "readings": items}).encode() for items in batches]
    deferred = [DECODER.decode(topic, payload, defer=True) for payload in payloads]
    plains = [d.plain for d in deferred if d.plain is not None]
    columns, slow = DECODER.finish(plains)
    got = list(columns) + [r for d in deferred if d.plain is None for r in d.readings]
    got += [r for d in slow for r in d.readings]
    refused = [(r.reason, r.detail) for d in deferred + slow for r in d.rejected]
    expected = [GENERAL.decode(topic, payload) for payload in payloads]
    key = attrgetter("sensor_id", "ts", "value", "quality")
    assert sorted(got, key=key) == sorted((r for d in expected for r in d.readings), key=key)
    assert sorted(refused) == sorted((r.reason, r.detail) for d in expected for r in d.rejected)


SINGLE_DOC = st.fixed_dictionaries(
    {"ts": PLAIN_TS, "value": PLAIN_VALUE, "unit": st.sampled_from(["kPa", "MPa", "m", 3])},
    optional={"sensor": st.sampled_from(["W-P-001", "nope", 7]), "quality": st.just("good")},
)
SINGLE_TS = st.integers(min_value=NOW_MS - 32 * 86_400_000, max_value=NOW_MS + 400_000).flatmap(
    lambda ms: st.sampled_from([ms, _iso(ms, "msZ"), _iso(ms, "usZ"), _iso(ms, "s +"), _iso(ms, "ms+")])
)


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(
        st.one_of(SINGLE_DOC, st.fixed_dictionaries({"ts": SINGLE_TS, "value": PLAIN_VALUE, "unit": st.just("kPa")})),
        min_size=1,
        max_size=12,
    ),
    topic=st.sampled_from(["lifeline/v1/water/W-P-001", "lifeline/v1/gas/W-P-001", "lifeline/v1/water/nope"]),
)
def test_single_readings_finished_together_give_what_the_general_path_gives(
    docs: list[dict[str, object]], topic: str
) -> None:
    payloads = [json.dumps(doc).encode() for doc in docs]
    deferred = [DECODER.decode(topic, payload, defer=True) for payload in payloads]
    columns, slow = DECODER.finish([d.plain for d in deferred if d.plain is not None])
    got = list(columns) + [r for d in deferred + slow for r in d.readings if d.plain is None]
    refused = [(r.reason, r.detail) for d in deferred + slow for r in d.rejected]
    expected = [GENERAL.decode(topic, payload) for payload in payloads]
    key = attrgetter("sensor_id", "ts", "value", "quality")
    assert sorted(got, key=key) == sorted((r for d in expected for r in d.readings), key=key)
    assert sorted(refused) == sorted((r.reason, r.detail) for d in expected for r in d.rejected)


def test_plain_single_readings_are_deferred() -> None:
    doc = {"sensor": "W-P-001", "ts": NOW_MS - 1000, "value": 300.5, "unit": "kPa"}
    out = DECODER.decode("lifeline/v1/water/W-P-001", orjson.dumps(doc), defer=True)
    assert out.plain is not None and not out.readings
    columns, slow = DECODER.finish([out.plain])
    assert not slow and list(columns) == GENERAL.decode("lifeline/v1/water/W-P-001", orjson.dumps(doc)).readings
