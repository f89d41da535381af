"""Water leaks and bursts: a streaming detector that finds them from pressure and flow, and says where they are.

Kind ``water_leak``, network ``water``. One alert at a time per district (``water_leak:{district}``, the district of
the best candidate when it is raised), ``updated`` while it lasts (grade, estimated flow or best candidate changed),
``cleared`` when the residual has been back under the clearing level for ``clear_hold_s``.

Method, and why:

- **Observations.** Every pressure sensor (kPa) and flow sensor (L/s, signed) of the water network, as one vector
  *y*. Tank levels are not judged: a tank's level integrates everything; it explains part of the others (below).
- **Baseline by time of day.** Each sensor's value is learned per time-of-day bin (``bin_s``, default 30 min,
  interpolated linearly between bin centres) from the first ``learn_s`` of data (default 24 h), then kept up to
  date with a memory of ``baseline_days`` days while nothing is suspected. The deviation *d = y − baseline* is
  smoothed per sensor by an EWMA (``tau_s``, default 20 min, weighted by the real gap between readings).
- **Network-wide correction from the model.** A day differs from the baseline mostly as a whole: the city uses a few
  per cent more or less water, residential and commercial consumers shift, the tank floats at another level. These
  common modes are computed once per network in EPANET (:func:`network_response`): the change of every observed
  value for +5 % of each demand pattern's consumers and +0.5 m in each tank (−0.5 m for a tank that starts too
  near its top). The deviation is projected off them, so what is left is what the common modes cannot explain. A
  learned per-sensor baseline alone would call every dry day a leak; the EPANET model alone would need every
  consumer's demand. The two together need neither.
- **Where the modes would leave nothing, measured tanks are inputs** (``measured_tanks``). With many tanks and few
  sensors the common modes can span every leak's signature (a leak draws on the tanks near it, and more flow out of
  those tanks is what a fuller tank does too): WNTR's Net6, 32 tanks giving 96 modes against 67 sensors, keeps
  1e-10 of a leak response after the projection, and the test is blind. Then (by default only then) a tank whose
  level is measured gets a baseline and smoothed deviation like the other sensors (it is not judged); its
  deviation, m, times its response per metre (the mean of its modes over the operating points) is subtracted from
  the deviation, and its modes are not projected off. A tank whose level is stale is projected off again. Not the
  default everywhere: on the demo city (one tank, 140 sensors) it cost a large leak and raised more false alarms.
- **Detection and localisation in one test.** The same EPANET model gives, for a 1 L/s leak at each candidate
  junction, the change of every observed value (the sensitivity matrix *S*, also projected off the common modes).
  The residuals are whitened by a covariance built from the model (``model_covariance``): every consumer's demand
  wanders on its own, and the sensors see that through the same response as a leak at its junction, so
  ``C = α·S·diag(q²)·Sᵀ + diag(own)`` with *q* each junction's mean demand. The calibration day (``calibrate_s``
  after ``learn_s``) fits α, the relative demand variance, by least squares on the residuals' cross-products, and
  each sensor's own variance (its noise and the baseline's error) as what α does not explain. The score of
  candidate *j* is the matched-filter statistic ``s_j = (S_j · r) / |S_j|`` in whitened terms (the generalised
  likelihood ratio of a leak there, in standard deviations); the test statistic is ``max_j s_j``. A leak is raised
  when it exceeds ``threshold`` (or ``threshold_factor`` × the largest value seen in the second half of
  calibration, whichever is larger) for ``hold_s``. Candidates are ranked by the cosine between *r* and *S_j* (the
  alert's ``score``, 0–1); the estimated flow is the least-squares leak size at the best candidate,
  ``(S_j · r) / |S_j|²``, L/s, with *r* from the deviation smoothed over ``fast_tau_s`` (3 min) so that a burst is
  graded as one when it is raised.
- **Networks run by their tanks and pumps calibrate for longer.** Where the EPANET model switches pumps or valves
  on tank levels or pressures (its controls), or measured tanks are inputs, the calibration lasts
  ``cycle_calibrate_s`` (3 days, the baseline's memory) instead of one: such a network's state wanders over days
  as its pumps cycle, and one day's α and spreads misjudge the next days. The threshold then rests on the whole
  calibration: its deviations are kept every ``sample_s`` and, once the noise model is final, re-scored with it
  (the statistics seen while the noise model moved are on other scales). On WNTR's ky10, one day of calibration
  raised 29 false alarms in 28 leak-free days; three days raised none (``bench/bench_transfer_streaming.py``).
  The demo city has no controls: its path is unchanged.
- **Grades** by estimated flow: ≥ 50 L/s I, ≥ 20 L/s II (a burst), ≥ 5 L/s III, otherwise IV.

Readings in ``suspect``, of quality ``bad``, of unknown sensors or not newer than the sensor's last one change
nothing. A sensor without a trusted reading for ``stale_s`` is left out of the test (the projection and whitening
are redone without it).

What it cannot do: tell a leak from a new large consumer, or from an unmodelled valve or pump change (those are
not among the common modes); see two leaks at once (the second is explained as part of the first); learn anything
before ``learn_s`` and the calibration of normal data (48 h by default, 4 days on a network run by its tanks and
pumps).

Example:
    >>> from twin.democity.layout import build_layout  # doctest: +SKIP
    >>> network, _inp = build_water(build_layout())  # doctest: +SKIP
    >>> det = WaterLeakDetector(network, sensors)  # doctest: +SKIP
    >>> result = det.evaluate(readings, now=now, suspect=frozenset())  # doctest: +SKIP
    >>> det.commit(result)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import math
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import wntr
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
from wntr.epanet.toolkit import ENepanet

from models.pump_control import rules_of
from models.streaming import StreamResult, Suspect, columns_of
from twin.alerts import AlertChange
from twin.errors import SimulationError
from twin.model import NodeKind, PipeNetwork
from twin.readings import Reading
from twin.sensors import Network, Quantity, Sensor
from twin.water import load_model

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

KIND = "water_leak"
KPA_PER_M = 9.80665
"""kPa per metre of water column."""
STATE_VERSION = 1

_EN_BASEDEMAND, _EN_PRESSURE, _EN_TANKLEVEL, _EN_FLOW = 1, 11, 8, 8
_EN_MINLEVEL, _EN_MAXLEVEL = 20, 21
_ONE = "LIFELINE_LEAK_ONE"


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS thread pools, to run the detector's small factorisations on one thread.

    A 140×140 Cholesky takes 0.25 ms on one thread and 30 ms with OpenBLAS's threads spinning against other work
    on a loaded machine; the streaming detectors are meant to share one core anyway.
    """
    return ThreadpoolController()


