"""The health check page on two simulated years: index, bands, charts, map, problems, an operator's ledger entry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from simulators.year import plan_years, simulate_year
from twin.democity.city import build_demo_city
from twin.store.db import DictConnection
from twin.store.retention import prune_readings
from twin.store.sensors import upsert_sensors
from viewer.app import create_app
from viewer.auth import Authenticator, Role, add_token

from .conftest import ARTIFACTS, serve
from .test_browser import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_operator_reads_the_health_check_and_gives_a_problem_a_task(
    browser: Any,  # noqa: F811
    pg_url: str,
    schema: str,
    db: DictConnection,
    tmp_path: Path,
) -> None:
    city = build_demo_city()
    upsert_sensors(db, [city.sensors[s] for s in ("WF-PU1", "WF-PU2", "WF-PTANK")])
    started = time.perf_counter()
    for plan in plan_years([2025, 2026], seed=7):
        simulate_year(db, schema=schema, plan=plan)
    print(f"two simulated years in {time.perf_counter() - started:.1f} s")
    tokens = tmp_path / "tokens.toml"
    token = add_token(tokens, name="值班员-3", role=Role.OPERATOR)
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(create_app(conninfo=pg_url, schema=schema, auth=Authenticator.from_file(tokens))) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        answers = iter(["积水点排水能力提升改造", "市城管局", "2027-05-31"])
        page.on("dialog", lambda d: d.accept(next(answers)))
        page.goto(url)
        page.fill("#token", token)
        page.click("#signin button[type=submit]")
        # Signed in (the session cookie set) before the page is loaded again: a navigation while the sign-in
        # request is under way aborts it, and the page comes back signed out, waiting at the sign-in form.
        page.wait_for_selector("#signin", state="hidden")
        # The operations page's health check card: this year's index, linking to the page.
        requests: list[str] = []  # what the page asked for and how long each took, printed if the card is slow
        page.on(
            "requestfinished",
            lambda r: requests.append(f"{r.method} {r.url} {r.timing['responseEnd']:.0f} ms"),
        )
        page.on("requestfailed", lambda r: requests.append(f"{r.method} {r.url} FAILED {r.failure}"))
        card_started = time.perf_counter()
        page.goto(url)
        try:
            page.wait_for_selector("#hc-detail:has-text('吉州区')", timeout=60_000)
        finally:
            took = time.perf_counter() - card_started
            print(f"health check card after {took:.1f} s; requests:", *requests, sep="\n  ")
        assert page.inner_text("#hc-index") not in ("–", "")
        page.locator("#hc-summary").screenshot(path=str(ARTIFACTS / "healthcheck_dashboard_card.png"))
        page.goto(f"{url}/healthcheck?year=2026")
        page.wait_for_selector("#hc-table tbody tr", timeout=60_000)
        page.wait_for_selector("#hc-trend polyline", timeout=60_000)
        assert page.locator("#hc-table tbody tr").count() == 16
        assert page.locator("#hc-raw-note").is_hidden()  # nothing pruned: no note
        assert page.locator("#hc-cards .hc-card").count() == 3
        assert page.locator("#hc-map polygon").count() == 2  # both districts drawn
        assert page.locator("#hc-bars rect").count() >= 6  # this year and last, three places
        leak_row = page.inner_text("tr[data-indicator=water_leakage_rate]")
        assert "城市公共供水管网漏损率" in leak_row and "≤ 9" in leak_row
        assert page.locator(".hc-problem").count() > 0
        page.click("#hc-diagnose")
        page.wait_for_selector("[data-add-task]")
        page.locator("[data-add-task]").first.click()
        page.wait_for_selector(".hc-problem .task:has-text('积水点排水能力提升改造')")
        page.screenshot(path=str(ARTIFACTS / "healthcheck_page.png"), full_page=True)
        page.click("#lang")
        page.wait_for_selector("h1:has-text('City lifeline health check')")
        assert "Water network leakage rate" in page.inner_text("tr[data-indicator=water_leakage_rate]")
        page.screenshot(path=str(ARTIFACTS / "healthcheck_page_en.png"), full_page=True)
        page.click("#lang")
        # Raw readings of early 2025 deleted by retention: the page says the year before counts only what is left.
        pruned = prune_readings(db, schema=schema, keep=timedelta(days=600), now=datetime(2026, 12, 1, tzinfo=UTC))
        assert pruned.deleted > 0
        page.goto(f"{url}/healthcheck?year=2026")
        page.wait_for_selector("#hc-raw-note:visible", timeout=60_000)
        note = page.inner_text("#hc-raw-note")
        assert "上期" in note and "本期" not in note and "退水时间" in note and "2025" in note, note
        page.locator("#hc-raw-note").screenshot(path=str(ARTIFACTS / "healthcheck_raw_note.png"))
        page.close()
    assert errors == []
    row = db.execute("SELECT t.owner, p.status FROM hc_tasks t JOIN hc_problems p ON p.id = t.problem_id").fetchone()
    assert row is not None and (row["owner"], row["status"]) == ("市城管局", "treating")
