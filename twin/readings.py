"""A sensor reading as the twin knows it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, overload

import numpy as np
import numpy.typing as npt

QUALITY_CODES: Mapping[str, int] = {"good": 0, "uncertain": 1, "bad": 2}
QUALITY_BAD = 2


class Reading(NamedTuple):
    """One accepted reading: value in the sensor's canonical unit, ``ts`` timezone-aware UTC.

    ``quality``: 0 good, 1 uncertain, 2 bad (also set when the value is outside the sensor's valid range).
    An immutable named tuple: ingest makes hundreds of thousands a second, and a tuple is made ~4× faster than a
    frozen dataclass.
    """

    sensor_id: str
    ts: datetime
    value: float
    quality: int
    seq: int | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_us(ts: datetime) -> int:
    """Return *ts* (timezone-aware) as integer microseconds since the Unix epoch, exactly."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_ts(us: int) -> datetime:
    """Return integer microseconds since the Unix epoch as a UTC datetime, exactly."""
    return _EPOCH + timedelta(microseconds=int(us))


def _datetimes(micros: list[int]) -> list[datetime]:
    """Integer microseconds since the Unix epoch as aware UTC datetimes (the same as :func:`us_to_ts`, faster)."""
    epoch = _EPOCH
    return [epoch + timedelta(0, us // 1_000_000, us % 1_000_000) for us in micros]


class ReadingBatch(Sequence[Reading]):
    """Readings as columns: what ingest decodes, detects on and stores without making an object per reading.

    A :class:`~collections.abc.Sequence` of :class:`Reading`, so code that iterates readings keeps working: the
    row objects are made on first use and kept. Code on the hot path uses the columns instead.

    Attributes:
        sensor_ids: the sensor of each reading.
        ts_us: each reading's time, microseconds since the Unix epoch (int64).
        values: canonical values (float64).
        quality: 0 good, 1 uncertain, 2 bad (int16).
        seqs: each reading's sequence number, or None when no reading has one.

    Example:
        >>> from datetime import datetime, UTC
        >>> batch = ReadingBatch.from_readings([Reading("P1", datetime(2026, 1, 1, tzinfo=UTC), 1.5, 0)])
        >>> int(batch.ts_us[0]), batch[0].value
        (1767225600000000, 1.5)
    """

    __slots__ = ("_groups", "_rows", "quality", "sensor_ids", "seqs", "ts_us", "values")

    def __init__(
        self,
        sensor_ids: list[str],
        ts_us: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        quality: npt.NDArray[np.int16],
        seqs: list[int | None] | None = None,
    ) -> None:
        n = len(sensor_ids)
        if not len(ts_us) == len(values) == len(quality) == n or (seqs is not None and len(seqs) != n):
            raise ValueError("ReadingBatch columns must have the same length")
        self.sensor_ids = sensor_ids
        self.ts_us = ts_us
        self.values = values
        self.quality = quality
        self.seqs = seqs
        self._rows: list[Reading] | None = None
        self._groups: tuple[list[str], npt.NDArray[np.int64]] | None = None

    @classmethod
    def empty(cls) -> ReadingBatch:
        """Return a batch of no readings."""
        return cls([], np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int16))

    @classmethod
    def from_readings(cls, readings: Sequence[Reading]) -> ReadingBatch:
        """Return *readings* as columns (the batch itself if it already is one)."""
        if isinstance(readings, ReadingBatch):
            return readings
        n = len(readings)
        seqs = [r.seq for r in readings]
        batch = cls(
            [r.sensor_id for r in readings],
            np.fromiter((ts_to_us(r.ts) for r in readings), np.int64, n),
            np.fromiter((r.value for r in readings), np.float64, n),
            np.fromiter((r.quality for r in readings), np.int16, n),
            seqs if any(s is not None for s in seqs) else None,
        )
        batch._rows = list(readings)
        return batch

    @classmethod
    def concat(cls, parts: Sequence[ReadingBatch]) -> ReadingBatch:
        """Return the readings of *parts*, in order, as one batch."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        ids: list[str] = []
        for part in parts:
            ids.extend(part.sensor_ids)
        seqs: list[int | None] | None = None
        if any(part.seqs is not None for part in parts):
            seqs = []
            for part in parts:
                seqs.extend(part.seqs if part.seqs is not None else [None] * len(part))
        return cls(
            ids,
            np.concatenate([p.ts_us for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.quality for p in parts]),
            seqs,
        )

    def take(self, which: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> ReadingBatch:
        """Return the readings selected by a boolean mask or an index array, in that order."""
        index = np.flatnonzero(which) if which.dtype == np.bool_ else which
        ids = self.sensor_ids
        seqs = self.seqs
        return ReadingBatch(
            [ids[i] for i in index.tolist()],
            self.ts_us[index],
            self.values[index],
            self.quality[index],
            None if seqs is None else [seqs[i] for i in index.tolist()],
        )

    def groups(self) -> tuple[list[str], npt.NDArray[np.int64]]:
        """Return the distinct sensor ids (in order of first appearance) and each reading's index among them.

        Worked out once and kept: the store and the detectors each use it.
        """
        if self._groups is None:
            names = list(dict.fromkeys(self.sensor_ids))
            index = {name: code for code, name in enumerate(names)}
            codes = np.fromiter(map(index.__getitem__, self.sensor_ids), np.int64, len(self.sensor_ids))
            self._groups = (names, codes)
        return self._groups

    def rows(self) -> list[Reading]:
        """Return the readings as :class:`Reading` objects (made once, then kept)."""
        if self._rows is None:
            seqs = self.seqs if self.seqs is not None else [None] * len(self.sensor_ids)
            self._rows = [
                Reading(sid, ts, value, q, seq)
                for sid, ts, value, q, seq in zip(
                    self.sensor_ids, self.timestamps(), self.values.tolist(), self.quality.tolist(), seqs, strict=True
                )
            ]
        return self._rows

    def rows_at(self, index: npt.NDArray[np.intp]) -> list[Reading]:
        """Return the readings at *index* as :class:`Reading` objects, making only those (or taking them from the
        rows already made)."""
        positions = index.tolist()
        if self._rows is not None:
            rows = self._rows
            return [rows[i] for i in positions]
        ids, seqs = self.sensor_ids, self.seqs
        stamps = _datetimes(self.ts_us[index].tolist())
        values, quality = self.values[index].tolist(), self.quality[index].tolist()
        return [
            Reading(ids[i], ts, v, q, seqs[i] if seqs else None)
            for i, ts, v, q in zip(positions, stamps, values, quality, strict=True)
        ]

    def timestamps(self) -> list[datetime]:
        """Return each reading's time as an aware UTC datetime."""
        return _datetimes(self.ts_us.tolist())

    def __len__(self) -> int:
        return len(self.sensor_ids)

    @overload
    def __getitem__(self, index: int) -> Reading: ...

    @overload
    def __getitem__(self, index: slice) -> list[Reading]: ...

    def __getitem__(self, index: int | slice) -> Reading | list[Reading]:
        return self.rows()[index]

    def __iter__(self) -> Iterator[Reading]:
        return iter(self.rows())

    def __repr__(self) -> str:
        return f"ReadingBatch({len(self)} readings)"