def cause_key(district: str) -> str:
    """Return the cause key of a water leak alert in *district*."""
    return f"{KIND}:{district}"


# --- the network's response, from EPANET ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkResponse:
    """How the observed values respond to a leak at each candidate junction and to the common modes.

    Attributes:
        observed: what each row is: ``(kind, asset id)`` with kind ``pressure`` (kPa) or ``flow`` (L/s).
        candidates: candidate junction ids (columns of ``leak``).
        leak: change of each observed value per 1 L/s of leak at each candidate, shape (observed, candidates).
        modes: change of each observed value for each common mode, shape (observed, modes).
        mode_names: what each mode is (``demand:<pattern>``, ``tank:<id>``).
        demand_l_s: each candidate's mean demand (its patterns' means), L/s, shape (candidates,).
    """

    observed: tuple[tuple[str, str], ...]
    candidates: tuple[str, ...]
    leak: FloatArray
    modes: FloatArray
    mode_names: tuple[str, ...]
    demand_l_s: FloatArray


_RESPONSES: dict[str, NetworkResponse] = {}
_RESPONSES_LOCK = threading.Lock()


def network_response(
    network: PipeNetwork,
    observed: Sequence[tuple[str, str]],
    *,
    leak_l_s: float = 2.0,
    demand_step: float = 0.05,
    tank_step_m: float = 0.5,
    operating_points: tuple[float, ...] = (0.5, 1.0, 1.5),
) -> NetworkResponse:
    """Compute (once per network and observation set; cached in memory) the response of *observed* values.

    EPANET 2.2 solves one steady state at each junction's mean demand (its patterns' means) and the tanks' initial
    levels, then again with ``leak_l_s`` more demand at each junction in turn; and, at each of
    ``operating_points`` × the mean demand, with each pattern's consumers ``demand_step`` higher and each tank
    ``tank_step_m`` fuller. Differences are divided by the step.

    Args:
        network: an EPANET water network.
        observed: ``("pressure", node id)`` (kPa) or ``("flow", link id)`` (L/s, positive from ``from_id``).
        leak_l_s: the trial leak, L/s.
        demand_step: the trial relative change of a pattern's demand.
        tank_step_m: the trial change of a tank's level, m (downwards for a tank without room above it).
        operating_points: the demand levels (× mean demand) at which the common modes are computed.

    Raises:
        SimulationError: EPANET cannot solve the network.
    """
    digest = hashlib.sha256(network.source.encode())
    digest.update(repr((tuple(observed), leak_l_s, demand_step, tank_step_m, operating_points)).encode())
    key = digest.hexdigest()
    with _RESPONSES_LOCK:
        cached = _RESPONSES.get(key)
        if cached is None:
            cached = _RESPONSES[key] = _compute_response(
                network, observed, leak_l_s, demand_step, tank_step_m, operating_points
            )
    return cached


def _compute_response(
    network: PipeNetwork,
    observed: Sequence[tuple[str, str]],
    leak_l_s: float,
    demand_step: float,
    tank_step_m: float,
    operating_points: tuple[float, ...],
) -> NetworkResponse:
    wn = load_model(network.source, label=network.name)
    default = wn.options.hydraulic.pattern
    multiplier = float(wn.options.hydraulic.demand_multiplier)
    parts: dict[str, dict[str, float]] = {}  # junction -> pattern -> mean demand, L/s
    for jid in wn.junction_name_list:
        for d in wn.get_node(jid).demand_timeseries_list:
            name = d.pattern_name or (default if default in wn.pattern_name_list else None)
            mean = float(np.mean(wn.get_pattern(name).multipliers)) if name else 1.0
            per = parts.setdefault(jid, {})
            key = name or ""
            per[key] = per.get(key, 0.0) + float(d.base_value) * 1000.0 * mean * multiplier
    wn.add_pattern(_ONE, [1.0])
    for jid in wn.junction_name_list:
        junction = wn.get_node(jid)
        junction.demand_timeseries_list.clear()
        junction.add_demand(sum(parts.get(jid, {}).values()) / 1000.0, _ONE)
    wn.options.hydraulic.demand_multiplier = 1.0
    wn.options.time.duration = 0
    wn.options.quality.parameter = "NONE"
    wn.options.report.status = "NO"
    wn.options.report.summary = "NO"
    candidates = tuple(jid for jid in wn.junction_name_list if network.nodes.get(jid, None) is not None)
    totals: dict[str, float] = {}
    for per in parts.values():
        for name, value in per.items():
            totals[name] = totals.get(name, 0.0) + value
    patterns = [name for name, total in sorted(totals.items(), key=lambda kv: -kv[1]) if total > 0][:4]
    tanks = list(wn.tank_name_list)
    with tempfile.TemporaryDirectory(prefix="lifeline-leak-response-") as tmp:
        inp = Path(tmp) / "response.inp"
        wntr.network.write_inpfile(wn, str(inp), units="LPS")
        en = ENepanet(version=2.2)
        try:
            en.ENopen(str(inp), str(inp.with_suffix(".rpt")), "")
            en.ENopenH()
            rows: list[tuple[bool, int]] = []
            for kind, asset in observed:
                if kind == "pressure":
                    rows.append((True, int(en.ENgetnodeindex(asset))))
                else:
                    rows.append((False, int(en.ENgetlinkindex(asset))))
            junction_index = {jid: int(en.ENgetnodeindex(jid)) for jid in candidates}
            base_demand = {jid: float(en.ENgetnodevalue(k, _EN_BASEDEMAND)) for jid, k in junction_index.items()}

            def solve() -> FloatArray:
                en.ENinitH(0)
                en.ENrunH()
                return np.array(
                    [
                        en.ENgetnodevalue(k, _EN_PRESSURE) * KPA_PER_M if node else en.ENgetlinkvalue(k, _EN_FLOW)
                        for node, k in rows
                    ]
                )

            base = solve()
            leak = np.empty((len(observed), len(candidates)))
            for c, jid in enumerate(candidates):
                k = junction_index[jid]
                en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid] + leak_l_s)
                leak[:, c] = (solve() - base) / leak_l_s
                en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid])
            modes: list[FloatArray] = []
            names: list[str] = []
            for scale in operating_points:
                # The common modes at several demand levels: the network's response is not linear (head loss
                # grows as flow^1.85), so a wetter night and a drier peak do not differ from the baseline alike.
                for jid, k in junction_index.items():
                    en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid] * scale)
                level_base = solve()
                for name in patterns:
                    for jid, k in junction_index.items():
                        extra = parts.get(jid, {}).get(name, 0.0) * demand_step * scale
                        en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid] * scale + extra)
                    modes.append((solve() - level_base) / demand_step)
                    names.append(f"demand:{name or 'default'}@{scale:g}")
                    for jid, k in junction_index.items():
                        en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid] * scale)
                for tid in tanks:
                    k = int(en.ENgetnodeindex(tid))
                    level = float(en.ENgetnodevalue(k, _EN_TANKLEVEL))
                    step = _tank_step(
                        level,
                        float(en.ENgetnodevalue(k, _EN_MINLEVEL)),
                        float(en.ENgetnodevalue(k, _EN_MAXLEVEL)),
                        tank_step_m,
                    )
                    if step == 0.0:  # a tank with no room at all: its level cannot move
                        continue
                    en.ENsetnodevalue(k, _EN_TANKLEVEL, level + step)
                    modes.append((solve() - level_base) / step)
                    names.append(f"tank:{tid}@{scale:g}")
                    en.ENsetnodevalue(k, _EN_TANKLEVEL, level)
            for jid, k in junction_index.items():
                en.ENsetnodevalue(k, _EN_BASEDEMAND, base_demand[jid])
        except Exception as exc:  # the toolkit raises EpanetException and bare errors alike
            raise SimulationError(f"{network.name}: EPANET cannot compute the leak response: {exc}") from exc
        finally:
            en.ENcloseH()
            en.ENclose()
    mode_matrix = np.column_stack(modes) if modes else np.zeros((len(observed), 0))
    demand = np.array([sum(parts.get(jid, {}).values()) for jid in candidates], dtype=np.float64)
    return NetworkResponse(tuple(observed), candidates, leak, mode_matrix, tuple(names), demand)


