"""Gas leak early warning: methane rising in underground spaces, pressure falling, and the pipes that may leak.

A streaming detector (:mod:`models.streaming`) of kind ``gas_leak`` on the ``gas`` network. It warns *before*
methane reaches the 20 %LEL alarm (GB 50838) that :class:`models.thresholds.ThresholdDetector` raises, and says
where the leak may be. Three rules, each O(1) per reading:

Methane rise (``GM-`` sensors, %LEL)
    Each sensor learns its own background: a clipped EWMA of the value (``background_tau_s``, default 6 h; each
    update is clipped at ``clip_k`` noise scales so a slow leak is not learned as background) and of the absolute
    deviation from it (the noise scale, floored at ``noise_floor_pct_lel``). A Holt filter (level smoothed over
    ``level_tau_s``, slope over ``trend_tau_s``) gives the current level and its rate of rise, %LEL/s. A sensor
    *rises* when its level exceeds the background by at least ``rise_pct_lel`` and ``rise_k`` noise scales of
    the filtered level for ``rise_readings`` consecutive readings. It stops rising once the excess has stayed
    under ``clear_pct_lel`` for ``clear_s``. Judged after ``warmup_s`` of readings.

    Fast path: a rise is also confirmed by magnitude, at once, when a raw reading is at least ``fast_pct_lel``
    and ``fast_k`` noise σ above background right after a reading already above the rise limit, has risen from
    it by more than ``fast_step_k`` σ of a difference, and at that rate reaches the first alarm limit within
    ``fast_eta_s``; the filter then takes that reading and rate as its level and slope, so the grade and
    ``eta_s`` follow the readings rather than the lagging filter. Detectors that report on change (every few
    seconds during a fast rise) are confirmed within seconds; 1-minute ones at their second reading of the rise.

    Spikes: sensor health flags a spike only once it has come back, so a spike reaches this detector as a trusted
    reading. A reading more than ``hold_k`` noise σ from the filter's prediction therefore waits for the next
    one: if that has come back within half the jump, the held reading is dropped, otherwise both are used. When
    sensor health flags readings already used (a spike of two or three readings), the filter of a sensor not yet
    rising restarts from its background, and a held reading it flags is dropped.

Pressure drop (``GP-`` sensors, kPa)
    Each sensor learns its daily pattern: ``bins`` time-of-day bins (UTC), each an EWMA over days of the value
    and of the absolute residual. The residual from the pattern (interpolated between bin centres) is smoothed
    over ``pressure_fast_tau_s`` and compared with its own slow mean (``pressure_slow_tau_s``), so a whole-day
    shift in demand is not a leak but a step is; a drop beyond ``pressure_k`` scales for ``pressure_readings``
    readings marks the sensor as dropping. Judged once every bin has been seen (a day of readings).

Grouping and grade
    A sensor that starts rising or dropping joins the active alert with a member sensor within
    ``group_radius_m``, else opens one: cause ``gas_leak:{junction}``, the gas junction nearest to it, so several
    sensors seeing one leak share one alert. The alert's grade is the most severe of its members' and never goes
    down while the alert lasts (a leak does not mend itself):

    - IV: a sustained rise above background (or a sustained pressure drop);
    - otherwise, from the sensor's own alarm limits (the ones the threshold detector uses: 20/35/50/75 %LEL for
      IV/III/II/I): the grade of the level reached, and one grade more severe than the limit the level is
      projected to reach within ``horizon_s`` (30 min) at the current rate. So a space projected to reach
      20 %LEL within 30 min is III, and the grade is never less severe than the threshold detector's.

    ``detail``: ``eta_s`` (the shortest projected time to the first alarm limit among rising members, s; absent
    once reached or when not rising), ``sensors``, ``peak_pct_lel``, ``rate_pct_lel_min``, and ``candidates``:
    the gas pipes (``gas:link:<id>``) and junctions (``gas:node:<id>``) within ``candidate_radius_m`` of the
    alarming sensors, scored 0 … 1 by how well a leak there explains the excess methane of every methane sensor
    around (alarming or quiet): the cosine between the observed excesses and ``exp(-d / migration_length_m) /
    volume`` (the share of a leak reaching a space, as in :mod:`simulators.gas_dispersion`), times
    ``exp(-(d_near - d_best) / migration_length_m)`` with ``d_near`` the point's distance to the nearest alarming
    space and ``d_best`` the smallest such distance (a leak further away must be larger). Updated when the
    grade or the members change; cleared when no member rises or drops any more.

What it cannot see: a leak whose gas reaches no watched space and whose pressure drop is within the noise of the
daily pattern (in the regulated low-pressure grid, a leak of tens of m³/h moves pressure by a few Pa); methane that
arrives as a step within one reading (it is then the threshold detector's alarm, not an early warning: two
readings are needed, so that one spike is not a leak); a spike lasting three readings or more without coming back
in between, which looks like a real rise until sensor health has seen it end.

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> from twin.readings import Reading
    >>> from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
    >>> limits = tuple(AlarmLimit(g, Direction.HIGH, v) for g, v in zip(Grade, (75.0, 50.0, 35.0, 20.0)))
    >>> gm = Sensor("GM-1", Network.GAS, Quantity.METHANE, "井1 甲烷", interval_s=60.0, limits=limits)
    >>> det = GasLeakDetector({"GM-1": gm})
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> for k in range(120):
    ...     value = 0.5 + 0.2 * (k % 2) + max(0, k - 60) * 0.4  # 0.4 %LEL/min from minute 60
    ...     ts = t0 + timedelta(minutes=k)
    ...     result = det.evaluate([Reading("GM-1", ts, value, 0)], now=ts, suspect=set())
    ...     det.commit(result)
    ...     if result.changes:
    ...         break
    >>> change = result.changes[0]
    >>> change.event, change.cause_key, change.grade, ts - t0, 40 * 60 < change.detail["eta_s"] < 50 * 60
    ('raised', 'gas_leak:GM-1', 4, datetime.timedelta(seconds=4140), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely

from models.streaming import StreamResult, Suspect, of_sensors
from twin.alerts import AlertChange
from twin.model import City, NodeKind, PipeNetwork
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Direction, Grade, Network, Quantity, Sensor
from twin.spatial import SpatialIndex

KIND = "gas_leak"
STATE_VERSION = 1


def cause_key(area: str) -> str:
    """Return the cause key of a gas leak alert for the leak area named *area* (a gas junction id)."""
    return f"{KIND}:{area}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GasLeakRules:
    """The detector's parameters; see the module docstring for what each rule does.

    Attributes:
        background_tau_s: time constant of the methane background and noise scale, s.
        clip_k: a background update is clipped at this many noise scales.
        noise_floor_pct_lel: the noise scale is at least this, %LEL.
        level_tau_s: time constant of the Holt level, s.
        trend_tau_s: time constant of the Holt slope, s.
        warmup_s: no methane judgement before this much data, s.
        rise_pct_lel: a rise is at least this far above background, %LEL.
        rise_k: and at least this many noise scales of the filtered level.
        rise_readings: consecutive readings beyond both, readings.
        hold_k: a reading this many noise σ away from the filter's prediction waits for the next reading, which
            confirms it (stays away) or shows it was a spike (comes back within half the jump; it is dropped).
        fast_pct_lel: the fast path: a reading at least this far above background, %LEL,
        fast_k: and this many noise σ, right after a reading already above the rise limit (raw),
        fast_step_k: having risen from it by this many σ of the difference of two readings,
        fast_eta_s: at a rate that projects the first alarm limit within this long, s, confirms a rise at once.
        fast_alarm_pct_lel: the first alarm limit of a sensor that has none of its own, %LEL.
        clear_pct_lel: a rise is over when the excess stays under this, %LEL,
        clear_s: for this long, s.
        horizon_s: projection horizon of the grade, s.
        bins: time-of-day bins of the pressure pattern (UTC).
        pattern_days: each bin is an EWMA over about this many days.
        pressure_fast_tau_s: time constant of the smoothed pressure residual, s.
        pressure_slow_tau_s: time constant of its slow mean, s.
        pressure_floor_kpa: the residual scale is at least this, kPa,
        pressure_floor_fraction: and at least this share of the reading.
        pressure_k: a drop is beyond this many residual scales,
        pressure_readings: for this many consecutive readings.
        group_radius_m: a sensor joins an alert with a member this close, m.
        candidate_radius_m: candidate pipes and junctions lie this close to an alarming sensor, m.
        context_radius_m: quiet methane sensors this close to a candidate count in its score, m.
        migration_length_m: soil migration length of the dispersion model, m.
        candidate_step_m: candidate points along a pipe are this far apart, m.
        max_candidates: candidates listed per alert.
    """

    background_tau_s: float = 6 * 3600.0
    clip_k: float = 3.0
    noise_floor_pct_lel: float = 0.2
    level_tau_s: float = 120.0
    trend_tau_s: float = 300.0
    warmup_s: float = 30 * 60.0
    rise_pct_lel: float = 2.0
    rise_k: float = 6.0
    rise_readings: int = 3
    hold_k: float = 8.0
    fast_pct_lel: float = 5.0
    fast_k: float = 12.0
    fast_step_k: float = 3.0
    fast_eta_s: float = 30 * 60.0
    fast_alarm_pct_lel: float = 20.0
    clear_pct_lel: float = 1.0
    clear_s: float = 15 * 60.0
    horizon_s: float = 30 * 60.0
    bins: int = 48
    pattern_days: float = 3.0
    pressure_fast_tau_s: float = 10 * 60.0
    pressure_slow_tau_s: float = 3 * 3600.0
    pressure_floor_kpa: float = 0.005
    pressure_floor_fraction: float = 0.001
    pressure_k: float = 6.0
    pressure_readings: int = 10
    group_radius_m: float = 100.0
    candidate_radius_m: float = 60.0
    context_radius_m: float = 120.0
    migration_length_m: float = 8.0
    candidate_step_m: float = 5.0
    max_candidates: int = 5


@dataclass(slots=True)
class MethaneState:
    """What the detector remembers of one methane sensor (values in %LEL, slope in %LEL/s).

    ``last_ts`` is the newest reading seen (fed or held), ``fed_ts`` and ``last_value`` the last one fed to the
    filter; ``held_ts`` / ``held_value`` a reading waiting for the next one, ``held_base`` the prediction it
    jumped from.
    """

    last_ts: datetime | None = None
    seen_s: float = 0.0
    count: int = 0
    background: float = 0.0
    noise: float = 0.0
    level: float = 0.0
    slope: float = 0.0
    run: int = 0
    rising: bool = False
    quiet_since: datetime | None = None
    fed_ts: datetime | None = None
    last_value: float = 0.0
    held_ts: datetime | None = None
    held_value: float = 0.0
    held_base: float = 0.0

    def copy(self) -> MethaneState:
        """Return an independent copy."""
        return MethaneState(
            self.last_ts,
            self.seen_s,
            self.count,
            self.background,
            self.noise,
            self.level,
            self.slope,
            self.run,
            self.rising,
            self.quiet_since,
            self.fed_ts,
            self.last_value,
            self.held_ts,
            self.held_value,
            self.held_base,
        )


@dataclass(slots=True)
class PressureState:
    """What the detector remembers of one pressure sensor: its daily pattern per bin (kPa) and the residual."""

    last_ts: datetime | None = None
    mean: list[float] = field(default_factory=list)
    dev: list[float] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    fast: float = 0.0
    slow: float = 0.0
    run: int = 0
    dropping: bool = False
    drop_kpa: float = 0.0

    def copy(self) -> PressureState:
        """Return an independent copy."""
        return PressureState(
            self.last_ts,
            list(self.mean),
            list(self.dev),
            list(self.seen),
            self.fast,
            self.slow,
            self.run,
            self.dropping,
            self.drop_kpa,
        )


@dataclass(slots=True)
class LeakAlert:
    """One active leak alert: its area (cause), members, grade and the candidates last reported."""

    area: str
    sensors: list[str]
    grade: int
    district: str
    raised_ts: datetime
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> LeakAlert:
        """Return an independent copy."""
        return LeakAlert(self.area, list(self.sensors), self.grade, self.district, self.raised_ts, self.candidates)


@dataclass(slots=True)
class GasState:
    """The detector's whole state: per sensor, and the active alerts by area."""

    methane: dict[str, MethaneState] = field(default_factory=dict)
    pressure: dict[str, PressureState] = field(default_factory=dict)
    alerts: dict[str, LeakAlert] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Point:
    """A candidate leak point: on a pipe (``link``) or at a junction (``node``)."""

    asset: str
    x_m: float
    y_m: float


