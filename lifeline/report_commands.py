"""``lifeline report``: the city health check (城市体检) report of a year or a period, as HTML and PDF."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from lifeline.settings import Settings


def _local_date(text: str, offset_h: float) -> datetime:
    """A local date ``YYYY-MM-DD`` as the aware UTC instant of its local midnight."""
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a date YYYY-MM-DD") from exc
    return day.replace(tzinfo=UTC) - timedelta(hours=offset_h)


@click.command("report")
@click.option("--year", type=int, help="Local calendar year of the report, e.g. 2026.")
@click.option("--from", "date_from", help="First local day of the period, YYYY-MM-DD (with --to).")
@click.option("--to", "date_to", help="Last local day of the period, YYYY-MM-DD (included).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write; a PDF is written beside it when Chromium is available.",
)
@click.option(
    "--definitions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The indicator table (default: the one shipped in models/healthcheck/definitions.toml).",
)
@click.option("--chromium", default="/usr/bin/chromium", show_default=True, help="Chromium used for the PDF.")
@click.option("--no-pdf", is_flag=True, help="Write the HTML only.")
@click.option("--png", is_flag=True, help="Also render the pages as PNG images beside the HTML (<name>_p1.png …).")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A simulated year's ground truth (lifeline simulate year): print each indicator beside its true value.",
)
@click.pass_context
def report(
    ctx: click.Context,
    year: int | None,
    date_from: str | None,
    date_to: str | None,
    out: Path,
    definitions: Path | None,
    chromium: str,
    no_pdf: bool,
    png: bool,
    truth: Path | None,
) -> None:
    """Write the lifeline health check report (城市体检报告): indicators, index, diagnosis, ledger."""
    from models.healthcheck.indicators import load_definitions
    from models.healthcheck.report import build_report, write_pdf, write_pngs, year_bounds
    from twin.store.db import connect

    settings: Settings = ctx.obj
    if not settings.database_url:
        raise click.UsageError("set LIFELINE_DATABASE_URL: the report is computed from the store")
    table = load_definitions(definitions)
    offset_h = table.water_balance.utc_offset_h
    if year is not None and (date_from or date_to):
        raise click.UsageError("give --year or --from/--to, not both")
    if year is not None:
        start, end = year_bounds(year, offset_h)
        title = f"{year} 年度"
    elif date_from and date_to:
        start = _local_date(date_from, offset_h)
        end = _local_date(date_to, offset_h) + timedelta(days=1)
        if end <= start:
            raise click.UsageError("--to must not be before --from")
        title = f"{date_from} 至 {date_to}"
    else:
        raise click.UsageError("give --year, or --from and --to")
    with connect(settings.database_url, schema=settings.db_schema, autocommit=True) as conn:
        page = build_report(conn, table, start=start, end=end, title=title, months=year is not None)
        if truth is not None:
            _print_against_truth(conn, table, truth, start=start, end=end)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    click.echo(f"wrote {out}")
    if not no_pdf:
        pdf = out.with_suffix(".pdf")
        if write_pdf(out, pdf, chromium=chromium):
            click.echo(f"wrote {pdf}")
        else:
            click.echo("no PDF (Chromium or Playwright missing); the HTML prints as it is", err=True)
    if png:
        shots = write_pngs(out, chromium=chromium)
        click.echo(f"wrote {len(shots)} page images: {', '.join(str(p) for p in shots)}" if shots else "no images")


def _print_against_truth(conn: Any, table: Any, truth_path: Path, *, start: datetime, end: datetime) -> None:
    """Print every indicator of the period beside its true value from a simulated year's ground truth."""
    import json

    from models.healthcheck.indicators import compute_all

    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))["summary"]["indicators"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.BadParameter(f"{truth_path} is not a ground truth of lifeline simulate year ({exc})") from exc
    click.echo(f"{'indicator':34} {'district':8} {'measured':>10} {'truth':>10} {'difference':>10}")
    for v in compute_all(conn, table, start=start, end=end):
        want = truth.get(v.district, {}).get(v.indicator_id)
        got = "—" if v.value is None else f"{v.value:.4g}"
        true = "—" if want is None else f"{want:.4g}"
        diff = f"{v.value - want:+.3g}" if v.value is not None and want is not None else ""
        click.echo(f"{v.indicator_id:34} {v.district or '全市':8} {got:>10} {true:>10} {diff:>10}")


@click.command("year")
@click.option("--year", "years", type=int, multiple=True, required=True, help="Local year to simulate (repeatable).")
@click.option("--days", type=click.IntRange(1, 366), help="Simulate only the first DAYS days of each year.")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--demo-city", is_flag=True, help="First store the demo city's twin and its 638 sensors.")
@click.option(
    "--truth-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where each year's ground truth goes (ground_truth_<year>.json).",
)
@click.pass_context
def simulate_year_command(
    ctx: click.Context, years: tuple[int, ...], days: int | None, seed: int, demo_city: bool, truth_dir: Path
) -> None:
    """Write simulated years of the stored sensors into the store, for the health check (城市体检).

    Storms, water leaks, gas leaks, pressure faults, outages and the people handling the alerts, at hourly
    resolution (events at the sensors' own intervals), with each year's ground truth. Earlier years are worse
    (more leaks, slower responses), so the report's year-over-year comparison has something to show. Needs a
    schema in plain-PostgreSQL mode with no readings in those years.
    """
    import json

    from models.healthcheck.indicators import load_definitions
    from models.healthcheck.report import year_bounds
    from simulators.year import plan_years, simulate_year
    from twin.errors import LifelineError
    from twin.store.db import connect
    from twin.store.schema import migrate

    settings: Settings = ctx.obj
    if not settings.database_url:
        raise click.UsageError("set LIFELINE_DATABASE_URL: the simulated year is written into the store")
    offset_h = load_definitions().water_balance.utc_offset_h
    schema = settings.db_schema
    with connect(settings.database_url, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode=settings.storage_mode)
        if demo_city:
            from twin.democity.city import build_demo_city
            from twin.store.assets import save_city
            from twin.store.sensors import upsert_sensors

            city = build_demo_city()
            save_city(conn, city)
            upsert_sensors(conn, city.sensors.values())
            click.echo(f"stored the demo city: {len(city.sensors)} sensors")
        for year in years:
            start, end = year_bounds(year, offset_h)
            row = conn.execute(
                "SELECT 1 FROM readings_1h WHERE bucket >= %s AND bucket < %s LIMIT 1", (start, end)
            ).fetchone()
            if row is not None:
                raise click.UsageError(
                    f"the store (schema {schema!r}) already holds readings in {year}; simulate into an empty schema"
                    " (LIFELINE_DB_SCHEMA)"
                )
        truth_dir.mkdir(parents=True, exist_ok=True)
        for plan in plan_years(years, seed=seed, days=days):
            try:
                truth = simulate_year(conn, schema=schema, plan=plan)
            except LifelineError as exc:
                raise click.ClickException(str(exc)) from exc
            path = truth_dir / f"ground_truth_{plan.year}.json"
            body = {"scenario": truth.scenario, "events": truth.events, "summary": truth.summary}
            path.write_text(json.dumps(body, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
            s = truth.summary
            click.echo(
                f"{plan.year}: {s['sensors']} sensors, {s['hourly_rows']:,} hourly rows, {s['raw_readings']:,} raw"
                f" readings, {s['alerts']} alerts in {s['wall_s']:.0f} s; truth → {path}"
            )
