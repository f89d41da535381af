"""Sensor health: maintenance alerts for sensors that report nonsense, and the readings not to trust.

A faulty sensor raises an alert of kind ``sensor_health`` (not a lifeline warning; grade IV by default) with the
cause key ``health:{sensor_id}:{fault}``; it is cleared when the fault is over. Every reading a rule finds faulty
is returned in ``suspect`` as ``(sensor_id, ts)`` so that other detectors can distrust it.

The detector is streaming and pure: each sensor has a small fixed state (a few floats and counters) and each
reading costs O(1). The state is kept as arrays, one row per sensor, and each batch runs through a compiled kernel
(:mod:`models.sensor_health_kernel`, numba), so that only the readings that raise or clear an alert or are suspect
cost Python work; :mod:`models.sensor_health_reference` keeps the same rules in plain Python, one reading at a
time, as the readable reference the kernel is tested against (same changes, suspects and state).

Like :class:`models.thresholds.ThresholdDetector`, ``evaluate`` changes nothing; ``commit`` adopts the state once
the changes are stored. Time constants are given in seconds and turned into per-reading weights with the
sensor's ``interval_s``, so gaps in the data are not taken into account by the averages.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from models import sensor_health_kernel as kern
from models.streaming import float_from_json, float_to_json
from twin.alerts import AlertChange
from twin.readings import Reading, ReadingBatch, ts_to_us, us_to_ts
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
    state: Mapping[str, HealthState]


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

    The state is kept as arrays, one row per sensor (see :mod:`models.sensor_health_kernel`), and a batch runs in a
    compiled kernel; only the readings that raise or clear an alert or are suspect cost Python work. It decides
    exactly as :class:`models.sensor_health_reference.ReferenceHealthDetector`. Times are kept as UTC.

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
        self._rf, self._rt = _rule_vectors(self.rules)
        self._consts: dict[tuple[Quantity, float, float, float], tuple[list[float], list[int]]] = {}
        self._load(state or {})
        # Compile (or load from the cache) now, so that the first batch does not pay for it.
        kern.compile_kernels()

    def _load(self, state: Mapping[str, HealthState]) -> None:
        """Start from *state*, dropping everything held."""
        width = max(2, self.rules.spike_max_readings, *(len(st.excursion_ts) for st in state.values()))
        self._index = _Index()
        self._ids: list[str] = []
        self._sensor: list[Sensor | None] = []
        self._n = 0
        self._f = _new_table(0, kern.N_F, np.float64)
        self._i = _new_table(0, kern.N_I, np.int64)
        self._x = _new_table(0, width, np.int64)
        self._cf = _new_table(0, kern.N_C, np.float64)
        self._ci = _new_table(0, kern.N_K, np.int64)
        self._rank = np.zeros(0, np.int64)
        self._seq = np.zeros(0, np.int64)
        self._order: list[int] = []
        self._rank_stale = False
        self._reserve(max(64, len(state)))
        for sid, st in state.items():
            row = self._add_row(sid, self.sensors.get(sid))
            self._write(row, st)
            self._seq[row] = len(self._order)
            self._order.append(row)

    @property
    def state(self) -> Mapping[str, HealthState]:
        """The committed state, by sensor id (a view made on demand; its states are copies)."""
        return _StateView(self, None)

    def commit(self, detection: HealthDetection) -> None:
        """Adopt the state of a detection whose changes have been stored.

        The detection must have been evaluated on the state committed now (as ingest does: evaluate, store,
        commit, and as a retry does: evaluate again): the rows of its sensors, and the alerts it judged at its
        ``now``, are written over the committed state. A detection whose state is not this detector's (e.g. a plain
        mapping) replaces the whole state.
        """
        state = detection.state
        if not isinstance(state, _StateView) or state.owner is not self or state.batch is None:
            self._load(dict(state))
            return
        batch = state.batch
        rows = batch.rows
        if len(rows):
            kern.scatter(rows, batch.f, batch.i, batch.x, self._f, self._i, self._x)
            new = rows[self._seq[rows] < 0]
            if len(new):
                self._seq[new] = np.arange(len(self._order), len(self._order) + len(new))
                self._order.extend(new.tolist())
        for row, active in batch.active.items():
            self._i[row, kern.I_ACTIVE] = active

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions (ranges or intervals may have changed); the state is kept."""
        self.sensors = sensors
        self._consts = {}
        for sid in [sid for sid, row in self._index.items() if row < 0]:
            del self._index[sid]
        for row, sid in enumerate(self._ids):
            self._set_sensor(row, sensors.get(sid))

    def evaluate(self, readings: Sequence[Reading], *, now: datetime) -> HealthDetection:
        """Return the health alert changes and suspect readings that *readings*, received at *now*, reveal.

        Args:
            readings: a batch of accepted readings, in any order: a :class:`~twin.readings.ReadingBatch` (its columns
                are used as they are) or any sequence of :class:`~twin.readings.Reading`.
            now: the time the batch was received (timezone-aware UTC); dropouts are judged at this time.
        """
        if not isinstance(readings, Sequence):
            readings = list(readings)
        batch = ReadingBatch.from_readings(readings)
        source = None if isinstance(readings, ReadingBatch) else readings
        now_us = ts_to_us(now)
        n = len(batch)
        rules = self.rules
        changes: list[AlertChange] = []
        suspect: set[tuple[str, datetime]] = set()
        rows = self._rows_of(batch.sensor_ids) if n else _NO_ROWS
        if n and self._rank_stale:
            self._rerank()
        while True:
            u, f, i, x, events, measures, suspects, wide = kern.run_batch(
                rows,
                np.ascontiguousarray(batch.ts_us, np.int64),
                np.ascontiguousarray(batch.values, np.float64),
                np.ascontiguousarray(batch.quality, np.int16),
                now_us,
                self._rank,
                self._seq,
                self._f,
                self._i,
                self._x,
                self._cf,
                self._ci,
                self._rf,
                self._rt,
            )
            if wide:
                break
            self._x = _grow_columns(self._x, 2 * self._x.shape[1])
        at_now: list[tuple[int, int, int]] = []  # (place in the state, 0 dropout raised / 1 spike cleared, row)
        if len(events):
            sensors = self._sensor
            u_rows = u.tolist()
            for (k, j, fault, raised, has_measure), measure in zip(events.tolist(), measures.tolist(), strict=True):
                row = u_rows[j]
                if k < 0:
                    at_now.append((int(self._seq[row]), 1, row))
                    continue
                sensor = sensors[row]
                assert sensor is not None
                name = FAULTS[fault]
                if source is not None:
                    reading = source[k]
                    ts, value = reading.ts, reading.value
                else:
                    ts, value = us_to_ts(batch.ts_us[k]), float(batch.values[k])
                if name == CLOCK_SKEW:
                    ts = now
                event = "raised" if raised else "cleared"
                changes.append(_change(event, sensor, name, ts, value, measure if has_measure else None, rules))
        if len(suspects):
            ids = self._ids
            local = np.unique(suspects[:, 0])
            names = dict(zip(local.tolist(), [ids[row] for row in u[local].tolist()], strict=True))
            # Readings of a batch often share their time: make each time once.
            times = np.unique(suspects[:, 1])
            stamps = dict(zip(times.tolist(), map(us_to_ts, times.tolist()), strict=True))
            suspect = set(
                zip(
                    map(names.__getitem__, suspects[:, 0].tolist()),
                    map(stamps.__getitem__, suspects[:, 1].tolist()),
                    strict=True,
                )
            )
        active = self._judge_at(now_us, u, at_now)
        if at_now:
            at_now.sort()
            for _, what, row in at_now:
                sensor = self._sensor[row]
                assert sensor is not None
                if what == 0:
                    changes.append(_change("raised", sensor, DROPOUT, now, None, None, rules))
                else:
                    changes.append(_change("cleared", sensor, SPIKE, now, None, None, rules))
        return HealthDetection(changes, suspect, _StateView(self, _Batch(u, f, i, x, active)))

    def _judge_at(
        self, now_us: int, fresh: npt.NDArray[np.int64], at_now: list[tuple[int, int, int]]
    ) -> dict[int, int]:
        """Judge dropouts and spike holds at *now* for the sensors with state that are not in the batch.

        Appends the events to *at_now* and returns the new alert bits of those sensors, by row.
        """
        n = self._n
        i = self._i
        arrived = i[:n, kern.I_ARRIVED]
        active = i[:n, kern.I_ACTIVE]
        spike_ts = i[:n, kern.I_SPIKE_TS]
        judged = (self._seq[:n] >= 0) & (self._ci[:n, kern.K_KNOWN] != 0) & (arrived != kern.NONE)
        dropout = (active & kern.B_DROPOUT == 0) & (arrived < now_us - self._ci[:n, kern.K_DROPOUT_US])
        spike_over = (
            (active & kern.B_SPIKE != 0) & (spike_ts != kern.NONE) & (spike_ts < now_us - self._rt[kern.T_SPIKE_HOLD])
        )
        hit = np.flatnonzero(judged & (dropout | spike_over))
        if not len(hit):
            return {}
        if len(fresh):
            hit = hit[~np.isin(hit, fresh)]
        changed: dict[int, int] = {}
        for row in hit.tolist():
            bits = int(active[row])
            if dropout[row]:
                bits |= kern.B_DROPOUT
                at_now.append((int(self._seq[row]), 0, row))
            if spike_over[row]:
                bits &= ~kern.B_SPIKE
                at_now.append((int(self._seq[row]), 1, row))
            changed[row] = bits
        return changed

    def _rows_of(self, sensor_ids: list[str]) -> npt.NDArray[np.int64]:
        """Return each reading's row (-1 for an unknown sensor), making rows for known sensors seen first."""
        index = self._index
        rows = np.fromiter(map(index.__getitem__, sensor_ids), np.int64, len(sensor_ids))
        if (rows == _UNSEEN).any():
            for sid in dict.fromkeys(sensor_ids):
                if sid not in index:
                    sensor = self.sensors.get(sid)
                    if sensor is None:
                        index[sid] = -1
                    else:
                        self._add_row(sid, sensor)
            rows = np.fromiter(map(index.__getitem__, sensor_ids), np.int64, len(sensor_ids))
        return rows

    def _add_row(self, sensor_id: str, sensor: Sensor | None) -> int:
        """Make a row (no state yet) for *sensor_id* and return it."""
        row = self._n
        if row == self._f.shape[0]:
            self._reserve(2 * row)
        self._n = row + 1
        self._index[sensor_id] = row
        self._ids.append(sensor_id)
        self._sensor.append(None)
        self._set_sensor(row, sensor)
        self._rank_stale = True
        return row

    def _reserve(self, size: int) -> None:
        """Make room for *size* rows, new ones as a new :class:`HealthState` with no sensor.

        Tables always have at least two rows and two columns, so that they are never both C- and Fortran-ordered
        (numba would then see another type and compile the kernel again).
        """
        old = self._f.shape[0]
        if size <= old:
            return
        self._f = _grow_rows(self._f, size, _FLOAT_DEFAULTS)
        self._i = _grow_rows(self._i, size, _INT_DEFAULTS)
        self._x = _grow_rows(self._x, size, np.zeros(self._x.shape[1], np.int64))
        self._cf = _grow_rows(self._cf, size, np.zeros(kern.N_C))
        self._ci = _grow_rows(self._ci, size, np.zeros(kern.N_K, np.int64))
        self._rank = np.concatenate([self._rank, np.zeros(size - old, np.int64)])
        self._seq = np.concatenate([self._seq, np.full(size - old, -1, np.int64)])

    def _rerank(self) -> None:
        """Number the rows in the order of their sensor ids."""
        ids = self._ids
        self._rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        self._rank_stale = False

    def _set_sensor(self, row: int, sensor: Sensor | None) -> None:
        """Set a row's sensor and constants (a row of an unknown sensor is skipped)."""
        self._sensor[row] = sensor
        if sensor is None:
            self._ci[row, kern.K_KNOWN] = 0
            return
        # Sensors alike share their constants (the rules are fixed): work them out once.
        key = (sensor.quantity, sensor.interval_s, sensor.valid_min, sensor.valid_max)
        consts = self._consts.get(key)
        if consts is None:
            consts = self._consts[key] = _constants(sensor, self.rules)
        self._cf[row], self._ci[row] = consts

    def _write(self, row: int, st: HealthState) -> None:
        """Write *st* into a row."""
        f, i = self._f, self._i
        for name, col in _FLOAT_COLUMNS:
            f[row, col] = float(getattr(st, name))
        for name, col in _TIME_COLUMNS:
            t = getattr(st, name)
            i[row, col] = kern.NONE if t is None else ts_to_us(t)
        for name, col in _INT_COLUMNS:
            i[row, col] = int(getattr(st, name))
        times = [ts_to_us(t) for t in st.excursion_ts]
        i[row, kern.I_EXC_LEN] = len(times)
        self._x[row, : len(times)] = times
        i[row, kern.I_ACTIVE] = sum(1 << k for k, fault in enumerate(FAULTS) if fault in st.active)

    def _read(self, row: int, batch: _Batch | None) -> HealthState:
        """Return a row's state, as committed or as *batch* leaves it."""
        if batch is not None and row in batch.local:
            j = batch.local[row]
            f, i, x = batch.f[j].tolist(), batch.i[j].tolist(), batch.x[j].tolist()
        else:
            f, i, x = self._f[row].tolist(), self._i[row].tolist(), self._x[row].tolist()
            if batch is not None and row in batch.active:
                i[kern.I_ACTIVE] = batch.active[row]
        st = HealthState()
        for name, col in _FLOAT_COLUMNS:
            setattr(st, name, f[col])
        for name, col in _TIME_COLUMNS:
            setattr(st, name, None if i[col] == kern.NONE else us_to_ts(i[col]))
        for name, col in _INT_COLUMNS:
            setattr(st, name, i[col])
        st.excursion_ts = tuple(us_to_ts(t) for t in x[: i[kern.I_EXC_LEN]])
        st.active = frozenset(fault for k, fault in enumerate(FAULTS) if i[kern.I_ACTIVE] >> k & 1)
        return st


