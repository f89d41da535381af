"""The contract every streaming detector keeps, so ingest (and ``lifeline evaluate``) can run them side by side.

A streaming detector sees each accepted batch of readings once, in arrival order of batches (readings inside a
batch in any order). It is *pure between commits*: :meth:`StreamDetector.evaluate` returns what it concludes and
the state it would move to, without changing itself; :meth:`StreamDetector.commit` adopts that state once the
alert changes are stored. A failed database write can therefore be retried with the same result.

Its learned state survives a restart: :meth:`StreamDetector.dump_state` returns JSON-ready data (no pickles) that
:meth:`StreamDetector.load_state` takes back. Ingest stores it in the ``detector_state`` table in the same
transaction as a batch's alerts, so the active alerts a detector believes in always match the stored ones.

Detectors run in order; each sees the readings that earlier ones (sensor health first) found suspect, so a faulty
sensor raises a maintenance alert and not a lifeline warning.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Container, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading, ReadingBatch, ts_to_us
from twin.sensors import Sensor

Suspect = Set[tuple[str, datetime]]
"""``(sensor_id, ts)`` of readings not to trust."""

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""Non-finite floats by the names a dumped state gives them."""


def float_to_json(value: float) -> float | str:
    """Return *value* for a dumped state: itself if finite, else its name ("NaN", "Infinity", "-Infinity").

    Strict JSON has no token for non-finite numbers and PostgreSQL's jsonb refuses the ``NaN`` / ``Infinity`` that
    Python's ``json`` writes, so a learned state holding one (a sensor without a valid range may report an infinite
    value) would not be stored at all; named, it is stored and read back exactly by :func:`float_from_json`.
    """
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def float_from_json(value: Any) -> float:
    """Return the float :func:`float_to_json` wrote; None (how older states wrote NaN) gives NaN.

    Raises:
        ValueError: a string that names no non-finite float.
        TypeError: neither a number, a name nor None.
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise ValueError(f"not a number: {value!r}")
        return _NON_FINITE[value]
    return float(value)


def trusted_mask(batch: ReadingBatch, suspect: Suspect) -> npt.NDArray[np.bool_]:
    """Return, for each reading of *batch*, whether it is not in *suspect*.

    Only the readings of sensors named in *suspect* are looked up one by one, so a few faulty sensors cost little
    in a large batch.
    """
    trusted = np.ones(len(batch), dtype=bool)
    if not suspect:
        return trusted
    names, codes = batch.groups()
    flagged = {sid for sid, _ts in suspect}
    named = np.array([name in flagged for name in names], dtype=bool)
    at = np.flatnonzero(named[codes])
    if not len(at):
        return trusted
    keys = {(sid, ts_to_us(ts)) for sid, ts in suspect}
    ids, micros = batch.sensor_ids, batch.ts_us
    trusted[at] = [(ids[i], int(micros[i])) not in keys for i in at.tolist()]
    return trusted


def columns_of(
    readings: Sequence[Reading], row_of: Mapping[str, int], suspect: Suspect
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return a non-empty batch as columns: each reading's row in *row_of* (-1 for a sensor not in it), time (POSIX
    s, exactly what ``datetime.timestamp()`` gives), value, and whether it is usable: its sensor has a row, its
    quality is not bad and it is not in *suspect*.

    A :class:`ReadingBatch` gives its columns directly, each distinct sensor looked up once; other sequences of
    :class:`Reading` are transposed (each distinct time converted once).
    """
    get = row_of.get
    if isinstance(readings, ReadingBatch):
        names, codes = readings.groups()
        row = np.fromiter(map(get, names, itertools.repeat(-1)), dtype=np.intp, count=len(names))[codes]
        ts = readings.ts_us / 1e6  # integer µs over 1e6, correctly rounded: what datetime.timestamp() gives
        values = readings.values.astype(np.float64, copy=False)
        usable = (row >= 0) & (readings.quality != QUALITY_BAD)
        if suspect:
            usable &= trusted_mask(readings, suspect)
        return row, ts, values, usable
    # Named tuples: transposed at C speed, one column per field.
    sids, stamps, raw, qualities, *_seq = zip(*readings, strict=True)
    row = np.fromiter(map(get, sids, itertools.repeat(-1)), dtype=np.intp, count=len(sids))
    seconds = {t: t.timestamp() for t in set(stamps)}
    ts = np.fromiter(map(seconds.__getitem__, stamps), dtype=np.float64, count=len(stamps))
    values = np.asarray(raw, dtype=np.float64)
    usable = (row >= 0) & (np.asarray(qualities) != QUALITY_BAD)
    if suspect:
        usable &= np.array([(sid, t) not in suspect for sid, t in zip(sids, stamps, strict=True)], dtype=bool)
    return row, ts, values, usable


def of_sensors(readings: Sequence[Reading], sensors: Container[str]) -> Sequence[Reading]:
    """Return the readings of *readings* whose sensor is in *sensors*, in their order.

    A detector that watches a few sensors of a city takes its own out of each batch this way. For a
    :class:`ReadingBatch` each distinct sensor is looked up once and only the readings kept become
    :class:`Reading` objects, so the others cost nothing per reading (making every row of a batch had been about a
    tenth of the demo city's whole chain).
    """
    if isinstance(readings, ReadingBatch):
        names, codes = readings.groups()
        wanted = np.fromiter(map(sensors.__contains__, names), dtype=bool, count=len(names))
        if wanted.all():
            return readings
        if not wanted.any():
            return []
        return readings.rows_at(np.flatnonzero(wanted[codes]))
    return [r for r in readings if r.sensor_id in sensors]


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What a detector concluded from one batch.

    Attributes:
        changes: alert changes (``raised`` / ``updated`` / ``cleared``), in time order per cause.
        state: the detector's next state, opaque to everyone but the detector; adopted by ``commit``.
        suspect: readings this detector found faulty (only sensor-health-like detectors fill it).
    """

    changes: list[AlertChange]
    state: Any
    suspect: frozenset[tuple[str, datetime]] = field(default_factory=frozenset)


class StreamDetector(Protocol):
    """A detector ingest runs on every batch."""

    name: str
    """Stable name; the key of its stored state and the first part of its alerts' cause keys."""

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch of accepted readings received at *now* (aware UTC); change nothing."""
        ...

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        ...

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; keep the learned state of sensors that remain."""
        ...

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data."""
        ...

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state` (of this or an earlier version; unknown keys ignored)."""
        ...
