"""Assemble the demo city (吉安示范片区): ground, streets, buildings, the three networks, spaces and sensors."""

from __future__ import annotations

import logging
import time

from twin.democity.drainage import build_drainage
from twin.democity.gas import build_gas
from twin.democity.layout import CRS, build_layout
from twin.democity.sensors import place_sensors
from twin.democity.water import build_water
from twin.model import City
from twin.sensors import Network

log = logging.getLogger(__name__)

DEMO_CITY_NAME = "吉安示范片区"


def build_demo_city(seed: int = 2026, *, scale: int = 1) -> City:
    """Generate the demo city from *seed* (the same seed gives the same city).

    Args:
        seed: random seed of the ground, streets and buildings.
        scale: area multiple (1: ~2 km²; 10 for benchmarks).
    """
    started = time.perf_counter()
    layout = build_layout(seed, scale=scale)
    city = City(
        name=DEMO_CITY_NAME if scale == 1 else f"{DEMO_CITY_NAME} ×{scale}",
        crs=CRS,
        terrain=layout.terrain,
        buildings=dict(layout.buildings),
        low_points=dict(layout.low_points),
        streets=layout.streets(),
        street_kinds=layout.street_kinds(),
        rivers=[layout.river],
    )
    drainage, _subcatchments, _inp = build_drainage(layout)
    water, _water_inp = build_water(layout)
    gas, _gas_net, spaces = build_gas(layout)
    city.networks = {Network.DRAINAGE: drainage, Network.WATER: water, Network.GAS: gas}
    city.spaces = {s.space_id: s for s in spaces}
    city.sensors = place_sensors(city)
    log.info(
        "demo city built in %.1f s: %d buildings, %d sensors",
        time.perf_counter() - started,
        len(city.buildings),
        len(city.sensors),
    )
    return city
