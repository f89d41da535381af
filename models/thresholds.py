"""The per-sensor threshold detector: grade I–IV from each sensor's configured alarm limits.

One cause per sensor and direction (``threshold:{sensor_id}:{high|low}``). A value crossing a limit raises an
alert; a worse grade escalates it; it is downgraded or cleared only once the value is back past the limit by a
deadband, so a value hovering at a limit does not flap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading, ReadingBatch, ts_to_us
from twin.sensors import AlarmLimit, Direction, Grade, Quantity, Sensor

DEADBAND_FRACTION = 0.02
"""A limit counts as left only when the value is back past it by this fraction of the limit's magnitude."""

QUANTITY_ZH: Mapping[Quantity, str] = {
    Quantity.LEVEL: "液位",
    Quantity.FLOW: "流量",
    Quantity.RAIN_RATE: "雨强",
    Quantity.PRESSURE: "压力",
    Quantity.METHANE: "甲烷浓度",
}
"""What each quantity is called in Chinese alert messages."""


def cause_key(sensor_id: str, direction: Direction) -> str:
    """Return the cause key of a threshold alert."""
    return f"threshold:{sensor_id}:{direction.value}"


@dataclass(slots=True)
class SensorState:
    """What the detector remembers of one sensor: the newest reading time seen (microseconds since the epoch)
    and the active grade per direction."""

    last_us: int | None = None
    grades: dict[Direction, Grade] = field(default_factory=dict)


NO_TIME = int(np.iinfo(np.int64).min)
"""In :attr:`Detection.last`: no reading seen yet."""


@dataclass(frozen=True, slots=True)
class Detection:
    """The result of one batch: alert changes, and the state to keep once they are stored.

    The state is kept as the detector keeps it (each known sensor's newest time in an array, active grades by
    sensor); :attr:`state` gives it as :class:`SensorState` per sensor.
    """

    changes: list[AlertChange]
    last: npt.NDArray[np.int64]
    """Newest reading time per row of :attr:`ids` (µs since the epoch; :data:`NO_TIME`: none)."""
    grades: dict[str, dict[Direction, Grade]]
    """Active grades of the sensors that have any."""
    ids: list[str]
    """Sensor id of each row (the detector's list: rows past ``len(last)`` were added later)."""

    @property
    def state(self) -> dict[str, SensorState]:
        """The state per sensor that has seen a reading or has an active grade."""
        out: dict[str, SensorState] = {}
        for row, last in enumerate(self.last.tolist()):
            name = self.ids[row]
            grades = self.grades.get(name)
            if last != NO_TIME or grades:
                out[name] = SensorState(None if last == NO_TIME else last, dict(grades or {}))
        for name, grades in self.grades.items():
            if name not in out:
                out[name] = SensorState(None, dict(grades))
        return out


