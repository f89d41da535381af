"""Sensor health: maintenance alerts for sensors that report nonsense, and the readings not to trust.

A faulty sensor raises an alert of kind ``sensor_health`` (not a lifeline warning; grade IV by default) with the
cause key ``health:{sensor_id}:{fault}``; it is cleared when the fault is over. Every reading a rule finds faulty
is returned in ``suspect`` as ``(sensor_id, ts)`` so that other detectors can distrust it.

The detector is streaming and pure: each sensor has a small fixed state (a few floats and counters) and each
reading costs O(1). Like :class:`models.thresholds.ThresholdDetector`, ``evaluate`` changes nothing; ``commit``
adopts the state once the changes are stored. Time constants are given in seconds and turned into per-reading
weights with the sensor's ``interval_s``, so gaps in the data are not taken into account by the averages.

Rules (parameters are fields of :class:`HealthRules`; defaults suit 1-minute sensors):

``out_of_range``
    The value is below ``valid_min`` or above ``valid_max`` of the sensor (canonical unit). Raised at the first such
    reading, cleared at the first reading back in range. Out-of-range readings never feed the statistics below.

``stuck``
    The value has not changed by more than ``stuck_tolerance`` (canonical unit, plus ``1e-9`` of the value) for
    ``stuck_readings`` consecutive readings (default 10, i.e. 10 min), while the sensor normally changes on at least
    ``stuck_min_move_rate`` (fraction, default 0.8) of its readings (an average over ``stuck_tau_s``, default 1 h).
    A value resting at either end of the valid range (no rain, no gas, an empty pipe) is never called stuck,
    because those sensors are legitimately flat there. Cleared at the first reading that moves. Readings from the
    ``stuck_readings``-th of the run on are suspect; the first ones of the run are not flagged (they were already
    passed on).

``spike``
    A jump from the last trusted value larger than ``spike_k`` (default 8) times the sensor's usual step (the
    average absolute change between consecutive readings over ``spread_tau_s``, default 30 min, floored at
    ``spread_floor_fraction`` of the valid span) that comes back within ``spike_max_readings`` readings (default
    3) to within half the jump. A jump that does not come back is a level change and is accepted, and so is the
    first change after a stuck stretch. The excursion's
    readings become suspect when it has come back, so they may belong to an earlier batch. Raised at the reading
    that comes back, cleared ``spike_hold_s`` (default 15 min) after the last spike. Not judged for quantities in
    ``spike_skip`` (rain rate by default: rain bursts are real spikes).

``drift``
    A slow departure of the value from its own baseline: the difference *d* between a fast EWMA (``drift_fast_tau_s``,
    default 30 min) and a slow EWMA (``drift_slow_tau_s``, default 6 h) of the value, compared with the usual size
    of that difference (an EWMA of |d| over ``drift_scale_tau_s``, default 24 h, floored at
    ``drift_floor_fraction`` of the valid span). Raised when |d| exceeds ``drift_k`` (default 4) times that scale
    for ``drift_readings`` consecutive readings (default 10); while raised, the slow baseline and the scale are
    frozen, and the alert clears once |d| stays under ``drift_clear_k`` (default 2) times the scale for
    ``drift_readings`` readings. After ``drift_fast_tau_s`` without readings that feed the means (silence, stuck,
    out of range) both means restart from the next value. Judged only after ``drift_warmup_s`` (default 6 h) of
    data, and only for the quantities in ``drift_quantities`` (pressure by default).

    After ``drift_readopt_s`` (default 12 h) raised, the baseline is re-adopted from the fast mean, so a lasting
    real change (a closed valve, a new set point) clears instead of holding the alert for ever; a drift that goes
    on is raised again once it has moved far enough from the new baseline.

    What it can see: an offset that grows at a rate well above the sensor's own slow variability, e.g. a pressure
    sensor moving 20 kPa/h when its daily swing is ±10 kPa (raised after about 2 h, 35–40 kPa off). What it
    cannot see: a drift slower than, or shaped like, the sensor's normal daily pattern; a step (that is a level
    change, see ``spike``); and it cannot tell a drift from a real slow change of the quantity. That is why it is
    off for levels, flows, rain and methane, whose real events (a storm, a growing leak, gas gathering) are slow
    departures; in pressure, a slowly growing leak looks like a drift. Comparing neighbouring sensors would be
    needed to tell them apart.

``dropout``
    No reading has arrived for ``dropout_intervals`` × ``interval_s`` (default 5 intervals), judged at the ``now``
    given to ``evaluate`` against the arrival time (the ``now`` of the batch that brought the sensor's last
    reading), so a skewed clock does not look like silence. A sensor never seen is not judged. Cleared by the next
    reading.

``clock_skew``
    Ahead: a reading's ``ts`` is more than ``clock_ahead_s`` (default 60 s) ahead of ``now`` for
    ``clock_readings`` consecutive readings (default 2); ingest refuses readings further ahead than its own limit
    (300 s), so this sees the skew between the two. Behind: the delay ``now - ts`` averages (EWMA over
    ``clock_tau_readings`` readings, default 10) more than ``clock_behind_s`` (default 300 s) and is steady (its
    mean absolute deviation is under ``clock_steady_fraction``, default 0.25, of the mean), which tells a clock
    running late from a gateway delivering its buffer (whose delays vary). Cleared after ``clock_readings``
    readings within tolerance (ahead) or when the average delay falls under half of ``clock_behind_s`` (behind).
    While raised, the sensor's readings are suspect.

Readings not newer than the newest already seen for their sensor (duplicates, late arrivals) and readings of
quality ``bad`` are judged for range and clock only. Readings of unknown sensors are ignored.

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> from twin.demo import demo_sensors
    >>> from twin.readings import Reading
    >>> sensors = {s.sensor_id: s for s in demo_sensors()}
    >>> det = SensorHealthDetector(sensors)
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> result = det.evaluate([Reading("D-L-001", t0, 9.5, 2)], now=t0)
    >>> [c.cause_key for c in result.changes]
    ['health:D-L-001:out_of_range']
    >>> det.commit(result)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Grade, Quantity, Sensor

OUT_OF_RANGE = "out_of_range"
STUCK = "stuck"
SPIKE = "spike"
DRIFT = "drift"
DROPOUT = "dropout"
CLOCK_SKEW = "clock_skew"
FAULTS = (OUT_OF_RANGE, STUCK, SPIKE, DRIFT, DROPOUT, CLOCK_SKEW)
"""The faults this detector names, as they appear in cause keys."""

_FAULT_ZH = {
    OUT_OF_RANGE: "读数超出量程",
    STUCK: "读数冻结",
    SPIKE: "读数突跳",
    DRIFT: "读数漂移",
    DROPOUT: "数据中断",
    CLOCK_SKEW: "时钟偏差",
}
_FAULT_EN = {
    OUT_OF_RANGE: "reading outside the valid range",
    STUCK: "reading stuck",
    SPIKE: "spike in readings",
    DRIFT: "reading drifting",
    DROPOUT: "no data",
    CLOCK_SKEW: "clock skew",
}
_BY_SENSOR_TS = attrgetter("sensor_id", "ts")


def cause_key(sensor_id: str, fault: str) -> str:
    """Return the cause key of a sensor health alert."""
    return f"health:{sensor_id}:{fault}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthRules:
    """The parameters of the health rules; see the module docstring for what each rule does.

    Attributes:
        grade: grade of every health alert (IV, blue: a maintenance matter).
        stuck_readings: consecutive unchanged readings that make a sensor stuck, readings.
        stuck_tolerance: a change no larger than this counts as no change, canonical unit.
        stuck_min_move_rate: the sensor must normally change on at least this fraction of its readings.
        stuck_tau_s: time constant of that fraction's average, seconds.
        spread_tau_s: time constant of the usual step (mean absolute change between readings), seconds.
        spread_floor_fraction: the usual step is at least this fraction of the valid span (when finite).
        spike_k: a jump larger than this many usual steps may be a spike.
        spike_max_readings: a spike comes back within this many readings, readings.
        spike_hold_s: a spike alert clears this long after the last spike, seconds.
        spike_skip: quantities not judged for spikes.
        drift_fast_tau_s: time constant of the fast mean, seconds.
        drift_slow_tau_s: time constant of the slow baseline, seconds.
        drift_scale_tau_s: time constant of the usual fast-minus-slow difference, seconds.
        drift_floor_fraction: that usual difference is at least this fraction of the valid span (when finite).
        drift_k: raise when the difference exceeds this many times its usual size.
        drift_clear_k: clear when it is back under this many times its usual size.
        drift_readings: for this many consecutive readings, readings.
        drift_warmup_s: no drift judgement before this much data, seconds.
        drift_readopt_s: a drift alert this old re-adopts the baseline, seconds.
        drift_quantities: quantities judged for drift.
        dropout_intervals: silence of this many sampling intervals is a dropout.
        clock_ahead_s: a timestamp further ahead of ``now`` than this is skewed, seconds.
        clock_behind_s: an average steady delay beyond this is a clock running late, seconds.
        clock_steady_fraction: the delay is steady if its mean absolute deviation is under this fraction of it.
        clock_tau_readings: readings averaged for the delay, readings.
        clock_readings: consecutive readings that raise or clear a skew ahead, readings.
        warmup_readings: stuck and spike are not judged before this many trusted readings, readings.
    """

    grade: Grade = Grade.IV
    stuck_readings: int = 10
    stuck_tolerance: float = 0.0
    stuck_min_move_rate: float = 0.8
    stuck_tau_s: float = 60 * 60.0
    spread_tau_s: float = 30 * 60.0
    spread_floor_fraction: float = 0.0005
    spike_k: float = 8.0
    spike_max_readings: int = 3
    spike_hold_s: float = 15 * 60.0
    spike_skip: frozenset[Quantity] = frozenset({Quantity.RAIN_RATE})
    drift_fast_tau_s: float = 30 * 60.0
    drift_slow_tau_s: float = 6 * 3600.0
    drift_scale_tau_s: float = 24 * 3600.0
    drift_floor_fraction: float = 0.002
    drift_k: float = 4.0
    drift_clear_k: float = 2.0
    drift_readings: int = 10
    drift_warmup_s: float = 6 * 3600.0
    drift_readopt_s: float = 12 * 3600.0
    drift_quantities: frozenset[Quantity] = frozenset({Quantity.PRESSURE})
    dropout_intervals: float = 5.0
    clock_ahead_s: float = 60.0
    clock_behind_s: float = 300.0
    clock_steady_fraction: float = 0.25
    clock_tau_readings: float = 10.0
    clock_readings: int = 2
    warmup_readings: int = 30


@dataclass(slots=True)
class HealthState:
    """What the detector remembers of one sensor. Values in the sensor's canonical unit, delays in seconds.

    Attributes:
        last_ts: newest reading time seen.
        arrived: the ``now`` of the batch that brought the newest reading.
        last_value: the last trusted value (NaN before the first).
        trusted: trusted readings seen (capped at a large number).
        spread: usual absolute change between consecutive readings.
        move_rate: fraction of readings that change the value.
        flat_run: consecutive readings without change.
        flat_move_rate: ``move_rate`` when the current flat run began.
        excursion: readings of a possible spike in progress.
        excursion_base: the value before the jump.
        excursion_jump: the jump's size (signed).
        excursion_ts: times of the excursion's readings.
        spike_ts: time of the last spike.
        fed_ts: time of the last reading that fed the means.
        fast, slow: fast and slow means of the value.
        drift_scale: usual absolute difference of the two.
        drift_run: consecutive readings beyond (or, while raised, back within) the drift limit.
        drift_ts: when the drift alert was raised (or its baseline last re-adopted).
        ahead_run, in_time_run: consecutive readings ahead of ``now`` / within tolerance.
        delay_mean, delay_dev: average delay ``now - ts`` and its mean absolute deviation, seconds.
        delays: delays averaged so far (capped).
        active: the faults raised now.
    """

    last_ts: datetime | None = None
    arrived: datetime | None = None
    last_value: float = math.nan
    trusted: int = 0
    spread: float = 0.0
    move_rate: float = 1.0
    flat_run: int = 0
    flat_move_rate: float = 0.0
    excursion: int = 0
    excursion_base: float = 0.0
    excursion_jump: float = 0.0
    excursion_ts: tuple[datetime, ...] = ()
    spike_ts: datetime | None = None
    fed_ts: datetime | None = None
    fast: float = 0.0
    slow: float = 0.0
    drift_scale: float = 0.0
    drift_run: int = 0
    drift_ts: datetime | None = None
    ahead_run: int = 0
    in_time_run: int = 0
    delay_mean: float = 0.0
    delay_dev: float = 0.0
    delays: int = 0
    active: frozenset[str] = frozenset()

    def copy(self) -> HealthState:
        """Return an independent copy."""
        return HealthState(
            self.last_ts,
            self.arrived,
            self.last_value,
            self.trusted,
            self.spread,
            self.move_rate,
            self.flat_run,
            self.flat_move_rate,
            self.excursion,
            self.excursion_base,
            self.excursion_jump,
            self.excursion_ts,
            self.spike_ts,
            self.fed_ts,
            self.fast,
            self.slow,
            self.drift_scale,
            self.drift_run,
            self.drift_ts,
            self.ahead_run,
            self.in_time_run,
            self.delay_mean,
            self.delay_dev,
            self.delays,
            self.active,
        )


@dataclass(frozen=True, slots=True)
class HealthDetection:
    """The result of one batch.

    Attributes:
        changes: health alert changes, in time order per sensor (dropouts last, at ``now``).
        suspect: ``(sensor_id, ts)`` of every reading found faulty (some may belong to earlier batches).
        state: the state to keep once the changes are stored, by sensor id.
    """

    changes: list[AlertChange]
    suspect: set[tuple[str, datetime]]
    state: dict[str, HealthState]


@dataclass(frozen=True, slots=True)
class _Weights:
    """A sensor with its constants: EWMA weights per reading, floors in the canonical unit, times."""

    spread: float
    move: float
    fast: float
    slow: float
    scale: float
    spread_floor: float
    drift_floor: float
    warmup_drift: int
    dropout: timedelta
    spike_hold: timedelta
    refeed: timedelta
    readopt: timedelta
    spikes: bool
    drifts: bool
    sensor: Sensor


class SensorHealthDetector:
    """Judge sensors' health from their readings.

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
        self._state = detection.state

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


