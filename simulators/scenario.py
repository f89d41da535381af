"""What every scenario produces: timed sensor readings, and the ground truth of what really happened.

A scenario is computed first (fast, no broker) as a sequence of :class:`Step` values; the runner then writes the
recording and the ground truth, and publishes the messages paced by a speed factor. Faults are applied on the way
(:mod:`simulators.faults`), each with its own label, so an evaluation can tell a sensor fault from a real event.
"""

from __future__ import annotations

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