class GasLeakDetector:
    """Warn of gas leaks early, from methane in underground spaces and gas pressure (see the module docstring).

    Args:
        sensors: sensors by id; the gas network's ``methane`` and ``pressure`` sensors are judged.
        city: the city, for the gas network (candidate pipes and junctions, leak areas) and the spaces'
            volumes; without it alerts are keyed by sensor and carry no candidates.
        rules: the parameters.
    """

    name = KIND

    def __init__(self, sensors: Mapping[str, Sensor], *, city: City | None = None, rules: GasLeakRules | None = None):
        self.rules = rules or GasLeakRules()
        self.sensors: dict[str, Sensor] = {}
        self._state = GasState()
        self._network: PipeNetwork | None = None
        self._index: SpatialIndex | None = None
        self._volume: dict[str, float] = {}
        if city is not None and Network.GAS in city.networks:
            self._network = city.networks[Network.GAS]
            gas_only = City(name=city.name, crs=city.crs, networks={Network.GAS: self._network})
            self._index = SpatialIndex(gas_only)
            self._volume = {f"space:{sid}": space.volume_m3 for sid, space in city.spaces.items()}
        self.update_sensors(sensors)

    # --- the StreamDetector protocol ---

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; the learned state of sensors that remain is kept."""
        self.sensors = {
            sid: s
            for sid, s in sensors.items()
            if s.network is Network.GAS and s.quantity in (Quantity.METHANE, Quantity.PRESSURE)
        }
        self._area: dict[str, str] = {sid: self._area_of(s) for sid, s in self.sensors.items()}
        self._state.methane = {k: v for k, v in self._state.methane.items() if k in self.sensors}
        self._state.pressure = {k: v for k, v in self._state.pressure.items() if k in self.sensors}

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        self._state = result.state

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data."""
        st = self._state
        return {
            "version": STATE_VERSION,
            "methane": {sid: _dump_methane(m) for sid, m in st.methane.items()},
            "pressure": {sid: _dump_pressure(p) for sid, p in st.pressure.items()},
            "alerts": {area: _dump_alert(a) for area, a in st.alerts.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state`; sensors no longer known are dropped."""
        self._state = GasState(
            methane={sid: _load_methane(m) for sid, m in data.get("methane", {}).items() if sid in self.sensors},
            pressure={sid: _load_pressure(p) for sid, p in data.get("pressure", {}).items() if sid in self.sensors},
            alerts={area: _load_alert(a) for area, a in data.get("alerts", {}).items()},
        )

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch of readings received at *now*; change nothing.

        Readings of other sensors, of quality ``bad``, in *suspect*, or not newer than the sensor's newest are
        ignored.
        """
        old = self._state
        methane: dict[str, MethaneState] = {}
        pressure: dict[str, PressureState] = {}
        flips: list[tuple[datetime, str, bool]] = []  # (ts, sensor, alarming now)
        last_ts: datetime | None = None
        for sid, ts in suspect:
            # Sensor health flags a spike once it has come back, so its readings were held or fed here as trusted:
            # a held one is dropped, and the filter of a sensor not yet rising forgets the fed ones, restarting
            # from its background.
            known = methane.get(sid) or old.methane.get(sid)
            if known is None or known.rising or known.fed_ts is None:
                continue
            if ts == known.held_ts or ts <= known.fed_ts:
                forget = methane[sid] = known if sid in methane else known.copy()
                if ts == forget.held_ts:
                    forget.held_ts = None
                else:
                    forget.level, forget.slope, forget.run = forget.background, 0.0, 0
        for reading in sorted(of_sensors(readings, self.sensors), key=lambda r: (r.ts, r.sensor_id)):
            sid = reading.sensor_id
            sensor = self.sensors.get(sid)
            if sensor is None or reading.quality == QUALITY_BAD or (sid, reading.ts) in suspect:
                continue
            if not math.isfinite(reading.value):
                continue
            if sensor.quantity is Quantity.METHANE:
                ms = methane.get(sid)
                if ms is None:
                    prev = old.methane.get(sid)
                    ms = methane[sid] = MethaneState() if prev is None else prev.copy()
                was = ms.rising
                if self._methane_step(ms, sensor, reading) and ms.rising != was:
                    flips.append((reading.ts, sid, ms.rising))
            else:
                ps = pressure.get(sid)
                if ps is None:
                    prev_p = old.pressure.get(sid)
                    ps = pressure[sid] = PressureState() if prev_p is None else prev_p.copy()
                was = ps.dropping
                if self._pressure_step(ps, reading) and ps.dropping != was:
                    flips.append((reading.ts, sid, ps.dropping))
            last_ts = reading.ts if last_ts is None or reading.ts > last_ts else last_ts
        state = GasState(
            methane={**old.methane, **methane},
            pressure={**old.pressure, **pressure},
            alerts={area: a.copy() for area, a in old.alerts.items()},
        )
        changes = self._alerts(state, flips, last_ts or now, touched=set(methane) | set(pressure))
        return StreamResult(changes, state)

    # --- per-reading rules ---

    def _methane_step(self, st: MethaneState, sensor: Sensor, reading: Reading) -> bool:
        """Update a methane sensor with one reading; return whether the reading was used.

        A reading far from the filter's prediction (``hold_k`` noise σ) is held until the next one: sensor health
        flags a spike only once it has come back, so the spike itself arrives here as a trusted reading, and one
        reading smeared over the filter's time constants looked like a rise of several readings. If the next
        reading has come back (within half the jump) the held one is dropped; otherwise both are fed, in order.
        """
        ts, x = reading.ts, reading.value
        if st.last_ts is not None and ts <= st.last_ts:
            return False
        if st.last_ts is None or st.count == 0:
            st.last_ts, st.fed_ts, st.count, st.background, st.level, st.noise = ts, ts, 1, x, x, 0.0
            st.last_value = x
            return True
        st.last_ts = ts
        if st.held_ts is not None:
            held_ts, held, base = st.held_ts, st.held_value, st.held_base
            st.held_ts = None
            if abs(x - base) > 0.5 * abs(held - base):
                self._methane_feed(st, sensor, held_ts, held)
            self._methane_feed(st, sensor, ts, x)
            return True
        fed_ts = st.fed_ts or ts
        if st.seen_s >= self.rules.warmup_s:
            predicted = st.level + st.slope * max((ts - fed_ts).total_seconds(), 1e-3)
            sigma = 1.25 * max(st.noise, self.rules.noise_floor_pct_lel)
            if abs(x - predicted) > self.rules.hold_k * sigma:
                st.held_ts, st.held_value, st.held_base = ts, x, predicted
                return True
        self._methane_feed(st, sensor, ts, x)
        return True

    def _methane_feed(self, st: MethaneState, sensor: Sensor, ts: datetime, x: float) -> None:
        """Feed one reading to the sensor's background, filter and rise rules."""
        r = self.rules
        fed_ts = st.fed_ts or ts
        dt = max((ts - fed_ts).total_seconds(), 1e-3)
        prev = st.last_value
        st.fed_ts, st.last_value = ts, x
        st.seen_s += dt
        st.count = min(st.count + 1, 1_000_000_000)
        # Holt's linear filter, with weights from the time step so irregular sampling is handled.
        alpha = 1.0 - math.exp(-dt / r.level_tau_s)
        beta = 1.0 - math.exp(-dt / r.trend_tau_s)
        predicted = st.level + st.slope * dt
        level = predicted + alpha * (x - predicted)
        st.slope += beta * ((level - st.level) / dt - st.slope)
        st.level = level
        noise = max(st.noise, r.noise_floor_pct_lel)
        excess = st.level - st.background
        # The filtered level's noise: an EWMA of white noise has σ·sqrt(α / (2 − α)); noise ≈ 0.8 σ.
        limit = max(r.rise_pct_lel, r.rise_k * 1.25 * noise * math.sqrt(alpha / (2.0 - alpha)))
        warm = st.seen_s >= r.warmup_s
        if not st.rising:
            fast = warm and self._fast_rise(st, sensor, prev, x, dt, 1.25 * noise)
            w = max(1.0 / st.count, 1.0 - math.exp(-dt / r.background_tau_s))
            dev = x - st.background
            clip = r.clip_k * 1.25 * noise if warm else math.inf
            st.background += w * max(-clip, min(clip, dev))
            st.noise += w * (min(abs(dev), clip) - st.noise)
            st.run = st.run + 1 if warm and excess >= limit else 0
            if fast:
                # The readings, not the lagging filter, say where the level is and how fast it rises.
                st.level, st.slope = x, max(st.slope, (x - prev) / dt)
            if fast or st.run >= r.rise_readings:
                st.rising, st.quiet_since = True, None
        elif excess < r.clear_pct_lel:
            if st.quiet_since is None:
                st.quiet_since = ts
            elif (ts - st.quiet_since).total_seconds() >= r.clear_s:
                st.rising, st.run, st.quiet_since = False, 0, None
        else:
            st.quiet_since = None

    def _fast_rise(self, st: MethaneState, sensor: Sensor, prev: float, x: float, dt: float, sigma: float) -> bool:
        """Whether two raw readings confirm a rise at once: confirmed by magnitude rather than by count.

        The previous reading is already above the rise limit, this one is far above (``fast_pct_lel`` and
        ``fast_k`` σ), it rose from the previous by more than noise, and at that rate the first alarm limit is
        reached within ``fast_eta_s``. Methane that arrives this fast leaves no time for three readings of the
        smoothed level; two raw readings are still needed, so that one spike is not a leak.
        """
        r = self.rules
        if prev - st.background < max(r.rise_pct_lel, r.rise_k * sigma):
            return False
        if x - st.background < max(r.fast_pct_lel, r.fast_k * sigma):
            return False
        step = x - prev
        if step < r.fast_step_k * sigma * math.sqrt(2.0):
            return False
        limits = sorted(lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH)
        first = limits[0] if limits else r.fast_alarm_pct_lel
        return x >= first or (first - x) / (step / dt) <= r.fast_eta_s

    def _pressure_step(self, st: PressureState, reading: Reading) -> bool:
        """Update a pressure sensor with one reading; return whether the reading was used."""
        r = self.rules
        ts, x = reading.ts, reading.value
        if st.last_ts is not None and ts <= st.last_ts:
            return False
        dt = 60.0 if st.last_ts is None else max((ts - st.last_ts).total_seconds(), 1e-3)
        st.last_ts = ts
        if len(st.mean) != r.bins:
            st.mean, st.dev, st.seen = [0.0] * r.bins, [0.0] * r.bins, [0] * r.bins
        width = 86400.0 / r.bins
        pos = (ts.timestamp() % 86400.0) / width - 0.5
        lo = math.floor(pos)
        frac = pos - lo
        a, b = lo % r.bins, (lo + 1) % r.bins
        nearest = a if frac < 0.5 else b
        learned = all(st.seen)
        floor = max(r.pressure_floor_kpa, r.pressure_floor_fraction * abs(x))
        if learned:
            expected = (1 - frac) * st.mean[a] + frac * st.mean[b]
            scale = max(1.25 * ((1 - frac) * st.dev[a] + frac * st.dev[b]), floor)
            resid = x - expected
            fast_w = 1.0 - math.exp(-dt / r.pressure_fast_tau_s)
            st.fast += fast_w * (resid - st.fast)
            drop = st.slow - st.fast
            # The smoothed residual's scale: the raw scale shrunk by the EWMA, plus the pattern's own error.
            limit = r.pressure_k * max(scale * math.sqrt(fast_w / (2.0 - fast_w)), floor)
            st.run = st.run + 1 if drop > limit else 0
            if not st.dropping and st.run >= r.pressure_readings:
                st.dropping = True
            elif st.dropping and drop < 0.5 * limit:
                st.dropping = False
            st.drop_kpa = max(drop, 0.0)
            if not st.dropping:
                st.slow += (1.0 - math.exp(-dt / r.pressure_slow_tau_s)) * (st.fast - st.slow)
            else:
                return True  # do not learn the pattern from a leak
        # Learn the bin nearest in time: a running mean for the first readings of a day, then an EWMA over days.
        per_bin = width / dt
        k = nearest
        st.seen[k] = min(st.seen[k] + 1, 1_000_000_000)
        if st.seen[k] == 1:
            st.mean[k], st.dev[k] = x, 0.0
            return True
        w = max(1.0 / st.seen[k], 1.0 / (per_bin * r.pattern_days))
        dev = x - st.mean[k]
        st.mean[k] += w * dev
        st.dev[k] += w * (abs(dev) - st.dev[k])
        return True

    # --- alerts ---

    def _alerts(
        self, state: GasState, flips: list[tuple[datetime, str, bool]], now: datetime, *, touched: set[str]
    ) -> list[AlertChange]:
        """Turn sensors starting and stopping to alarm into alert changes, and re-grade the active alerts."""
        changes: list[AlertChange] = []
        for ts, sid, alarming in flips:
            if alarming:
                self._join(state, sid, ts, changes)
            else:
                self._leave(state, sid, ts, changes)
        for area, alert in list(state.alerts.items()):
            if not any(s in touched for s in alert.sensors):
                continue
            grade, evidence = self._grade(state, alert)
            if grade < alert.grade:
                alert.grade = grade
                changes.append(self._change("updated", alert, state, now, evidence))
            state.alerts[area] = alert
        return changes

    def _join(self, state: GasState, sid: str, ts: datetime, changes: list[AlertChange]) -> None:
        sensor = self.sensors[sid]
        best: LeakAlert | None = None
        best_d = self.rules.group_radius_m
        for alert in state.alerts.values():
            for member in alert.sensors:
                other = self.sensors.get(member)
                if other is None:
                    continue
                d = math.hypot(other.x_m - sensor.x_m, other.y_m - sensor.y_m)
                if d <= best_d:
                    best, best_d = alert, d
        if best is None:
            area = self._area[sid]
            if area in state.alerts:
                best = state.alerts[area]
            else:
                alert = LeakAlert(area, [sid], int(Grade.IV), sensor.district, ts)
                grade, evidence = self._grade(state, alert)
                alert.grade = grade
                alert.candidates = self._candidates(state, alert)
                state.alerts[area] = alert
                changes.append(self._change("raised", alert, state, ts, evidence))
                return
        if sid not in best.sensors:
            best.sensors.append(sid)
        grade, evidence = self._grade(state, best)
        best.grade = min(best.grade, grade)
        best.candidates = self._candidates(state, best)
        changes.append(self._change("updated", best, state, ts, evidence))

    def _leave(self, state: GasState, sid: str, ts: datetime, changes: list[AlertChange]) -> None:
        for area, alert in list(state.alerts.items()):
            if sid not in alert.sensors:
                continue
            if any(self._alarming(state, s) for s in alert.sensors):
                continue
            del state.alerts[area]
            _grade, evidence = self._grade(state, alert)
            changes.append(self._change("cleared", alert, state, ts, evidence))

    def _alarming(self, state: GasState, sid: str) -> bool:
        m = state.methane.get(sid)
        if m is not None and m.rising:
            return True
        p = state.pressure.get(sid)
        return p is not None and p.dropping

    def _grade(self, state: GasState, alert: LeakAlert) -> tuple[int, dict[str, Any]]:
        """Return the grade the members call for now, and the evidence (``eta_s``, peak, rate)."""
        horizon = self.rules.horizon_s
        grade = int(Grade.IV)
        eta: float | None = None
        peak = -math.inf
        rate = 0.0
        drop = 0.0
        for sid in alert.sensors:
            sensor = self.sensors.get(sid)
            if sensor is None:
                continue
            p = state.pressure.get(sid)
            if p is not None:
                drop = max(drop, p.drop_kpa)
            m = state.methane.get(sid)
            if m is None or not m.rising:
                continue
            peak = max(peak, m.level)
            rate = max(rate, m.slope * 60.0)
            limits = sorted(lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH)
            now_grade = _grade_at(sensor, m.level)
            if now_grade is not None:
                grade = min(grade, now_grade)
            if m.slope > 0:
                ahead = _grade_at(sensor, m.level + m.slope * horizon)
                if ahead is not None:
                    grade = min(grade, max(int(Grade.I), ahead - 1))
                if limits and m.level < limits[0]:
                    t = (limits[0] - m.level) / m.slope
                    eta = t if eta is None else min(eta, t)
        evidence: dict[str, Any] = {}
        if eta is not None:
            evidence["eta_s"] = round(eta)
        if peak > -math.inf:
            evidence["peak_pct_lel"] = round(peak, 2)
            evidence["rate_pct_lel_min"] = round(rate, 3)
        if drop > 0:
            evidence["pressure_drop_kpa"] = round(drop, 4)
        return grade, evidence

    def _candidates(self, state: GasState, alert: LeakAlert) -> list[dict[str, Any]]:
        """Score the gas pipes and junctions near the alert's sensors as the leak's place (see the module)."""
        index, network = self._index, self._network
        if index is None or network is None:
            return []
        r = self.rules
        members = [self.sensors[s] for s in alert.sensors if s in self.sensors]
        if not members:
            return []
        assets: set[str] = set()
        for s in members:
            for hit in index.near(s.x_m, s.y_m, radius_m=r.candidate_radius_m, prefixes=("gas:",)):
                assets.add(hit.ref.removeprefix("gas:"))
        points: list[_Point] = []
        for asset in sorted(assets):
            node = network.nodes.get(asset)
            if node is not None:
                if node.kind is NodeKind.JUNCTION:
                    points.append(_Point(f"gas:node:{asset}", node.x_m, node.y_m))
                continue
            link = network.links.get(asset)
            if link is None:
                continue
            line = shapely.LineString(network.polyline(link))
            n = max(1, math.ceil(line.length / r.candidate_step_m))
            for k in range(n):
                p = line.interpolate((k + 0.5) / n, normalized=True)
                points.append(_Point(f"gas:link:{asset}", float(p.x), float(p.y)))
        if not points:
            return []
        # Methane sensors around: the members and their quiet neighbours, with their excess over background.
        xs = [s.x_m for s in members]
        ys = [s.y_m for s in members]
        around = [
            s
            for s in self.sensors.values()
            if s.quantity is Quantity.METHANE
            and min(math.hypot(s.x_m - x, s.y_m - y) for x, y in zip(xs, ys, strict=True)) <= r.context_radius_m
        ]
        observed = []
        kept = []
        for s in around:
            m = state.methane.get(s.sensor_id)
            if m is None or m.count == 0:
                continue
            observed.append(max(m.level - m.background, 0.0))
            kept.append(s)
        if not kept or max(observed) <= 0:
            return []
        e = np.asarray(observed)
        sx = np.array([s.x_m for s in kept])
        sy = np.array([s.y_m for s in kept])
        vol = np.array([self._volume.get(s.asset_id or "", 1.0) for s in kept])
        px = np.array([p.x_m for p in points])
        py = np.array([p.y_m for p in points])
        d = np.hypot(px[:, None] - sx[None, :], py[:, None] - sy[None, :])
        g = np.exp(-d / r.migration_length_m) / vol[None, :]
        norm = np.linalg.norm(g, axis=1) * float(np.linalg.norm(e))
        cos = np.divide(g @ e, norm, out=np.zeros(len(points)), where=norm > 0)
        # Shape alone cannot tell points on either side of a lone alarming space; a leak further from the
        # spaces it fills must be larger, which is less likely: weigh by the dispersion share of the nearest.
        mx = np.array(xs)
        my = np.array(ys)
        near = np.hypot(px[:, None] - mx[None, :], py[:, None] - my[None, :]).min(axis=1)
        cos = cos * np.exp(-(near - near.min()) / r.migration_length_m)
        best: dict[str, float] = {}
        for p, c in zip(points, cos, strict=True):
            if c > best.get(p.asset, -1.0):
                best[p.asset] = float(c)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[: r.max_candidates]
        return [{"asset": asset, "score": round(score, 3)} for asset, score in ranked]

    def _area_of(self, sensor: Sensor) -> str:
        """The leak area a sensor opens an alert in: its nearest gas junction, else the sensor itself."""
        if self._index is None or self._network is None:
            return sensor.sensor_id
        nodes = self._network.nodes
        for radius in (50.0, 200.0, 1000.0):
            for hit in self._index.near(sensor.x_m, sensor.y_m, radius_m=radius, prefixes=("gas:",)):
                node = nodes.get(hit.ref.removeprefix("gas:"))
                if node is not None and node.kind is NodeKind.JUNCTION:
                    return node.node_id
        return sensor.sensor_id

    def _change(
        self, event: str, alert: LeakAlert, state: GasState, ts: datetime, evidence: Mapping[str, Any]
    ) -> AlertChange:
        first = alert.sensors[0]
        spaces = "、".join(alert.sensors)
        detail: dict[str, Any] = {"sensors": list(alert.sensors), **evidence, "candidates": list(alert.candidates)}
        top = alert.candidates[0]["asset"] if alert.candidates else None
        value = evidence.get("peak_pct_lel")
        grade = Grade(alert.grade)
        if event == "cleared":
            zh = f"燃气泄漏预警解除：{spaces} 甲烷已回落"
            en = f"Gas leak warning cleared: methane back to background at {', '.join(alert.sensors)}"
        else:
            eta = evidence.get("eta_s")
            where_zh = f"，疑似泄漏位置 {top}" if top else ""
            where_en = f"; suspected leak at {top}" if top else ""
            eta_zh = f"，预计 {eta / 60:.0f} 分钟后达到报警值" if eta is not None else ""
            eta_en = f", projected to reach the alarm level in {eta / 60:.0f} min" if eta is not None else ""
            if value is not None:
                zh = f"{grade.label_zh}燃气泄漏预警：{spaces} 甲烷持续上升，{value:.1f} %LEL{eta_zh}{where_zh}"
                en = (
                    f"Grade {grade.name} gas leak warning: methane rising at {', '.join(alert.sensors)}, "
                    f"{value:.1f} %LEL{eta_en}{where_en}"
                )
            else:
                zh = f"{grade.label_zh}燃气泄漏预警：{spaces} 压力异常下降{where_zh}"
                en = f"Grade {grade.name} gas leak warning: pressure falling at {', '.join(alert.sensors)}{where_en}"
        return AlertChange(
            event=event,
            cause_key=cause_key(alert.area),
            kind=KIND,
            sensor_id=first,
            network=Network.GAS.value,
            district=alert.district,
            grade=alert.grade,
            ts=ts,
            value=value,
            threshold=None,
            message=zh,
            message_en=en,
            detail=detail,
        )


def _grade_at(sensor: Sensor, value: float) -> int | None:
    """The grade of the sensor's own high limits that *value* reaches (as the threshold detector grades)."""
    found = sensor.grade_of(value)
    if found is None or found[1].direction is not Direction.HIGH:
        return None
    return int(found[0])


# --- state as JSON ---


def _ts(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _parse(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


def _dump_methane(m: MethaneState) -> dict[str, Any]:
    return {
        "last_ts": _ts(m.last_ts),
        "seen_s": m.seen_s,
        "count": m.count,
        "background": m.background,
        "noise": m.noise,
        "level": m.level,
        "slope": m.slope,
        "run": m.run,
        "rising": m.rising,
        "quiet_since": _ts(m.quiet_since),
        "fed_ts": _ts(m.fed_ts),
        "last_value": m.last_value,
        "held_ts": _ts(m.held_ts),
        "held_value": m.held_value,
        "held_base": m.held_base,
    }


def _load_methane(d: Mapping[str, Any]) -> MethaneState:
    # A state saved before readings were held has fed every reading it saw: fed_ts is last_ts, and the last
    # value is not known (the level is the closest; it only matters to the fast path's next reading).
    last_ts = _parse(d.get("last_ts"))
    return MethaneState(
        last_ts=last_ts,
        seen_s=float(d.get("seen_s", 0.0)),
        count=int(d.get("count", 0)),
        background=float(d.get("background", 0.0)),
        noise=float(d.get("noise", 0.0)),
        level=float(d.get("level", 0.0)),
        slope=float(d.get("slope", 0.0)),
        run=int(d.get("run", 0)),
        rising=bool(d.get("rising", False)),
        quiet_since=_parse(d.get("quiet_since")),
        fed_ts=_parse(d["fed_ts"]) if "fed_ts" in d else last_ts,
        last_value=float(d.get("last_value", d.get("level", 0.0))),
        held_ts=_parse(d.get("held_ts")),
        held_value=float(d.get("held_value", 0.0)),
        held_base=float(d.get("held_base", 0.0)),
    )


def _dump_pressure(p: PressureState) -> dict[str, Any]:
    return {
        "last_ts": _ts(p.last_ts),
        "mean": list(p.mean),
        "dev": list(p.dev),
        "seen": list(p.seen),
        "fast": p.fast,
        "slow": p.slow,
        "run": p.run,
        "dropping": p.dropping,
        "drop_kpa": p.drop_kpa,
    }


def _load_pressure(d: Mapping[str, Any]) -> PressureState:
    return PressureState(
        last_ts=_parse(d.get("last_ts")),
        mean=[float(v) for v in d.get("mean", [])],
        dev=[float(v) for v in d.get("dev", [])],
        seen=[int(v) for v in d.get("seen", [])],
        fast=float(d.get("fast", 0.0)),
        slow=float(d.get("slow", 0.0)),
        run=int(d.get("run", 0)),
        dropping=bool(d.get("dropping", False)),
        drop_kpa=float(d.get("drop_kpa", 0.0)),
    )


def _dump_alert(a: LeakAlert) -> dict[str, Any]:
    return {
        "area": a.area,
        "sensors": list(a.sensors),
        "grade": a.grade,
        "district": a.district,
        "raised_ts": _ts(a.raised_ts),
        "candidates": [dict(c) for c in a.candidates],
    }


def _load_alert(d: Mapping[str, Any]) -> LeakAlert:
    raised = _parse(d.get("raised_ts"))
    return LeakAlert(
        area=str(d["area"]),
        sensors=[str(s) for s in d.get("sensors", [])],
        grade=int(d.get("grade", int(Grade.IV))),
        district=str(d.get("district", "")),
        raised_ts=raised if raised is not None else datetime.fromtimestamp(0).astimezone(),
        candidates=[dict(c) for c in d.get("candidates", [])],
    )


__all__ = ["KIND", "GasLeakDetector", "GasLeakRules", "cause_key"]
