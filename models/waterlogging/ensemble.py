"""Ensemble nowcast: SWMM on several rain futures → the probability that each location floods → graded warnings.

One rain forecast cannot carry a warning on its own: on the demo city a 20-year storm forecast 15 % too low names
a third of the nodes that flood, and 20 % too high names two and a half times too many (docs/waterlogging.md).
So the nowcast runs SWMM on several futures of the rain from the same state and counts, per node, the weight of
the futures in which the node floods over the event (what it flooded so far plus what it floods ahead):

- :func:`forecast_futures` — the forecast scaled by the quantiles of its error (log-normal, ``sigma``, the
  spread a forecast product's verification gives; equal weights);
- :func:`observed_futures` — without a forecast: the rain stops now, the last quarter hour's intensity persists
  for half an hour, or it decays from there with a 20-minute e-folding time;
- :func:`fitted_futures` — from the gauges alone, so they do not share the forecast's error: the continuations of
  Chicago design storms fitted to the event's rain so far, and the last half hour persisting;
  :func:`blended_futures` weighs them against the forecast's members by the rain the event has brought
  (:func:`observed_weight`, :func:`blend`).

A :class:`WarningRule` turns the probabilities into a warning: a location is named when its probability reaches
``probability``, and the *first* warning of an event waits until the named set is trustworthy by the ensemble's
own account — its expected false-alarm ratio (mean of 1 − p over the named) at most ``max_expected_far`` and its
expected hit rate (Σp over the named / Σp over all) at least ``min_expected_hit``. After the first warning, every
nowcast names what passes ``probability``. The rule's numbers are chosen on one set of storms and scored on
another (``bench/bench_nowcast.py``).

Example:
    >>> futures = forecast_futures(forecast_mm_h, sigma=0.25)                                  # doctest: +SKIP
    >>> cast = ensemble_nowcast(network, now=now, observed_rain_mm_h=gauges, futures=futures,
    ...                         previous=last, executor=pool)                                 # doctest: +SKIP
    >>> WarningRule().named(cast, warned_before=False)                                        # doctest: +SKIP
    ('MHX0305-E2', 'MHX0203')
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from models.waterlogging.nowcast import (
    DEFAULT_HORIZON,
    DEFAULT_RAIN_STEP,
    HotStart,
    Nowcast,
    nowcast,
    swmm_pool,
)
from twin.errors import ConfigError
from twin.model import PipeNetwork
from twin.storms import DEFAULT_FORMULA, FORMULAS, StormFormula, chicago_storm

FloatArray = npt.NDArray[np.float64]

DEFAULT_SIGMA = 0.25
"""Log-normal σ of a rain forecast's depth error assumed when none is given."""
DEFAULT_MEMBERS = 5
DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Nine forecast members; every other one is the default 5-member set."""
FIT_DURATIONS_MIN = tuple(range(30, 301, 10))
"""Chicago storm durations tried by :func:`fitted_futures`, minutes."""
FIT_PEAK_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
"""Chicago peak ratios tried by :func:`fitted_futures`."""


@dataclass(frozen=True, slots=True)
class RainFuture:
    """One possible rain after ``now``: intensity of each rain step, mm/h, and its weight (the weights add to 1)."""

    name: str
    weight: float
    rain_mm_h: tuple[float, ...]


def forecast_futures(
    forecast_rain_mm_h: Sequence[float],
    *,
    sigma: float = DEFAULT_SIGMA,
    members: int = DEFAULT_MEMBERS,
    levels: Sequence[float] | None = None,
) -> list[RainFuture]:
    """Return the forecast scaled by *members* equally likely quantiles of a log-normal error of σ *sigma*.

    The quantile levels are (k + ½) / *members* (5 members: 10, 30, 50, 70, 90 %), or *levels* when given (e.g.
    :data:`DECILES`, whose every other member is the 5-member set); the members weigh the same. The middle member
    (odd count, symmetric levels) is the forecast itself.

    Raises:
        ConfigError: *sigma* negative, *members* below 1, or a level outside (0, 1).
    """
    if sigma < 0 or members < 1:
        raise ConfigError("a forecast ensemble needs σ ≥ 0 and at least one member")
    chosen = [(k + 0.5) / members for k in range(members)] if levels is None else list(levels)
    if not chosen or any(not 0 < q < 1 for q in chosen):
        raise ConfigError("forecast quantile levels must be in (0, 1)")
    dist = statistics.NormalDist()
    futures = []
    for q in chosen:
        z = dist.inv_cdf(q)
        factor = math.exp(sigma * z)
        futures.append(
            RainFuture(f"forecast×{factor:.2f}", 1.0 / len(chosen), tuple(v * factor for v in forecast_rain_mm_h))
        )
    return futures


def observed_futures(
    observed_rain_mm_h: Sequence[float], *, rain_step: timedelta = DEFAULT_RAIN_STEP
) -> list[RainFuture]:
    """Return futures made from the gauges alone: the rain stops, persists 30 min, or decays (e-folding 20 min)."""
    step_min = rain_step.total_seconds() / 60.0
    window = max(1, round(15 / step_min))
    recent = list(observed_rain_mm_h[-window:])
    now_mm_h = sum(recent) / len(recent) if recent else 0.0
    persist = max(1, round(30 / step_min))
    decay_steps = max(1, round(120 / step_min))
    return [
        RainFuture("stops", 1 / 3, (0.0,)),
        RainFuture("persists 30 min", 1 / 3, (now_mm_h,) * persist),
        RainFuture(
            "decays (20 min)", 1 / 3, tuple(now_mm_h * math.exp(-(k + 0.5) * step_min / 20) for k in range(decay_steps))
        ),
    ]


def event_rain(
    observed_rain_mm_h: Sequence[float], *, rain_step: timedelta = DEFAULT_RAIN_STEP, dry_gap_min: float = 60.0
) -> tuple[float, ...]:
    """Return the observed rain of the current event: from the first wet step after the last dry spell of at least
    *dry_gap_min* (or the series' start) to now, mm/h per step; empty when none fell since."""
    step_min = rain_step.total_seconds() / 60.0
    gap = max(1, round(dry_gap_min / step_min))
    values = list(observed_rain_mm_h)
    wet = [k for k, v in enumerate(values) if v > 0]
    if not wet:
        return ()
    start = wet[0]
    for a, b in itertools.pairwise(wet):
        if b - a > gap:
            start = b
    if len(values) - 1 - wet[-1] >= gap:
        return ()
    return tuple(values[start:])


@functools.lru_cache(maxsize=4096)
def _chicago_shape(formula: StormFormula, duration_min: int, peak_ratio: float, step_min: float) -> FloatArray:
    """The 1-year Chicago hyetograph of *formula*, mm/h per step (it scales with 1 + c·lg P)."""
    return np.asarray(
        chicago_storm(
            formula, return_period_years=1.0, duration_min=duration_min, step_min=step_min, peak_ratio=peak_ratio
        ),
        dtype=float,
    )


@dataclass(frozen=True, slots=True)
class StormFit:
    """A Chicago design storm fitted to the observed rain of an event.

    Attributes:
        duration_min: the storm's whole duration, minutes (from the event's first wet step).
        peak_ratio: where its peak is, as a share of the duration.
        return_period_years: the return period whose hyetograph fits the observed one in scale.
        misfit: RMS difference of the 10-minute mean intensities over the observed steps / their RMS.
        remaining_mm_h: the fitted storm after now, mm/h per step (empty when it has ended).
        remaining_mm: its depth, mm.
    """

    duration_min: int
    peak_ratio: float
    return_period_years: float
    misfit: float
    remaining_mm_h: tuple[float, ...]
    remaining_mm: float


def fit_design_storms(
    observed_rain_mm_h: Sequence[float],
    *,
    formula: StormFormula | None = None,
    rain_step: timedelta = DEFAULT_RAIN_STEP,
    durations_min: Sequence[int] = FIT_DURATIONS_MIN,
    peak_ratios: Sequence[float] = FIT_PEAK_RATIOS,
    max_return_period_years: float = 1000.0,
) -> list[StormFit]:
    """Fit Chicago design storms of *formula* to the current event's observed rain, best first.

    For every duration (at least the event's length so far) and peak ratio, the 1-year hyetograph is scaled by
    least squares to the observed 10-minute mean intensities (a Chicago storm scales with 1 + c·lg P, so the scale
    gives the return period, capped at *max_return_period_years*); what the scaled storm still has to rain is the
    continuation. Empty when the event has no rain yet.
    """
    chosen = formula if formula is not None else FORMULAS[DEFAULT_FORMULA]
    step_min = rain_step.total_seconds() / 60.0
    observed = np.asarray(event_rain(observed_rain_mm_h, rain_step=rain_step), dtype=float)
    if observed.size == 0 or not observed.any():
        return []
    window = max(1, round(10 / step_min))
    kernel = np.ones(window) / window

    def smooth(values: FloatArray) -> FloatArray:
        return np.convolve(values, kernel)[: values.size]

    seen = smooth(observed)
    norm = float(np.sqrt(np.mean(seen**2)))
    max_scale = 1 + chosen.c * math.log10(max_return_period_years)
    fits = []
    elapsed = observed.size * step_min
    for duration in durations_min:
        if duration < elapsed or abs(duration / step_min - round(duration / step_min)) > 1e-9:
            continue
        for ratio in peak_ratios:
            shape = _chicago_shape(chosen, int(duration), float(ratio), step_min)
            part = smooth(shape[: observed.size])
            denom = float(part @ part)
            if denom <= 0:
                continue
            scale = min(max(float(part @ seen) / denom, 1 + chosen.c * math.log10(0.25)), max_scale)
            misfit = float(np.sqrt(np.mean((seen - scale * part) ** 2))) / norm
            years = 10 ** ((scale - 1) / chosen.c)
            rest = tuple(float(v) * scale for v in shape[observed.size :])
            fits.append(StormFit(int(duration), float(ratio), years, misfit, rest, sum(rest) * step_min / 60.0))
    fits.sort(key=lambda f: (f.misfit, f.duration_min, f.peak_ratio))
    return fits


def fitted_futures(
    observed_rain_mm_h: Sequence[float],
    *,
    formula: StormFormula | None = None,
    rain_step: timedelta = DEFAULT_RAIN_STEP,
    fits: int = 3,
    persist_min: float = 30.0,
    min_event_mm: float = 1.0,
) -> list[RainFuture]:
    """Return futures made from the observed rain alone, independent of any forecast's error (equal weights).

    - ``chicago …``: the continuations of the *fits* best-fitting Chicago design storms
      (:func:`fit_design_storms`), chosen to differ: among fits at most twice the best misfit, each one's
      remaining depth differs by more than 20 % from those already taken (then the next best fits);
    - ``persists 30 min``: the mean intensity of the last *persist_min* minutes, for *persist_min* minutes.

    Empty while the event has rained less than *min_event_mm* (nothing to fit yet).
    """
    step_min = rain_step.total_seconds() / 60.0
    event = event_rain(observed_rain_mm_h, rain_step=rain_step)
    if sum(event) * step_min / 60.0 < min_event_mm:
        return []
    ranked = fit_design_storms(observed_rain_mm_h, formula=formula, rain_step=rain_step)
    taken: list[StormFit] = []
    best = ranked[0].misfit if ranked else 0.0
    for fit in ranked:
        if len(taken) == fits or fit.misfit > 2 * best + 1e-9:
            break
        if all(
            abs(fit.remaining_mm - t.remaining_mm) > 0.2 * max(t.remaining_mm, fit.remaining_mm, 1e-9) for t in taken
        ):
            taken.append(fit)
    for fit in ranked:
        if len(taken) >= fits:
            break
        if fit not in taken:
            taken.append(fit)
    window = max(1, round(persist_min / step_min))
    recent = event[-window:]
    level = sum(recent) / len(recent)
    count = len(taken) + 1
    futures = [
        RainFuture(
            f"chicago {f.return_period_years:.0f}-yr {f.duration_min} min r={f.peak_ratio:.1f}",
            1.0 / count,
            f.remaining_mm_h or (0.0,),
        )
        for f in taken
    ]
    futures.append(RainFuture(f"persists {persist_min:g} min", 1.0 / count, (level,) * window))
    return futures


def observed_weight(observed_mm: float, *, max_weight: float = 0.5, full_at_mm: float = 10.0) -> float:
    """Return the weight the observation-based futures get once the event has rained *observed_mm*: growing
    linearly from 0 to *max_weight* at *full_at_mm* (early in a storm a forecast knows more than the gauges)."""
    if full_at_mm <= 0:
        return max_weight
    return max_weight * min(1.0, max(0.0, observed_mm) / full_at_mm)


def blend(groups: Sequence[tuple[Sequence[RainFuture], float]]) -> list[RainFuture]:
    """Return the futures of several groups, each group weighing as given (its members in their own proportion).

    Empty groups and groups of weight 0 drop out; the rest are renormalised so the weights add up to 1.

    Raises:
        ConfigError: a negative group weight, or nothing left.
    """
    if any(w < 0 for _, w in groups):
        raise ConfigError("group weights must be ≥ 0")
    kept = [(list(f), w) for f, w in groups if f and w > 0]
    total = sum(w for _, w in kept)
    if not kept or total <= 0:
        raise ConfigError("blend needs at least one non-empty group of positive weight")
    out: list[RainFuture] = []
    for futures, weight in kept:
        inner = sum(f.weight for f in futures)
        out.extend(RainFuture(f.name, weight / total * f.weight / inner, f.rain_mm_h) for f in futures)
    return out


def blended_futures(
    forecast_rain_mm_h: Sequence[float] | None,
    observed_rain_mm_h: Sequence[float],
    *,
    sigma: float = DEFAULT_SIGMA,
    members: int = DEFAULT_MEMBERS,
    levels: Sequence[float] | None = None,
    max_observed_weight: float = 0.5,
    full_at_mm: float = 10.0,
    rain_step: timedelta = DEFAULT_RAIN_STEP,
    formula: StormFormula | None = None,
) -> list[RainFuture]:
    """Return the forecast's members (:func:`forecast_futures`) with the observation-based ones
    (:func:`fitted_futures`), weighted by :func:`observed_weight` of the event's rain so far.

    Without a forecast, the observation-based futures alone (or :func:`observed_futures` before there is an
    event to fit).
    """
    fitted = fitted_futures(observed_rain_mm_h, formula=formula, rain_step=rain_step)
    if forecast_rain_mm_h is None:
        return fitted or observed_futures(observed_rain_mm_h, rain_step=rain_step)
    forecast = forecast_futures(forecast_rain_mm_h, sigma=sigma, members=members, levels=levels)
    step_h = rain_step.total_seconds() / 3600.0
    depth = sum(event_rain(observed_rain_mm_h, rain_step=rain_step)) * step_h
    weight = observed_weight(depth, max_weight=max_observed_weight, full_at_mm=full_at_mm)
    return blend([(forecast, 1.0 - weight), (fitted, weight)])


@dataclass(frozen=True, slots=True)
class EnsembleNowcast:
    """SWMM's answer on each rain future, from one state.

    Attributes:
        issued: the nowcast's time (aware UTC).
        futures: the rain futures, in member order.
        members: one :class:`Nowcast` per future.
        node_ids: node order of the arrays.
        so_far_m3: volume each node has flooded in this event up to ``issued`` (the chain of nowcasts), m³.
        wall_s: the ensemble's wall time, seconds.
    """

    issued: datetime
    futures: tuple[RainFuture, ...]
    members: tuple[Nowcast, ...]
    node_ids: tuple[str, ...]
    so_far_m3: FloatArray
    wall_s: float

    @property
    def hotstart(self) -> HotStart | None:
        """The state at ``issued`` (the same in every member: they share the observed rain)."""
        return self.members[0].hotstart

    @property
    def event_volume_m3(self) -> FloatArray:
        """Volume each node floods over the event in each member (so far + ahead), m³, shape (members, nodes)."""
        return self.so_far_m3[None, :] + np.stack([m.volume_m3 for m in self.members])

    def probability(self, *, min_volume_m3: float = 10.0) -> FloatArray:
        """Return, per node, the weight of the futures in which it floods at least *min_volume_m3* over the event."""
        weights = np.array([f.weight for f in self.futures])
        return np.asarray(weights @ (self.event_volume_m3 >= min_volume_m3), dtype=float)

    def central(self) -> Nowcast:
        """The member of the middle future (the forecast itself in :func:`forecast_futures` with odd members)."""
        return self.members[len(self.members) // 2]

    def eta_s(self) -> FloatArray:
        """Earliest expected first flooding per node over the members, seconds from ``issued`` (NaN: none)."""
        stacked = np.stack([m.eta_s for m in self.members])
        out = np.full(stacked.shape[1], np.nan)
        seen = np.isfinite(stacked).any(axis=0)
        out[seen] = np.nanmin(stacked[:, seen], axis=0)
        return out


def ensemble_nowcast(
    network: PipeNetwork,
    *,
    now: datetime,
    observed_rain_mm_h: Sequence[float],
    futures: Sequence[RainFuture],
    rain_step: timedelta = DEFAULT_RAIN_STEP,
    horizon: timedelta = DEFAULT_HORIZON,
    observed_depth_m: Mapping[str, float] | None = None,
    previous: EnsembleNowcast | None = None,
    executor: Executor | None = None,
) -> EnsembleNowcast:
    """Run a nowcast per rain future from the same state, in the pool together.

    The first future's run compares the model with the level sensors and corrects the rain
    (:func:`~models.waterlogging.nowcast.nowcast`); the other futures are run with the rain factor it chose.

    Args:
        network: the drainage network (a SWMM model).
        now: the nowcast's time (aware).
        observed_rain_mm_h: gauge rain of each rain step up to *now*, mm/h (back to *previous*'s time at least).
        futures: the rain futures after *now* (weights adding to 1).
        rain_step: the step of the rain series.
        horizon: how far ahead to run.
        observed_depth_m: observed depth above the invert at *now*, m, by node id.
        previous: the last ensemble nowcast of this event: its state is the hot start and its event volumes go on;
            None starts the event with a warm-up on the observed rain.
        executor: a SWMM process pool (:func:`~models.waterlogging.nowcast.swmm_pool`); None starts one worker.

    Raises:
        ConfigError: no futures, weights not adding to 1, or what :func:`~models.waterlogging.nowcast.nowcast`
            refuses.
        SimulationError: SWMM stops with an error.
    """
    if not futures:
        raise ConfigError("an ensemble nowcast needs at least one rain future")
    if abs(sum(f.weight for f in futures) - 1.0) > 1e-6 or any(f.weight < 0 for f in futures):
        raise ConfigError("the rain futures' weights must be ≥ 0 and add up to 1")
    started = time.perf_counter()
    own = executor is None
    pool = swmm_pool(1) if executor is None else executor
    hot = previous.hotstart if previous is not None else None
    try:
        first = nowcast(
            network,
            now=now,
            observed_rain_mm_h=observed_rain_mm_h,
            forecast_rain_mm_h=futures[0].rain_mm_h,
            rain_step=rain_step,
            horizon=horizon,
            observed_depth_m=observed_depth_m,
            hotstart=hot,
            executor=pool,
        )
        factor = first.rain_factor
        observed = [v * factor for v in observed_rain_mm_h]

        def run(future: RainFuture) -> Nowcast:
            return nowcast(
                network,
                now=now,
                observed_rain_mm_h=observed,
                forecast_rain_mm_h=[v * factor for v in future.rain_mm_h],
                rain_step=rain_step,
                horizon=horizon,
                hotstart=hot,
                executor=pool,
            )

        with ThreadPoolExecutor(max_workers=max(1, len(futures) - 1)) as threads:
            rest = list(threads.map(run, futures[1:]))
    finally:
        if own:
            pool.shutdown()
    before = first.flooded_before_m3 if first.flooded_before_m3 is not None else np.zeros(len(first.node_ids))
    so_far = before.copy()
    if previous is not None:
        if previous.node_ids != first.node_ids:
            raise ConfigError("the previous ensemble nowcast is of another network")
        so_far = so_far + previous.so_far_m3
    return EnsembleNowcast(
        issued=first.issued,
        futures=tuple(futures),
        members=(first, *rest),
        node_ids=first.node_ids,
        so_far_m3=so_far,
        wall_s=time.perf_counter() - started,
    )


@dataclass(frozen=True, slots=True)
class WarningRule:
    """When to warn, from the probabilities of an ensemble.

    The defaults are the rule ``bench/bench_nowcast.py`` chose on its tune storms (five futures, forecast error
    σ 0.25): name a location that floods in 4 of 5 futures; the first warning waits for an expected false-alarm
    ratio of 0.15 (docs/waterlogging.md).

    Attributes:
        probability: a location is named when it floods in futures weighing at least this much.
        max_expected_far: the first warning waits until the named set's expected false-alarm ratio is at most this.
        min_expected_hit: … and its expected hit rate at least this.
        min_volume_m3: the volume that makes a location flooded, m³.
    """

    probability: float = 0.8
    max_expected_far: float = 0.15
    min_expected_hit: float = 0.0
    min_volume_m3: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.probability <= 1:
            raise ConfigError("the warning probability must be in (0, 1]")
        if not 0 <= self.max_expected_far <= 1 or not 0 <= self.min_expected_hit <= 1:
            raise ConfigError("expected hit rate and false-alarm ratio are between 0 and 1")

    def named_mask(
        self, probability: FloatArray, *, warned_before: bool, observed_mm: float = 0.0
    ) -> npt.NDArray[np.bool_]:
        """Return which locations a nowcast with these probabilities names (none while the first warning waits).

        *observed_mm* (the event's rain so far) is not used by this rule.
        """
        return self._mask(probability, self.probability, warned_before=warned_before)

    def _mask(self, probability: FloatArray, level: float, *, warned_before: bool) -> npt.NDArray[np.bool_]:
        named = probability >= level - 1e-9
        if warned_before or not named.any():
            return named
        expected_far = float(np.mean(1.0 - probability[named]))
        total = float(probability.sum())
        expected_hit = float(probability[named].sum()) / total if total > 0 else 1.0
        if expected_far <= self.max_expected_far + 1e-9 and expected_hit >= self.min_expected_hit - 1e-9:
            return named
        return np.zeros_like(named)

    def named(self, cast: EnsembleNowcast, *, warned_before: bool) -> tuple[str, ...]:
        """Return the node ids *cast* names, most likely first."""
        probability = cast.probability(min_volume_m3=self.min_volume_m3)
        mask = self.named_mask(probability, warned_before=warned_before)
        order = np.argsort(-probability, kind="stable")
        return tuple(cast.node_ids[i] for i in order if mask[i])


@dataclass(frozen=True, slots=True)
class StagedWarningRule:
    """A :class:`WarningRule` that names more once the event has rained enough for the gauges to tell.

    Until the event's observed rain reaches ``after_mm`` it is ``rule``; from then on a location is named at
    probability ``later_probability`` (the first warning still waits for ``rule``'s expected FAR and hit rate).

    Attributes:
        rule: the rule early in the event.
        later_probability: the probability that names a location once ``after_mm`` has fallen.
        after_mm: observed rain of the event, mm.
    """

    rule: WarningRule = WarningRule()
    later_probability: float = 0.6
    after_mm: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.later_probability <= 1 or self.after_mm < 0:
            raise ConfigError("the later probability must be in (0, 1] and the rain threshold ≥ 0")

    @property
    def min_volume_m3(self) -> float:
        """The volume that makes a location flooded, m³ (``rule``'s)."""
        return self.rule.min_volume_m3

    def named_mask(
        self, probability: FloatArray, *, warned_before: bool, observed_mm: float = 0.0
    ) -> npt.NDArray[np.bool_]:
        """Return which locations a nowcast names after *observed_mm* of the event's rain."""
        level = self.later_probability if observed_mm >= self.after_mm - 1e-9 else self.rule.probability
        return self.rule._mask(probability, level, warned_before=warned_before)

    def named(self, cast: EnsembleNowcast, *, warned_before: bool, observed_mm: float) -> tuple[str, ...]:
        """Return the node ids *cast* names after *observed_mm* of the event's rain, most likely first."""
        probability = cast.probability(min_volume_m3=self.min_volume_m3)
        mask = self.named_mask(probability, warned_before=warned_before, observed_mm=observed_mm)
        order = np.argsort(-probability, kind="stable")
        return tuple(cast.node_ids[i] for i in order if mask[i])


def warned_volumes(cast: EnsembleNowcast, named: Collection[str]) -> FloatArray:
    """Return the middle member's event volume at the *named* nodes and 0 elsewhere, m³, in ``node_ids`` order:
    the water a warning's risk map ponds."""
    keep = np.array([n in named for n in cast.node_ids])
    return np.where(keep, cast.event_volume_m3[len(cast.members) // 2], 0.0)
