"""The operations page in a real headless Chromium: sensors load and an alert arrives live."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = os.environ.get("LIFELINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's 'chromium' package")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_page_shows_sensors_and_a_live_alert(
    browser: Any, start_ingest: Any, broker: MqttConfig, prefix: str, viewer_url: str
) -> None:
    start_ingest()
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(viewer_url)
    page.wait_for_selector("#sensors tbody tr >> nth=20")
    assert page.locator("#sensors tbody tr").count() == 21
    assert page.locator("h1").inner_text() == "吉安市城市生命线安全监测"
    page.wait_for_selector("#conn.on")
    assert page.locator("#alerts li").count() == 0

    with Publisher(broker, client_id=f"browser-{uuid.uuid4().hex[:6]}") as pub:
        pub.publish(
            f"{prefix}/drainage/D-L-005",
            orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 2.35, "unit": "m"}),
        )
    item = page.wait_for_selector("#alerts li.g1", timeout=10_000)
    text = item.inner_text()
    assert "D-L-005" in text and "Ⅰ" in text
    assert page.locator("#n-g1").inner_text() == "1"
    page.locator("#sensors tbody tr[data-sensor='D-L-005']").click()
    page.wait_for_selector("#chart circle.pt")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live_alert_zh.png"), full_page=True)

    page.click("#lang")
    assert page.locator("h1").inner_text() == "Ji'an City Lifeline Safety Monitor"
    assert "grade I limit" in page.locator("#alerts li.g1").inner_text()
    page.screenshot(path=str(ARTIFACTS / "live_alert_en.png"), full_page=True)
    assert not errors, errors
    page.close()