class _Index(dict[str, int]):
    """Rows by sensor id: -1 for a sensor known to be unknown, ``_UNSEEN`` for one not looked up yet."""

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return _UNSEEN


_UNSEEN = -2
_NO_ROWS = np.zeros(0, np.int64)


class _Batch:
    """The state one batch leaves: new rows for its sensors, new alert bits for others judged at ``now``.

    Attributes:
        rows: the rows of the batch's sensors.
        f, i, x: their new float, integer and excursion-time state, one row each in that order.
        active: the new alert bits of other sensors, by row.
    """

    __slots__ = ("_local", "active", "f", "i", "rows", "x")

    def __init__(
        self,
        rows: npt.NDArray[np.int64],
        f: npt.NDArray[np.float64],
        i: npt.NDArray[np.int64],
        x: npt.NDArray[np.int64],
        active: dict[int, int],
    ) -> None:
        self.rows, self.f, self.i, self.x, self.active = rows, f, i, x, active
        self._local: dict[int, int] | None = None

    @property
    def local(self) -> dict[int, int]:
        """Each row's place in the new rows."""
        if self._local is None:
            self._local = {row: j for j, row in enumerate(self.rows.tolist())}
        return self._local


class _StateView(Mapping[str, HealthState]):
    """A detector's state by sensor id, made on demand: as committed, or as a batch would leave it.

    A batch's view reads the sensors the batch did not touch from the committed state, so it holds until the next
    commit.
    """

    __slots__ = ("batch", "owner")

    def __init__(self, owner: SensorHealthDetector, batch: _Batch | None) -> None:
        self.owner = owner
        self.batch = batch

    def _rows(self) -> list[int]:
        rows = list(self.owner._order)
        if self.batch is not None:
            batch_rows = self.batch.rows
            rows.extend(batch_rows[self.owner._seq[batch_rows] < 0].tolist())
        return rows

    def __getitem__(self, sensor_id: str) -> HealthState:
        owner = self.owner
        row = dict.get(owner._index, sensor_id, -1)
        batch = self.batch
        if row < 0 or not (owner._seq[row] >= 0 or (batch is not None and row in batch.local)):
            raise KeyError(sensor_id)
        return owner._read(row, batch)

    def __iter__(self) -> Iterator[str]:
        ids = self.owner._ids
        return iter([ids[row] for row in self._rows()])

    def __len__(self) -> int:
        return len(self._rows())

    def __repr__(self) -> str:
        return f"<sensor health state of {len(self)} sensors>"