def _weights_for(sensor: Sensor, rules: HealthRules) -> _Weights:
    dt = max(sensor.interval_s, 1e-3)
    span = sensor.valid_max - sensor.valid_min
    if not math.isfinite(span):
        span = 0.0
    return _Weights(
        spread=min(1.0, dt / rules.spread_tau_s),
        move=min(1.0, dt / rules.stuck_tau_s),
        fast=min(1.0, dt / rules.drift_fast_tau_s),
        slow=min(1.0, dt / rules.drift_slow_tau_s),
        scale=min(1.0, dt / rules.drift_scale_tau_s),
        spread_floor=rules.spread_floor_fraction * span,
        drift_floor=rules.drift_floor_fraction * span,
        warmup_drift=max(1, math.ceil(rules.drift_warmup_s / dt)),
        dropout=timedelta(seconds=rules.dropout_intervals * dt),
        spike_hold=timedelta(seconds=rules.spike_hold_s),
        refeed=timedelta(seconds=rules.drift_fast_tau_s),
        readopt=timedelta(seconds=rules.drift_readopt_s),
        spikes=sensor.quantity not in rules.spike_skip,
        drifts=sensor.quantity in rules.drift_quantities,
        sensor=sensor,
    )


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


def _change(
    event: str,
    sensor: Sensor,
    fault: str,
    ts: datetime,
    value: float | None,
    measure: float | None,
    rules: HealthRules,
) -> AlertChange:
    """Build one health alert change; *measure* is the rule's figure (jump, offset or clock offset in seconds)."""
    sid = sensor.sensor_id
    if event == "cleared":
        zh = f"{sensor.name}（{sid}）传感器{_FAULT_ZH[fault]}已恢复"
        en = f"{sid} sensor health: {_FAULT_EN[fault]} is over"
    else:
        detail = "" if measure is None else f"（{measure:.3g}）"
        zh = f"{sensor.name}（{sid}）传感器{_FAULT_ZH[fault]}{detail}，需检修"
        en = f"{sid} sensor health: {_FAULT_EN[fault]}" + ("" if measure is None else f" ({measure:.3g})")
    return AlertChange(
        event=event,
        cause_key=cause_key(sid, fault),
        kind="sensor_health",
        sensor_id=sid,
        network=sensor.network.value,
        district=sensor.district,
        grade=int(rules.grade),
        ts=ts,
        value=value,
        threshold=None,
        message=zh,
        message_en=en,
    )


