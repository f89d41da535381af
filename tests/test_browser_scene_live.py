"""The 3D scene with live state in a real headless Chromium: alerts colour markers, are listed and flown to; a chart."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from twin.alerts import AlertChange
from twin.demo import demo_sensors
from twin.model import City
from twin.sensors import Sensor
from twin.store.alerts import apply_change
from twin.store.db import DictConnection
from twin.store.readings import ReadingStore
from twin.store.schema import current_mode
from twin.store.sensors import upsert_sensors
from viewer.app import create_app

from . import test_browser_scene as scene_test
from .conftest import ARTIFACTS, serve
from .test_browser_scene import NEAR_COLOUR, READY_TIMEOUT_MS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# The demo city, its exported scene and the WebGL-enabled Chromium of the scene page's tests.
browser = scene_test.browser
city = scene_test.city
scene_dir = scene_test.scene_dir

LIVE = "() => lifelineScene.live && lifelineScene.live.enabled && lifelineScene.live.connected"
LANDED = "() => !document.body.dataset.flying"


def _nearest(city: City, network: str, quantity: str, origin: list[float]) -> Sensor:
    """The sensor of *network* and *quantity* with alarm limits nearest the scene's centre."""
    fits = [s for s in city.sensors.values() if s.network.value == network and s.quantity.value == quantity]
    return min((s for s in fits if s.limits), key=lambda s: math.hypot(s.x_m - origin[0], s.y_m - origin[1]))


def _change(sensor_id: str | None, network: str, grade: int, **kw: Any) -> AlertChange:
    return AlertChange(
        kw.pop("event", "raised"),
        kw.pop("cause_key", f"threshold:{sensor_id}:high"),
        kw.pop("kind", "threshold"),
        sensor_id,
        network,
        "吉州区",
        grade,
        datetime.now(UTC),
        kw.pop("value", 1.1),
        kw.pop("threshold", 1.0),
        kw.pop("message", f"{sensor_id} 超过Ⅰ级限值"),
        kw.pop("message_en", f"{sensor_id} above the grade I limit"),
        **kw,
    )


@pytest.fixture
def live_url(pg_url: str, schema: str, db: DictConnection, city: City, scene_dir: Path) -> Iterator[str]:
    """The viewer with the demo scene, the demo city's sensors in the store (beside the 21 demo-area sensors)."""
    upsert_sensors(db, city.sensors.values())
    with serve(create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir)) as url:
        yield url