_FLOAT_COLUMNS = (
    ("last_value", kern.F_LAST_VALUE),
    ("spread", kern.F_SPREAD),
    ("move_rate", kern.F_MOVE_RATE),
    ("flat_move_rate", kern.F_FLAT_MOVE_RATE),
    ("excursion_base", kern.F_EXC_BASE),
    ("excursion_jump", kern.F_EXC_JUMP),
    ("fast", kern.F_FAST),
    ("slow", kern.F_SLOW),
    ("drift_scale", kern.F_DRIFT_SCALE),
    ("delay_mean", kern.F_DELAY_MEAN),
    ("delay_dev", kern.F_DELAY_DEV),
)
_TIME_COLUMNS = (
    ("last_ts", kern.I_LAST_TS),
    ("arrived", kern.I_ARRIVED),
    ("spike_ts", kern.I_SPIKE_TS),
    ("fed_ts", kern.I_FED_TS),
    ("drift_ts", kern.I_DRIFT_TS),
)
_INT_COLUMNS = (
    ("trusted", kern.I_TRUSTED),
    ("flat_run", kern.I_FLAT_RUN),
    ("excursion", kern.I_EXCURSION),
    ("drift_run", kern.I_DRIFT_RUN),
    ("ahead_run", kern.I_AHEAD_RUN),
    ("in_time_run", kern.I_IN_TIME_RUN),
    ("delays", kern.I_DELAYS),
)


