"""Per-sensor behaviour: a baseline by local hour of day and day type, learned as data arrives, and its residuals.

Each sensor has 48 bins (24 local hours × weekday/weekend). A bin holds a robust location (a streaming median:
each reading moves it by ``median_step`` times the bin's spread towards the reading) and a robust spread (an
exponential average of the absolute deviation from the location, weight ``spread_weight`` per reading, floored at
``floor_fraction`` of the sensor's valid span). A reading's residual is ``z = (value - location) / (1.4826 · spread)``;
a sensor's score is the exponential average of its residuals over ``score_readings`` readings (default 15, i.e. a
quarter of an hour of 1-minute data), so a lasting departure stands out while single noisy readings do not.

Alert (kind ``anomaly``, cause ``anomaly:{sensor_id}``, grade IV by default): raised when ``|score|`` exceeds
``raise_z`` (default 4) for ``hold_readings`` consecutive readings (default 5), in a bin that has seen at least
``warmup_days`` days of data (default 3; the weekend bins fall back to the weekday ones until they have); cleared
when ``|score|`` stays under ``clear_z`` (default 2) for ``hold_readings`` readings. While raised, the sensor's
baseline stops learning, so a lasting departure is not learned as normal; after ``readopt_h`` hours (default 24)
the alert is cleared and learning resumes (a lasting change such as a new set point becomes the new normal).

By default only pressure and flow are judged (``quantities``): rain, drainage levels and methane depart from
their daily pattern in every storm or leak, which have detectors of their own. Readings that sensor health found
suspect, of quality ``bad``, or not newer than the sensor's newest (duplicates, late arrivals) are skipped.

The state is numpy arrays, one row per sensor (:class:`_State`); a batch runs through a compiled numba kernel
(:mod:`models.baseline_kernel`), sensor by sensor and reading by reading, on a copy of the state that
:meth:`BaselineDetector.commit` adopts. The kernel decides exactly as the readable numpy version kept in
:mod:`models.baseline_reference` (the tests hold both to the same changes, in the same order, and the same state).
The state is JSON-ready through :meth:`BaselineDetector.dump_state`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from models import baseline_kernel as kern
from models.streaming import StreamResult, Suspect, columns_of, float_from_json, float_to_json
from models.thresholds import QUANTITY_ZH
from twin.alerts import AlertChange
from twin.readings import Reading
from twin.sensors import Grade, Quantity, Sensor

KIND = "anomaly"
STATE_VERSION = 1
BINS = 48
_MAD_TO_SIGMA = 1.4826
_DAY_S = 86_400.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def cause_key(sensor_id: str) -> str:
    """Return the cause key of a behaviour alert."""
    return f"{KIND}:{sensor_id}"


@dataclass(frozen=True, slots=True)
class BaselineRules:
    """Parameters of the baseline detector (see the module docstring)."""

    quantities: frozenset[Quantity] = frozenset({Quantity.PRESSURE, Quantity.FLOW})
    utc_offset_h: float = 8.0
    median_step: float = 0.05
    spread_weight: float = 0.02
    floor_fraction: float = 0.002
    score_readings: int = 15
    raise_z: float = 4.0
    clear_z: float = 2.0
    hold_readings: int = 5
    warmup_days: float = 3.0
    readopt_h: float = 24.0
    grade: Grade = Grade.IV


@dataclass(slots=True)
class _State:
    """Arrays by sensor row (and bin)."""

    loc: FloatArray
    spread: FloatArray
    count: FloatArray
    score: FloatArray
    run: IntArray
    active: BoolArray
    since: FloatArray
    last_ts: FloatArray
    seen: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def empty(cls, n: int) -> _State:
        return cls(
            loc=np.zeros((n, BINS)),
            spread=np.zeros((n, BINS)),
            count=np.zeros((n, BINS)),
            score=np.zeros(n),
            run=np.zeros(n, dtype=np.int64),
            active=np.zeros(n, dtype=bool),
            since=np.full(n, np.nan),
            last_ts=np.full(n, -np.inf),
            seen=np.zeros(n, dtype=bool),
        )

    def copy(self) -> _State:
        return _State(
            self.loc.copy(),
            self.spread.copy(),
            self.count.copy(),
            self.score.copy(),
            self.run.copy(),
            self.active.copy(),
            self.since.copy(),
            self.last_ts.copy(),
            self.seen.copy(),
        )


class BaselineDetector:
    """Learn each sensor's daily behaviour and flag lasting departures from it.

    Args:
        sensors: sensors by id.
        rules: parameters.
        interval_s: the readings' usual interval, seconds, when a sensor does not say (it sets how many readings
            make the warm-up).

    Example:
        >>> from twin.demo import demo_sensors
        >>> det = BaselineDetector({s.sensor_id: s for s in demo_sensors()})
        >>> det.name
        'anomaly'
    """

    name = KIND

    def __init__(self, sensors: Mapping[str, Sensor], *, rules: BaselineRules | None = None) -> None:
        self.rules = rules or BaselineRules()
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._sensors: list[Sensor] = []
        self._state = _State.empty(0)
        self._warmup = np.zeros(0)
        self._floor = np.zeros(0)
        self._params = _params(self.rules)
        self.update_sensors(sensors)
        kern.compile_kernels()

    # -- the StreamDetector contract ---------------------------------------------------------------------------

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Judge the sensors of the judged quantities among *sensors*; keep what was learned of those that remain."""
        rules = self.rules
        judged = [s for s in sensors.values() if s.quantity in rules.quantities]
        judged.sort(key=lambda s: s.sensor_id)
        new = _State.empty(len(judged))
        old_state, old_row = self._state, self._row
        for i, sensor in enumerate(judged):
            j = old_row.get(sensor.sensor_id)
            if j is not None:
                _copy_row(old_state, j, new, i)
        self._ids = [s.sensor_id for s in judged]
        self._row = {sid: i for i, sid in enumerate(self._ids)}
        self._sensors = judged
        self._state = new
        self._warmup = np.array([rules.warmup_days * _DAY_S / 24.0 / max(s.interval_s, 1.0) for s in judged])
        self._floor = np.array([_floor(s, rules) for s in judged], dtype=np.float64)

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch; return the alert changes and the next state (the detector itself is unchanged).

        Args:
            readings: a :class:`~twin.readings.ReadingBatch` (its columns are used as they are) or any sequence of
                :class:`~twin.readings.Reading`, in any order.
            now: the time the batch was received (not used: the readings' own times decide).
            suspect: readings that sensor health found suspect, as (sensor id, time); they are skipped.
        """
        columns = self._columns(readings, suspect)
        if columns is None:
            return StreamResult([], self._state)
        row, ts, val, usable = columns
        if not usable.all():
            if not usable.any():
                return StreamResult([], self._state)
            row = np.where(usable, row, -1)
        st = self._state.copy()
        rows, raising, found = kern.run_batch(
            row,
            ts,
            np.ascontiguousarray(val, dtype=np.float64),
            st.loc,
            st.spread,
            st.count,
            st.score,
            st.run,
            st.active,
            st.since,
            st.last_ts,
            st.seen,
            self._warmup,
            self._floor,
            self._params,
        )
        changes = [
            self._change(r, up, t, x, expected, score)
            for r, up, (t, x, expected, score) in zip(rows.tolist(), raising.tolist(), found.tolist(), strict=True)
        ]
        return StreamResult(changes, st)

    def _columns(
        self, readings: Sequence[Reading], suspect: Suspect
    ) -> tuple[IntArray, FloatArray, FloatArray, BoolArray] | None:
        """Return a batch as columns: sensor row (-1 if not judged), time (s), value, and whether it is usable.

        A reading is usable if its sensor is judged, its quality is not bad, its value is not NaN and it is not
        suspect. None for an empty batch.
        """
        if not readings:
            return None
        row, ts, val, usable = columns_of(readings, self._row, suspect)
        usable &= ~np.isnan(val)
        return row.astype(np.int64, copy=False), ts, val, usable

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        if isinstance(result.state, _State):
            self._state = result.state

    def dump_state(self) -> dict[str, Any]:
        """Return the learned state as JSON-ready data (per sensor: bins, score, run, alert)."""
        st = self._state
        sensors: dict[str, Any] = {}
        # Non-finite floats by name: an infinite value of a sensor without a valid range is trusted and makes its
        # bin NaN, and one NaN written as a bare token made PostgreSQL refuse every detector's state. Rows that are
        # all finite (nearly all) skip the per-value check.
        rows_finite = np.asarray(np.isfinite(st.loc).all(axis=1) & np.isfinite(st.spread).all(axis=1), dtype=bool)
        finite: list[bool] = rows_finite.tolist()
        locs, spreads, counts = st.loc.tolist(), st.spread.tolist(), st.count.tolist()
        for i, sid in enumerate(self._ids):
            if not st.seen[i]:
                continue
            sensors[sid] = {
                "loc": locs[i] if finite[i] else [float_to_json(v) for v in locs[i]],
                "spread": spreads[i] if finite[i] else [float_to_json(v) for v in spreads[i]],
                "count": [int(v) for v in counts[i]],
                "score": float_to_json(st.score[i]),
                "run": int(st.run[i]),
                "active": bool(st.active[i]),
                "since": None if math.isnan(st.since[i]) else float(st.since[i]),
                "last_ts": float(st.last_ts[i]),
            }
        return {"version": STATE_VERSION, "sensors": sensors}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`dump_state`; sensors no longer judged are ignored."""
        st = self._state.copy()
        for sid, entry in dict(data.get("sensors", {})).items():
            i = self._row.get(sid)
            if i is None:
                continue
            try:
                st.loc[i] = np.asarray([float_from_json(v) for v in entry["loc"]], dtype=np.float64)
                st.spread[i] = np.asarray([float_from_json(v) for v in entry["spread"]], dtype=np.float64)
                st.count[i] = np.asarray(entry["count"], dtype=np.float64)
                st.score[i] = float_from_json(entry["score"])
                st.run[i] = int(entry["run"])
                st.active[i] = bool(entry["active"])
                st.since[i] = np.nan if entry["since"] is None else float(entry["since"])
                st.last_ts[i] = float(entry["last_ts"])
                st.seen[i] = True
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: that sensor learns again
        self._state = st

    # -- for callers that want the residuals ---------------------------------------------------------------------

    def score(self, sensor_id: str) -> float | None:
        """Return the sensor's current score (smoothed residual, in robust σ), or None if not judged yet."""
        i = self._row.get(sensor_id)
        if i is None or not self._state.seen[i]:
            return None
        return float(self._state.score[i])

    def active(self) -> list[str]:
        """Return the sensors whose behaviour alert is raised."""
        return [sid for i, sid in enumerate(self._ids) if self._state.active[i]]

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _change(self, row: int, raising: bool, t: float, value: float, expected: float, score: float) -> AlertChange:
        sensor = self._sensors[row]
        what = QUANTITY_ZH.get(sensor.quantity, str(sensor.quantity))
        unit = sensor.unit
        if raising:
            direction_zh = "偏高" if score > 0 else "偏低"
            direction_en = "above" if score > 0 else "below"
            message = (
                f"{sensor.name or sensor.sensor_id} {what}{direction_zh}于同时段日常水平："
                f"{value:.2f} {unit}（日常约 {expected:.2f}）"
            )
            message_en = (
                f"{sensor.sensor_id}: {sensor.quantity.value} {direction_en} its usual level for this time of day: "
                f"{value:.2f} {unit} (usually about {expected:.2f})"
            )
        else:
            message = f"{sensor.name or sensor.sensor_id} {what}已恢复日常规律"
            message_en = f"{sensor.sensor_id}: {sensor.quantity.value} back to its usual pattern"
        return AlertChange(
            event="raised" if raising else "cleared",
            cause_key=cause_key(sensor.sensor_id),
            kind=KIND,
            sensor_id=sensor.sensor_id,
            network=sensor.network.value,
            district=sensor.district,
            grade=int(self.rules.grade),
            ts=datetime.fromtimestamp(t, UTC),
            value=value,
            threshold=None,
            message=message,
            message_en=message_en,
            detail={"expected": round(expected, 4), "score_sigma": round(score, 2)},
        )


def _params(rules: BaselineRules) -> FloatArray:
    """The rules as the kernel's parameter vector (``P_*`` of :mod:`models.baseline_kernel`)."""
    params = np.zeros(kern.N_P)
    params[kern.P_UTC_OFFSET_S] = rules.utc_offset_h * 3600.0
    params[kern.P_ALPHA] = 1.0 / rules.score_readings
    params[kern.P_RAISE_Z] = rules.raise_z
    params[kern.P_CLEAR_Z] = rules.clear_z
    params[kern.P_HOLD_READINGS] = rules.hold_readings
    params[kern.P_READOPT_S] = rules.readopt_h * 3600.0
    params[kern.P_MEDIAN_STEP] = rules.median_step
    params[kern.P_SPREAD_WEIGHT] = rules.spread_weight
    return params


def _floor(sensor: Sensor, rules: BaselineRules) -> float:
    """The smallest spread a sensor's bins may have: a fraction of its valid span (1e-3 if unbounded)."""
    span = sensor.valid_max - sensor.valid_min
    return rules.floor_fraction * span if math.isfinite(span) and span > 0 else 1e-3


def _copy_row(src: _State, i: int, dst: _State, j: int) -> None:
    dst.loc[j] = src.loc[i]
    dst.spread[j] = src.spread[i]
    dst.count[j] = src.count[i]
    dst.score[j] = src.score[i]
    dst.run[j] = src.run[i]
    dst.active[j] = src.active[i]
    dst.since[j] = src.since[i]
    dst.last_ts[j] = src.last_ts[i]
    dst.seen[j] = src.seen[i]
