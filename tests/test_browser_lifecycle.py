"""On the operations page: a live alert arrives, stands out, and an operator acknowledges and dispatches it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.publisher import Publisher
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import ARTIFACTS, serve, wait_for
from .test_browser import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_operator_acknowledges_and_dispatches_from_the_page(
    browser: Any,  # noqa: F811
    start_ingest: Any,
    broker: MqttConfig,
    prefix: str,
    pg_url: str,
    schema: str,
    db: DictConnection,
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.toml"
    token = add_token(tokens, name="值班员-2", role=Role.OPERATOR)
    start_ingest()
    with serve(create_app(conninfo=pg_url, schema=schema, auth=Authenticator.from_file(tokens))) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        answers = iter(["排水抢修二队", "井陂路下穿通道抽排"])
        page.on("dialog", lambda d: d.accept(next(answers)))
        page.goto(url)
        page.fill("#token", token)
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#conn.on")
        with Publisher(broker, client_id=f"pub-{prefix[5:15]}") as pub:
            pub.publish(
                f"{prefix}/drainage/D-L-001",
                orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 1.72, "unit": "m"}),
            )
        item = page.wait_for_selector("#alerts li.g2")
        assert "待响应" in item.inner_text()
        page.click("#alerts li.g2 button[data-action=acknowledge]")
        page.wait_for_selector("#alerts li.g2 .st-acknowledged")
        page.click("#alerts li.g2 button[data-action=dispatch]")
        page.wait_for_selector("#alerts li.g2 .st-dispatched")
        assert "→ 排水抢修二队" in page.inner_text("#alerts li.g2")
        page.wait_for_selector("#d-drainage:has-text('1')")  # the dashboard follows the alert events
        page.wait_for_selector("#d-await:has-text('0 (0)')")
        page.screenshot(path=str(ARTIFACTS / "alert_dispatched.png"))
        page.close()
    row = wait_for(lambda: db.execute("SELECT state, assignee FROM alerts").fetchone(), what="the alert")
    assert (row["state"], row["assignee"]) == ("dispatched", "排水抢修二队")
    actors = [r["actor"] for r in db.execute("SELECT actor FROM alert_events ORDER BY id").fetchall()]
    assert actors == ["system", "值班员-2", "值班员-2"]
    assert errors == []