class ThresholdDetector:
    """Grade readings against their sensors' limits.

    ``evaluate`` does not change the detector; call ``commit`` with its state once the changes are stored, so a
    failed write can be retried with the same result.

    Args:
        sensors: sensors by id.
        state: state to start from (see :func:`state_from_active`), e.g. after a restart.
    """

    def __init__(self, sensors: Mapping[str, Sensor], state: Mapping[str, SensorState] | None = None) -> None:
        self.sensors = sensors
        # Each sensor gets a row: its newest time and its limits' band in arrays, so that a batch of calm sensors
        # is judged with a few numpy operations instead of an object per sensor.
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._last = np.empty(0, dtype=np.int64)
        self._low = np.empty(0)
        self._high = np.empty(0)
        self._known = np.empty(0, dtype=bool)
        self._grades: dict[str, dict[Direction, Grade]] = {}
        self._add_rows(sensors)
        for name, st in (state or {}).items():
            row = self._row.get(name)
            if row is not None:
                self._last[row] = NO_TIME if st.last_us is None else st.last_us
            if st.grades:
                self._grades[name] = dict(st.grades)

    def evaluate(self, readings: Sequence[Reading]) -> Detection:
        """Return the alert changes that *readings* cause, in time order per sensor.

        Readings of quality ``bad``, of unknown sensors, or not newer than the newest already seen for their
        sensor (duplicates, late arrivals) change nothing.

        A :class:`~twin.readings.ReadingBatch` is judged column-wise first: a sensor with no active alert whose
        readings all stay inside its limits can only move its newest time, which is done for all such sensors at
        once; the readings of the other sensors go through the reading-by-reading rules.
        """
        changes: list[AlertChange] = []
        touched: dict[str, SensorState] = {}
        newest = None
        if not isinstance(readings, ReadingBatch):
            changes, touched = self._step_all(readings)
        else:
            changes, touched, newest = self._evaluate_columns(readings)
        last, grades = self._last, self._grades
        if newest is not None or touched:
            last = _grown(last, len(self._ids))  # a copy: the detector changes only at commit
        if newest is not None:
            rows, times = newest
            last[rows] = np.maximum(last[rows], times)
        if touched:
            grades = dict(grades)
            for name, st in touched.items():
                last[self._row[name]] = NO_TIME if st.last_us is None else st.last_us
                if st.grades:
                    grades[name] = st.grades
                else:
                    grades.pop(name, None)
        return Detection(changes, last, grades, self._ids)

    def _add_rows(self, names: Iterable[str]) -> None:
        """Give each of *names* that has none a row (no time yet), and work out every row's band again."""
        for name in names:
            if name not in self._row:
                self._row[name] = len(self._ids)
                self._ids.append(name)
        self._last = _grown(self._last, len(self._ids))
        bands = [self._band(name) for name in self._ids]
        self._low = np.array([-math.inf if b is None else b[0] for b in bands], dtype=float)
        self._high = np.array([math.inf if b is None else b[1] for b in bands], dtype=float)
        self._known = np.array([b is not None for b in bands], dtype=bool)

    def _old_state(self, name: str) -> SensorState:
        row = self._row.get(name)
        last = NO_TIME if row is None or row >= len(self._last) else int(self._last[row])
        return SensorState(None if last == NO_TIME else last, dict(self._grades.get(name, {})))

    def _step_all(self, readings: Iterable[Reading]) -> tuple[list[AlertChange], dict[str, SensorState]]:
        changes: list[AlertChange] = []
        touched: dict[str, SensorState] = {}
        for reading in sorted(readings, key=lambda r: (r.sensor_id, r.ts)):
            sensor = self.sensors.get(reading.sensor_id)
            if sensor is None or reading.quality == QUALITY_BAD:
                continue
            state = touched.get(reading.sensor_id)
            if state is None:
                state = touched[reading.sensor_id] = self._old_state(reading.sensor_id)
            us = ts_to_us(reading.ts)
            if state.last_us is not None and us <= state.last_us:
                continue
            state.last_us = us
            for direction in (Direction.HIGH, Direction.LOW):
                change = _step(sensor, state, direction, reading)
                if change is not None:
                    changes.append(change)
        return changes, touched

    def _evaluate_columns(
        self, batch: ReadingBatch
    ) -> tuple[list[AlertChange], dict[str, SensorState], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None]:
        """Judge *batch* column-wise: the changes and touched state of the sensors that need the reading-by-reading
        rules, and the rows and newest times of the calm ones (None: none)."""
        names, codes = batch.groups()
        rows_by_name = self._row
        rows = np.fromiter((rows_by_name.get(name, -1) for name in names), np.int64, len(names))
        if not len(self._ids):
            return [], {}, None
        valid = rows >= 0
        if not valid.all():  # sensors the registry does not know: judged by no rule
            rows = np.where(valid, rows, 0)
        known = valid & self._known[rows]
        active = self._grades
        busy = (
            np.fromiter((name in active for name in names), bool, len(names)) if active else np.zeros(len(names), bool)
        )
        values = batch.values
        good = batch.quality != QUALITY_BAD
        crossing = good & ((values >= self._high[rows][codes]) | (values <= self._low[rows][codes]))
        busy[codes[crossing]] = True
        busy &= known
        changes: list[AlertChange] = []
        touched: dict[str, SensorState] = {}
        if busy.any():
            changes, touched = self._step_all(batch.take(busy[codes]))
        quiet = good & known[codes] & ~busy[codes]
        if not quiet.any():
            return changes, touched, None
        newest = np.full(len(names), NO_TIME, dtype=np.int64)
        np.maximum.at(newest, codes[quiet], batch.ts_us[quiet])
        seen = newest > NO_TIME
        return changes, touched, (rows[seen], newest[seen])

    def _band(self, sensor_id: str) -> tuple[float, float] | None:
        """Return the highest low limit and the lowest high limit of a sensor (±inf: none), None if unknown."""
        sensor = self.sensors.get(sensor_id)
        if sensor is None:
            return None
        lows = [lim.threshold for lim in sensor.limits if lim.direction is Direction.LOW]
        highs = [lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH]
        return (max(lows, default=-math.inf), min(highs, default=math.inf))

    def commit(self, detection: Detection) -> None:
        """Adopt the state of a detection whose changes have been stored."""
        self._last = _grown(detection.last, len(self._ids)) if len(detection.last) < len(self._ids) else detection.last
        self._grades = detection.grades

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use a new set of sensor definitions (limits may have changed); the state is kept."""
        self.sensors = sensors
        self._add_rows(sensors)


def _grown(last: npt.NDArray[np.int64], size: int) -> npt.NDArray[np.int64]:
    """A copy of *last* with rows up to *size* (new rows: no time)."""
    out = np.full(size, NO_TIME, dtype=np.int64)
    out[: len(last)] = last
    return out


def state_from_active(
    active: Iterable[Mapping[str, object]], last_ts: Mapping[str, datetime] | None = None
) -> dict[str, SensorState]:
    """Rebuild detector state from stored active alerts and each sensor's newest stored reading time."""
    state: dict[str, SensorState] = {sid: SensorState(last_us=ts_to_us(ts)) for sid, ts in (last_ts or {}).items()}
    for alert in active:
        key = str(alert["cause_key"])
        kind, _, rest = key.partition(":")
        if kind != "threshold":
            continue
        sensor_id, _, direction = rest.rpartition(":")
        entry = state.setdefault(sensor_id, SensorState())
        entry.grades[Direction(direction)] = Grade(int(alert["grade"]))  # type: ignore[call-overload]
    return state


