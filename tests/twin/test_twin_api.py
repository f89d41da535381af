"""The twin over HTTP: layers, an asset's details with topology, and spatial queries."""

from __future__ import annotations

import httpx
import pytest

from twin.democity.layout import build_layout
from twin.sensors import Network
from twin.store.assets import save_city

from .test_queries import _city

pytestmark = pytest.mark.integration


def test_twin_api_serves_layers_assets_and_near(db, viewer_url: str) -> None:  # type: ignore[no-untyped-def]
    city = _city(build_layout())
    save_city(db, city)
    info = httpx.get(f"{viewer_url}/api/twin").json()
    assert info["layers"]["water"]["version"] == 1
    assert info["layers"]["buildings"]["counts"]["buildings"] == len(city.buildings)

    pipe = httpx.get(f"{viewer_url}/api/twin/assets/water:L0100").json()
    assert pipe["link"]["link_id"] == "L0100" and pipe["isolation"]["valves"]
    assert 114.9 < pipe["lon"] < 115.1 and 27.0 < pipe["lat"] < 27.2
    manhole = httpx.get(f"{viewer_url}/api/twin/assets/drainage:X0505").json()
    assert manhole["sensors"] == [] and manhole["path_to_outfall"]  # the sensor list comes from the store
    node = city.networks[Network.WATER].nodes["X0303"]
    hits = httpx.get(f"{viewer_url}/api/twin/near", params={"x": node.x_m, "y": node.y_m, "radius": 25}).json()
    assert hits[0]["distance_m"] == 0 and {"water:X0303", "drainage:X0303"} <= {h["ref"] for h in hits}
    assert httpx.get(f"{viewer_url}/api/twin/assets/water:nope").status_code == 404