def _defaults() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Return the float and integer rows of a new :class:`HealthState`."""
    st = HealthState()
    f = np.zeros(kern.N_F, np.float64)
    i = np.zeros(kern.N_I, np.int64)
    for name, col in _FLOAT_COLUMNS:
        f[col] = getattr(st, name)
    for _, col in _TIME_COLUMNS:
        i[col] = kern.NONE
    return f, i


_FLOAT_DEFAULTS, _INT_DEFAULTS = _defaults()


def _new_table(rows: int, columns: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """Return an empty table, Fortran-ordered (each column contiguous)."""
    return np.zeros((rows, columns), dtype, order="F")


def _grow_rows(table: npt.NDArray[Any], rows: int, fill: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Return *table* with *rows* rows, the new ones set to *fill*."""
    grown = np.empty((rows, table.shape[1]), table.dtype, order="F")
    grown[: table.shape[0]] = table
    grown[table.shape[0] :] = fill
    return grown


def _grow_columns(table: npt.NDArray[np.int64], columns: int) -> npt.NDArray[np.int64]:
    """Return *table* with *columns* columns, the new ones zero."""
    grown = np.zeros((table.shape[0], columns), table.dtype, order="F")
    grown[:, : table.shape[1]] = table
    return grown


def _constants(sensor: Sensor, rules: HealthRules) -> tuple[list[float], list[int]]:
    """Return a sensor's row of float and of integer constants, as the kernel takes them."""
    w = _weights_for(sensor, rules)
    cf = [0.0] * kern.N_C
    cf[kern.C_W_SPREAD] = w.spread
    cf[kern.C_W_MOVE] = w.move
    cf[kern.C_W_FAST] = w.fast
    cf[kern.C_W_SLOW] = w.slow
    cf[kern.C_W_SCALE] = w.scale
    cf[kern.C_SPREAD_FLOOR] = w.spread_floor
    cf[kern.C_DRIFT_FLOOR] = w.drift_floor
    cf[kern.C_VALID_MIN] = sensor.valid_min
    cf[kern.C_VALID_MAX] = sensor.valid_max
    ci = [0] * kern.N_K
    ci[kern.K_WARMUP_DRIFT] = w.warmup_drift
    ci[kern.K_DROPOUT_US] = _us(w.dropout)
    ci[kern.K_SPIKES] = int(w.spikes)
    ci[kern.K_DRIFTS] = int(w.drifts)
    ci[kern.K_KNOWN] = 1
    return cf, ci


