"""The lifeline health index (0–100) and the diagnosis: pure functions of indicator values and the table.

Each indicator is scored 0–100 from its four band edges (green, yellow, orange, red): 100 up to the green edge,
then linearly to 75 at the yellow edge, 50 at the orange edge and 0 at the red edge, and 0 beyond. The index of a
district is the weighted mean of its indicators' scores, the weights renormalised over the indicators that have a
value (an indicator that cannot be measured neither helps nor hurts). Every indicator worse than its green edge
opens a problem carrying the indicator's evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from models.healthcheck.indicators import Definition, Definitions, Evidence, IndicatorValue

BANDS = ("green", "yellow", "orange", "red")
_SCORES = (100.0, 75.0, 50.0, 0.0)


def _badness(definition: Definition, value: float) -> tuple[float, tuple[float, ...]]:
    """Value and edges turned so that larger is worse."""
    if definition.direction == "higher":
        return -value, tuple(-b for b in definition.bands)
    return value, definition.bands


def band(definition: Definition, value: float) -> str:
    """Return the colour band of *value*: ``green``, ``yellow``, ``orange`` or ``red``.

    Example:
        >>> from models.healthcheck.indicators import load_definitions
        >>> band(load_definitions()["water_leakage_rate"], 9.5)
        'yellow'
    """
    v, edges = _badness(definition, value)
    for name, edge in zip(BANDS[:3], edges[:3], strict=True):
        if v <= edge:
            return name
    return "red"


def score(definition: Definition, value: float) -> float:
    """Return the 0–100 score of *value* (piecewise linear between the band edges)."""
    v, edges = _badness(definition, value)
    if v <= edges[0]:
        return 100.0
    for k in range(1, 4):
        if v <= edges[k]:
            lo, hi = edges[k - 1], edges[k]
            return _SCORES[k - 1] + (_SCORES[k] - _SCORES[k - 1]) * (v - lo) / (hi - lo)
    return 0.0


@dataclass(frozen=True, slots=True)
class IndexPart:
    """One indicator's share of an index."""

    indicator_id: str
    value: float | None
    score: float | None
    weight: float
    band: str | None


@dataclass(frozen=True, slots=True)
class HealthIndex:
    """The health index of a district (``""`` = city), 0–100, or None when no weighted indicator has a value."""

    district: str
    value: float | None
    parts: tuple[IndexPart, ...]


def health_index(definitions: Definitions, values: Iterable[IndicatorValue], district: str) -> HealthIndex:
    """Return the index of *district* from its indicator *values* (other districts' values are ignored)."""
    mine = {v.indicator_id: v for v in values if v.district == district}
    parts: list[IndexPart] = []
    for definition in definitions.indicators:
        found = mine.get(definition.id)
        if found is None or found.value is None:
            parts.append(IndexPart(definition.id, None, None, definition.weight, None))
            continue
        parts.append(
            IndexPart(
                definition.id,
                found.value,
                score(definition, found.value),
                definition.weight,
                band(definition, found.value),
            )
        )
    scored = [p for p in parts if p.score is not None and p.weight > 0]
    total = sum(p.weight for p in scored)
    value = sum(p.weight * (p.score or 0.0) for p in scored) / total if total > 0 else None
    return HealthIndex(district, value, tuple(parts))


@dataclass(frozen=True, slots=True)
class Problem:
    """An indicator outside its green band in a district, with the evidence behind its value."""

    indicator_id: str
    district: str
    value: float
    target: float
    band: str
    evidence: Evidence
    detail: dict[str, object]


def diagnose(definitions: Definitions, values: Sequence[IndicatorValue]) -> list[Problem]:
    """Return a problem for every indicator value worse than its green edge, worst band first."""
    problems: list[Problem] = []
    for v in values:
        if v.value is None or v.indicator_id not in definitions:
            continue
        definition = definitions[v.indicator_id]
        colour = band(definition, v.value)
        if colour == "green":
            continue
        problems.append(
            Problem(v.indicator_id, v.district, v.value, definition.target, colour, v.evidence, dict(v.detail))
        )
    problems.sort(key=lambda p: (-BANDS.index(p.band), p.indicator_id, p.district))
    return problems
