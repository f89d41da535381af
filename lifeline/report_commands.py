"""``lifeline report``: the city health check (城市体检) report of a year or a period, as HTML and PDF."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

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
) -> None:
    """Write the lifeline health check report (城市体检报告): indicators, index, diagnosis, ledger."""
    from models.healthcheck.indicators import load_definitions
    from models.healthcheck.report import build_report, write_pdf, year_bounds
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    click.echo(f"wrote {out}")
    if not no_pdf:
        pdf = out.with_suffix(".pdf")
        if write_pdf(out, pdf, chromium=chromium):
            click.echo(f"wrote {pdf}")
        else:
            click.echo("no PDF (Chromium or Playwright missing); the HTML prints as it is", err=True)
