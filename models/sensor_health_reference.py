"""The sensor health detector as plain Python, one reading at a time: the readable reference.

:class:`models.sensor_health.SensorHealthDetector` runs the same rules as a compiled kernel over arrays
(:mod:`models.sensor_health_kernel`) and is what ingest uses. This module keeps the rules as they were first
written, one :class:`~models.sensor_health.HealthState` object per sensor, so that they can be read and so that the
kernel can be tested against them: ``tests/models/test_sensor_health_kernel.py`` asserts that both give the same
changes (in the same order), the same suspect readings and the same state, batch after batch. A change to a rule
is made here first and then in the kernel. The rules themselves are described in :mod:`models.sensor_health`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import attrgetter

from models.sensor_health import (
    CLOCK_SKEW,
    DRIFT,
    DROPOUT,
    OUT_OF_RANGE,
    SPIKE,
    STUCK,
    HealthDetection,
    HealthRules,
    HealthState,
    _change,
    _Weights,
    _weights_for,
)
from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Sensor

_BY_SENSOR_TS = attrgetter("sensor_id", "ts")


class ReferenceHealthDetector:
    """Judge sensors' health from their readings, one reading at a time in Python (the reference).

    ``evaluate`` does not change the detector; call ``commit`` with its result once the changes are stored, so a
    failed write can be retried with the same result. After a restart, build the detector with the last committed
    ``state`` (e.g. kept beside the alerts) to continue where it stopped.

    Args:
        sensors: sensors by id.
        state: state to start from, by sensor id.
        rules: the rules' parameters.
    """

    def __init__(
        self,
        sensors: Mapping[str, Sensor],
        state: Mapping[str, HealthState] | None = None,
        *,
        rules: HealthRules | None = None,
    ) -> None:
        self.sensors = sensors
        self.rules = rules or HealthRules()
        self._state: dict[str, HealthState] = dict(state or {})
        self._weights: dict[str, _Weights | None] = {}

    @property
    def state(self) -> Mapping[str, HealthState]:
        """The committed state, by sensor id (do not modify)."""
        return self._state

    def commit(self, detection: HealthDetection) -> None:
        """Adopt the state of a detection whose changes have been stored."""
        state = detection.state
        self._state = state if isinstance(state, dict) else dict(state)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions (ranges or intervals may have changed); the state is kept."""
        self.sensors = sensors
        self._weights = {}

    def evaluate(self, readings: Sequence[Reading], *, now: datetime) -> HealthDetection:
        """Return the health alert changes and suspect readings that *readings*, received at *now*, reveal.

        Args:
            readings: a batch of accepted readings, in any order.
            now: the time the batch was received (timezone-aware UTC); dropouts are judged at this time.
        """
        rules = self.rules
        changes: list[AlertChange] = []
        suspect: set[tuple[str, datetime]] = set()
        touched: dict[str, HealthState] = {}
        current_id = ""
        st = HealthState()
        w: _Weights | None = None
        for reading in sorted(readings, key=_BY_SENSOR_TS):
            sid = reading.sensor_id
            if sid != current_id:
                # Sorted by sensor: each sensor's readings come together, so its state is copied once.
                current_id = sid
                w = self._known(sid)
                if w is None:
                    continue
                old = self._state.get(sid)
                st = touched[sid] = HealthState() if old is None else old.copy()
                if DROPOUT in st.active:
                    st.active -= {DROPOUT}
                    changes.append(_change("cleared", w.sensor, DROPOUT, reading.ts, reading.value, None, rules))
            if w is None:
                continue
            sensor = w.sensor
            ts = reading.ts
            value = reading.value
            st.arrived = now
            if _clock(sensor, st, ts, now, rules, changes, value):
                suspect.add((sid, ts))
            if not sensor.valid_min <= value <= sensor.valid_max:
                suspect.add((sid, ts))
                if OUT_OF_RANGE not in st.active:
                    st.active |= {OUT_OF_RANGE}
                    changes.append(_change("raised", sensor, OUT_OF_RANGE, ts, value, None, rules))
                if st.last_ts is None or ts > st.last_ts:
                    st.last_ts = ts
                continue
            if OUT_OF_RANGE in st.active:
                st.active -= {OUT_OF_RANGE}
                changes.append(_change("cleared", sensor, OUT_OF_RANGE, ts, value, None, rules))
            if (st.last_ts is not None and ts <= st.last_ts) or reading.quality == QUALITY_BAD:
                continue
            st.last_ts = ts
            _values(sensor, st, w, ts, value, rules, changes, suspect)
        for sid, old_state in self._state.items():
            fresh = sid in touched
            st = touched[sid] if fresh else old_state
            if st.arrived is None or (fresh and SPIKE not in st.active):
                continue
            w = self._known(sid)
            if w is None:
                continue
            sensor = w.sensor
            if not fresh and DROPOUT not in st.active and now - st.arrived > w.dropout:
                st = touched[sid] = st.copy()
                fresh = True
                st.active |= {DROPOUT}
                changes.append(_change("raised", sensor, DROPOUT, now, None, None, rules))
            if SPIKE in st.active and st.spike_ts is not None and now - st.spike_ts > w.spike_hold:
                st = touched[sid] = st if fresh else st.copy()
                st.active -= {SPIKE}
                changes.append(_change("cleared", sensor, SPIKE, now, None, None, rules))
        merged = dict(self._state)
        merged.update(touched)
        return HealthDetection(changes, suspect, merged)

    def _known(self, sensor_id: str) -> _Weights | None:
        """Return the sensor with its constants, or None for an unknown sensor."""
        try:
            return self._weights[sensor_id]
        except KeyError:
            sensor = self.sensors.get(sensor_id)
            known = self._weights[sensor_id] = None if sensor is None else _weights_for(sensor, self.rules)
            return known


