"""The waterlogging risk map on the 3D scene: ponds and graded places drawn on the ground, a legend, a layer toggle."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, assess, risk_geojson
from twin.model import City
from twin.sensors import Network
from twin.store.db import DictConnection
from twin.store.risk_maps import save_risk_map
from viewer.app import create_app

from . import test_browser_scene as scene_test
from .conftest import ARTIFACTS, serve
from .test_browser_scene import READY_TIMEOUT_MS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

browser = scene_test.browser
city = scene_test.city
scene_dir = scene_test.scene_dir


def _risk_map(city: City, flood_m3: float) -> dict[str, Any]:
    """The risk map of the demo city with *flood_m3* spilling from every seventh drainage node (ponding model)."""
    model = PondingModel(city.networks[Network.DRAINAGE], city.terrain, city.low_points.values())
    assets = RiskAssets.for_city(city, model)
    volumes = {node: flood_m3 if k % 7 == 0 else 0.0 for k, node in enumerate(model.node_ids)}
    risk = assess(assets, model.fill(volumes), issued=datetime.now(UTC), source="nowcast")
    return risk_geojson(risk, city.crs)


def test_risk_map_is_drawn_on_the_scene_with_a_legend_and_a_toggle(
    browser: Any, pg_url: str, schema: str, db: DictConnection, city: City, scene_dir: Path
) -> None:
    geojson = _risk_map(city, 300.0)
    ponds = sum(f["properties"]["kind"] == "pond" for f in geojson["features"])
    graded = len(geojson["features"]) - ponds
    assert ponds >= 3 and graded >= 10
    map_id = save_risk_map(db, geojson)
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir)) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/scene")
        page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
        page.wait_for_function("id => lifelineScene.risk.id === id", arg=map_id, timeout=20_000)
        risk = page.evaluate("() => lifelineScene.risk")
        assert (risk["ponds"], risk["graded"], risk["visible"]) == (ponds, graded, True)
        legend = page.locator("#legend").inner_text()
        assert "内涝风险图" in legend and "Ⅰ级 极高" in legend and "积水区" in legend
        assert f"风险对象 {graded} 个" in legend and f"积水区 {ponds} 处" in legend

        # Drawn: seen alone, the risk layer covers part of the view; switched off, nothing of it is drawn.
        alone = page.evaluate("() => lifelineScene.coverage(['risk'])")
        assert alone > 0.002
        page.click("input[data-layer='risk']")
        assert page.evaluate("() => lifelineScene.risk.visible") is False
        page.click("input[data-layer='risk']")
        assert page.evaluate("() => lifelineScene.risk.visible") is True
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "scene_risk_map.png"))

        # From above, buildings hidden and the ground opaque: the ponds and the places at risk on the ground.
        page.click("input[data-layer='buildings']")
        page.evaluate("() => lifelineScene.setGround('opaque')")
        assert page.evaluate("() => lifelineScene.frameRisk()") is True
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "scene_risk_map_close.png"))
        page.click("#lang")
        assert "Waterlogging risk" in page.locator("#legend").inner_text()
        page.close()
    assert errors == []