def test_live_alert_is_coloured_listed_flown_to_and_a_sensor_opens_its_chart(
    browser: Any,
    live_url: str,
    db: DictConnection,
    schema: str,
    city: City,
) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_url}/scene")
    page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
    assert page.locator("#status").get_attribute("data-error") is None, page.locator("#status").inner_text()
    origin = page.evaluate("() => lifelineScene.meta.origin_m")
    level = _nearest(city, "drainage", "level", origin)
    pressure = _nearest(city, "water", "pressure", origin)

    # Two hours of readings, one a minute: the level rising towards its limits, the pressure steady.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = [
        row
        for k in range(120, 0, -1)
        for row in (
            (level.sensor_id, now - timedelta(minutes=k), 0.2 + 0.9 * (120 - k) / 120, 0),
            (pressure.sensor_id, now - timedelta(minutes=k), 300.0 + 15.0 * math.sin(k / 9), 0),
        )
    ]
    mode = current_mode(db, schema=schema)
    assert mode is not None
    with db.transaction():
        ReadingStore(db, mode=mode).write(rows)

    page.wait_for_function(LIVE, timeout=15_000)
    live = page.evaluate("() => lifelineScene.live")
    assert live["sensors"] == len(city.sensors) + len(demo_sensors())
    assert live["extraSensors"] == len(demo_sensors())  # not in the scene file: placed from x_m / y_m
    assert page.locator("#no-alerts").is_visible()
    assert page.locator("#conn").inner_text() == "实时连接"
    # The page loaded before the readings: only a reload of the sensors (every 30 s) would show them as online.
    # A sensor with no readings at all is offline (grey); the markers of the demo-area sensors are there too.
    silent = next(s for s in sorted(city.sensors) if s not in (level.sensor_id, pressure.sensor_id))
    page.wait_for_function(NEAR_COLOUR, arg=[silent, "5f6f80"])
    assert page.evaluate("id => lifelineScene.sensorColour(id)", "D-L-005") is not None

    # A grade I alert stored as ingest stores it: listed, flashing, its marker red with a beacon over it.
    apply_change(db, _change(level.sensor_id, "drainage", 1), schema=schema)
    # The list is redrawn as alerts and sensors change: locators, not element handles.
    item = page.locator(f"#alert-list li.g1[data-place='sensor:{level.sensor_id}']")
    item.wait_for(timeout=10_000)
    assert level.sensor_id in item.inner_text() and "Ⅰ" in item.inner_text()
    assert "flash" in (item.get_attribute("class") or "")
    page.wait_for_function(NEAR_COLOUR, arg=[level.sensor_id, "e53935"])
    live = page.evaluate("() => lifelineScene.live")
    assert live["flashing"] == [f"sensor:{level.sensor_id}"] and live["beacons"] == 1
    assert page.locator("#alert-count").inner_text() == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "scene_live_alert_overview.png"))

    # Clicking the alert flies there, highlights the sensor and opens its panel and chart.
    item.click()
    page.wait_for_function(LANDED, timeout=10_000)
    assert page.locator("#inspect").get_attribute("data-asset") == f"sensor:{level.sensor_id}"
    canvas = page.locator("#view canvas").bounding_box()
    point = page.evaluate("id => lifelineScene.screenOf(id)", f"sensor:{level.sensor_id}")
    assert abs(point["x"] - (canvas["x"] + canvas["width"] / 2)) < 30
    assert abs(point["y"] - (canvas["y"] + canvas["height"] / 2)) < 30
    page.wait_for_selector("#chart path.series")
    assert int(page.locator("#chart").get_attribute("data-points") or 0) >= 50
    assert page.locator("#sensor-live").get_attribute("data-state") == "g1"
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "scene_live_fly_to_alert.png"))

    # A leak localised by the network model has no sensor: its first candidate the scene holds is where it is.
    leak = _change(
        None,
        "water",
        2,
        cause_key="leak:dma-1",
        kind="leak",
        value=None,
        threshold=None,
        message="疑似漏损：J0001 附近",
        message_en="Suspected leak near J0001",
        detail={"candidates": [{"asset": "water:node:NO-SUCH", "score": 0.97}, {"asset": "water:node:J0001"}]},
    )
    apply_change(db, leak, schema=schema)
    item = page.locator("#alert-list li.g2[data-place='water:J0001']")
    item.wait_for(timeout=10_000)
    item.click()
    page.wait_for_function(LANDED, timeout=10_000)
    assert page.locator("#inspect").get_attribute("data-asset") == "water:J0001"
    assert page.locator("#sensor-live").is_hidden()

    # Click a sensor marker on the scene: its chart opens; a longer range comes from the 1-minute rollup.
    page.click("input[data-layer='buildings']")
    assert page.evaluate("id => lifelineScene.focus(id, 70, 35)", f"sensor:{pressure.sensor_id}")
    page.wait_for_timeout(200)
    point = page.evaluate("id => lifelineScene.screenOf(id)", f"sensor:{pressure.sensor_id}")
    page.mouse.click(point["x"], point["y"])
    page.wait_for_function(
        "id => document.querySelector('#inspect').dataset.asset === id", arg=f"sensor:{pressure.sensor_id}"
    )
    page.wait_for_selector("#chart path.series")
    page.click("button[data-range='6h']")
    page.wait_for_selector("#chart polygon.band")
    assert "readings_1m" in page.locator("#chart-note").inner_text()
    page.click("input[data-layer='buildings']")
    page.evaluate("id => lifelineScene.focus(id, 150, 60)", f"sensor:{pressure.sensor_id}")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "scene_live_sensor_chart.png"))

    # A demo-area sensor the scene file does not hold is a live marker: clicking it opens it too.
    assert page.evaluate("id => lifelineScene.focus(id, 60, 40)", "sensor:W-P-002")
    page.wait_for_timeout(200)
    point = page.evaluate("id => lifelineScene.screenOf(id)", "sensor:W-P-002")
    page.mouse.click(point["x"], point["y"])
    page.wait_for_function("() => document.querySelector('#inspect').dataset.asset === 'sensor:W-P-002'")
    page.wait_for_selector("#chart text.empty")
    assert page.locator("#sensor-live").get_attribute("data-state") == "offline"

    # Cleared: the marker takes its network colour again and the alert is shown as cleared.
    base = page.evaluate("() => lifelineScene.meta.legend.network.drainage").lstrip("#")
    apply_change(db, _change(level.sensor_id, "drainage", 1, event="cleared"), schema=schema)
    page.wait_for_function(NEAR_COLOUR, arg=[level.sensor_id, base])
    page.wait_for_selector(f"#alert-list li.cleared[data-place='sensor:{level.sensor_id}']")

    page.click("#lang")
    assert page.locator("#alerts-panel h2").inner_text().startswith("Live alerts")
    assert "Suspected leak near J0001" in page.locator("#alert-list").inner_text()
    assert page.locator("#conn").inner_text() == "live"
    page.locator("#alert-list li.g2").click()
    page.wait_for_function(LANDED, timeout=10_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "scene_live_leak_en.png"))
    page.click("#lang")
    assert not errors, errors
    page.close()


def test_a_burst_of_alerts_is_drawn_in_a_few_repaints(
    browser: Any, live_url: str, db: DictConnection, schema: str, city: City
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_url}/scene")
    page.wait_for_selector("#status[data-ready='1']", timeout=READY_TIMEOUT_MS)
    page.wait_for_function(LIVE, timeout=15_000)
    page.wait_for_function("() => lifelineScene.live.repaints >= 1")
    before = page.evaluate("() => lifelineScene.live.repaints")

    # A storm: 80 gauges cross their grade III limit, stored in one batch as ingest stores a batch of readings.
    gauges = sorted(s.sensor_id for s in city.sensors.values() if s.quantity.value == "level")[:80]
    with db.transaction():
        for sensor_id in gauges:
            apply_change(db, _change(sensor_id, "drainage", 3), schema=schema)
    page.wait_for_function("n => lifelineScene.live.beacons === n", arg=len(gauges), timeout=15_000)
    for sensor_id in gauges:
        assert page.evaluate(NEAR_COLOUR, [sensor_id, "fdd835"]), sensor_id
    assert page.locator("#alert-list li.g3").count() == len(gauges)
    assert page.locator("#alert-count").inner_text() == str(len(gauges))
    # 80 events: redrawn once or twice for them (and once more when the latest values are reloaded), not 80 times.
    assert page.evaluate("() => lifelineScene.live.repaints") - before <= 4
    assert not page.locator("#alert-list li.flash").count()  # grade III does not flash
    assert not errors, errors
    page.close()
