"""What every scenario produces: timed sensor readings, and the ground truth of what really happened.

A scenario is computed first (fast, no broker) as a sequence of :class:`Step` values; the runner then writes the
recording and the ground truth, and publishes the messages paced by a speed factor. Faults are applied on the way
(:mod:`simulators.faults`), each with its own label, so an evaluation can tell a sensor fault from a real event.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SimReading:
    """One reading a simulated sensor reports: value in the sensor's canonical unit at ``ts`` (aware UTC)."""

    sensor_id: str
    ts: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Step:
    """Everything a scenario yields for one simulated instant."""

    ts: datetime
    readings: list[SimReading]


@dataclass(slots=True)
class GroundTruth:
    """What really happened in a scenario, written beside its recording as ``ground_truth.json``.

    Attributes:
        scenario: the scenario's kind and parameters (enough to run it again).
        events: what happened: ``{"kind": "flood" | "leak" | "burst" | "gas_leak" | …, "start": …, …}``.
        faults: every injected sensor fault: ``{"kind": "spike", "sensor_id": …, "start": …, "end": …}``.
        summary: totals a test can check (e.g. rain depth, flooded nodes, readings published).
    """

    scenario: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class Scenario(Protocol):
    """A computed scenario: its steps in time order, and its ground truth once the steps are exhausted."""

    name: str
    start: datetime
    duration: timedelta
    step: timedelta

    def steps(self) -> Iterator[Step]:
        """Yield the scenario's steps in time order."""
        ...

    def ground_truth(self) -> GroundTruth:
        """Return the ground truth (complete after :meth:`steps` has been exhausted)."""
        ...


def parameters(**values: Any) -> Mapping[str, Any]:
    """Return scenario parameters as JSON-ready values (datetimes as ISO strings, timedeltas as seconds)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, timedelta):
            out[key] = value.total_seconds()
        else:
            out[key] = value
    return out


class CombinedScenario:
    """Several scenarios run side by side (a storm and a leak in the same hours), their steps merged in time order.

    The ground truth lists every part's events; each part's scenario description is kept under ``parts``.
    """

    def __init__(self, parts: list[Scenario], *, name: str = "combined") -> None:
        if not parts:
            raise ValueError("a combined scenario needs at least one part")
        self.parts = parts
        self.name = name
        self.start = min(p.start for p in parts)
        self.duration = max(p.start + p.duration for p in parts) - self.start
        self.step = min(p.step for p in parts)

    def steps(self) -> Iterator[Step]:
        """Yield every part's steps merged by time; steps of the same instant become one."""
        merged = heapq.merge(*(p.steps() for p in self.parts), key=lambda s: s.ts)
        current: Step | None = None
        for step in merged:
            if current is not None and step.ts == current.ts:
                current = Step(current.ts, [*current.readings, *step.readings])
                continue
            if current is not None:
                yield current
            current = step
        if current is not None:
            yield current

    def ground_truth(self) -> GroundTruth:
        truths = [p.ground_truth() for p in self.parts]
        return GroundTruth(
            scenario={"kind": "combined", "name": self.name, "parts": [t.scenario for t in truths]},
            events=[event for t in truths for event in t.events],
            summary={"parts": [t.summary for t in truths]},
        )
