"""Scoring waterlogging warnings against what SWMM says happened on the true rain.

A *flooded location* is a node that floods at least ``min_volume_m3`` over the storm. The first warning is the
first nowcast in which any node is expected to flood that much; at it, the hit rate is the share of the truly
flooded locations it names and the false-alarm ratio the share of the locations it names that did not flood.
A location's lead time is from the first nowcast naming it to its true first flooding.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


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
    """

    first_warning: datetime | None
    hit_rate: float
    false_alarm_ratio: float
    lead_times_s: tuple[float, ...]
    missed: tuple[str, ...]
    truth: int
    warned: int

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
    flooded = {n for n, v in truth_volume_m3.items() if v >= min_volume_m3}
    first: datetime | None = None
    named_first: set[str] = set()
    first_named: dict[str, datetime] = {}
    for ts, volumes in forecasts:
        named = {n for n, v in volumes.items() if v >= min_volume_m3}
        if named and first is None:
            first, named_first = ts, named
        for n in named:
            first_named.setdefault(n, ts)
    hits = len(flooded & named_first)
    hit_rate = hits / len(flooded) if flooded else math.nan
    far = len(named_first - flooded) / len(named_first) if named_first else math.nan
    leads = []
    missed = []
    for n in sorted(flooded):
        at = first_named.get(n)
        if at is not None and n in truth_first_flood and at <= truth_first_flood[n]:
            leads.append((truth_first_flood[n] - at).total_seconds())
        else:
            missed.append(n)
    return WarningScore(first, hit_rate, far, tuple(leads), tuple(missed), len(flooded), len(named_first))