def _limits(sensor: Sensor, direction: Direction) -> list[AlarmLimit]:
    return [lim for lim in sensor.limits if lim.direction is direction]


def _crossed(value: float, limit: AlarmLimit, deadband: float = 0.0) -> bool:
    if limit.direction is Direction.HIGH:
        return value >= limit.threshold - deadband
    return value <= limit.threshold + deadband


def _step(sensor: Sensor, state: SensorState, direction: Direction, reading: Reading) -> AlertChange | None:
    limits = _limits(sensor, direction)
    if not limits:
        return None
    value = reading.value
    crossed = [lim for lim in limits if _crossed(value, lim)]
    new = min(crossed, key=lambda lim: lim.grade) if crossed else None
    current = state.grades.get(direction)
    if current is None:
        if new is None:
            return None
        state.grades[direction] = new.grade
        return _change("raised", sensor, direction, new, reading)
    if new is not None and new.grade < current:
        state.grades[direction] = new.grade
        return _change("updated", sensor, direction, new, reading)
    if new is not None and new.grade == current:
        return None
    # Less severe than the active grade: leave it only once past the active limit by the deadband.
    held = next((lim for lim in limits if lim.grade == current), None)
    if held is not None and _crossed(value, held, DEADBAND_FRACTION * max(abs(held.threshold), 1e-9)):
        return None
    if new is None:
        del state.grades[direction]
        last = held or max(limits, key=lambda lim: lim.grade)
        return _change("cleared", sensor, direction, last, reading)
    state.grades[direction] = new.grade
    return _change("updated", sensor, direction, new, reading)


def _change(event: str, sensor: Sensor, direction: Direction, limit: AlarmLimit, reading: Reading) -> AlertChange:
    unit = sensor.unit
    qty_zh = QUANTITY_ZH[sensor.quantity]
    if event == "cleared":
        zh = f"{sensor.name}（{sensor.sensor_id}）{qty_zh}已恢复：{reading.value:.2f} {unit}"
        en = f"{sensor.sensor_id} {sensor.quantity.value} back to normal: {reading.value:.2f} {unit}"
    else:
        verb_zh = "超过" if direction is Direction.HIGH else "低于"
        verb_en = "above" if direction is Direction.HIGH else "below"
        zh = (
            f"{sensor.name}（{sensor.sensor_id}）{qty_zh} {reading.value:.2f} {unit}，{verb_zh}"
            f"{limit.grade.label_zh}预警值 {limit.threshold:g} {unit}"
        )
        en = (
            f"{sensor.sensor_id} {sensor.quantity.value} {reading.value:.2f} {unit} {verb_en} the grade "
            f"{limit.grade.name} limit {limit.threshold:g} {unit}"
        )
    return AlertChange(
        event=event,
        cause_key=cause_key(sensor.sensor_id, direction),
        kind="threshold",
        sensor_id=sensor.sensor_id,
        network=sensor.network.value,
        district=sensor.district,
        grade=int(limit.grade),
        ts=reading.ts,
        value=reading.value,
        threshold=limit.threshold,
        message=zh,
        message_en=en,
    )
