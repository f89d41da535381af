"""The health check report of a simulated year of the demo city, rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lifeline.report_commands import report
from lifeline.settings import Settings
from models.healthcheck.index import diagnose
from models.healthcheck.indicators import compute_all, load_definitions
from models.healthcheck.ledger import add_task, open_problems
from models.healthcheck.report import build_report, write_pdf, write_pngs, year_bounds
from simulators.year import plan_years, simulate_year
from twin.democity.city import build_demo_city
from twin.store.db import DictConnection
from twin.store.sensors import upsert_sensors

from ...conftest import ARTIFACTS

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LIFELINE_CHROMIUM", "/usr/bin/chromium")
DEFS = load_definitions()


def _simulated_years(db: DictConnection, schema: str) -> None:
    """2025 and 2026 of the demo area's sensors and the plant meters (simulators/year.py), 2025 the worse year."""
    city = build_demo_city()
    upsert_sensors(db, [city.sensors[s] for s in ("WF-PU1", "WF-PU2", "WF-PTANK")])
    for plan in plan_years([2025, 2026], seed=7):
        simulate_year(db, schema=schema, plan=plan)
    start, end = year_bounds(2026)
    values = compute_all(db, DEFS, start=start, end=end)
    problems = diagnose(DEFS, values)
    ids = open_problems(db, problems, start=start, end=end)
    for problem_id, p in zip(ids, problems, strict=True):
        if (p.indicator_id, p.district) == ("drainage_surcharge_share", ""):
            add_task(db, problem_id, title="易涝点排水能力提升改造", owner="市城管局", deadline=date(2027, 6, 30))


@pytest.fixture(scope="module")
def browser() -> Any:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_year_report_renders_with_charts_map_and_ledger(db: DictConnection, schema: str, browser: Any) -> None:
    _simulated_years(db, schema)
    start, end = year_bounds(2026)
    page_html = build_report(db, DEFS, start=start, end=end, title="2026 年度")
    assert page_html.index("城市生命线体检报告") < page_html.index("Lifeline health check report")
    assert "<script" not in page_html and "http://" not in page_html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page_html.count("<svg") == 4  # index bars, district map, city scores, monthly trend
    for name in ("城市公共供水管网漏损率", "吉州区", "青原区", "易涝点排水能力提升改造", "市城管局"):
        assert name in page_html
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "healthcheck_report_2026.html"
    out.write_text(page_html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(out.resolve().as_uri())
    assert page.evaluate("document.querySelectorAll('svg circle').length") > 20  # the map's sensors
    page.close()
    shots = write_pngs(out, browser=browser)
    assert [p.name for p in shots[:2]] == ["healthcheck_report_2026_p1.png", "healthcheck_report_2026_p2.png"]
    assert all(p.stat().st_size > 20_000 for p in shots[:1])
    pdf = ARTIFACTS / "healthcheck_report_2026.pdf"
    assert write_pdf(out, pdf, browser=browser)
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_report_command_writes_the_period_report(db: DictConnection, schema: str, pg_url: str, tmp_path: Path) -> None:
    # the health check tables come with the migrations (migration 7)
    settings = Settings(database_url=pg_url, db_schema=schema)
    out = tmp_path / "r" / "report.html"
    result = CliRunner().invoke(
        report, ["--from", "2026-06-01", "--to", "2026-06-30", "--out", str(out), "--no-pdf"], obj=settings
    )
    assert result.exit_code == 0, result.output
    assert "2026-06-01 至 2026-06-30" in out.read_text(encoding="utf-8")
    both = CliRunner().invoke(report, ["--year", "2026", "--from", "2026-06-01"], obj=settings)
    assert both.exit_code != 0 and "not both" in both.output


def test_the_report_says_when_raw_readings_of_its_periods_were_deleted(db: DictConnection) -> None:
    start, end = year_bounds(2026)
    page = build_report(db, DEFS, start=start, end=end, title="2026 年度", months=False)
    assert "保留期" not in page  # nothing pruned
    # As the pruning records it (twin.store.retention): raw readings before 10 February 2025 are gone.
    db.execute("INSERT INTO raw_retention (deleted_before) VALUES (%s)", (datetime(2025, 2, 9, 16, tzinfo=UTC),))
    page = build_report(db, DEFS, start=start, end=end, title="2026 年度", months=False)
    assert "上一期的部分原始读数已按保留期删除（2025-02-10 之前）" in page and "本期、" not in page
    older = build_report(db, DEFS, start=start - (end - start), end=start, title="2025 年度", months=False)
    assert "本期、上一期的部分原始读数" in older
