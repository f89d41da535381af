"""Scoring waterlogging warnings against what SWMM says happened on the true rain.

A *flooded location* is a node that floods at least ``min_volume_m3`` over the storm. The first warning is the
first nowcast in which any node is expected to flood that much; at it, the hit rate is the share of the truly
flooded locations it names and the false-alarm ratio the share of the locations it names that did not flood.
A location's lead time is from the first nowcast naming it to its true first flooding.

Scored per location instead (each location's own first warning, as the alerts reach the operations centre): a
truly flooded location is a hit when some nowcast named it before it flooded, and every location any nowcast named
that did not flood is a false alarm (``PooledScore.location_hit_rate``, ``location_false_alarm_ratio``). This
counts every warning the event issued, not only its first nowcast's.

A location named at the first warning counts as a hit even when it had flooded already (a first warning issued
late still tells where the water is); ``hit_rate_in_time`` counts only those named before they flooded.
:func:`score_warnings` names the locations whose forecast volume reaches ``min_volume_m3``;
:func:`score_named` takes the named locations as they are (e.g. from an ensemble's probabilities).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class WarningScore:
    """How one storm's nowcasts did.

    Attributes:
        first_warning: time of the first nowcast naming a location (None: never warned).
        hit_rate: truly flooded locations named at the first warning / truly flooded locations (NaN if none).
        false_alarm_ratio: locations named at the first warning that did not flood / locations named (NaN if none).
        lead_times_s: per truly flooded location that was warned before it flooded, seconds.
        missed: truly flooded locations never named before they flooded.
        truth: how many locations flooded; ``warned`` how many the first warning named.
        hit_rate_in_time: truly flooded locations named at the first warning before they flooded / truly flooded
            locations (NaN if none).
        named_ever: locations any nowcast named; ``false_alarms_ever`` those of them that did not flood.
    """

    first_warning: datetime | None
    hit_rate: float
    false_alarm_ratio: float
    lead_times_s: tuple[float, ...]
    missed: tuple[str, ...]
    truth: int
    warned: int
    hit_rate_in_time: float = math.nan
    named_ever: int = 0
    false_alarms_ever: int = 0

    @property
    def median_lead_s(self) -> float:
        """Median lead time, seconds (NaN when nothing was warned in time)."""
        return statistics.median(self.lead_times_s) if self.lead_times_s else math.nan


def score_warnings(
    forecasts: Sequence[tuple[datetime, Mapping[str, float]]],
    truth_volume_m3: Mapping[str, float],
    truth_first_flood: Mapping[str, datetime],
    *,
    min_volume_m3: float = 10.0,
) -> WarningScore:
    """Score a storm's nowcasts.

    Args:
        forecasts: (issue time, expected flood volume by node, m³), in time order.
        truth_volume_m3: flooded volume by node on the true rain, m³.
        truth_first_flood: first flooding by node on the true rain.
        min_volume_m3: the volume that makes a location flooded, m³ (forecast and truth alike).
    """
    named = [(ts, {n for n, v in volumes.items() if v >= min_volume_m3}) for ts, volumes in forecasts]
    return score_named(named, truth_volume_m3, truth_first_flood, min_volume_m3=min_volume_m3)


def score_named(
    named: Sequence[tuple[datetime, Collection[str]]],
    truth_volume_m3: Mapping[str, float],
    truth_first_flood: Mapping[str, datetime],
    *,
    min_volume_m3: float = 10.0,
) -> WarningScore:
    """Score a storm's warnings given the locations each nowcast names.

    Args:
        named: (issue time, the locations it names), in time order; the first non-empty one is the first warning.
        truth_volume_m3: flooded volume by node on the true rain, m³.
        truth_first_flood: first flooding by node on the true rain.
        min_volume_m3: the volume that makes a location truly flooded, m³.
    """
    flooded = {n for n, v in truth_volume_m3.items() if v >= min_volume_m3}
    first: datetime | None = None
    named_first: set[str] = set()
    first_named: dict[str, datetime] = {}
    for ts, names in named:
        if names and first is None:
            first, named_first = ts, set(names)
        for n in names:
            first_named.setdefault(n, ts)
    hits = len(flooded & named_first)
    hit_rate = hits / len(flooded) if flooded else math.nan
    far = len(named_first - flooded) / len(named_first) if named_first else math.nan
    in_time = sum(
        1
        for n in flooded & named_first
        if first is not None and n in truth_first_flood and first <= truth_first_flood[n]
    )
    leads = []
    missed = []
    for n in sorted(flooded):
        at = first_named.get(n)
        if at is not None and n in truth_first_flood and at <= truth_first_flood[n]:
            leads.append((truth_first_flood[n] - at).total_seconds())
        else:
            missed.append(n)
    return WarningScore(
        first,
        hit_rate,
        far,
        tuple(leads),
        tuple(missed),
        len(flooded),
        len(named_first),
        in_time / len(flooded) if flooded else math.nan,
        len(first_named),
        len(first_named.keys() - flooded),
    )


@dataclass(frozen=True, slots=True)
class StormCase:
    """One storm's chain of ensemble nowcasts, kept as probabilities, with what SWMM says happened on the true rain.

    Attributes:
        name: for people.
        times: issue time of each nowcast, in time order.
        node_ids: node order of ``probability``.
        probability: per nowcast and node, the weight of the rain futures in which the node floods at least
            ``min_volume_m3`` over the event; shape (nowcasts, nodes).
        truth_volume_m3: flooded volume by node on the true rain, m³.
        truth_first_flood: first flooding by node on the true rain.
        min_volume_m3: the volume that makes a location flooded, m³.
        observed_mm: per nowcast, the event's rain the gauges had seen, mm (None: not kept, taken as 0).
    """

    name: str
    times: tuple[datetime, ...]
    node_ids: tuple[str, ...]
    probability: npt.NDArray[np.float64]
    truth_volume_m3: Mapping[str, float]
    truth_first_flood: Mapping[str, datetime]
    min_volume_m3: float = 10.0
    observed_mm: tuple[float, ...] | None = None


class NamingRule(Protocol):
    """What a warning rule must do to be scored (:class:`models.waterlogging.ensemble.WarningRule`)."""

    def named_mask(
        self, probability: npt.NDArray[np.float64], *, warned_before: bool, observed_mm: float = 0.0
    ) -> npt.NDArray[np.bool_]: ...


def score_rule(rule: NamingRule, case: StormCase) -> WarningScore:
    """Score the warnings *rule* would have given over *case*'s nowcasts."""
    named: list[tuple[datetime, list[str]]] = []
    warned = False
    observed = case.observed_mm if case.observed_mm is not None else (0.0,) * len(case.times)
    for ts, row, mm in zip(case.times, case.probability, observed, strict=True):
        mask = rule.named_mask(row, warned_before=warned, observed_mm=mm)
        names = [case.node_ids[i] for i in np.flatnonzero(mask)]
        warned = warned or bool(names)
        named.append((ts, names))
    return score_named(named, case.truth_volume_m3, case.truth_first_flood, min_volume_m3=case.min_volume_m3)


