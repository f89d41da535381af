"""The health check report of a simulated year of the demo city, rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lifeline.report_commands import report
from lifeline.settings import Settings
from models.healthcheck.index import diagnose
from models.healthcheck.indicators import compute_all, load_definitions
from models.healthcheck.ledger import add_task, open_problems
from models.healthcheck.report import build_report, write_pdf, year_bounds
from twin.store.db import DictConnection
from twin.store.readings import ReadingStore
from twin.store.schema import current_mode

from ...conftest import ARTIFACTS
from .test_indicators import _alert, _water_day

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LIFELINE_CHROMIUM", "/usr/bin/chromium")
DEFS = load_definitions()


def _simulated_year(db: DictConnection, schema: str) -> None:
    """A year of the demo city, sparse: a leaky water day, storms, a gas leak, and last year's alerts."""
    # the health check tables come with the migrations (migration 7)
    day = datetime(2026, 3, 1, 16, tzinfo=UTC)
    truth = _water_day(db, schema, leak_l_s=25.0, start=day)
    db.execute(
        "INSERT INTO hc_billed_water (period_start, period_end, billed_m3) VALUES (%s, %s, %s)",
        (day, day + timedelta(days=1), truth["demand_m3"]),
    )
    for year, storms in ((2025, 1), (2026, 3)):
        for k in range(storms):
            t = datetime(year, 6, 10 + 9 * k, 8, tzinfo=UTC)
            _alert(
                db,
                sensor_id="D-L-001",
                network="drainage",
                district="吉州区",
                raised_at=t,
                acknowledged_after=timedelta(minutes=12 + 20 * k),
                resolved_after=timedelta(hours=3 + k),
            )
            _alert(
                db,
                sensor_id=f"D-L-00{3 + k % 2}",
                network="drainage",
                district="吉州区" if k % 2 == 0 else "青原区",
                raised_at=t + timedelta(minutes=20),
                acknowledged_after=timedelta(minutes=25),
            )
    _alert(
        db,
        sensor_id="G-M-003",
        network="gas",
        district="青原区",
        raised_at=datetime(2026, 9, 3, 2, tzinfo=UTC),
        acknowledged_after=timedelta(minutes=8),
        resolved_after=timedelta(hours=6),
    )
    mode = current_mode(db, schema=schema)
    assert mode is not None
    t = datetime(2026, 9, 3, tzinfo=UTC)
    rows = [("G-M-003", t + timedelta(seconds=30 * k), 45.0 if 240 <= k < 600 else 1.5, 0) for k in range(2880)]
    rows += [("D-L-001", t + timedelta(minutes=k), 1.1 if k < 90 else 0.3, 0) for k in range(1440)]
    rows += [("D-L-002", t + timedelta(minutes=k), 0.2, 0) for k in range(1440)]
    with db.transaction():
        ReadingStore(db, mode=mode).write(rows)
    start, end = year_bounds(2026)
    values = compute_all(db, DEFS, start=start, end=end)
    problems = diagnose(DEFS, values)
    ids = open_problems(db, problems, start=start, end=end)
    leak = next(i for i, p in zip(ids, problems, strict=True) if p.indicator_id == "water_leakage_rate")
    add_task(db, leak, title="管网分区计量与漏点普查", owner="市供水公司", deadline=date(2026, 12, 31))


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
    _simulated_year(db, schema)
    start, end = year_bounds(2026)
    page_html = build_report(db, DEFS, start=start, end=end, title="2026 年度")
    assert page_html.index("城市生命线体检报告") < page_html.index("Lifeline health check report")
    assert "<script" not in page_html and "http://" not in page_html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page_html.count("<svg") == 4  # index bars, district map, city scores, monthly trend
    for name in ("城市公共供水管网漏损率", "吉州区", "青原区", "管网分区计量与漏点普查", "市供水公司"):
        assert name in page_html
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "healthcheck_report_2026.html"
    out.write_text(page_html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(out.resolve().as_uri())
    height = page.evaluate("document.documentElement.scrollHeight")
    assert page.evaluate("document.querySelectorAll('svg circle').length") > 20  # the map's sensors
    shots = []
    for k, top in enumerate(range(0, int(height), 1400)):
        path = ARTIFACTS / f"healthcheck_report_2026_p{k + 1}.png"
        page.screenshot(
            path=str(path), clip={"x": 0, "y": top, "width": 1100, "height": min(1400, height - top)}, full_page=True
        )
        shots.append(path)
    page.close()
    assert shots and all(p.stat().st_size > 20_000 for p in shots[:1])
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
