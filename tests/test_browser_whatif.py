"""What-ifs on the 3D page: a design storm's risk map from the surrogate at once, and back to the live map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from models.waterlogging.nowcast import swmm_pool
from models.waterlogging.surrogate import StormFeatures, Surrogate, simulate_storms
from twin.model import City
from twin.sensors import Network
from twin.store.db import DictConnection
from twin.store.risk_maps import save_risk_map
from viewer.app import create_app
from viewer.whatif import WhatIf

from . import test_browser_scene as scene_test
from .conftest import ARTIFACTS, serve
from .test_browser_scene import READY_TIMEOUT_MS
from .test_browser_scene_risk import _risk_map

pytestmark = [pytest.mark.integration, pytest.mark.browser]

browser = scene_test.browser
city = scene_test.city
scene_dir = scene_test.scene_dir

TRAINING = [StormFeatures(rp, d, 0.4, 10) for rp in (2, 10, 50, 100) for d in (60, 180)]
"""A small training set over the what-if panel's choices (the acceptance figures use 60 sampled storms)."""


@pytest.fixture(scope="module")
def surrogate_dir(city: City, tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = city.networks[Network.DRAINAGE]
    with swmm_pool(2) as pool:
        runs = simulate_storms(network, TRAINING, executor=pool)
    return Surrogate.fit(runs, network_name=network.name).save(tmp_path_factory.mktemp("surrogate"))


def test_the_page_shows_a_what_if_storm_and_goes_back_to_the_live_map(
    browser: Any, pg_url: str, schema: str, db: DictConnection, city: City, scene_dir: Path, surrogate_dir: Path
) -> None:
    live_id = save_risk_map(db, _risk_map(city, 300.0))
    whatif = WhatIf.load(surrogate_dir, city)
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir, whatif=whatif)) as url:
        assert httpx.get(f"{url}/api/info").json()["whatif"] is True
        api = httpx.get(f"{url}/api/risk/whatif", params={"return_period": 100, "duration_min": 180}).json()
        assert api["properties"]["whatif"]["return_period_years"] == 100 and api["properties"]["outside_training"] == []
        graded = [f for f in api["features"] if f["properties"].get("grade")]
        assert graded and all(f["properties"]["eta_s"] is not None for f in graded)  # times, as SWMM gives
        refused = httpx.get(f"{url}/api/risk/whatif", params={"return_period": 5000})
        assert refused.status_code == 422 and "return period" in refused.json()["detail"]
        assert httpx.get(f"{url}/api/risk/map").json()["properties"]["id"] == live_id  # nothing stored

        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/scene")
        page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
        page.wait_for_function("id => lifelineScene.risk.id === id", arg=live_id, timeout=20_000)
        page.wait_for_selector("#whatif-panel:not([hidden])", timeout=10_000)

        def show(rp: int, duration: int) -> dict[str, Any]:
            page.select_option("#whatif-rp", str(rp))
            page.select_option("#whatif-duration", str(duration))
            page.click("#whatif-run")
            page.wait_for_selector(f"body[data-whatif='{rp}/{duration}']", timeout=10_000)
            shown: dict[str, Any] = page.evaluate("() => lifelineScene.risk")
            return shown

        small, large = show(2, 60), show(100, 180)
        assert large["whatif"] is True and large["visible"] is True and large["id"] is None
        assert large["graded"] > small["graded"]  # a heavier storm puts more places at risk
        note = page.locator("#whatif-note").inner_text()
        assert "假设 100 年一遇、180 分钟暴雨" in note and f"风险对象 {large['graded']} 个" in note and "ms" in note
        assert "快速推演（假设）" in page.locator("#legend").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.click("input[data-layer='buildings']")
        page.evaluate("() => lifelineScene.setGround('opaque')")
        assert page.evaluate("() => lifelineScene.frameRisk()") is True
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "scene_whatif.png"))

        # The periodic refresh leaves the what-if alone; "back to live" brings the stored map back.
        page.evaluate("() => lifelineScene.loadRiskMap()")
        assert page.evaluate("() => lifelineScene.risk.whatif") is True
        page.click("#whatif-live")
        page.wait_for_function("id => lifelineScene.risk.id === id", arg=live_id, timeout=20_000)
        assert page.locator("#whatif-live").is_hidden()
        assert "不运行 SWMM" in page.locator("#whatif-note").inner_text()
        page.click("#lang")
        assert page.locator("#whatif-run").inner_text() == "Show"
        page.close()
    assert errors == []


def test_without_a_surrogate_the_api_says_how_to_get_one_and_the_page_hides_the_panel(
    browser: Any, pg_url: str, schema: str, scene_dir: Path
) -> None:
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir)) as url:
        assert httpx.get(f"{url}/api/info").json()["whatif"] is False
        res = httpx.get(f"{url}/api/risk/whatif")
        assert res.status_code == 404 and "lifeline risk train-surrogate" in res.json()["detail"]
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(f"{url}/scene")
        page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
        page.wait_for_timeout(500)
        assert page.locator("#whatif-panel").is_hidden()
        page.close()