@dataclass(frozen=True, slots=True)
class PooledScore:
    """Warning scores pooled over storms that flood: locations added up over storms, lead times put together.

    Attributes:
        storms: storms with at least one flooded location; ``warned_storms`` how many of them were warned.
        hits, flooded: hits at the first warning and truly flooded locations (hit rate = hits / flooded).
        hits_in_time: hits named before they flooded.
        false_alarms, named: named locations that did not flood and named locations at the first warning.
        lead_times_s: lead times of all locations warned before they flooded, seconds.
        missed: flooded locations never named before they flooded.
        false_warnings: warnings in storms where nothing flooded; ``dry_named`` the locations their first
            warnings named (all false alarms).
        named_ever: locations any nowcast named in the storms that flood; ``false_alarms_ever`` those that did not
            flood; ``dry_named_ever`` the locations any nowcast named in storms where nothing flooded.
    """

    storms: int
    warned_storms: int
    hits: int
    flooded: int
    hits_in_time: int
    false_alarms: int
    named: int
    lead_times_s: tuple[float, ...]
    missed: int
    false_warnings: int
    dry_named: int = 0
    named_ever: int = 0
    false_alarms_ever: int = 0
    dry_named_ever: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.flooded if self.flooded else math.nan

    @property
    def hit_rate_in_time(self) -> float:
        return self.hits_in_time / self.flooded if self.flooded else math.nan

    @property
    def false_alarm_ratio(self) -> float:
        return self.false_alarms / self.named if self.named else math.nan

    @property
    def false_alarm_ratio_all(self) -> float:
        """False-alarm ratio counting the first warnings of storms where nothing flooded too."""
        named = self.named + self.dry_named
        return (self.false_alarms + self.dry_named) / named if named else math.nan

    @property
    def median_lead_s(self) -> float:
        return statistics.median(self.lead_times_s) if self.lead_times_s else math.nan

    @property
    def location_hit_rate(self) -> float:
        """Truly flooded locations whose own first warning came before they flooded / truly flooded locations."""
        return (self.flooded - self.missed) / self.flooded if self.flooded else math.nan

    @property
    def location_false_alarm_ratio(self) -> float:
        """Locations warned at any nowcast that did not flood / locations warned, storms where nothing flooded
        included (each location's first warning either comes true or is a false alarm)."""
        named = self.named_ever + self.dry_named_ever
        return (self.false_alarms_ever + self.dry_named_ever) / named if named else math.nan

    @property
    def location_critical_success_index(self) -> float:
        """Locations warned in time / (flooded locations + locations falsely warned), per location."""
        total = self.flooded + self.false_alarms_ever + self.dry_named_ever
        return (self.flooded - self.missed) / total if total else 0.0

    @property
    def critical_success_index(self) -> float:
        """Hits in time / (flooded locations + false alarms); 0 when there is nothing to count."""
        total = self.flooded + self.false_alarms
        return self.hits_in_time / total if total else 0.0


