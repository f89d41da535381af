"""Which network detectors run for a city: the factories ingest and ``lifeline evaluate`` add to the chain.

Sensor health, thresholds and the per-sensor baseline always run (:meth:`models.chain.DetectorChain.default`);
the detectors here need the twin (its networks and underground spaces), so they are built for a city:

- ``drainage`` (:class:`models.drainage.DrainageDetector`): surcharge, rising level, overflow imminent — needs the
  drainage network for crowns and rims (falls back on the sensors' limits without it);
- ``gas_leak`` (:class:`models.gas.GasLeakDetector`): methane rising above its background before 20 %LEL, pressure
  drops, candidate pipes near the spaces that alarm — when the city has a gas network;
- ``water_leak`` (:class:`models.water_leak.WaterLeakDetector`): leaks and bursts from pressure and flow, located
  with the EPANET model — when the city has a water network that EPANET can run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from models.streaming import StreamDetector
from twin.errors import LifelineError
from twin.model import City
from twin.sensors import Network, Sensor

log = logging.getLogger(__name__)

Factory = Callable[[Mapping[str, Sensor]], StreamDetector]


def learned_detectors(city: City | None) -> list[Factory]:
    """Return the factories of the network detectors the city's twin supports (none without a twin)."""
    if city is None:
        return []
    from models.drainage import DrainageDetector
    from models.gas import GasLeakDetector

    factories: list[Factory] = []
    if Network.DRAINAGE in city.networks:
        factories.append(lambda sensors: DrainageDetector(sensors, city=city))
    if Network.GAS in city.networks:
        factories.append(lambda sensors: GasLeakDetector(sensors, city=city))
    water = city.networks.get(Network.WATER)
    if water is not None:
        from models.water_leak import WaterLeakDetector

        def water_leak(sensors: Mapping[str, Sensor]) -> StreamDetector:
            return WaterLeakDetector(water, sensors)

        factories.append(water_leak)
    return factories


def build_all(city: City | None, sensors: Mapping[str, Sensor]) -> list[StreamDetector]:
    """Build the network detectors for *city*; one that cannot be built is logged and left out."""
    built = []
    for factory in learned_detectors(city):
        try:
            built.append(factory(sensors))
        except (LifelineError, ValueError, KeyError) as exc:
            log.warning("a network detector could not be built and is left out: %s", exc)
    return built
