"""Which network detectors run for a city: the factories ingest and ``lifeline evaluate`` add to the chain.

Sensor health, thresholds and the per-sensor baseline always run (:meth:`models.chain.DetectorChain.default`);
the detectors here need the twin (its networks and underground spaces), so they are built for a city:

- ``drainage`` (:class:`models.drainage.DrainageDetector`): surcharge, rising level, overflow imminent — needs the
  drainage network for crowns and rims (falls back on the sensors' limits without it);
- ``gas_leak`` (:class:`models.gas.GasLeakDetector`): methane rising above its background before 20 %LEL, pressure
  drops, candidate pipes near the spaces that alarm — when the city has a gas network;
- ``water_leak`` (:class:`models.water_leak.WaterLeakDetector`): leaks and bursts from pressure and flow, located
  with the EPANET model — when the city has a water network that EPANET can run;
- ``water_night_flow`` (:class:`models.night_flow.NightFlowDetector`): a leak in the supply zone from its metered
  inflow at night, once a day — when the city has a water network whose links out of its reservoirs and tanks all
  carry a flow sensor. Without that metering :func:`build_all` logs it and leaves it out; the chain that ingest
  and ``lifeline evaluate`` build from the factories (which must not fail) gets it idle instead, and it starts
  learning once the sensors it needs are defined.
- ``water_control`` (:class:`models.pump_control.PumpControlDetector`): a pump or valve that does not obey the
  level or pressure controls of the water network's EPANET model — when that model has such controls (the demo
  city's has none); idle until a control has sensors on both its node and its link.
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
        from models.night_flow import NightFlowDetector

        factories.append(_idle_logged(lambda sensors: NightFlowDetector(water, sensors, require_metering=False)))
        from models.pump_control import PumpControlDetector, rules_of

        rules = rules_of(water)
        if rules:
            factories.append(_idle_logged(lambda sensors: PumpControlDetector(water, sensors, rules=rules)))
    return factories


def _idle_logged(make: Factory) -> Factory:
    """*make*, saying in the log when the detector it builds is idle for want of sensors (``unmetered``)."""

    def factory(sensors: Mapping[str, Sensor]) -> StreamDetector:
        detector = make(sensors)
        unmetered = getattr(detector, "unmetered", None)
        if unmetered:
            log.info("%s is idle: %s", detector.name, unmetered)
        return detector

    return factory


def build_all(city: City | None, sensors: Mapping[str, Sensor]) -> list[StreamDetector]:
    """Build the network detectors for *city*; one that cannot be built is logged and left out."""
    built = []
    for factory in learned_detectors(city):
        try:
            detector = factory(sensors)
        except (LifelineError, ValueError, KeyError) as exc:
            log.warning("a network detector could not be built and is left out: %s", exc)
            continue
        unmetered = getattr(detector, "unmetered", None)
        if unmetered:
            log.warning("%s could not be built and is left out: %s", detector.name, unmetered)
            continue
        built.append(detector)
    return built
