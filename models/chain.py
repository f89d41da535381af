"""The detectors ingest runs on every batch, in order, and how their learned state is kept.

Order matters: sensor health runs first, and the readings it finds faulty are passed as ``suspect`` to every
detector after it, so a faulty sensor raises a maintenance alert and not a lifeline warning. The threshold
detector follows (it grades each sensor against its limits), then the learned ones.

``evaluate`` changes nothing; ``commit`` adopts every detector's state once the batch and its alerts are stored.
:meth:`DetectorChain.dump_states` returns each detector's state as JSON-ready data, which ingest stores in the
``detector_state`` table (:mod:`twin.store.detector_state`); :meth:`DetectorChain.load_states` takes it back after
a restart. A state that cannot be read is logged and that detector starts fresh: losing learned statistics is
recoverable (they are learned again), refusing to start is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.baseline import BaselineDetector
from models.sensor_health import SensorHealthDetector, state_from_json, state_to_json
from models.streaming import StreamDetector, StreamResult, Suspect, trusted_mask
from models.thresholds import SensorState, ThresholdDetector
from twin.alerts import AlertChange
from twin.errors import LifelineError
from twin.readings import Reading, ReadingBatch
from twin.sensors import Sensor

log = logging.getLogger(__name__)


class HealthStream:
    """:class:`~models.sensor_health.SensorHealthDetector` under the streaming contract."""

    name = "sensor_health"

    def __init__(self, sensors: Mapping[str, Sensor]) -> None:
        self.detector = SensorHealthDetector(sensors)

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        result = self.detector.evaluate(readings, now=now)
        return StreamResult(result.changes, result, frozenset(result.suspect))

    def commit(self, result: StreamResult) -> None:
        self.detector.commit(result.state)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        self.detector.update_sensors(sensors)

    def dump_state(self) -> dict[str, Any]:
        return {"sensors": {sid: state_to_json(st) for sid, st in self.detector.state.items()}}

    def load_state(self, data: Mapping[str, Any]) -> None:
        restored = {}
        for sid, entry in dict(data.get("sensors", {})).items():
            try:
                restored[sid] = state_from_json(entry)
            except (TypeError, ValueError) as exc:
                log.warning("sensor health state of %s unreadable (%s): it learns again", sid, exc)
        self.detector = SensorHealthDetector(self.detector.sensors, restored, rules=self.detector.rules)


class ThresholdStream:
    """:class:`~models.thresholds.ThresholdDetector` under the streaming contract.

    Its state (active grades, newest reading time) is rebuilt from the stored alerts at start, so it stores nothing.
    Readings that sensor health found suspect are not graded.
    """

    name = "threshold"

    def __init__(self, sensors: Mapping[str, Sensor], state: Mapping[str, SensorState] | None = None) -> None:
        self.detector = ThresholdDetector(sensors, state)

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        trusted: Sequence[Reading] = readings
        if suspect and isinstance(readings, ReadingBatch):
            trusted = readings.take(trusted_mask(readings, suspect))
        elif suspect:
            trusted = [r for r in readings if (r.sensor_id, r.ts) not in suspect]
        detection = self.detector.evaluate(trusted)
        return StreamResult(detection.changes, detection)

    def commit(self, result: StreamResult) -> None:
        self.detector.commit(result.state)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        self.detector.update_sensors(sensors)

    def dump_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, data: Mapping[str, Any]) -> None:
        return None


@dataclass(slots=True)
class ChainResult:
    """What the chain concluded from one batch: every detector's result, in order, and their changes together."""

    results: list[tuple[StreamDetector, StreamResult]]
    changes: list[AlertChange]
    suspect: frozenset[tuple[str, datetime]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        """The names of the detectors that changed an alert in this batch."""
        return [detector.name for detector, result in self.results if result.changes]


class DetectorChain:
    """Run streaming detectors in order on each batch.

    Args:
        detectors: the detectors, sensor health first.

    Example:
        >>> from twin.demo import demo_sensors
        >>> chain = DetectorChain.default({s.sensor_id: s for s in demo_sensors()})
        >>> [d.name for d in chain.detectors]
        ['sensor_health', 'threshold', 'anomaly']
    """

    def __init__(self, detectors: Sequence[StreamDetector]) -> None:
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique: {names}")
        self.detectors = list(detectors)
        self.seconds: dict[str, float] = {d.name: 0.0 for d in detectors}
        """Time spent in each detector since start, seconds (for health and profiling)."""

    @classmethod
    def default(
        cls,
        sensors: Mapping[str, Sensor],
        *,
        threshold_state: Mapping[str, SensorState] | None = None,
        extra: Sequence[Callable[[Mapping[str, Sensor]], StreamDetector]] = (),
    ) -> DetectorChain:
        """Return the standard chain: sensor health, thresholds, per-sensor baseline, then *extra* factories.

        A factory that cannot build its detector for these sensors (a twin it cannot model, a missing meter) is
        logged and left out: the other detectors still run, rather than ingest refusing to start.
        """
        detectors: list[StreamDetector] = [
            HealthStream(sensors),
            ThresholdStream(sensors, threshold_state),
            BaselineDetector(sensors),
        ]
        for factory in extra:
            try:
                detectors.append(factory(sensors))
            except (LifelineError, ValueError, KeyError) as exc:
                log.warning("a network detector could not be built and is left out of the chain: %s", exc)
        return cls(detectors)

    def evaluate(self, readings: Sequence[Reading], *, now: datetime) -> ChainResult:
        """Run every detector on *readings* (received at *now*); change nothing."""
        suspect: frozenset[tuple[str, datetime]] = frozenset()
        results: list[tuple[StreamDetector, StreamResult]] = []
        changes: list[AlertChange] = []
        timings: dict[str, float] = {}
        for detector in self.detectors:
            started = time.perf_counter()
            result = detector.evaluate(readings, now=now, suspect=suspect)
            timings[detector.name] = time.perf_counter() - started
            if result.suspect:
                suspect = suspect | result.suspect
            results.append((detector, result))
            changes.extend(result.changes)
        return ChainResult(results, changes, suspect, timings)

    def commit(self, result: ChainResult) -> None:
        """Adopt every detector's state from *result* (after its changes are stored)."""
        for detector, res in result.results:
            detector.commit(res)
        for name, seconds in result.timings.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Give every detector new sensor definitions."""
        for detector in self.detectors:
            detector.update_sensors(sensors)

    def dump_states(self, names: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        """Return each detector's committed state by name (only *names* if given; empty states are left out)."""
        out = {}
        for detector in self.detectors:
            if names is not None and detector.name not in names:
                continue
            state = detector.dump_state()
            if state:
                out[detector.name] = state
        return out

    def load_states(self, states: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Restore states by detector name; return the names restored. Unreadable states are logged and skipped."""
        restored = []
        for detector in self.detectors:
            data = states.get(detector.name)
            if data is None:
                continue
            try:
                detector.load_state(data)
                restored.append(detector.name)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("stored state of detector %s unreadable (%s): it starts fresh", detector.name, exc)
        return restored
