"""The sensor message protocol: topic shape, payload forms, units and every reason a message is refused.

Topic: ``{prefix}/{network}/{sensor_id}`` where the prefix defaults to ``lifeline/v1`` and network is one of
drainage, water, gas, rain. Payload (UTF-8 JSON object), either one reading::

    {"ts": "2026-11-25T08:00:00+08:00", "value": 1.23, "unit": "m", "seq": 17, "quality": "good"}

or a batch (``sensor`` per item is optional; without it the topic's sensor is meant)::

    {"unit": "kPa", "readings": [{"ts": 1764028800000, "value": 310.5}, {"sensor": "W-P-002", "ts": ..., ...}]}

See ``docs/protocol.md``. Nothing here raises on bad input: every refusal becomes a :class:`DeadLetter`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from twin.errors import PayloadError
from twin.readings import QUALITY_BAD, QUALITY_CODES, Reading, ReadingBatch, ts_to_us
from twin.sensors import Network, Quantity, Sensor, is_known_unit, unit_factor
from twin.store.dead_letter import DeadLetter, digest_of

DEFAULT_PREFIX = "lifeline/v1"
_NETWORKS = frozenset(n.value for n in Network)
_MIN_EPOCH_MS = -62_135_596_800_000 + 86_400_000  # just after 0001-01-01, the datetime range's floor
_MAX_EPOCH_MS = 253_402_300_799_000 - 86_400_000  # just before 9999-12-31
_FAST_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOPIC_CACHE_MAX = 100_000
"""Parsed topics remembered by a decoder (a city's sensors; the cache starts again when it is full)."""
_SIMPLE_ITEM_KEYS = frozenset({"ts", "value"})
_SIMPLE_ITEM_KEYS_WITH_SENSOR = frozenset({"sensor", "ts", "value"})


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Limits on what one message may carry. Each is configurable through the settings.

    Attributes:
        max_payload_bytes: larger messages are refused whole (``oversized``).
        max_batch_items: a batch with more readings is refused whole (``batch_too_long``).
        max_id_chars: longest sensor id, unit or quality string accepted.
        max_future_s: a reading more than this ahead of the ingest clock is refused (``ts_in_future``), seconds.
        max_age_s: a reading older than this is refused (``ts_too_old``), seconds.
        dead_letter_max_raw_bytes: at most this many raw bytes are kept in ``dead_letter`` (the size is kept too).
    """

    max_payload_bytes: int = 256 * 1024
    max_batch_items: int = 5_000
    max_id_chars: int = 64
    max_future_s: float = 300.0
    max_age_s: float = 30 * 86_400.0
    dead_letter_max_raw_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed sensor topic."""

    network: Network
    sensor_id: str


class PlainBatch(NamedTuple):
    """A batch message checked for the column path and not yet converted (see :meth:`PayloadDecoder.finish`).

    ``shape`` is 0 for epoch-millisecond times, else the length of the ISO 8601 strings; ``low`` and ``high`` are
    the sensor's valid range in its canonical unit, ``factor`` the message unit's factor to it.
    """

    topic: str
    payload: bytes
    sensor_id: str
    values: list[float | int]
    stamps: list[int] | list[str]
    shape: int
    factor: float
    low: float
    high: float


@dataclass(slots=True)
class Decoded:
    """What one message yielded: accepted readings and refused parts.

    Attributes:
        rows: accepted readings decoded one by one (the general path).
        columns: accepted readings decoded as columns (the plain batches sensors normally send); a message fills
            one of the two.
        rejected: the refused message or items.
        plain: with ``decode(…, defer=True)``, a plain batch still to be converted by
            :meth:`PayloadDecoder.finish` (then nothing else is filled).
    """

    rows: list[Reading] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    columns: ReadingBatch | None = None
    plain: PlainBatch | None = None

    @property
    def readings(self) -> Sequence[Reading]:
        """Every accepted reading, whichever way it was decoded."""
        return self.columns if self.columns is not None else self.rows


def parse_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> Topic:
    """Parse ``{prefix}/{network}/{sensor_id}``.

    Raises:
        PayloadError: reason ``topic_shape`` or ``unknown_network``.

    Example:
        >>> parse_topic("lifeline/v1/water/W-P-001")
        Topic(network=<Network.WATER: 'water'>, sensor_id='W-P-001')
    """
    head = prefix + "/"
    if not topic.startswith(head):
        raise PayloadError("topic_shape", f"topic {topic[:200]!r} does not start with {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not all(parts):
        raise PayloadError("topic_shape", f"topic {topic[:200]!r} is not {prefix}/{{network}}/{{sensor_id}}")
    if parts[0] not in _NETWORKS:
        raise PayloadError("unknown_network", f"network {parts[0][:64]!r} is not one of {sorted(_NETWORKS)}")
    return Topic(Network(parts[0]), parts[1])


def parse_ts(raw: object) -> datetime:
    """Parse an ISO 8601 timestamp with offset, or epoch milliseconds, to an aware UTC datetime.

    Raises:
        PayloadError: reason ``wrong_type`` or ``bad_timestamp``.
    """
    if isinstance(raw, bool):
        raise PayloadError("wrong_type", "'ts' must be an ISO 8601 string or epoch milliseconds, not a boolean")
    if type(raw) is int and 0 <= raw <= _FAST_EPOCH_MS:
        # Whole milliseconds since 1970 (up to 2100): integer seconds and microseconds, ~2× faster than
        # ``timedelta(milliseconds=…)``.
        return _EPOCH + timedelta(0, raw // 1000, (raw % 1000) * 1000)
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or not _MIN_EPOCH_MS <= raw <= _MAX_EPOCH_MS:
            raise PayloadError("bad_timestamp", f"epoch milliseconds {raw!r} out of range")
        return _EPOCH + timedelta(milliseconds=raw)
    if isinstance(raw, str):
        if len(raw) > 40:
            raise PayloadError("bad_timestamp", "'ts' string longer than 40 characters")
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise PayloadError("bad_timestamp", f"'ts' {raw!r} is not ISO 8601") from exc
        if ts.tzinfo is UTC:
            return ts
        if ts.tzinfo is None:
            raise PayloadError("bad_timestamp", f"'ts' {raw!r} has no UTC offset")
        return ts.astimezone(UTC)
    raise PayloadError("wrong_type", f"'ts' must be an ISO 8601 string or epoch milliseconds, not {_kind(raw)}")


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


class PayloadDecoder:
    """Turn MQTT messages into readings and dead letters.

    Args:
        sensors: the known sensors by id (a reading of any other id is refused as ``unknown_sensor``).
        prefix: the topic prefix.
        limits: size, length and time limits.
        clock: returns the current UTC time; ingest passes its own so tests can move it.
    """

    def __init__(
        self,
        *,
        sensors: Mapping[str, Sensor],
        prefix: str = DEFAULT_PREFIX,
        limits: PayloadLimits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sensors = sensors
        self._factors: dict[tuple[Quantity, str], float | None] = {}
        self.prefix = prefix
        self.limits = limits or PayloadLimits()
        self._clock = clock
        self._topics: dict[str, Topic] = {}
        self.fast_path = True
        """Decode batches of plain ``{"ts", "value"}`` items through :meth:`_simple_batch` (same result, less
        work); False sends everything through the general path (the tests compare the two)."""

    def decode(self, topic: str, payload: bytes, *, defer: bool = False, columns: bool = True) -> Decoded:
        """Decode one message; never raises for bad input.

        Args:
            topic: the MQTT topic.
            payload: the message body.
            defer: a plain batch or plain single reading is only checked and returned as :attr:`Decoded.plain`,
                for :meth:`finish` to convert together with others (ingest does this: the network thread checks,
                the writer converts). Without it a plain batch is converted at once, and a single reading takes
                the general path (numpy's cost per call is worth it only for many readings).
            columns: allow the column path (False: the slower paths only).
        """
        out = Decoded()
        size = len(payload)
        if size > self.limits.max_payload_bytes:
            out.rejected.append(
                self._reject(topic, payload, "oversized", f"{size} bytes > limit {self.limits.max_payload_bytes}")
            )
            return out
        parsed = self._topics.get(topic)
        if parsed is None:
            try:
                parsed = parse_topic(topic, prefix=self.prefix)
            except PayloadError as exc:
                out.rejected.append(self._reject(topic, payload, exc.reason, exc.detail))
                return out
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            self._topics[topic] = parsed
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            doc = _lenient_json(payload)
            if doc is _NOT_JSON:
                out.rejected.append(self._reject(topic, payload, "not_json", str(exc)[:300]))
                return out
        if not isinstance(doc, dict):
            out.rejected.append(self._reject(topic, payload, "not_object", f"payload is {_kind(doc)}, not an object"))
            return out
        if defer and columns and self.fast_path and "readings" not in doc:
            plain = self._plain_single(topic, payload, doc, parsed)
            if plain is not None:
                out.plain = plain
                return out
        now = self._clock()
        if "readings" not in doc:
            try:
                out.rows.append(self._item(doc, parsed, None, now))
            except PayloadError as exc:
                out.rejected.append(self._reject(topic, payload, exc.reason, exc.detail))
            return out
        items = doc["readings"]
        if not isinstance(items, list):
            out.rejected.append(
                self._reject(topic, payload, "wrong_type", f"'readings' is {_kind(items)}, not an array")
            )
        elif not items:
            out.rejected.append(self._reject(topic, payload, "empty_batch", "'readings' is empty"))
        elif len(items) > self.limits.max_batch_items:
            out.rejected.append(
                self._reject(
                    topic, payload, "batch_too_long", f"{len(items)} readings > limit {self.limits.max_batch_items}"
                )
            )
        else:
            if self.fast_path:
                plain = self._plain_batch(topic, payload, items, parsed, doc) if columns else None
                if plain is not None:
                    if defer:
                        out.plain = plain
                        return out
                    finished, slow = self.finish([plain])
                    if slow:
                        return slow[0]
                    out.columns = finished
                    return out
                fast = self._simple_batch(items, parsed, doc, now)
                if fast is not None:
                    out.rows.extend(fast)
                    return out
            digest = digest_of(topic, payload)
            for index, item in enumerate(items):
                try:
                    out.rows.append(self._item(item, parsed, doc, now))
                except PayloadError as exc:
                    raw = _encode_item(item)
                    out.rejected.append(self._letter(topic, raw, len(raw), digest, index, exc.reason, exc.detail))
        return out

    def _item(self, item: object, topic: Topic, batch: dict[str, Any] | None, now: datetime) -> Reading:
        if not isinstance(item, dict):
            raise PayloadError("not_object", f"reading is {_kind(item)}, not an object")
        sensor_id = item.get("sensor", topic.sensor_id) if batch is not None else topic.sensor_id
        if not isinstance(sensor_id, str) or not sensor_id:
            raise PayloadError("wrong_type", "'sensor' must be a non-empty string")
        if len(sensor_id) > self.limits.max_id_chars:
            raise PayloadError("too_long", f"sensor id longer than {self.limits.max_id_chars} characters")
        sensor = self.sensors.get(sensor_id)
        if sensor is None:
            raise PayloadError("unknown_sensor", f"sensor {sensor_id!r} is not in the twin")
        if sensor.network is not topic.network:
            raise PayloadError(
                "network_mismatch",
                f"sensor {sensor_id!r} is on network {sensor.network.value!r}, topic says {topic.network.value!r}",
            )
        if "value" not in item:
            raise PayloadError("missing_field", "'value' is missing")
        value = item["value"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError("wrong_type", f"'value' must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            raise PayloadError("non_finite", f"'value' is {value!r}")
        unit = item.get("unit", batch.get("unit") if batch is not None else None)
        if unit is None:
            raise PayloadError("missing_field", "'unit' is missing")
        if not isinstance(unit, str):
            raise PayloadError("wrong_type", f"'unit' must be a string, not {_kind(unit)}")
        factor = unit_factor(sensor.quantity, unit[: self.limits.max_id_chars])
        if factor is None:
            reason = "unit_mismatch" if is_known_unit(unit[: self.limits.max_id_chars]) else "unknown_unit"
            raise PayloadError(
                reason, f"unit {unit[:64]!r} is not accepted for {sensor.quantity.value} (sensor {sensor_id!r})"
            )
        if "ts" not in item:
            raise PayloadError("missing_field", "'ts' is missing")
        ts = parse_ts(item["ts"])
        ahead = (ts - now).total_seconds()
        if ahead > self.limits.max_future_s:
            raise PayloadError(
                "ts_in_future",
                f"'ts' {ts.isoformat()} is {ahead:.0f} s ahead of the ingest clock "
                f"(limit {self.limits.max_future_s:.0f} s)",
            )
        if -ahead > self.limits.max_age_s:
            raise PayloadError("ts_too_old", f"'ts' {ts.isoformat()} is older than {self.limits.max_age_s:.0f} s")
        quality = _quality(item.get("quality", 0))
        seq = item.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 2**63):
            raise PayloadError("wrong_type", "'seq' must be a non-negative integer")
        canonical = float(value) * factor
        if not math.isfinite(canonical):
            raise PayloadError("non_finite", f"'value' {value!r} {unit} overflows in {sensor.unit}")
        if not sensor.valid_min <= canonical <= sensor.valid_max:
            quality = QUALITY_BAD
        return Reading(sensor_id, ts, canonical, quality, seq)

    def _plain_batch(
        self, topic: str, payload: bytes, items: list[Any], parsed: Topic, batch: dict[str, Any]
    ) -> PlainBatch | None:
        """Check a batch for the column path (stage one, per message, no conversion yet).

        Takes what :meth:`_simple_batch` takes when, besides, every item has the same keys, every ``ts`` is of one
        kind (all epoch milliseconds, or all ISO 8601 strings of one length ending in ``Z`` or ``+00:00``) and
        every value is a number; None otherwise, and the slower paths decode the message. What can only be
        checked once converted (time limits, finite values, the strings' syntax) is checked by :meth:`finish`.
        """
        target = self._plain_target(parsed, batch.get("unit"))
        if target is None:
            return None
        sensor, factor = target
        sensor_id = parsed.sensor_id
        try:
            values = [item["value"] for item in items]
            stamps = [item["ts"] for item in items]
            sizes = set(map(len, items))
            if sizes != {2} and (sizes != {3} or set(map(_get_sensor, items)) != {sensor_id}):
                return None
        except (KeyError, TypeError):
            return None
        if not set(map(type, values)) <= _NUMBER_TYPES:
            return None
        kinds = set(map(type, stamps))
        if kinds == _INT_TYPE:
            shape = 0
        elif kinds == _STR_TYPE:
            lengths = set(map(len, stamps))
            shape = lengths.pop()
            if lengths or shape not in _ISO_SHAPES:
                return None
        else:
            return None
        return PlainBatch(topic, payload, sensor_id, values, stamps, shape, factor, sensor.valid_min, sensor.valid_max)

    def _plain_single(self, topic: str, payload: bytes, doc: dict[str, Any], parsed: Topic) -> PlainBatch | None:
        """Check a single reading ``{"ts", "value", "unit"}`` (``"sensor"`` is ignored, as the general path
        ignores it in a single reading) for the column path, like :meth:`_plain_batch`; None: the general path."""
        keys = doc.keys()
        if keys != _SINGLE_KEYS and keys != _SINGLE_KEYS_WITH_SENSOR:
            return None
        target = self._plain_target(parsed, doc["unit"])
        if target is None:
            return None
        sensor, factor = target
        value = doc["value"]
        stamp = doc["ts"]
        kind = type(value)
        if kind is not float and kind is not int:
            return None
        if type(stamp) is int:
            shape = 0
        elif type(stamp) is str and len(stamp) in _ISO_SHAPES:
            shape = len(stamp)
        else:
            return None
        return PlainBatch(
            topic, payload, parsed.sensor_id, [value], [stamp], shape, factor, sensor.valid_min, sensor.valid_max
        )

    def _plain_target(self, parsed: Topic, unit: object) -> tuple[Sensor, float] | None:
        """Return the sensor of a plain message and its unit's factor; None if the slower paths must decide."""
        sensor = self.sensors.get(parsed.sensor_id)
        if sensor is None or sensor.network is not parsed.network or type(unit) is not str:
            return None
        if len(parsed.sensor_id) > self.limits.max_id_chars:
            return None
        key = (sensor.quantity, unit)
        factor = self._factors.get(key, _NO_FACTOR)
        if factor is _NO_FACTOR:
            factor = unit_factor(sensor.quantity, unit[: self.limits.max_id_chars])
            if len(self._factors) < _TOPIC_CACHE_MAX:
                self._factors[key] = factor
        return None if factor is None else (sensor, factor)

    def finish(self, plains: Sequence[PlainBatch]) -> tuple[ReadingBatch, list[Decoded]]:
        """Convert plain batches (from :meth:`decode` with ``defer=True``) to columns, all at once (stage two).

        Returns the readings of every message that passes, as one batch, and the other messages decoded by the
        slower paths (which name each refusal): a timestamp out of the limits, a value that overflows, a string
        numpy reads more leniently than :func:`parse_ts` (it must print back the same). Decoding many messages
        here at once costs a fraction of decoding them one by one: numpy's cost is per call.
        """
        if not plains:
            return ReadingBatch.empty(), []
        counts = np.fromiter((len(p.values) for p in plains), np.int64, len(plains))
        starts = np.zeros(len(plains), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        total = int(counts.sum())
        ok = np.ones(total, dtype=bool)
        try:
            with np.errstate(over="ignore"):
                values = np.array(list(chain.from_iterable(p.values for p in plains)), dtype=np.float64)
                canonical = values * np.repeat(np.fromiter((p.factor for p in plains), np.float64), counts)
        except OverflowError:
            return self._finish_one_by_one(plains)
        ok &= np.isfinite(canonical)
        us = np.zeros(total, np.int64)
        shapes = np.fromiter((p.shape for p in plains), np.int64, len(plains))
        item_shapes = np.repeat(shapes, counts)
        for shape in np.unique(shapes).tolist():
            group = [p for p in plains if p.shape == shape]
            at = np.flatnonzero(item_shapes == shape)
            stamps = list(chain.from_iterable(p.stamps for p in group))
            if shape == 0:
                try:
                    millis = np.array(stamps, dtype=np.int64)
                except OverflowError:
                    return self._finish_one_by_one(plains)
                ok[at] &= (millis >= 0) & (millis <= _FAST_EPOCH_MS)
                us[at] = millis * 1000
            else:
                parsed = _iso_micros(stamps, shape)  # type: ignore[arg-type]
                if parsed is None:
                    return self._finish_one_by_one(plains)
                micros, exact = parsed
                ok[at] &= exact
                us[at] = micros
        now_us = ts_to_us(self._clock())
        ok &= (us >= now_us - round(self.limits.max_age_s * 1e6)) & (
            us <= now_us + round(self.limits.max_future_s * 1e6)
        )
        passed = np.logical_and.reduceat(ok, starts)
        if passed.all():
            keep = None
            good = list(plains)
            redo: list[Decoded] = []
        else:
            keep = np.repeat(passed, counts)
            good = [p for p, flag in zip(plains, passed.tolist(), strict=True) if flag]
            redo = [
                self._decode_slowly(p.topic, p.payload)
                for p, flag in zip(plains, passed.tolist(), strict=True)
                if not flag
            ]
            us, canonical = us[keep], canonical[keep]
            counts = counts[passed]
        lows = np.repeat(np.fromiter((p.low for p in good), np.float64, len(good)), counts)
        highs = np.repeat(np.fromiter((p.high for p in good), np.float64, len(good)), counts)
        quality = np.where((canonical >= lows) & (canonical <= highs), np.int16(0), np.int16(QUALITY_BAD))
        sensor_ids = list(chain.from_iterable(repeat(p.sensor_id, len(p.values)) for p in good))
        return ReadingBatch(sensor_ids, us, canonical, quality.astype(np.int16)), redo

    def _finish_one_by_one(self, plains: Sequence[PlainBatch]) -> tuple[ReadingBatch, list[Decoded]]:
        """:meth:`finish` message by message: for a group numpy refuses as a whole (one bad string among many)."""
        if len(plains) == 1:
            return ReadingBatch.empty(), [self._decode_slowly(plains[0].topic, plains[0].payload)]
        parts: list[ReadingBatch] = []
        redo: list[Decoded] = []
        for plain in plains:
            columns, slow = self.finish([plain])
            if len(columns):
                parts.append(columns)
            redo.extend(slow)
        return ReadingBatch.concat(parts), redo

    def _decode_slowly(self, topic: str, payload: bytes) -> Decoded:
        """Decode a message without the column path."""
        return self.decode(topic, payload, columns=False)

    def _simple_batch(
        self, items: list[Any], topic: Topic, batch: dict[str, Any], now: datetime
    ) -> list[Reading] | None:
        """Decode a batch whose items are all plain ``{"ts": …, "value": …}`` of the topic's sensor (``"sensor"``
        may name it again), all valid.

        Returns None as soon as anything is not plain or not valid (another key, a non-number, a timestamp out of
        the limits, an unknown sensor or unit…): the general path then decodes the message and names each refusal.
        So this gives exactly what the general path gives, faster, for the batches sensors normally send.
        """
        sensor = self.sensors.get(topic.sensor_id)
        unit = batch.get("unit")
        if sensor is None or sensor.network is not topic.network or type(unit) is not str:
            return None
        if len(topic.sensor_id) > self.limits.max_id_chars:
            return None
        factor = unit_factor(sensor.quantity, unit[: self.limits.max_id_chars])
        if factor is None:
            return None
        newest = now + timedelta(seconds=self.limits.max_future_s)
        oldest = now - timedelta(seconds=self.limits.max_age_s)
        sensor_id, low, high = topic.sensor_id, sensor.valid_min, sensor.valid_max
        keys, keys_with_sensor = _SIMPLE_ITEM_KEYS, _SIMPLE_ITEM_KEYS_WITH_SENSOR
        out: list[Reading] = []
        append = out.append
        for item in items:
            if type(item) is not dict:
                return None
            item_keys = item.keys()
            if item_keys != keys and (item_keys != keys_with_sensor or item["sensor"] != sensor_id):
                return None
            value = item["value"]
            kind = type(value)
            if kind is not float and kind is not int:
                return None
            raw = item["ts"]
            if type(raw) is int and 0 <= raw <= _FAST_EPOCH_MS:
                ts = _EPOCH + timedelta(0, raw // 1000, (raw % 1000) * 1000)
            elif type(raw) is str and len(raw) <= 40:
                try:
                    ts = datetime.fromisoformat(raw)
                except ValueError:
                    return None
                if ts.tzinfo is not UTC:
                    if ts.tzinfo is None:
                        return None
                    ts = ts.astimezone(UTC)
            else:
                return None
            if ts > newest or ts < oldest:
                return None
            canonical = value * factor
            if not math.isfinite(canonical):
                return None
            append(Reading(sensor_id, ts, float(canonical), 0 if low <= canonical <= high else QUALITY_BAD, None))
        return out

    def _reject(self, topic: str, payload: bytes, reason: str, detail: str) -> DeadLetter:
        return self._letter(topic, payload, len(payload), digest_of(topic, payload), -1, reason, detail)

    def _letter(
        self, topic: str, raw: bytes, size: int, digest: bytes, index: int, reason: str, detail: str
    ) -> DeadLetter:
        return DeadLetter(
            topic=topic[:1024],
            raw=raw[: self.limits.dead_letter_max_raw_bytes],
            raw_size=size,
            digest=digest,
            item_index=index,
            reason=reason,
            detail=detail,
        )


_NO_FACTOR = -1.0
"""Marks a unit not yet looked up in :attr:`PayloadDecoder._factors` (no factor is negative)."""
_NUMBER_TYPES = frozenset({float, int})
_SINGLE_KEYS = frozenset({"ts", "value", "unit"})
_SINGLE_KEYS_WITH_SENSOR = frozenset({"sensor", "ts", "value", "unit"})
_INT_TYPE = frozenset({int})
_STR_TYPE = frozenset({str})
_get_sensor = itemgetter("sensor")
_ISO_SHAPES: dict[int, tuple[bytes, Literal["s", "ms", "us"]]] = {
    20: (b"Z", "s"),
    24: (b"Z", "ms"),
    27: (b"Z", "us"),
    25: (b"+00:00", "s"),
    29: (b"+00:00", "ms"),
    32: (b"+00:00", "us"),
}
"""ISO 8601 UTC timestamps the column path parses, by length: the suffix and the fraction's unit."""


def _iso_template(body_size: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint8]]:
    """Return which characters of an ISO 8601 body of *body_size* are digits, and the others' bytes."""
    template = b"dddd-dd-ddTdd:dd:dd.dddddd"[:body_size]
    chars = np.frombuffer(template, dtype=np.uint8)
    return chars == ord("d"), chars


def _iso_micros(stamps: list[str], size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None:
    """Parse ISO 8601 UTC strings of one length (``2026-11-26T02:20:00[.fff[fff]]`` + ``Z`` or ``+00:00``).

    Returns microseconds since the epoch and, per string, whether it has exactly that form (digits and
    separators where they belong, the suffix), which :func:`parse_ts` reads to the same instant; None if numpy
    cannot read one of them at all (a day, hour or second out of range).
    """
    suffix, _unit = _ISO_SHAPES[size]
    try:
        raw = "".join(stamps).encode("ascii")
    except UnicodeEncodeError:
        return None
    chars = np.frombuffer(raw, dtype=np.uint8).reshape(len(stamps), size)
    body_size = size - len(suffix)
    digit, template = _iso_template(body_size)
    body_chars = chars[:, :body_size]
    exact = (chars[:, body_size:] == np.frombuffer(suffix, dtype=np.uint8)).all(axis=1)
    digits = body_chars[:, digit]
    exact &= ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    exact &= (body_chars[:, ~digit] == template[~digit]).all(axis=1)
    body = np.ascontiguousarray(body_chars).view(f"S{body_size}").ravel()
    try:
        times: npt.NDArray[np.datetime64] = body.astype("datetime64[us]")
    except ValueError:
        return None
    return times.view(np.int64), exact


def _quality(raw: object) -> int:
    if isinstance(raw, str) and raw in QUALITY_CODES:
        return QUALITY_CODES[raw]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in (0, 1, 2):
        return raw
    raise PayloadError("bad_quality", f"'quality' must be one of {list(QUALITY_CODES)} or 0, 1, 2")


_NOT_JSON = object()


def _lenient_json(payload: bytes) -> Any:
    """Parse JSON that strict parsers refuse only for NaN/Infinity literals, so those get a precise reason."""
    try:
        text = payload.decode("utf-8")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _NOT_JSON


def _encode_item(item: object) -> bytes:
    return json.dumps(item, ensure_ascii=False, allow_nan=True, default=str).encode("utf-8")