def _clock(
    sensor: Sensor,
    st: HealthState,
    ts: datetime,
    now: datetime,
    rules: HealthRules,
    changes: list[AlertChange],
    value: float,
) -> bool:
    """Update the clock rule with one reading; return whether the reading's time is suspect.

    The change is stamped with *now*, since the reading's own time is the thing in doubt.
    """
    delay = (now - ts).total_seconds()
    if -delay > rules.clock_ahead_s:
        st.ahead_run += 1
        st.in_time_run = 0
    else:
        st.ahead_run = 0
        st.in_time_run += 1
    if st.delays < rules.clock_tau_readings:
        st.delays += 1
        a = 1.0 / st.delays
    else:
        a = 1.0 / rules.clock_tau_readings
    st.delay_dev += a * (abs(delay - st.delay_mean) - st.delay_dev)
    st.delay_mean += a * (delay - st.delay_mean)
    active = CLOCK_SKEW in st.active
    if not active:
        ahead = st.ahead_run >= rules.clock_readings
        behind = (
            st.delays >= rules.clock_tau_readings
            and st.delay_mean > rules.clock_behind_s
            and st.delay_dev < rules.clock_steady_fraction * st.delay_mean
        )
        if ahead or behind:
            st.active |= {CLOCK_SKEW}
            changes.append(_change("raised", sensor, CLOCK_SKEW, now, value, -delay, rules))
            return True
        return st.ahead_run > 0
    if st.in_time_run >= rules.clock_readings and st.delay_mean < 0.5 * rules.clock_behind_s:
        st.active -= {CLOCK_SKEW}
        changes.append(_change("cleared", sensor, CLOCK_SKEW, now, value, -delay, rules))
        return False
    return True


