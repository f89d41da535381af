"""The 3D scene page in a real headless Chromium (software WebGL), served by the viewer with an exported scene."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from PIL import Image

from twin.democity.city import build_demo_city
from twin.model import City
from twin.scene import export_scene
from viewer.app import create_app
from viewer.auth import Authenticator
from viewer.routes import scene as scene_routes

from .conftest import ARTIFACTS, serve
from .test_browser import CHROMIUM, CHROMIUM_ARGS

# Software WebGL (SwiftShader through ANGLE): no GPU needed.
WEBGL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
READY_TIMEOUT_MS = 60_000
USE_ZH = {
    "residential": "住宅",
    "commercial": "商业",
    "office": "办公",
    "industrial": "工业",
    "school": "学校",
    "hospital": "医院",
    "elderly_care": "养老机构",
    "public": "公共建筑",
}


@pytest.fixture(scope="module")
def city() -> City:
    return build_demo_city()


@pytest.fixture(scope="module")
def scene_dir(city: City, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    export_scene(city, out)
    return out


@pytest.fixture
def scene_url(pg_url: str, schema: str, scene_dir: Path) -> Iterator[str]:
    """The whole viewer (its database included) with the scene router and the exported demo scene."""
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's 'chromium' package")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *WEBGL_ARGS])
        yield b
        b.close()


def _canvas_pixels(page: Any) -> np.ndarray[Any, Any]:
    box = page.locator("#view canvas").bounding_box()
    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.mark.integration
@pytest.mark.browser
def test_scene_page_draws_the_city_and_inspects_what_is_clicked(
    browser: Any, scene_url: str, city: City, scene_dir: Path
) -> None:
    meta = orjson.loads((scene_dir / "scene-meta.json").read_bytes())
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{scene_url}/scene")
    page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
    assert page.locator("#status").get_attribute("data-error") is None, page.locator("#status").inner_text()
    ready = page.evaluate("() => window.lifelineScene.ready")
    assert ready["loadMs"] > 0
    assert ready["counts"]["buildings"] == len(city.buildings)
    status = page.locator("#status")
    assert status.get_attribute("data-ready") == "1"
    assert "场景就绪" in status.inner_text() and f"建筑 {len(city.buildings)} 栋" in status.inner_text()
    assert f"管段 {sum(len(n.links) for n in city.networks.values())} 条" in status.inner_text()
    assert page.locator("h1").inner_text() == "城市生命线三维场景"
    assert "养老机构" in page.locator("#legend").inner_text()

    # The canvas drew: most of it is city, and buildings and pipes each cover part of it on their own.
    assert page.evaluate("() => lifelineScene.coverage()") > 0.3
    assert page.evaluate("() => lifelineScene.coverage(['buildings'])") > 0.05
    assert page.evaluate("() => lifelineScene.coverage(['drainage', 'water', 'gas'])") > 0.01

    # Live state can recolour one sensor marker.
    first_sensor = min(city.sensors)
    assert page.evaluate("id => lifelineScene.setSensorColour(id, '#e53935')", first_sensor)
    assert _near(page.evaluate("id => lifelineScene.sensorColour(id)", first_sensor), "e53935")
    assert not page.evaluate("() => lifelineScene.setSensorColour('NO-SUCH', '#e53935')")

    # Pipes show through the translucent ground: switching their layers off changes what the canvas shows.
    page.click("input[data-layer='buildings']")
    with_pipes = _canvas_pixels(page)
    for layer in ("drainage", "water", "gas"):
        page.click(f"input[data-layer='{layer}']")
    page.wait_for_timeout(200)
    without_pipes = _canvas_pixels(page)
    changed = np.abs(with_pipes - without_pipes).sum(axis=2) > 30
    assert changed.mean() > 0.01, f"only {changed.mean():.2%} of the canvas shows pipes beneath the ground"
    for layer in ("drainage", "water", "gas"):
        page.click(f"input[data-layer='{layer}']")

    # Click a drainage conduit through the ground, with the water and gas layers (laid in the same streets,
    # nearer the surface) hidden, as staff would: the panel shows that pipe.
    for layer in ("water", "gas"):
        page.click(f"input[data-layer='{layer}']")
    link_id = meta["meshes"][next(i for i, m in enumerate(meta["meshes"]) if m["name"] == "pipes-drainage")]["ids"][40]
    assert page.evaluate("id => lifelineScene.focus(id, 90)", link_id)
    page.wait_for_timeout(200)
    point = page.evaluate("id => lifelineScene.screenOf(id)", link_id)
    page.mouse.click(point["x"], point["y"])
    panel = page.locator("#inspect")
    panel.wait_for(state="visible")
    assert panel.get_attribute("data-asset") == link_id
    assert page.locator("#inspect-title").inner_text().startswith("管段")
    assert "管径 (m)" in page.locator("#inspect-table").inner_text()
    for layer in ("water", "gas"):
        page.click(f"input[data-layer='{layer}']")

    # Click the tallest building from the overview: the panel shows a building and its use.
    page.click("input[data-layer='buildings']")
    page.click("#reset-view")
    tallest = max(city.buildings.values(), key=lambda b: b.ground_m + b.height_m)
    point = page.evaluate("id => lifelineScene.screenOf(id)", f"building:{tallest.building_id}")
    page.mouse.click(point["x"], point["y"])
    page.wait_for_function("() => document.querySelector('#inspect').dataset.asset.startsWith('building:')")
    picked = panel.get_attribute("data-asset")
    assert picked == page.evaluate("([x, y]) => lifelineScene.pick(x, y)", [point["x"], point["y"]])
    assert page.locator("#inspect-title").inner_text().startswith("建筑")
    use = meta["assets"][picked]["use"]
    assert page.locator("#inspect-table tr[data-field='use'] td").inner_text() == USE_ZH[use]

    page.click("#lang")
    assert page.locator("h1").inner_text() == "City Lifeline 3D Scene"
    assert "Scene ready" in status.inner_text()
    assert page.locator("#inspect-title").inner_text().startswith("Building")
    page.click("#lang")

    # A tilted close view with the ground translucent, for people to look at.
    page.click("#inspect-close")
    page.evaluate("() => lifelineScene.focus('drainage:MHX0601', 220, 30, 160)")
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "scene_demo_city.png"))
    page.click("#reset-view")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "scene_demo_city_overview.png"))
    assert not errors, errors
    page.close()


def test_scene_api_serves_the_files_and_says_clearly_when_there_are_none(tmp_path: Path, scene_dir: Path) -> None:
    app = FastAPI()
    app.include_router(scene_routes.router)
    app.state.auth = Authenticator.open()  # the routes check the caller; this bare app lets everyone in
    with serve(app) as url, httpx.Client(base_url=url) as client:
        res = client.get("/api/scene.glb")
        assert res.status_code == 404 and "no 3D scene" in res.json()["detail"]
        app.state.scene_dir = tmp_path
        res = client.get("/api/scene/meta.json")
        assert res.status_code == 404 and "scene-meta.json" in res.json()["detail"]
        app.state.scene_dir = scene_dir
        glb = client.get("/api/scene.glb")
        assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
        assert glb.headers["content-encoding"] == "gzip" and glb.content[:4] == b"glTF"
        plain = client.get("/api/scene.glb", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == glb.content
        meta = client.get("/api/scene/meta.json").json()
        assert meta["format"] == "lifeline-scene/1" and meta["glb"]["bytes"] == len(glb.content)
        assert client.get("/scene").text.startswith("<!doctype html>")


# Colours round-trip through linear RGB in the vertex buffer: compare within one step per channel.
NEAR_COLOUR = """([id, want]) => {
  const got = lifelineScene.sensorColour(id);
  if (!got) return false;
  return [0, 2, 4].every((k) => Math.abs(parseInt(got.slice(k, k + 2), 16) - parseInt(want.slice(k, k + 2), 16)) <= 2);
}"""


def _near(got: str, want: str) -> bool:
    return all(abs(int(got[k : k + 2], 16) - int(want[k : k + 2], 16)) <= 2 for k in (0, 2, 4))


def test_sensor_markers_take_the_colour_of_live_warnings(
    browser: Any, scene_url: str, city: City, db: Any, schema: str
) -> None:
    from datetime import UTC, datetime

    from twin.alerts import AlertChange
    from twin.store.alerts import apply_change

    sensor = next(s for s in sorted(city.sensors.values(), key=lambda s: s.sensor_id) if s.network.value == "gas")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{scene_url}/scene")
    page.wait_for_selector("#status[data-ready='1']", timeout=READY_TIMEOUT_MS)
    base = page.evaluate("id => lifelineScene.sensorColour(id)", sensor.sensor_id)
    page.wait_for_timeout(500)  # the page subscribes to /ws/alerts once the scene is ready

    def change(event: str, grade: int) -> None:
        apply_change(
            db,
            AlertChange(
                event,
                f"threshold:{sensor.sensor_id}:high",
                "threshold",
                sensor.sensor_id,
                sensor.network.value,
                sensor.district,
                grade,
                datetime.now(UTC),
                60.0,
                50.0,
                "测试",
                "test",
            ),
            schema=schema,
        )

    change("raised", 2)  # stored and announced as ingest does: NOTIFY → hub → websocket → page
    page.wait_for_function(NEAR_COLOUR, arg=[sensor.sensor_id, "fb8c00"])
    change("cleared", 2)
    page.wait_for_function(NEAR_COLOUR, arg=[sensor.sensor_id, base])
    page.close()