def pool_scores(scores: Sequence[WarningScore]) -> PooledScore:
    """Pool per-storm scores (storms where nothing flooded count only their false warnings)."""
    wet = [s for s in scores if s.truth > 0]
    return PooledScore(
        storms=len(wet),
        warned_storms=sum(1 for s in wet if s.first_warning is not None),
        hits=sum(round(s.hit_rate * s.truth) for s in wet),
        flooded=sum(s.truth for s in wet),
        hits_in_time=sum(round(s.hit_rate_in_time * s.truth) for s in wet if not math.isnan(s.hit_rate_in_time)),
        false_alarms=sum(round(s.false_alarm_ratio * s.warned) for s in wet if s.warned),
        named=sum(s.warned for s in wet),
        lead_times_s=tuple(t for s in wet for t in s.lead_times_s),
        missed=sum(len(s.missed) for s in wet),
        false_warnings=sum(1 for s in scores if s.truth == 0 and s.warned > 0),
        dry_named=sum(s.warned for s in scores if s.truth == 0),
        named_ever=sum(s.named_ever for s in wet),
        false_alarms_ever=sum(s.false_alarms_ever for s in wet),
        dry_named_ever=sum(s.named_ever for s in scores if s.truth == 0),
    )


def choose_rule(
    rules: Sequence[NamingRule],
    cases: Sequence[StormCase],
    *,
    min_hit_rate: float = 0.9,
    max_false_alarm_ratio: float = 0.2,
    per_location: bool = False,
) -> tuple[NamingRule, PooledScore]:
    """Return the rule with the longest median lead time among those meeting both targets on *cases* (pooled),
    with its pooled score; when none meets them, the one with the largest critical success index (hits in time /
    (flooded locations + false alarms), the threat score of forecast verification), then the longest lead.

    The hit rate here is the one *in time* (locations named at the first warning before they flooded): a rule
    that waits until the water is there would otherwise look perfect. With *per_location* the targets and the
    index are the per-location ones (each location's own first warning, every location warned counted).

    Raises:
        ValueError: no rules or no cases.
    """
    if not rules or not cases:
        raise ValueError("choose a rule from at least one rule and one storm")
    scored = [(rule, pool_scores([score_rule(rule, c) for c in cases])) for rule in rules]

    def figures(p: PooledScore) -> tuple[float, float, float]:
        if per_location:
            return p.location_hit_rate, p.location_false_alarm_ratio, p.location_critical_success_index
        return p.hit_rate_in_time, p.false_alarm_ratio, p.critical_success_index

    def meets(p: PooledScore) -> bool:
        hit, far, _ = figures(p)
        return hit >= min_hit_rate and far <= max_false_alarm_ratio

    good = [(r, p) for r, p in scored if meets(p)]
    if good:
        return max(good, key=lambda rp: (rp[1].median_lead_s, figures(rp[1])[0], -figures(rp[1])[1]))
    return max(scored, key=lambda rp: (figures(rp[1])[2], np.nan_to_num(rp[1].median_lead_s)))