def _values(
    sensor: Sensor,
    st: HealthState,
    w: _Weights,
    ts: datetime,
    value: float,
    rules: HealthRules,
    changes: list[AlertChange],
    suspect: set[tuple[str, datetime]],
) -> None:
    """Apply the stuck, spike and drift rules to one trusted, in-range, newer reading."""
    sid = sensor.sensor_id
    last = st.last_value
    if last != last:  # NaN: the first trusted reading
        st.last_value = st.fast = st.slow = value
        st.fed_ts = ts
        st.trusted = 1
        return
    if SPIKE in st.active and st.spike_ts is not None and ts - st.spike_ts > w.spike_hold:
        st.active -= {SPIKE}
        changes.append(_change("cleared", sensor, SPIKE, ts, value, None, rules))
    warm = st.trusted >= rules.warmup_readings
    spread = st.spread if st.spread > w.spread_floor else w.spread_floor

    # Spike: a jump held aside until it comes back (a spike) or stays (a level change).
    if st.excursion:
        if abs(value - st.excursion_base) <= 0.5 * abs(st.excursion_jump):
            for past in st.excursion_ts:
                suspect.add((sid, past))
            st.excursion, st.excursion_ts = 0, ()
            st.spike_ts = ts
            if SPIKE not in st.active:
                st.active |= {SPIKE}
                changes.append(_change("raised", sensor, SPIKE, ts, value, st.excursion_jump, rules))
            last = st.last_value = st.excursion_base
        elif st.excursion < rules.spike_max_readings:
            st.excursion += 1
            st.excursion_ts = (*st.excursion_ts, ts)
            return
        else:
            st.excursion, st.excursion_ts = 0, ()
            last = st.last_value = value
    step = value - last
    size = abs(step)
    # After a frozen stretch, the first change is the sensor coming back, not a spike.
    if w.spikes and warm and size > rules.spike_k * spread and st.flat_run < rules.stuck_readings:
        st.excursion, st.excursion_base, st.excursion_jump, st.excursion_ts = 1, last, step, (ts,)
        return

    # Stuck: many readings in a row without change, from a sensor that usually changes.
    if size <= rules.stuck_tolerance + 1e-9 * abs(value):
        if st.flat_run == 0:
            st.flat_move_rate = st.move_rate
        st.flat_run += 1
        at_bound = value <= sensor.valid_min + rules.stuck_tolerance or value >= sensor.valid_max - (
            rules.stuck_tolerance
        )
        if (
            warm
            and st.flat_run >= rules.stuck_readings
            and st.flat_move_rate >= rules.stuck_min_move_rate
            and not at_bound
        ):
            suspect.add((sid, ts))
            if STUCK not in st.active:
                st.active |= {STUCK}
                changes.append(_change("raised", sensor, STUCK, ts, value, None, rules))
            return
    else:
        if STUCK in st.active:
            st.active -= {STUCK}
            changes.append(_change("cleared", sensor, STUCK, ts, value, None, rules))
        st.flat_run = 0
    st.move_rate += w.move * ((1.0 if st.flat_run == 0 else 0.0) - st.move_rate)
    st.spread += w.spread * (min(size, 5.0 * spread) - st.spread) if warm else (size - st.spread) / st.trusted
    st.last_value = value
    if st.trusted < 1_000_000_000:
        st.trusted += 1

    # Drift: the fast mean leaving the slow baseline by more than it usually does. After a stretch that fed
    # nothing (silence, stuck or out of range) the means start again from the value, or the gap would look
    # like a drift.
    if st.fed_ts is not None and ts - st.fed_ts > w.refeed:
        st.fast = st.slow = value
        st.drift_run = 0
    st.fed_ts = ts
    st.fast += w.fast * (value - st.fast)
    if not w.drifts:
        return
    drifting = DRIFT in st.active
    if not drifting:
        st.slow += w.slow * (value - st.slow)
    d = abs(st.fast - st.slow)
    if st.trusted <= w.warmup_drift:
        st.drift_scale += (d - st.drift_scale) / st.trusted
        return
    scale = st.drift_scale if st.drift_scale > w.drift_floor else w.drift_floor
    if not drifting:
        st.drift_scale += w.scale * (min(d, rules.drift_k * scale) - st.drift_scale)
        st.drift_run = st.drift_run + 1 if d > rules.drift_k * scale else 0
        if st.drift_run >= rules.drift_readings:
            st.drift_run = 0
            st.drift_ts = ts
            st.active |= {DRIFT}
            changes.append(_change("raised", sensor, DRIFT, ts, value, st.fast - st.slow, rules))
            suspect.add((sid, ts))
        return
    suspect.add((sid, ts))
    if st.drift_ts is not None and ts - st.drift_ts > w.readopt:
        st.slow = st.fast
        st.drift_ts = ts
        d = 0.0
    st.drift_run = st.drift_run + 1 if d < rules.drift_clear_k * scale else 0
    if st.drift_run >= rules.drift_readings:
        st.drift_run = 0
        st.active -= {DRIFT}
        changes.append(_change("cleared", sensor, DRIFT, ts, value, st.fast - st.slow, rules))
        st.slow = st.fast
