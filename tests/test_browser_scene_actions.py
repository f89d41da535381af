"""On the 3D page: a live alert arrives through ingest, stands out (flash and sound), and is handled from the page by
what each role may do; an alert raised during a drill is marked there and on the operations page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection
from twin.store.drills import open_drill
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from . import test_browser_scene as scene_test
from .conftest import ARTIFACTS, serve
from .test_browser_scene import READY_TIMEOUT_MS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

browser = scene_test.browser
city = scene_test.city
scene_dir = scene_test.scene_dir

LIVE = "() => lifelineScene.live && lifelineScene.live.enabled && lifelineScene.live.connected"


def _open_scene(browser: Any, url: str, token: str) -> tuple[Any, list[str]]:
    """Sign in on the operations page (the token goes into an HttpOnly cookie), then open the 3D page."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#conn.on")
    page.goto(f"{url}/scene")
    page.wait_for_selector("#status[data-ready='1'], #status[data-error]", timeout=READY_TIMEOUT_MS)
    assert page.locator("#status").get_attribute("data-error") is None, page.locator("#status").inner_text()
    page.wait_for_function(LIVE, timeout=15_000)
    return page, errors


def _publish(broker: MqttConfig, prefix: str, sensor: str, value_m: float) -> None:
    with Publisher(broker, client_id=f"pub-{prefix[5:15]}") as pub:
        pub.publish(
            f"{prefix}/drainage/{sensor}",
            orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": value_m, "unit": "m"}),
        )


def _buttons(page: Any, item: str) -> list[str]:
    return [b.get_attribute("data-action") for b in page.locator(f"{item} .actions button").all()]


def test_alert_arrives_on_the_scene_sounds_and_is_handled_from_it_by_role(
    browser: Any,
    start_ingest: Any,
    broker: MqttConfig,
    prefix: str,
    pg_url: str,
    schema: str,
    db: DictConnection,
    scene_dir: Path,
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    operator = add_token(tokens, name="值班员-3", role=Role.OPERATOR)
    emergency = add_token(tokens, name="应急-5", role=Role.EMERGENCY)
    start_ingest()
    app = create_app(conninfo=pg_url, schema=schema, scene_dir=scene_dir, auth=Authenticator.from_file(tokens))
    with serve(app) as url:
        page, errors = _open_scene(browser, url, operator)
        assert page.evaluate("() => lifelineScene.live.role") == "operator"
        # Sound is off until someone turns it on (browsers allow it only after a click on the page).
        assert page.locator("#sound").get_attribute("data-state") == "off"
        assert page.locator("#sound").inner_text() == "开启声音"
        page.click("#sound")
        page.wait_for_selector("#sound[data-state='on']")
        assert page.locator("#sound").inner_text() == "声音已开"

        # A reading above the grade II limit, through MQTT and ingest: the alert arrives, flashes and sounds.
        _publish(broker, prefix, "D-L-001", 1.72)
        item = "#alert-list li.g2[data-place='sensor:D-L-001']"
        page.wait_for_selector(item, timeout=15_000)
        assert "flash" in (page.locator(item).get_attribute("class") or "")
        assert "alarm" in (page.locator("#alerts-panel").get_attribute("class") or "")
        page.wait_for_function("() => lifelineScene.live.beeps === 1")
        assert page.evaluate("() => document.body.dataset.beeped") == "2"
        assert page.evaluate("() => lifelineScene.live.flashing") == ["sensor:D-L-001"]
        assert _buttons(page, item) == ["acknowledge", "dispatch"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "scene_alert_arrives.png"))

        # 叫应 from the page, then 派单 with who and what.
        page.click(f"{item} button[data-action=acknowledge]")
        page.wait_for_selector(f"{item} .state[data-state=acknowledged]")
        assert page.evaluate("() => document.body.dataset.flying") is None  # a button, not a click to fly
        page.click(f"{item} button[data-action=dispatch]")
        page.fill(f"{item} form input[name=assignee]", "排水抢修二队")
        page.fill(f"{item} form input[name=task]", "井陂路下穿通道抽排")
        page.screenshot(
            path=str(ARTIFACTS / "scene_dispatch_form.png"), clip={"x": 0, "y": 60, "width": 480, "height": 320}
        )
        page.click(f"{item} form button[type=submit]")
        page.wait_for_selector(f"{item} .state[data-state=dispatched]")
        assert "→ 排水抢修二队" in page.locator(item).inner_text()
        assert _buttons(page, item) == ["resolve"]
        page.screenshot(path=str(ARTIFACTS / "scene_alert_dispatched.png"))

        # Emergency staff report the fix; the re-check and closing are the operations centre's.
        field, field_errors = _open_scene(browser, url, emergency)
        field.wait_for_selector(f"{item} .state[data-state=dispatched]")
        assert _buttons(field, item) == ["resolve"]
        field.click(f"{item} button[data-action=resolve]")
        field.fill(f"{item} form input[name=note]", "已抽排完毕，积水退去")
        field.click(f"{item} form button[type=submit]")
        field.wait_for_selector(f"{item} .state[data-state=resolved]")
        assert _buttons(field, item) == []
        page.wait_for_selector(f"{item} .state[data-state=resolved]")  # the operator's page follows
        assert _buttons(page, item) == ["recheck", "reopen"]

        # A refused action says why, in the list.
        db.execute("UPDATE alerts SET state = 'closed' WHERE sensor_id = 'D-L-001'")
        page.click(f"{item} button[data-action=recheck]")
        page.click(f"{item} form button[type=submit]")
        page.wait_for_selector(f"{item} .act-error")
        assert "HTTP 409" in page.locator(f"{item} .act-error").inner_text()
        page.click(f"{item} form button.cancel")

        # During a drill of the drainage network, its alerts carry the drill marker, here and on the operations page.
        open_drill(db, kind="rainstorm", networks=["drainage", "rain"], params={"return_period": 50})
        _publish(broker, prefix, "D-L-002", 2.3)
        drilled = "#alert-list li.g1[data-place='sensor:D-L-002']"
        page.wait_for_selector(drilled, timeout=15_000)
        assert page.locator(drilled).get_attribute("data-drill") is not None
        assert "演练 DRILL" in page.locator(drilled).inner_text()
        assert page.locator(item).get_attribute("data-drill") is None
        page.wait_for_function("() => lifelineScene.live.beeps === 2")
        assert page.evaluate("() => document.body.dataset.beeped") == "1"
        page.wait_for_selector("#drill-banner:not([hidden])", timeout=15_000)
        assert "排水" in page.locator("#drill-banner").inner_text()
        page.screenshot(path=str(ARTIFACTS / "scene_drill_alert.png"))
        page.goto(url)
        page.wait_for_selector("#alerts li[data-drill] .drill")
        assert "演练 DRILL" in page.locator("#alerts li[data-drill]").inner_text()
        assert page.locator("#alerts li:not([data-drill])").count() == 1
        page.wait_for_selector("#d-drainage:has-text('+1 演练 DRILL')")
        page.screenshot(path=str(ARTIFACTS / "operations_drill_alert.png"))

    rows = db.execute("SELECT event, actor, note FROM alert_events ORDER BY id").fetchall()
    assert [(r["event"], r["actor"]) for r in rows[:4]] == [
        ("raised", "system"),
        ("acknowledge", "值班员-3"),
        ("dispatch", "值班员-3"),
        ("resolve", "应急-5"),
    ]
    assert rows[3]["note"] == "已抽排完毕，积水退去"
    assert errors == [] and field_errors == []