def _us(delta: timedelta) -> int:
    """Return *delta* in whole microseconds, exactly."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _rule_vectors(rules: HealthRules) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Return the rules' parameters as the kernel takes them: floats (counts too) and durations in µs."""
    rf = np.zeros(kern.N_R, np.float64)
    rf[kern.R_STUCK_READINGS] = rules.stuck_readings
    rf[kern.R_STUCK_TOLERANCE] = rules.stuck_tolerance
    rf[kern.R_STUCK_MIN_MOVE_RATE] = rules.stuck_min_move_rate
    rf[kern.R_SPIKE_K] = rules.spike_k
    rf[kern.R_SPIKE_MAX_READINGS] = rules.spike_max_readings
    rf[kern.R_DRIFT_K] = rules.drift_k
    rf[kern.R_DRIFT_CLEAR_K] = rules.drift_clear_k
    rf[kern.R_DRIFT_READINGS] = rules.drift_readings
    rf[kern.R_CLOCK_AHEAD_S] = rules.clock_ahead_s
    rf[kern.R_CLOCK_BEHIND_S] = rules.clock_behind_s
    rf[kern.R_CLOCK_STEADY_FRACTION] = rules.clock_steady_fraction
    rf[kern.R_CLOCK_TAU_READINGS] = rules.clock_tau_readings
    rf[kern.R_CLOCK_READINGS] = rules.clock_readings
    rf[kern.R_WARMUP_READINGS] = rules.warmup_readings
    rt = np.zeros(kern.N_T, np.int64)
    rt[kern.T_SPIKE_HOLD] = _us(timedelta(seconds=rules.spike_hold_s))
    rt[kern.T_REFEED] = _us(timedelta(seconds=rules.drift_fast_tau_s))
    rt[kern.T_READOPT] = _us(timedelta(seconds=rules.drift_readopt_s))
    return rf, rt


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
    """Return one sensor's health state as JSON-ready data.

    Times are ISO strings and non-finite floats their names ("NaN", "Infinity", "-Infinity"), so that the state
    is strict JSON and :func:`state_from_json` gives back exactly the same state: a sensor without a valid range
    that reported an infinite value has an infinite or NaN spread and means, and must not learn again after a
    restart.
    """
    out: dict[str, Any] = {}
    for name in HealthState.__slots__:
        value = getattr(state, name)
        if name in _TIME_FIELDS:
            value = None if value is None else value.isoformat()
        elif name == "excursion_ts":
            value = [t.isoformat() for t in value]
        elif name == "active":
            value = sorted(value)
        elif isinstance(value, float):
            value = float_to_json(value)
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
        elif isinstance(getattr(state, name), int):
            value = int(value)
        elif isinstance(getattr(state, name), float):
            # States saved before non-finite values were named hold null for every one of them (NaN, inf and
            # -inf alike), which could not be read back, so a restarted ingest learnt those sensors again. For
            # ``last_value`` null meant "no trusted value yet", i.e. NaN; an infinite spread or mean turns NaN at
            # the sensor's next reading anyway (``x + w * (y - x)`` with x infinite), so null is read as NaN and
            # the rest of the state is kept.
            value = float_from_json(value)
        setattr(state, name, value)
    return state
