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


@dataclass(frozen=True, slots=True)
class Detection:
    """The result of one batch: alert changes, and the state to keep once they are stored."""

    changes: list[AlertChange]
    state: dict[str, SensorState]


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
        self._state: dict[str, SensorState] = dict(state or {})
        self._bands: dict[str, tuple[float, float] | None] = {}

    def evaluate(self, readings: Sequence[Reading]) -> Detection:
        """Return the alert changes that *readings* cause, in time order per sensor.

        Readings of quality ``bad``, of unknown sensors, or not newer than the newest already seen for their
        sensor (duplicates, late arrivals) change nothing.

        A :class:`~twin.readings.ReadingBatch` is judged column-wise first: a sensor with no active alert whose
        readings all stay inside its limits can only move its newest time, which is done for all such sensors at
        once; the readings of the other sensors go through the reading-by-reading rules.
        """
        if not isinstance(readings, ReadingBatch):
            changes, touched = self._step_all(readings)
        else:
            changes, touched = self._evaluate_columns(readings)
        merged = dict(self._state)
        merged.update(touched)
        return Detection(changes, merged)

    def _step_all(self, readings: Iterable[Reading]) -> tuple[list[AlertChange], dict[str, SensorState]]:
        changes: list[AlertChange] = []
        touched: dict[str, SensorState] = {}
        for reading in sorted(readings, key=lambda r: (r.sensor_id, r.ts)):
            sensor = self.sensors.get(reading.sensor_id)
            if sensor is None or reading.quality == QUALITY_BAD:
                continue
            state = touched.get(reading.sensor_id)
            if state is None:
                old = self._state.get(reading.sensor_id, SensorState())
                state = touched[reading.sensor_id] = SensorState(old.last_us, dict(old.grades))
            us = ts_to_us(reading.ts)
            if state.last_us is not None and us <= state.last_us:
                continue
            state.last_us = us
            for direction in (Direction.HIGH, Direction.LOW):
                change = _step(sensor, state, direction, reading)
                if change is not None:
                    changes.append(change)
        return changes, touched

    def _evaluate_columns(self, batch: ReadingBatch) -> tuple[list[AlertChange], dict[str, SensorState]]:
        names, codes = batch.groups()
        count = len(names)
        low = np.full(count, -np.inf)
        high = np.full(count, np.inf)
        known = np.zeros(count, dtype=bool)
        busy = np.zeros(count, dtype=bool)
        state = self._state
        for k, name in enumerate(names):
            band = self._band(name)
            if band is None:
                continue
            known[k] = True
            low[k], high[k] = band
            old = state.get(name)
            busy[k] = old is not None and bool(old.grades)
        values = batch.values
        good = batch.quality != QUALITY_BAD
        crossing = good & ((values >= high[codes]) | (values <= low[codes]))
        busy[codes[crossing]] = True
        busy &= known
        changes: list[AlertChange] = []
        touched: dict[str, SensorState] = {}
        if busy.any():
            changes, touched = self._step_all(batch.take(busy[codes]))
        quiet = good & known[codes] & ~busy[codes]
        if quiet.any():
            newest = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
            np.maximum.at(newest, codes[quiet], batch.ts_us[quiet])
            for k in np.flatnonzero(newest > np.iinfo(np.int64).min).tolist():
                name, us = names[k], int(newest[k])
                old = state.get(name)
                if old is None:
                    touched[name] = SensorState(us, {})
                elif old.last_us is None or us > old.last_us:
                    touched[name] = SensorState(us, dict(old.grades))
        return changes, touched

    def _band(self, sensor_id: str) -> tuple[float, float] | None:
        """Return the highest low limit and the lowest high limit of a sensor (±inf: none), None if unknown."""
        try:
            return self._bands[sensor_id]
        except KeyError:
            sensor = self.sensors.get(sensor_id)
            band = None
            if sensor is not None:
                lows = [lim.threshold for lim in sensor.limits if lim.direction is Direction.LOW]
                highs = [lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH]
                band = (max(lows, default=-math.inf), min(highs, default=math.inf))
            self._bands[sensor_id] = band
            return band

    def commit(self, detection: Detection) -> None:
        """Adopt the state of a detection whose changes have been stored."""
        self._state = detection.state

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use a new set of sensor definitions (limits may have changed); the state is kept."""
        self.sensors = sensors
        self._bands = {}


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