def _tank_step(level_m: float, min_m: float, max_m: float, step_m: float) -> float:
    """Return the trial change of a tank's level: *step_m* up, or down if a tank starting near its top has no room
    above (EPANET refuses a level outside the tank), or as far as the tank allows either way if it has neither."""
    if level_m + step_m <= max_m:
        return step_m
    if level_m - step_m >= min_m:
        return -step_m
    room = max(max_m - level_m, level_m - min_m)
    return room if max_m - level_m >= level_m - min_m else -room


# --- settings and state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LeakSettings:
    """The detector's parameters (see the module docstring).

    Attributes:
        bin_s: width of a time-of-day baseline bin, s.
        learn_s: data used for the baseline before anything else, s.
        calibrate_s: data after that used to learn each sensor's residual spread and the threshold, s.
        cycle_calibrate_s: the same on a network run by its tanks and pumps: its EPANET model switches pumps or
            valves on tank levels or pressures (its controls), or measured tanks are inputs (``measured_tanks``).
            One day shows too little of such a network's cycles. There the threshold rests on the whole
            calibration, re-scored every ``sample_s`` with the final noise model.
        sample_s: how often the calibration's deviations are kept for that re-scoring, s.
        baseline_days: memory of the baseline once learned, days.
        tau_s: time constant of the deviation's smoothing, s.
        fast_tau_s: time constant of a faster smoothing that sizes the leak (no lag behind a burst), s.
        stale_s: a sensor silent (or suspect) this long is left out, s.
        threshold: the matched-filter statistic that raises an alert, standard deviations.
        threshold_factor: or this many times the largest statistic seen during calibration, if larger.
        clear_fraction: the alert clears once the statistic is under this fraction of the threshold.
        hold_s: the statistic must stay above the threshold this long to raise, s.
        clear_hold_s: and under the clearing level this long to clear, s.
        update_every_s: an active alert's candidates and flow are refreshed at most this often, s.
        top: candidates listed in the alert.
        grade_flows_l_s: estimated flows (L/s) from which grades I, II and III apply (else IV).
        operating_points: demand levels (× mean) at which the common modes are computed (see
            :func:`network_response`); each adds a mode per demand pattern and tank, so a network with few
            sensors needs fewer.
        measured_tanks: a tank whose level is measured is not projected off as an unknown common mode: its
            measured deviation (smoothed like the others) times its response is subtracted instead (see the
            module). None (the default): only where projecting every mode would leave the leak responses
            nothing (the median leak response keeps less than ``1e-6`` of its size: the test would be blind);
            False: every tank is projected off; True: measured tanks are always inputs.
        long_calibration: calibrate for ``cycle_calibrate_s`` with the threshold re-scored (as on a network run by
            its tanks and pumps) on any network; None (the default): only on such networks.
        model_covariance: whiten by the model covariance (else by each sensor's own spread alone).
        own_noise_floor: each sensor's own variance is at least this share of its residual variance.
    """

    bin_s: float = 30 * 60.0
    learn_s: float = 24 * 3600.0
    calibrate_s: float = 24 * 3600.0
    cycle_calibrate_s: float = 3 * 24 * 3600.0
    sample_s: float = 10 * 60.0
    baseline_days: float = 3.0
    tau_s: float = 20 * 60.0
    fast_tau_s: float = 3 * 60.0
    stale_s: float = 15 * 60.0
    threshold: float = 5.0
    threshold_factor: float = 1.2
    clear_fraction: float = 0.75
    hold_s: float = 5 * 60.0
    clear_hold_s: float = 20 * 60.0
    update_every_s: float = 10 * 60.0
    top: int = 5
    grade_flows_l_s: tuple[float, float, float] = (50.0, 20.0, 5.0)
    operating_points: tuple[float, ...] = (0.5, 1.0, 1.5)
    model_covariance: bool = True
    own_noise_floor: float = 0.1
    measured_tanks: bool | None = None
    long_calibration: bool | None = None


@dataclass(slots=True)
class _Alert:
    """The active alert: where, how bad, and what was last said about it."""

    district: str
    grade: int
    raised_ts: float
    flow_l_s: float
    top: str
    reported_ts: float