_TIME_FIELDS = frozenset({"last_ts", "arrived", "spike_ts", "fed_ts", "drift_ts"})


def state_to_json(state: HealthState) -> dict[str, Any]:
    """Return one sensor's health state as JSON-ready data (times as ISO strings, NaN as None)."""
    out: dict[str, Any] = {}
    for name in HealthState.__slots__:
        value = getattr(state, name)
        if name in _TIME_FIELDS:
            value = None if value is None else value.isoformat()
        elif name == "excursion_ts":
            value = [t.isoformat() for t in value]
        elif name == "active":
            value = sorted(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


def state_from_json(data: Mapping[str, Any]) -> HealthState:
    """Return the health state :func:`state_to_json` wrote; missing keys take their defaults.

    Raises:
        ValueError: a value of the wrong kind.
    """
    state = HealthState()
    for name in HealthState.__slots__:
        if name not in data:
            continue
        value = data[name]
        if name in _TIME_FIELDS:
            value = None if value is None else datetime.fromisoformat(value)
        elif name == "excursion_ts":
            value = tuple(datetime.fromisoformat(t) for t in value)
        elif name == "active":
            value = frozenset(str(f) for f in value if f in FAULTS)
        elif name == "last_value":
            value = math.nan if value is None else float(value)
        elif isinstance(getattr(state, name), int):
            value = int(value)
        elif isinstance(getattr(state, name), float):
            value = float(value)
        setattr(state, name, value)
    return state
