"""Which learned detectors run for a city: the factories ingest and ``lifeline evaluate`` add to the chain.

Sensor health, thresholds and the per-sensor baseline always run (:meth:`models.chain.DetectorChain.default`);
the detectors here need the twin (its networks and underground spaces), so they are built for a city.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from models.streaming import StreamDetector
from twin.model import City
from twin.sensors import Sensor

Factory = Callable[[Mapping[str, Sensor]], StreamDetector]


def learned_detectors(city: City | None) -> list[Factory]:
    """Return the factories of the network detectors the city's twin supports (none without a twin)."""
    if city is None:
        return []
    return []
