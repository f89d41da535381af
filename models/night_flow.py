"""Minimum night flow: a streaming detector that finds leaks in a water supply zone from its metered inflow.

Kind ``water_night_flow``, network ``water``. One alert per zone (``water_night_flow:{zone}``, the zone being the
whole metered network, named after it), ``updated`` on a later night when its grade or estimated flow changed,
``cleared`` after ``clear_nights`` judged nights back under the clearing level.

Method, and why:

- **The zone's inflow.** Every flow sensor (``Quantity.FLOW``) bound to a link between a source (reservoir, tank)
  and the rest of the network, signed so that flow *into* the distribution network counts positive: a pump or pipe
  out of a reservoir counts as read, a tank's pipe counts positive while the tank empties and negative while it
  fills. On the demo city that is ``WF-PU1 + WF-PU2 − WF-PTANK``, the system input the health check's water
  balance uses. Every such link must be metered: a zone with an unmetered source link has no inflow to judge, and
  the detector is not built (:class:`ValueError`, which the registry logs).
- **The night and its reference.** Each local day (``utc_offset_h``, default UTC+8) has a night window (default
  02:00–04:00) and a reference window (default 06:00–12:00). Each window's mean inflow is the signed sum of its
  sensors' mean readings, kept only if every sensor delivered at least ``min_coverage`` of its readings there
  (trusted ones: not suspect, not bad, newer than the sensor's last). A day is judged once both windows are over
  (plus ``grace_s`` for late readings): 12:05 local by default.
- **Why a reference.** The whole network's demand moves by a factor per day (the simulator draws σ 5 %), which
  moves the night flow by several L/s: on the tuning draws' normal days (seeds 70–72, 80, 81, 30 days each) the
  night mean wanders with σ 4.7 L/s, so the night alone could not see a leak under about 15 L/s. The same factor
  multiplies the day's other hours: with ``r`` the normal ratio of night to reference flow, a leak ``L`` that
  flows in both windows gives ``N = r·(W − L) + L``, so ``L = (N − r·W) / (1 − r)`` removes the day factor; the
  spread of that estimate on the same normal days is 0.8 L/s (06:00–12:00; 0.7 with 06:00–22:00, judged 10 h
  later; 0.9 with 04:00–12:00).
- **Which hours are the night.** Not every zone is quietest at 02:00–04:00 (a network's demand patterns, an
  industrial consumer, a meter clock in another zone). The learning days are accumulated hour by hour over the
  whole day, and at the end of learning the configured night is kept if its median inflow is within
  :data:`NIGHT_SLACK` (10 %) of the quietest window of the same length (whole hours, within the local day);
  otherwise the quietest window becomes the night (logged, and named in every alert's ``detail``), and the
  reference the window of its configured length right after it (right before it when the day has no room after):
  the nearest hours share the night's day factor best, which is what the reference is for (with the night at
  13:00–15:00 on a city whose demand day turns at 12:00, a reference at 06:00–12:00 belongs to the day before and
  the estimates spread by tens of L/s instead of under 1). On the demo city the configured windows stay; on
  WNTR's Net6, quietest at 17:00–19:00, the night moves there and the reference to 11:00–17:00
  (``bench/bench_transfer_streaming.py``).
- **Baseline.** The first ``learn_nights`` judged days (default 5) only learn; nothing is judged before. Then ``r``
  is the median of the remembered nights' ratios (the last ``memory_nights``), the centre and spread of their
  estimates ``L_i`` the median and 1.4826 × MAD (at least ``sigma_floor_l_s``). A day is added to the memory
  while no alert is active and it raised nothing.
- **Decision.** A leak is raised when the excess (``L`` less the centre) exceeds both ``threshold_l_s`` (2 L/s)
  and ``threshold_sigma`` (2.5) robust σ, chosen on the tuning draws of ``bench/bench_night_flow.py`` (seeds 7
  and 8: 48 leaks, 168 normal days): 15 of 24 leaks of 1–5 L/s and 24 of 24 larger within 48 h, one false alarm
  in 168 normal days and none in the leak runs' lead-ins (1 L/s and 2.5 σ: 17 of 24 for 8 and 3; 2 L/s and 3 σ:
  13 of 24 for 1 and 0); the alert's ``value`` and ``detail["estimated_flow_l_s"]`` are the excess, L/s,
  ``detail`` also holds the night's and reference's mean inflow, the ratio and the baseline. Grades by the
  excess as ``water_leak``: ≥ 50 L/s I, ≥ 20 II, ≥ 5 III, else IV.

A leak's emitter loses more at night (higher pressure) than in the reference window, so the excess overstates the
night's leak flow a little (by ``r/(1−r)`` of the difference). What it cannot do: tell a leak from a new night
consumer; see a leak before the first night and morning after it started (by design: one verdict a day); judge a
day whose inflow meters were silent or suspect for more than a fifth of either window.

Example:
    >>> det = NightFlowDetector(network, sensors)  # doctest: +SKIP
    >>> result = det.evaluate(readings, now=now, suspect=frozenset())  # doctest: +SKIP
    >>> det.commit(result)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.streaming import StreamResult, Suspect, float_from_json, float_to_json, of_sensors
from twin.alerts import AlertChange
from twin.model import NodeKind, PipeNetwork
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Network, Quantity, Sensor

log = logging.getLogger(__name__)

KIND = "water_night_flow"
STATE_VERSION = 2
NIGHT_SLACK = 0.1
"""The configured night window is kept while its median inflow over the learning days is within this share of the
quietest window of the same length; otherwise the quietest is used (see the module docstring)."""
DAY_S = 86_400.0
_SOURCES = (NodeKind.RESERVOIR, NodeKind.TANK)


def cause_key(zone: str) -> str:
    """Return the cause key of a night-flow alert for *zone*."""
    return f"{KIND}:{zone}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NightFlowSettings:
    """The detector's parameters (see the module docstring).

    Attributes:
        night_h: the night window, local hours ``[start, end)``.
        reference_h: the reference window, local hours ``[start, end)``, same local day; None: no reference (the
            night's mean is judged against the remembered nights' median, the day factor left as noise; judged
            at the night's end).
        utc_offset_h: local time minus UTC, hours.
        learn_night: at the end of learning, move the night to the quietest hours if the configured ones are not
            about as quiet (module docstring); False keeps the configured windows.
        min_coverage: each inflow sensor's share of its expected readings a window needs to count.
        grace_s: a day is judged this long after its last window ends (late readings), s.
        learn_nights: judged days that only learn before anything is judged.
        memory_nights: the baseline's memory, days.
        threshold_l_s: the excess (L/s) a leak needs, at least.
        threshold_sigma: and this many robust standard deviations of the remembered nights' estimates.
        sigma_floor_l_s: the robust standard deviation is at least this, L/s.
        clear_fraction: a night under this fraction of the raising level counts as back to normal.
        clear_nights: this many nights back to normal clear the alert.
        update_fraction: an active alert is updated when its flow moved more than this share (or its grade).
        grade_flows_l_s: estimated flows (L/s) from which grades I, II and III apply (else IV).
    """

    night_h: tuple[float, float] = (2.0, 4.0)
    reference_h: tuple[float, float] | None = (6.0, 12.0)
    utc_offset_h: float = 8.0
    learn_night: bool = True
    min_coverage: float = 0.8
    grace_s: float = 300.0
    learn_nights: int = 5
    memory_nights: int = 28
    threshold_l_s: float = 2.0
    threshold_sigma: float = 2.5
    sigma_floor_l_s: float = 0.3
    clear_fraction: float = 0.5
    clear_nights: int = 1
    update_fraction: float = 0.25
    grade_flows_l_s: tuple[float, float, float] = (50.0, 20.0, 5.0)

    def __post_init__(self) -> None:
        windows = [self.night_h] + ([self.reference_h] if self.reference_h is not None else [])
        for lo, hi in windows:
            if not 0.0 <= lo < hi <= 24.0:
                raise ValueError(f"a night-flow window must lie within one local day: {lo}–{hi} h")
            if lo != int(lo) or hi != int(hi):
                raise ValueError(f"a night-flow window must start and end on whole hours: {lo}–{hi} h")
        if self.reference_h is not None:
            (a, b), (c, d) = self.night_h, self.reference_h
            if a < d and c < b:
                raise ValueError(f"the night {a}–{b} h and the reference {c}–{d} h overlap")
        if self.learn_nights < 2 or self.memory_nights < self.learn_nights:
            raise ValueError("learn_nights must be ≥ 2 and memory_nights ≥ learn_nights")
        if not 0.0 < self.min_coverage <= 1.0:
            raise ValueError(f"min_coverage out of (0, 1]: {self.min_coverage}")


@dataclass(slots=True)
class _Alert:
    grade: int
    flow_l_s: float
    raised_ts: float
    normal_nights: int = 0


@dataclass(slots=True)
class _State:
    """Times are POSIX seconds; days are local day numbers (days since 1970-01-01 in local time).

    Attributes:
        last_ts: each inflow sensor's last trusted reading.
        days: days not yet judged: local hour (``"0"``–``"23"``) → sensor → ``[sum, count]``.
        judged: the last day judged (or skipped), -1: none.
        memory: remembered normal days, ``[day, night mean, reference mean]`` (reference NaN without one).
        learned: days that went into learning (nothing is judged until ``learn_nights``).
        alert: the active alert.
        last: the last day's figures (for ``detail`` and diagnostics).
        profile: the learning days' signed mean inflow per local hour, ``[day, [24 values]]`` (NaN: not covered).
        night_h, reference_h: the windows in force (None: the configured ones); set at the end of learning.
    """

    last_ts: dict[str, float] = field(default_factory=dict)
    days: dict[int, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    judged: int = -1
    memory: list[list[float]] = field(default_factory=list)
    learned: int = 0
    alert: _Alert | None = None
    last: dict[str, Any] = field(default_factory=dict)
    profile: list[list[Any]] = field(default_factory=list)
    night_h: tuple[float, float] | None = None
    reference_h: tuple[float, float] | None = None

    def copy(self) -> _State:
        """Return a copy to evaluate a batch on. The days' hour entries are shared with this state: whoever adds
        to an hour copies that hour's entry first (:meth:`NightFlowDetector._ingest`), so a batch copies an hour or
        two, not every hour of the days in progress."""
        return _State(
            dict(self.last_ts),
            {d: dict(ws) for d, ws in self.days.items()},
            self.judged,
            [list(m) for m in self.memory],
            self.learned,
            None if self.alert is None else copy.copy(self.alert),
            dict(self.last),
            [[p[0], list(p[1])] for p in self.profile],
            self.night_h,
            self.reference_h,
        )


@dataclass(frozen=True, slots=True)
class NightVerdict:
    """One judged day's figures (the detector keeps them in ``verdicts`` for benches and tests).

    Attributes:
        day: the local day number.
        ts: when it was judged, POSIX s.
        night_l_s: the night window's mean inflow, L/s (NaN: not covered).
        reference_l_s: the reference window's mean inflow (NaN: not covered or none).
        excess_l_s: the estimated leak flow, L/s (NaN: not judged).
        sigma_l_s: the baseline's robust standard deviation of it.
        status: ``learning``, ``normal``, ``leak``, ``skipped`` (a window not covered).
    """

    day: int
    ts: float
    night_l_s: float
    reference_l_s: float
    excess_l_s: float
    sigma_l_s: float
    status: str


class NightFlowDetector:
    """Find leaks in a water network from its metered inflow at night (see the module).

    Args:
        network: the water network (for which links leave a source).
        sensors: sensors by id; the flow sensors on the source links are used, the others ignored.
        settings: the parameters.
        zone: the zone's name in cause keys and messages (default: the network's name).
        require_metering: raise if the inflow is not metered; if False, the detector is idle (judges nothing,
            ``unmetered`` says why) until :meth:`update_sensors` brings the meters.

    Raises:
        ValueError: (with *require_metering*) the network has no metered inflow: no flow sensor on a source link,
            or a source link without one.
    """

    name = KIND

    def __init__(
        self,
        network: PipeNetwork,
        sensors: Mapping[str, Sensor],
        *,
        settings: NightFlowSettings = NightFlowSettings(),
        zone: str | None = None,
        require_metering: bool = True,
    ) -> None:
        self.network = network
        self.settings = settings
        self.zone = zone or network.name
        self.require_metering = require_metering
        self.unmetered: str | None = None
        """Why the inflow is not metered (the detector then judges nothing), or None."""
        self._bind(sensors)
        self._state = _State()
        self.verdicts: list[NightVerdict] = []
        """Every judged day since this object was made, in order (not part of the state)."""

    # --- the StreamDetector protocol ---

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Accumulate a batch's inflow readings and judge every day whose windows are over; change nothing."""
        st = self._state.copy()
        newest = self._ingest(st, readings, suspect)
        clock = newest if not math.isnan(newest) else now.timestamp()
        changes: list[AlertChange] = []
        verdicts: list[NightVerdict] = []
        for day in sorted(st.days):
            due = self._judge_ts(st, day)
            if clock < due:
                break
            verdicts.append(self._judge(st, day, due, changes))
        return StreamResult(changes, (st, verdicts))

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        state, verdicts = result.state
        self._state = state
        self.verdicts.extend(verdicts)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; the memory is kept while the inflow is metered by the same links and signs."""
        old = self.dump_state()
        self._bind(sensors)
        self._state = _State()
        self.load_state(old)

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data."""
        st = self._state
        return {
            "version": STATE_VERSION,
            "inflow": self._signature,
            "last_ts": {sid: float_to_json(t) for sid, t in st.last_ts.items()},
            "days": {str(d): ws for d, ws in st.days.items()},
            "judged": st.judged,
            "memory": [[int(m[0]), float_to_json(m[1]), float_to_json(m[2])] for m in st.memory],
            "learned": st.learned,
            "alert": None
            if st.alert is None
            else {k: getattr(st.alert, k) for k in ("grade", "flow_l_s", "raised_ts", "normal_nights")},
            "last": {k: float_to_json(v) if isinstance(v, float) else v for k, v in st.last.items()},
            "profile": [[int(p[0]), [float_to_json(v) for v in p[1]]] for p in st.profile],
            "night_h": None if st.night_h is None else list(st.night_h),
            "reference_h": None if st.reference_h is None else list(st.reference_h),
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state`; a state of another inflow metering starts learning."""
        st = _State()
        known = set(self._signs)
        st.last_ts = {str(s): float_from_json(t) for s, t in dict(data.get("last_ts", {})).items() if str(s) in known}
        hourly = data.get("version") == STATE_VERSION  # version 1 kept window sums: those days start afresh
        for d, ws in dict(data.get("days", {}) if hourly else {}).items():
            st.days[int(d)] = {
                str(w): {str(s): [float(v[0]), float(v[1])] for s, v in dict(per).items() if str(s) in known}
                for w, per in dict(ws).items()
            }
        st.judged = int(data.get("judged", -1))
        if data.get("inflow") == self._signature:
            st.memory = [[float(m[0]), float_from_json(m[1]), float_from_json(m[2])] for m in data.get("memory", [])]
            st.learned = int(data.get("learned", 0))
            alert = data.get("alert")
            if alert:
                st.alert = _Alert(
                    int(alert["grade"]),
                    float(alert["flow_l_s"]),
                    float(alert["raised_ts"]),
                    int(alert.get("normal_nights", 0)),
                )
            st.last = {
                k: float_from_json(v) if k.endswith("_l_s") else v for k, v in dict(data.get("last", {})).items()
            }
            st.profile = [[int(p[0]), [float_from_json(v) for v in p[1]]] for p in data.get("profile", [])]
            for name in ("night_h", "reference_h"):
                window = data.get(name)
                setattr(st, name, None if window is None else (float(window[0]), float(window[1])))
        self._state = st

    @property
    def windows(self) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """The night and reference windows in force (local hours): the configured ones, or those chosen at the end
        of learning."""
        return self._window_hours(self._state)

    @property
    def active(self) -> bool:
        """Whether a leak alert is open (in the committed state)."""
        return self._state.alert is not None

    # --- internals ---

    def _bind(self, sensors: Mapping[str, Sensor]) -> None:
        """Find the flow sensors on the links between a source and the rest of the network, with their signs."""
        net = self.network
        source_links: dict[str, int] = {}
        for link in net.links.values():
            a, b = net.nodes.get(link.from_id), net.nodes.get(link.to_id)
            if a is None or b is None:
                continue
            a_src, b_src = a.kind in _SOURCES, b.kind in _SOURCES
            if a_src != b_src:
                source_links[link.link_id] = 1 if a_src else -1
        signs: dict[str, int] = {}
        metered: dict[str, str] = {}
        for sid in sorted(sensors):
            sensor = sensors[sid]
            if sensor.network is not Network.WATER or sensor.quantity is not Quantity.FLOW or not sensor.asset_id:
                continue
            link_id = sensor.asset_id.partition(":")[2]
            if link_id in source_links and link_id not in metered:
                metered[link_id] = sid
                signs[sid] = source_links[link_id]
        problem = None
        missing = sorted(set(source_links) - set(metered))
        if not source_links:
            problem = f"{net.name}: no link leaves a reservoir or tank: no inflow to meter"
        elif not metered:
            problem = f"{net.name}: no flow sensor on a source link: the zone's inflow is not metered"
        elif missing:
            problem = f"{net.name}: source links without a flow sensor, the inflow is incomplete: {missing}"
        if problem is not None:
            if self.require_metering:
                raise ValueError(problem)
            signs, metered = {}, {}
        self.unmetered = problem
        self._signs = signs
        self._interval = {sid: max(float(sensors[sid].interval_s), 1.0) for sid in signs}
        self._signature = sorted([link_id, signs[sid]] for link_id, sid in metered.items())
        self.sensors = {sid: sensors[sid] for sid in signs}

    def _window_hours(self, st: _State) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """The night and reference windows in force, local hours."""
        cfg = self.settings
        return (st.night_h or cfg.night_h), (st.reference_h or cfg.reference_h)

    def _windows(self, st: _State) -> list[tuple[str, float, float]]:
        night, reference = self._window_hours(st)
        out = [("night", night[0] * 3600.0, night[1] * 3600.0)]
        if reference is not None:
            out.append(("reference", reference[0] * 3600.0, reference[1] * 3600.0))
        return out

    def _judge_ts(self, st: _State, day: int) -> float:
        """When *day* (local) is judged, POSIX s: after its last window, or after the whole day while learning."""
        end = DAY_S if st.learned < self.settings.learn_nights else max(hi for _n, _lo, hi in self._windows(st))
        return day * DAY_S + end - self.settings.utc_offset_h * 3600.0 + self.settings.grace_s

    def _ingest(self, st: _State, readings: Sequence[Reading], suspect: Suspect) -> float:
        """Add the trusted inflow readings to their day's windows; return the newest inflow reading's time or NaN."""
        signs = self._signs
        offset = self.settings.utc_offset_h * 3600.0
        newest = math.nan
        private: set[tuple[int, str]] = set()
        for r in of_sensors(readings, signs):
            sid = r.sensor_id
            if r.quality == QUALITY_BAD or (suspect and (sid, r.ts) in suspect):
                continue
            value = float(r.value)
            if not math.isfinite(value):
                continue
            ts = r.ts.timestamp()
            last = st.last_ts.get(sid)
            if last is not None and ts <= last:
                continue
            st.last_ts[sid] = ts
            if not ts <= newest:
                newest = ts
            local = ts + offset
            day = int(local // DAY_S)
            if day <= st.judged:
                continue
            hour = str(min(int((local - day * DAY_S) // 3600.0), 23))
            hours = st.days.setdefault(day, {})
            if (day, hour) not in private:  # the entry may be the committed state's (see _State.copy)
                hours[hour] = {s: list(v) for s, v in hours.get(hour, {}).items()}
                private.add((day, hour))
            acc = hours[hour].setdefault(sid, [0.0, 0.0])
            acc[0] += value
            acc[1] += 1.0
        return newest

    def _mean(self, hours: Mapping[str, Mapping[str, list[float]]], lo_s: float, hi_s: float) -> float:
        """The signed mean inflow over the local hours [lo, hi) of a day's hourly sums, or NaN if a sensor delivered
        less than ``min_coverage`` of its readings there."""
        total = 0.0
        for sid, sign in self._signs.items():
            value = count = 0.0
            for hour in range(int(lo_s // 3600.0), math.ceil(hi_s / 3600.0)):
                acc = hours.get(str(hour), {}).get(sid)
                if acc is not None:
                    value += acc[0]
                    count += acc[1]
            if count == 0.0 or count < self.settings.min_coverage * (hi_s - lo_s) / self._interval[sid]:
                return math.nan
            total += sign * value / count
        return total

    def _learn_windows(self, st: _State) -> None:
        """At the end of learning: keep the configured night if it is about as quiet as the quietest window of its
        length, else take that one (and move an overlapping reference); re-read the remembered days with them."""
        cfg = self.settings
        profile = (
            [
                statistics.median(v for v in values if not math.isnan(v))
                if any(not math.isnan(v) for v in values)
                else math.nan
                for values in zip(*(p[1] for p in st.profile), strict=True)
            ]
            if st.profile
            else []
        )
        if len(profile) != 24 or any(math.isnan(v) for v in profile):
            return  # an hour never covered: keep the configured windows

        def mean(lo: float, hi: float) -> float:
            return statistics.fmean(profile[int(lo) : int(hi)])

        length = cfg.night_h[1] - cfg.night_h[0]
        starts = [float(a) for a in range(0, 25 - int(length))]
        quietest = min(starts, key=lambda a: mean(a, a + length))
        if mean(*cfg.night_h) <= (1.0 + NIGHT_SLACK) * mean(quietest, quietest + length):
            return
        night = (quietest, quietest + length)
        reference = cfg.reference_h
        if reference is not None:
            # The reference must share the night's day factor: the nearest window of its length, right after the
            # night if the day has room, else right before it.
            span = reference[1] - reference[0]
            if night[1] + span <= 24.0:
                reference = (night[1], night[1] + span)
            elif night[0] - span >= 0.0:
                reference = (night[0] - span, night[0])
            else:
                reference = None
        st.night_h, st.reference_h = night, reference
        log.info(
            "%s: the night-flow window moves from %g–%g h to the quietest hours %g–%g h (median inflow %.1f against "
            "%.1f L/s)%s",
            self.zone,
            cfg.night_h[0],
            cfg.night_h[1],
            night[0],
            night[1],
            mean(*night),
            mean(*cfg.night_h),
            "" if reference == cfg.reference_h else f"; the reference window to {reference}",
        )
        by_day = {int(p[0]): p[1] for p in st.profile}
        for m in st.memory:
            values = by_day.get(int(m[0]))
            if values is not None:
                m[1] = statistics.fmean(values[int(night[0]) : int(night[1])])
                m[2] = (
                    math.nan if reference is None else statistics.fmean(values[int(reference[0]) : int(reference[1])])
                )

    def _baseline(self, st: _State) -> tuple[float, float, float]:
        """Return the remembered nights' ratio (NaN without a reference), the centre and robust σ of their
        estimates."""
        cfg = self.settings
        nights = [m[1] for m in st.memory]
        ratio = math.nan
        if self._window_hours(st)[1] is not None:
            ratio = statistics.median(m[1] / m[2] for m in st.memory)
            if ratio > 0.95:  # night flow as large as the day's: the reference would only amplify the noise
                ratio = math.nan
        if math.isnan(ratio):
            centre = statistics.median(nights)
            estimates = nights
        else:
            estimates = [(m[1] - ratio * m[2]) / (1.0 - ratio) for m in st.memory]
            centre = statistics.median(estimates)
        mad = statistics.median(abs(e - centre) for e in estimates)
        return ratio, centre, max(1.4826 * mad, cfg.sigma_floor_l_s)

    def _judge(self, st: _State, day: int, ts: float, changes: list[AlertChange]) -> NightVerdict:
        """Judge *day* (its windows are over): learn, remember, raise, update or clear; return its figures."""
        cfg = self.settings
        hours = st.days.pop(day)
        st.judged = max(st.judged, day)
        means = {name: self._mean(hours, lo, hi) for name, lo, hi in self._windows(st)}
        night = means["night"]
        reference = means.get("reference", math.nan)
        night_h, reference_h = self._window_hours(st)
        if math.isnan(night) or (reference_h is not None and (math.isnan(reference) or reference <= 0)):
            return NightVerdict(day, ts, night, reference, math.nan, math.nan, "skipped")
        if st.learned < cfg.learn_nights:
            st.learned += 1
            self._remember(st, day, night, reference)
            st.profile.append([day, [self._mean(hours, h * 3600.0, (h + 1) * 3600.0) for h in range(24)]])
            if st.learned == cfg.learn_nights and cfg.learn_night:
                self._learn_windows(st)
                st.profile = []
            return NightVerdict(day, ts, night, reference, math.nan, math.nan, "learning")
        ratio, centre, sigma = self._baseline(st)
        if math.isnan(ratio):
            excess = night - centre
            expected = centre
        else:
            excess = (night - ratio * reference) / (1.0 - ratio) - centre
            expected = night - excess
        level = max(cfg.threshold_l_s, cfg.threshold_sigma * sigma)
        leak = excess > level
        st.last = {
            "day": day,
            "night_l_s": night,
            "reference_l_s": reference,
            "expected_night_l_s": expected,
            "excess_l_s": excess,
            "sigma_l_s": sigma,
            "level_l_s": level,
        }
        verdict = NightVerdict(day, ts, night, reference, excess, sigma, "leak" if leak else "normal")
        detail = {
            "night": self._local_date(day),
            "night_window_h": list(night_h),
            "reference_window_h": None if reference_h is None else list(reference_h),
            "night_flow_l_s": round(night, 2),
            "reference_flow_l_s": None if math.isnan(reference) else round(reference, 2),
            "expected_night_flow_l_s": round(expected, 2),
            "night_to_reference_ratio": None if math.isnan(ratio) else round(ratio, 4),
            "baseline_centre_l_s": round(centre, 2),
            "baseline_sigma_l_s": round(sigma, 2),
            "baseline_nights": len(st.memory),
            "threshold_l_s": round(level, 2),
            "sensors": sorted(self._signs),
        }
        alert = st.alert
        if leak:
            flow = excess
            grade = self._grade(flow)
            if alert is None:
                st.alert = _Alert(grade, flow, ts)
                changes.append(self._change("raised", st.alert, ts, excess, detail))
            else:
                alert.normal_nights = 0
                if grade != alert.grade or abs(flow - alert.flow_l_s) > cfg.update_fraction * max(alert.flow_l_s, 1.0):
                    alert.grade, alert.flow_l_s = grade, flow
                    changes.append(self._change("updated", alert, ts, excess, detail))
            return verdict
        if alert is None:
            self._remember(st, day, night, reference)
            return verdict
        if excess < cfg.clear_fraction * level:
            alert.normal_nights += 1
            if alert.normal_nights >= cfg.clear_nights:
                changes.append(self._change("cleared", alert, ts, excess, detail))
                st.alert = None
        else:
            alert.normal_nights = 0
        return verdict

    def _remember(self, st: _State, day: int, night: float, reference: float) -> None:
        st.memory.append([float(day), night, reference])
        del st.memory[: -self.settings.memory_nights]

    def _local_date(self, day: int) -> str:
        return datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()

    def _grade(self, flow_l_s: float) -> int:
        for grade, limit in enumerate(self.settings.grade_flows_l_s, start=1):
            if flow_l_s >= limit:
                return grade
        return 4

    def _change(self, event: str, alert: _Alert, ts: float, excess: float, detail: dict[str, Any]) -> AlertChange:
        """Build one alert change; the night's figures and the baseline go into ``detail``."""
        night = detail["night"]
        if event == "cleared":
            zh = f"{self.zone}夜间最小流量已恢复正常（{night}）"
            en = f"Minimum night flow in {self.zone} is back to normal ({night})"
        else:
            zh = f"{self.zone}夜间最小流量异常，疑似漏损，估计漏量 {alert.flow_l_s:.1f} L/s（{night}）"
            en = (
                f"Minimum night flow in {self.zone} is high: suspected leak of about {alert.flow_l_s:.1f} L/s ({night})"
            )
        return AlertChange(
            event=event,
            cause_key=cause_key(self.zone),
            kind=KIND,
            sensor_id=None,
            network=Network.WATER.value,
            district="",
            grade=alert.grade,
            ts=datetime.fromtimestamp(ts, UTC),
            value=round(alert.flow_l_s, 2),
            threshold=detail["threshold_l_s"],
            message=zh,
            message_en=en,
            detail={**detail, "estimated_flow_l_s": round(alert.flow_l_s, 2), "excess_l_s": round(excess, 2)},
        )