@dataclass(slots=True)
class _State:
    """The detector's state. Arrays are per observed sensor (rows of the response), times are POSIX seconds.

    Attributes:
        baseline: mean value per sensor and time-of-day bin, shape (sensors, bins).
        count: readings that fed each bin (capped), shape (sensors, bins).
        dev: smoothed deviation from the baseline, shape (sensors,).
        fast: the same, smoothed over ``fast_tau_s``, shape (sensors,).
        last_ts: time of each sensor's last trusted reading (NaN: never), shape (sensors,).
        var_sum, var_n: sum of squared residuals and how many, during calibration, shape (sensors,).
        first_ts: time of the first reading (NaN: none yet).
        cross_num, cross_den: the least-squares sums that scale the demand-noise covariance (see ``_calibrate``).
        calib_max: the largest statistic seen during calibration.
        samples: where the calibration is re-scored (a network run by its tanks and pumps), its kept moments:
            time, each row's smoothed deviation and whether it was fresh; emptied once the threshold is set.
        above_since, below_since: since when the statistic has been above the threshold / under the clearing level.
        alert: the active alert, if any.
    """

    baseline: FloatArray
    count: FloatArray
    dev: FloatArray
    fast: FloatArray
    last_ts: FloatArray
    var_sum: FloatArray
    var_n: FloatArray
    first_ts: float = math.nan
    cross_num: float = 0.0
    cross_den: float = 0.0
    calib_max: float = 0.0
    above_since: float = math.nan
    below_since: float = math.nan
    alert: _Alert | None = None
    samples: list[tuple[float, FloatArray, npt.NDArray[np.bool_]]] = field(default_factory=list)

    @classmethod
    def empty(cls, sensors: int, bins: int) -> _State:
        return cls(
            baseline=np.zeros((sensors, bins)),
            count=np.zeros((sensors, bins)),
            dev=np.zeros(sensors),
            fast=np.zeros(sensors),
            last_ts=np.full(sensors, np.nan),
            var_sum=np.zeros(sensors),
            var_n=np.zeros(sensors),
        )

    def copy(self) -> _State:
        alert = None if self.alert is None else _Alert(**{k: getattr(self.alert, k) for k in _Alert.__slots__})
        return _State(
            self.baseline.copy(),
            self.count.copy(),
            self.dev.copy(),
            self.fast.copy(),
            self.last_ts.copy(),
            self.var_sum.copy(),
            self.var_n.copy(),
            self.first_ts,
            self.cross_num,
            self.cross_den,
            self.calib_max,
            self.above_since,
            self.below_since,
            alert,
            list(self.samples),
        )


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the test says at one instant.

    Attributes:
        statistic: the largest matched-filter statistic over the candidates, standard deviations.
        candidates: the best candidates, ``(junction id, cosine score)``, best first.
        flow_l_s: the least-squares leak size at the best candidate, L/s.
        sensors: how many sensors took part.
    """

    statistic: float
    candidates: list[tuple[str, float]] = field(default_factory=list)
    flow_l_s: float = 0.0
    sensors: int = 0


# --- the detector ---------------------------------------------------------------------------------------------------


class WaterLeakDetector:
    """Detect and locate leaks in a water network from its pressure and flow sensors (see the module).

    Args:
        network: the EPANET water network the sensors are on.
        sensors: sensors by id; the water network's pressure and flow sensors are used, the others ignored.
        settings: the parameters.

    Raises:
        SimulationError: EPANET cannot solve the network (for its response).
    """

    name = KIND

    def __init__(
        self, network: PipeNetwork, sensors: Mapping[str, Sensor], *, settings: LeakSettings = LeakSettings()
    ) -> None:
        self.network = network
        self.settings = settings
        self._bins = max(1, round(86_400.0 / settings.bin_s))
        self._controlled = bool(rules_of(network))
        self._bind(sensors)
        self._state = _State.empty(len(self._ids), self._bins)
        self.last_judgement: Judgement | None = None

    # --- the StreamDetector protocol ---

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch of readings received at *now*; change nothing (see :meth:`commit`).

        The baseline and smoothed deviations take every trusted reading in time order; the test is made once, at
        the newest reading's time (or *now* if the batch has none of the network's sensors).
        """
        st = self._state.copy()
        cfg = self.settings
        newest = self._ingest(st, readings, suspect)
        judged_at = newest if not math.isnan(newest) else now.timestamp()
        changes: list[AlertChange] = []
        if not math.isnan(st.first_ts):
            age = judged_at - st.first_ts
            if cfg.learn_s + cfg.tau_s <= age:
                if age >= cfg.learn_s + self.calibration_s and st.samples:
                    self._rescore(st)
                judgement = self._judge(st, judged_at)
                self.last_judgement = judgement
                if age < cfg.learn_s + self.calibration_s:
                    self._calibrate(st, judged_at)
                    if self._rescored:
                        self._sample(st, judged_at)
                    elif age >= cfg.learn_s + 0.5 * cfg.calibrate_s:
                        # The spread is only known well enough to judge by in the second half of calibration.
                        st.calib_max = max(st.calib_max, judgement.statistic)
                else:
                    self._decide(st, judgement, judged_at, changes)
        return StreamResult(changes, st)

    @property
    def measured_tanks_used(self) -> bool:
        """Whether measured tank levels are inputs rather than common modes (see ``measured_tanks``)."""
        return bool(self._tank_columns)

    @property
    def calibration_s(self) -> float:
        """How long the detector calibrates after learning its baseline, s: ``cycle_calibrate_s`` on a network run
        by its tanks and pumps (see :class:`LeakSettings`), else ``calibrate_s``."""
        return self.settings.cycle_calibrate_s if self._rescored else self.settings.calibrate_s

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        self._state = result.state

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; sensors that remain keep their baseline and spread."""
        old = self.dump_state()
        self._bind(sensors)
        self._state = _State.empty(len(self._ids), self._bins)
        self.load_state(old)

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data (NaN as None)."""
        st = self._state
        per_sensor = {
            sid: {
                "baseline": st.baseline[k].tolist(),
                "count": st.count[k].tolist(),
                "dev": float(st.dev[k]),
                "fast": float(st.fast[k]),
                "last_ts": _opt(st.last_ts[k]),
                "var_sum": float(st.var_sum[k]),
                "var_n": float(st.var_n[k]),
            }
            for k, sid in enumerate(self._ids)
        }
        alert = None
        if st.alert is not None:
            alert = {k: getattr(st.alert, k) for k in _Alert.__slots__}
        return {
            "version": STATE_VERSION,
            "bins": self._bins,
            "sensors": per_sensor,
            "first_ts": _opt(st.first_ts),
            "cross_num": st.cross_num,
            "cross_den": st.cross_den,
            "calib_max": st.calib_max,
            "above_since": _opt(st.above_since),
            "below_since": _opt(st.below_since),
            "alert": alert,
            "samples": _pack_samples(st.samples, self._ids),
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state`; sensors not known now are dropped, new ones start empty."""
        st = _State.empty(len(self._ids), self._bins)
        same_bins = int(data.get("bins", self._bins)) == self._bins
        for sid, entry in dict(data.get("sensors", {})).items():
            row = self._row.get(sid)
            if row is None:
                continue
            if same_bins:
                st.baseline[row] = np.asarray(entry["baseline"], dtype=np.float64)
                st.count[row] = np.asarray(entry["count"], dtype=np.float64)
            st.dev[row] = float(entry.get("dev", 0.0))
            st.fast[row] = float(entry.get("fast", 0.0))
            st.last_ts[row] = _nan(entry.get("last_ts"))
            st.var_sum[row] = float(entry.get("var_sum", 0.0))
            st.var_n[row] = float(entry.get("var_n", 0.0))
        st.first_ts = _nan(data.get("first_ts"))
        # A state stored before the model covariance existed has no cross sums: it keeps whitening by each
        # sensor's spread alone (at the current threshold) until the detector learns afresh.
        st.cross_num = float(data.get("cross_num", 0.0))
        st.cross_den = float(data.get("cross_den", 0.0))
        st.calib_max = float(data.get("calib_max", 0.0))
        st.above_since = _nan(data.get("above_since"))
        st.below_since = _nan(data.get("below_since"))
        alert = data.get("alert")
        if alert:
            st.alert = _Alert(**{k: alert[k] for k in _Alert.__slots__})
        st.samples = _unpack_samples(data.get("samples"), self._row)
        self._state = st
        self._projections.clear()

    # --- internals ---

    def _bind(self, sensors: Mapping[str, Sensor]) -> None:
        """Choose the observed sensors and get the network's response for them."""
        chosen: list[Sensor] = []
        observed: list[tuple[str, str]] = []
        levels: dict[str, Sensor] = {}  # tank id -> its level sensor (the first by id)
        for sid in sorted(sensors):
            sensor = sensors[sid]
            if sensor.network is not Network.WATER or sensor.asset_id is None:
                continue
            asset = sensor.asset_id.partition(":")[2]
            if sensor.quantity is Quantity.PRESSURE and asset in self.network.nodes:
                observed.append(("pressure", asset))
            elif sensor.quantity is Quantity.FLOW and asset in self.network.links:
                observed.append(("flow", asset))
            else:
                node = self.network.nodes.get(asset)
                if sensor.quantity is Quantity.LEVEL and node is not None and node.kind is NodeKind.TANK:
                    levels.setdefault(asset, sensor)
                continue
            chosen.append(sensor)
        self.sensors = {s.sensor_id: s for s in chosen}
        self.response = network_response(self.network, observed, operating_points=self.settings.operating_points)
        # Measured tanks: their level sensors are extra rows of the state (baseline and smoothed deviation, never
        # judged); the mean of their mode columns over the operating points is their response per metre.
        names = self.response.mode_names
        tank_columns: list[list[int]] = []
        level_sensors: list[Sensor] = []
        use_levels = self.settings.measured_tanks
        if use_levels is None:
            use_levels = _absorbed(self.response.leak, self.response.modes)
            if use_levels and levels:
                log.warning(
                    "%s: the %d common modes leave the leak responses nothing at %d sensors; the %d measured"
                    " tanks' levels are used instead of their modes",
                    self.network.name,
                    self.response.modes.shape[1],
                    len(chosen),
                    len(levels),
                )
        if use_levels:
            for tid, sensor in sorted(levels.items()):
                columns = [k for k, name in enumerate(names) if name.rsplit("@", 1)[0] == f"tank:{tid}"]
                if columns:
                    tank_columns.append(columns)
                    level_sensors.append(sensor)
        self._n = len(chosen)
        self._tank_columns = tank_columns
        auto = bool(tank_columns) or self._controlled
        self._rescored = auto if self.settings.long_calibration is None else self.settings.long_calibration
        measured = {k for columns in tank_columns for k in columns}
        self._free_modes = np.array([k for k in range(len(names)) if k not in measured], dtype=np.intp)
        self._tank_effect = (
            np.column_stack([self.response.modes[:, columns].mean(axis=1) for columns in tank_columns])
            if tank_columns
            else np.zeros((self._n, 0))
        )
        rows = chosen + level_sensors
        self._ids = [s.sensor_id for s in rows]
        self._row = {sid: k for k, sid in enumerate(self._ids)}
        self._per_day = np.array([self.settings.bin_s / max(s.interval_s, 1.0) for s in rows], dtype=np.float64)
        self._districts = _candidate_districts(self.network, self.response.candidates, chosen)
        self._projections: dict[bytes, tuple[FloatArray, FloatArray, FloatArray, FloatArray]] = {}
        self._grams: dict[bytes, tuple[FloatArray, FloatArray, float]] = {}

    def _ingest(self, st: _State, readings: Sequence[Reading], suspect: Suspect) -> float:
        """Feed the trusted readings into *st* (baseline and smoothed deviations); return the newest time (or NaN).

        Each sensor's readings are taken in time order; sensors are independent of one another, so the k-th new
        reading of every sensor is processed at once (a batch of one reading per sensor is one vector step).
        """
        cfg = self.settings
        if not readings:
            return math.nan
        row_a, ts_a, val_a, usable = columns_of(readings, self._row, suspect)
        if not usable.all():
            row_a, ts_a, val_a = row_a[usable], ts_a[usable], val_a[usable]
            if not len(row_a):
                return math.nan
        keep = np.isfinite(val_a) & ~(ts_a <= st.last_ts[row_a])  # NaN last_ts: never seen, keep
        if not keep.all():
            row_a, ts_a, val_a = row_a[keep], ts_a[keep], val_a[keep]
            if not len(row_a):
                return math.nan
        order = np.lexsort((ts_a, row_a))
        row_a, ts_a, val_a = row_a[order], ts_a[order], val_a[order]
        if len(row_a) > 1:
            # Of two readings of one sensor at the same time, the first counts.
            fresh = np.ones(len(row_a), dtype=bool)
            fresh[1:] = (row_a[1:] != row_a[:-1]) | (ts_a[1:] != ts_a[:-1])
            if not fresh.all():
                row_a, ts_a, val_a = row_a[fresh], ts_a[fresh], val_a[fresh]
        if math.isnan(st.first_ts):
            st.first_ts = float(ts_a.min())
        # The k-th reading of each sensor in this batch: its rank inside its sensor's run.
        starts = np.ones(len(row_a), dtype=bool)
        starts[1:] = row_a[1:] != row_a[:-1]
        index = np.arange(len(row_a))
        rank = index - np.maximum.accumulate(np.where(starts, index, 0))
        may_learn = st.alert is None and math.isnan(st.above_since)
        for k in range(int(rank.max()) + 1):
            sel = rank == k
            r, t, v = (row_a, ts_a, val_a) if k == 0 and sel.all() else (row_a[sel], ts_a[sel], val_a[sel])
            learning = t - st.first_ts < cfg.learn_s
            expected = self._expected_many(st, r, t)
            last = st.last_ts[r]
            gap = np.where(np.isnan(last) | (t - last > cfg.stale_s), cfg.tau_s, t - last)
            judge = ~learning & np.isfinite(expected)
            if judge.any():
                jr = r[judge]
                miss = v[judge] - expected[judge]
                g = gap[judge]
                st.dev[jr] += -np.expm1(-g / cfg.tau_s) * (miss - st.dev[jr])
                st.fast[jr] += -np.expm1(-g / cfg.fast_tau_s) * (miss - st.fast[jr])
            st.last_ts[r] = t
            learn = learning if not may_learn else np.ones(len(r), dtype=bool)
            if learn.any():
                self._learn_many(st, r[learn], t[learn], v[learn], learning[learn])
        return float(ts_a.max())

    def _expected_many(self, st: _State, rows: npt.NDArray[np.intp], ts: FloatArray) -> FloatArray:
        """Return the baseline of sensors *rows* at times *ts* (NaN where a bin around it was never fed)."""
        x = (ts % 86_400.0) / self.settings.bin_s - 0.5
        k = np.floor(x)
        w = x - k
        a = k.astype(np.intp) % self._bins
        b = (a + 1) % self._bins
        ca, cb = st.count[rows, a], st.count[rows, b]
        value = st.baseline[rows, a] * (1.0 - w) + st.baseline[rows, b] * w
        out: FloatArray = np.where((ca > 0) & (cb > 0), value, np.nan)
        return out

    def _learn_many(
        self,
        st: _State,
        rows: npt.NDArray[np.intp],
        ts: FloatArray,
        values: FloatArray,
        learning: npt.NDArray[np.bool_],
    ) -> None:
        """Feed each value into its sensor's bin: a plain mean while learning, then one of ``baseline_days``."""
        k = (ts % 86_400.0 // self.settings.bin_s).astype(np.intp) % self._bins
        n = st.count[rows, k] + 1.0
        per_day = self._per_day[rows]
        weight = np.where(learning | (n <= per_day), 1.0 / n, 1.0 / (per_day * self.settings.baseline_days))
        st.baseline[rows, k] += weight * (values - st.baseline[rows, k])
        st.count[rows, k] = np.minimum(n, 1e9)

    def _bin_of(self, ts: float) -> tuple[int, int, float]:
        """Return the two bins around *ts* (by time of day, UTC) and the weight of the second."""
        x = (ts % 86_400.0) / self.settings.bin_s - 0.5
        k = math.floor(x)
        return k % self._bins, (k + 1) % self._bins, x - k

    def _fresh(self, st: _State, ts: float) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Return which judged sensors and which measured tanks' levels have a trusted reading within ``stale_s``."""
        fresh: npt.NDArray[np.bool_] = np.isfinite(st.last_ts) & (ts - st.last_ts <= self.settings.stale_s)
        return fresh[: self._n], fresh[self._n :]

    def _modes(self, levels: npt.NDArray[np.bool_]) -> FloatArray:
        """The common modes projected off: every mode but those of the tanks whose level is fresh."""
        columns = [self._free_modes]
        columns += [
            np.asarray(c, dtype=np.intp) for c, fresh in zip(self._tank_columns, levels, strict=True) if not fresh
        ]
        modes: FloatArray = self.response.modes[:, np.concatenate(columns)]
        return modes

    def _deviation(self, st: _State, values: FloatArray, levels: npt.NDArray[np.bool_]) -> FloatArray:
        """Return the judged sensors' smoothed deviations (*values*: ``st.dev`` or ``st.fast``) less what the fresh
        measured tanks' level deviations explain."""
        dev = values[: self._n]
        if levels.any():
            dev = dev - self._tank_effect[:, levels] @ values[self._n :][levels]
        return dev

    def _gram(self, mask: npt.NDArray[np.bool_], levels: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray, float]:
        """Return, for the sensors in *mask*: the projector off the common modes, the covariance of the projected
        values that consumers' independent demand noise would cause (per unit of relative demand variance), and
        the sum of its squared off-diagonal terms. Cached per mask."""
        key = b"gram" + mask.tobytes() + levels.tobytes()
        cached = self._grams.get(key)
        if cached is not None:
            return cached
        n = int(mask.sum())
        modes = self._modes(levels)[mask]
        with _blas().limit(limits=1, user_api="blas"):
            projector = np.eye(n) - modes @ np.linalg.pinv(modes) if modes.shape[1] else np.eye(n)
            spread = projector @ (self.response.leak[mask] * self.response.demand_l_s[None, :])
            gram = spread @ spread.T
        off = float((gram * gram).sum() - (np.diag(gram) ** 2).sum())
        result = (projector, gram, off)
        if len(self._grams) > 64:
            self._grams.clear()
        self._grams[key] = result
        return result

    def _noise(self, st: _State) -> tuple[float, FloatArray]:
        """Return the residuals' noise model: the relative variance of each consumer's demand (the scale of the
        model part) and each sensor's own variance, unit before calibration."""
        n = self._n
        var = np.where(st.var_n[:n] > 0, st.var_sum[:n] / np.maximum(st.var_n[:n], 1.0), 1.0)
        alpha = 0.0
        if self.settings.model_covariance and st.cross_den > 0:
            alpha = max(st.cross_num / st.cross_den, 0.0)
        own = var
        if alpha > 0:
            everything = np.ones(n, dtype=bool)
            _projector, gram, _off = self._gram(everything, np.ones(len(self._tank_columns), dtype=bool))
            own = np.maximum(var - alpha * np.diag(gram), self.settings.own_noise_floor * var)
        floor = max(float(np.median(np.sqrt(var))) * 0.2, 1e-3) ** 2
        out: FloatArray = np.maximum(own, floor)
        return alpha, out

    def _projected(
        self, mask: npt.NDArray[np.bool_], levels: npt.NDArray[np.bool_], alpha: float, own: FloatArray, key: bytes
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Return, for the sensors in *mask*: the whitening matrix, the modes' basis, the whitened leak responses
        projected off the modes, and their norms. Cached by *key* (fixed once calibrated)."""
        cached = self._projections.get(key)
        if cached is not None:
            return cached
        with _blas().limit(limits=1, user_api="blas"):
            result = self._factorise(mask, levels, alpha, own)
        if len(self._projections) > 64:
            self._projections.clear()
        self._projections[key] = result
        return result

    def _factorise(
        self, mask: npt.NDArray[np.bool_], levels: npt.NDArray[np.bool_], alpha: float, own: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        leak = self.response.leak[mask]
        if alpha > 0:
            # C = alpha · S·diag(demand²)·Sᵀ + diag(own): every consumer's demand wanders independently, which
            # the sensors see through the same response as a leak there, on top of each sensor's own noise.
            spread = leak * self.response.demand_l_s[None, :]
            cov = alpha * (spread @ spread.T) + np.diag(own[mask])
            white = np.linalg.inv(np.linalg.cholesky(cov))
        else:
            white = np.diag(1.0 / np.sqrt(own[mask]))
        basis = _span(white @ self._modes(levels)[mask])
        leak = white @ leak
        leak = leak - basis @ (basis.T @ leak)
        norms = np.linalg.norm(leak, axis=0)
        norms[norms == 0] = np.inf
        return white, basis, leak, norms

    def _calibrate(self, st: _State, ts: float) -> None:
        """Accumulate each fresh sensor's squared residual (deviation projected off the modes, unwhitened), and
        how far the residuals' cross-products follow the covariance that consumers' demand noise would cause."""
        mask, levels = self._fresh(st, ts)
        if not mask.any():
            return
        projector, gram, off = self._gram(mask, levels)
        d = projector @ self._deviation(st, st.dev, levels)[mask]
        rows = np.flatnonzero(mask)
        st.var_sum[rows] += d * d
        st.var_n[rows] += 1.0
        if self.settings.model_covariance and off > 0:
            # Least squares of the off-diagonal products r_i·r_k on alpha·G_ik, accumulated over time.
            st.cross_num += float(d @ gram @ d - np.diag(gram) @ (d * d))
            st.cross_den += off

    def _sample(self, st: _State, ts: float) -> None:
        """Keep the smoothed deviations of this moment for the re-scoring, at most one a ``sample_s``."""
        if st.samples and ts - st.samples[-1][0] < self.settings.sample_s:
            return
        mask, levels = self._fresh(st, ts)
        st.samples.append((ts, st.dev.copy(), np.concatenate([mask, levels])))

    def _rescore(self, st: _State) -> None:
        """Set the threshold from the calibration's kept moments, scored with the final noise model: the noise
        model moves while it is learned, so the statistics seen meanwhile are on other scales."""
        stats = [
            self._test(st, dev, dev, fresh[: self._n], fresh[self._n :], calibrated=True).statistic
            for _ts, dev, fresh in st.samples
            if fresh[: self._n].sum() >= 3
        ]
        st.calib_max = max(stats, default=0.0)
        log.info(
            "%s: calibrated on %d moments over %.1f days; the largest statistic %.2f sets the threshold",
            self.network.name,
            len(stats),
            self.calibration_s / 86_400.0,
            st.calib_max,
        )
        st.samples = []

    def _judge(self, st: _State, ts: float) -> Judgement:
        """Return the matched-filter test over every candidate at *ts*."""
        mask, levels = self._fresh(st, ts)
        if mask.sum() < 3:
            return Judgement(0.0)
        calibrated = st.var_n.max() > 0 and ts - st.first_ts >= self.settings.learn_s + self.calibration_s
        return self._test(st, st.dev, st.fast, mask, levels, calibrated=calibrated)

    def _test(
        self,
        st: _State,
        dev: FloatArray,
        fast: FloatArray,
        mask: npt.NDArray[np.bool_],
        levels: npt.NDArray[np.bool_],
        *,
        calibrated: bool,
    ) -> Judgement:
        """The matched-filter test on the smoothed deviations *dev* (and *fast*, for the flow) of every row, with
        the sensors of *mask* and the tanks of *levels* fresh."""
        cfg = self.settings
        # While calibrating, the noise model moves: refresh it every 10 judged minutes or so.
        epoch = -1 if calibrated else int(st.var_n.max() // 10)
        key = mask.tobytes() + levels.tobytes() + epoch.to_bytes(8, "little", signed=True)
        if key in self._projections:
            white, basis, leak, norms = self._projections[key]
        else:
            alpha, own = self._noise(st)
            white, basis, leak, norms = self._projected(mask, levels, alpha, own, key)
        # A leak lowers pressure: the response is negative where the deviation is; the test is one-sided.
        z = white @ self._deviation(st, dev, levels)[mask]
        r = z - basis @ (basis.T @ z)
        stats = (leak.T @ r) / norms
        best = int(np.argmax(stats))
        r_norm = float(np.linalg.norm(r)) or 1.0
        cosine = stats / r_norm
        order = np.argpartition(-cosine, min(cfg.top, len(cosine) - 1))[: cfg.top]
        order = order[np.argsort(-cosine[order])]
        candidates = [(self.response.candidates[k], round(float(cosine[k]), 4)) for k in order]
        # Sized from the fast deviation: the slow one lags a burst by tens of minutes.
        quick = white @ self._deviation(st, fast, levels)[mask]
        flow = float(leak[:, best] @ (quick - basis @ (basis.T @ quick)) / (norms[best] ** 2))
        return Judgement(float(stats[best]), candidates, flow, int(mask.sum()))

    def _decide(self, st: _State, judgement: Judgement, ts: float, changes: list[AlertChange]) -> None:
        """Raise, update or clear the alert from *judgement*."""
        cfg = self.settings
        threshold = max(cfg.threshold, cfg.threshold_factor * st.calib_max)
        stat = judgement.statistic
        if stat > threshold:
            if math.isnan(st.above_since):
                st.above_since = ts
            st.below_since = math.nan
        else:
            st.above_since = math.nan
            if stat < cfg.clear_fraction * threshold:
                if math.isnan(st.below_since):
                    st.below_since = ts
            else:
                st.below_since = math.nan
        alert = st.alert
        if alert is None:
            if not math.isnan(st.above_since) and ts - st.above_since >= cfg.hold_s and judgement.candidates:
                top = judgement.candidates[0][0]
                flow = max(judgement.flow_l_s, 0.0)
                st.alert = _Alert(self._districts.get(top, ""), self._grade(flow), ts, flow, top, ts)
                changes.append(self._change("raised", st.alert, judgement, ts, threshold))
            return
        if not math.isnan(st.below_since) and ts - st.below_since >= cfg.clear_hold_s:
            changes.append(self._change("cleared", alert, judgement, ts, threshold))
            st.alert = None
            st.below_since = math.nan
            return
        if stat <= threshold or not judgement.candidates or ts - alert.reported_ts < cfg.update_every_s:
            return
        flow = max(judgement.flow_l_s, 0.0)
        top = judgement.candidates[0][0]
        grade = self._grade(flow)
        moved = abs(flow - alert.flow_l_s) > 0.25 * max(alert.flow_l_s, 1.0)
        if grade != alert.grade or top != alert.top or moved:
            alert.grade, alert.flow_l_s, alert.top, alert.reported_ts = grade, flow, top, ts
            changes.append(self._change("updated", alert, judgement, ts, threshold))

    def _grade(self, flow_l_s: float) -> int:
        for grade, limit in enumerate(self.settings.grade_flows_l_s, start=1):
            if flow_l_s >= limit:
                return grade
        return 4

    def _change(self, event: str, alert: _Alert, judgement: Judgement, ts: float, threshold: float) -> AlertChange:
        """Build one alert change; the evidence goes into ``detail``."""
        where = alert.district or self.network.name
        if event == "cleared":
            zh = f"{where}供水管网疑似漏损已消除"
            en = f"Suspected water leak in {where} is over"
        else:
            zh = f"{where}供水管网疑似漏损，估计漏量 {alert.flow_l_s:.1f} L/s，最可能位置：节点 {alert.top}"
            en = (
                f"Suspected water leak in {where}: about {alert.flow_l_s:.1f} L/s, "
                f"most likely near junction {alert.top}"
            )
        detail = {
            "candidates": [{"asset": f"water:node:{jid}", "score": score} for jid, score in judgement.candidates],
            "estimated_flow_l_s": round(alert.flow_l_s, 2),
            "statistic": round(judgement.statistic, 2),
            "threshold": round(threshold, 2),
            "sensors": judgement.sensors,
        }
        return AlertChange(
            event=event,
            cause_key=cause_key(alert.district),
            kind=KIND,
            sensor_id=None,
            network=Network.WATER.value,
            district=alert.district,
            grade=alert.grade,
            ts=datetime.fromtimestamp(ts, UTC),
            value=round(alert.flow_l_s, 2),
            threshold=None,
            message=zh,
            message_en=en,
            detail=detail,
        )


def _pack_samples(samples: Sequence[tuple[float, FloatArray, npt.NDArray[np.bool_]]], ids: Sequence[str]) -> Any:
    """The calibration's kept moments as JSON: times, rows' ids, deviations (float32) and freshness, base64."""
    if not samples:
        return None
    dev = np.stack([d for _t, d, _f in samples]).astype("<f4")
    fresh = np.stack([f for _t, _d, f in samples]).astype(np.uint8)
    return {
        "ts": [t for t, _d, _f in samples],
        "ids": list(ids),
        "dev": base64.b64encode(dev.tobytes()).decode("ascii"),
        "fresh": base64.b64encode(np.packbits(fresh, axis=1).tobytes()).decode("ascii"),
    }


def _unpack_samples(data: Any, rows: Mapping[str, int]) -> list[tuple[float, FloatArray, npt.NDArray[np.bool_]]]:
    """The kept moments of :func:`_pack_samples`, on the current rows (a row not stored is stale in them)."""
    if not data:
        return []
    ts, ids = list(data["ts"]), list(data["ids"])
    dev = np.frombuffer(base64.b64decode(data["dev"]), dtype="<f4").reshape(len(ts), len(ids))
    packed = np.frombuffer(base64.b64decode(data["fresh"]), dtype=np.uint8).reshape(len(ts), -1)
    fresh = np.unpackbits(packed, axis=1, count=len(ids)).astype(bool)
    out_dev = np.zeros((len(ts), len(rows)))
    out_fresh = np.zeros((len(ts), len(rows)), dtype=bool)
    for k, sid in enumerate(ids):
        row = rows.get(sid)
        if row is not None:
            out_dev[:, row] = dev[:, k]
            out_fresh[:, row] = fresh[:, k]
    return [(float(t), out_dev[i], out_fresh[i]) for i, t in enumerate(ts)]


def _absorbed(leak: FloatArray, modes: FloatArray, *, tolerance: float = 1e-6) -> bool:
    """Whether projecting off *modes* leaves the median leak response less than *tolerance* of its size (the modes
    span every leak's signature: the test cannot see any leak)."""
    if not leak.size or not modes.shape[1]:
        return False
    size = np.linalg.norm(leak, axis=0)
    seen = size > 0
    if not seen.any():
        return False
    basis = _span(modes)
    left = np.linalg.norm(leak[:, seen] - basis @ (basis.T @ leak[:, seen]), axis=0) / size[seen]
    return bool(np.median(left) < tolerance)


def _span(vectors: FloatArray) -> FloatArray:
    """Return an orthonormal basis of the span of *vectors*' columns, shape (rows, rank).

    By singular values, not QR: with as many modes as sensors or more, or dependent ones, QR would return a full
    square basis and project everything off (the test would be blind without saying so).
    """
    if not vectors.shape[1]:
        return np.zeros((vectors.shape[0], 0))
    u, s, _vt = np.linalg.svd(vectors, full_matrices=False)
    rank = int((s > s[0] * 1e-10).sum()) if s[0] > 0 else 0
    basis: FloatArray = u[:, :rank]
    return basis


def _candidate_districts(network: PipeNetwork, candidates: Sequence[str], sensors: Sequence[Sensor]) -> dict[str, str]:
    """Give each candidate junction the district of the nearest sensor that has one."""
    placed = [s for s in sensors if s.district]
    if not placed:
        return {}
    xy = np.array([(s.x_m, s.y_m) for s in placed])
    out: dict[str, str] = {}
    for jid in candidates:
        node = network.nodes.get(jid)
        if node is None or node.kind is not NodeKind.JUNCTION:
            continue
        k = int(np.argmin((xy[:, 0] - node.x_m) ** 2 + (xy[:, 1] - node.y_m) ** 2))
        out[jid] = placed[k].district
    return out


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)
