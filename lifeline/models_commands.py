"""``lifeline models``: fit the per-zone multivariate models on the stored history, and list their versions."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from lifeline.settings import Settings


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: an ISO date or time, e.g. 2026-10-01") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@click.group("models")
def models() -> None:
    """Per-zone multivariate models (a pipe network's sensors in one district), fitted on stored history."""


@models.command("fit")
@click.option("--days", type=int, default=28, show_default=True, help="Normal period: the last DAYS full days.")
@click.option("--from", "start_text", default=None, help="Or an explicit start (ISO), with --to.")
@click.option("--to", "end_text", default=None, help="End of the period (ISO, exclusive).")
@click.pass_context
def fit(ctx: click.Context, days: int, start_text: str | None, end_text: str | None) -> None:
    """Fit one model per zone on the hourly rollups of a normal period and store it as the zone's next version.

    Ingest runs the newest version of each zone from its next start. Choose a period without known incidents.
    """
    from models.offline import OfflineModelError
    from models.zones import default_period, fit_zones, store_fit
    from twin.store.db import connect
    from twin.store.sensors import load_registry

    s: Settings = ctx.obj
    if not s.database_url:
        raise click.UsageError("set LIFELINE_DATABASE_URL")
    start, end = default_period(datetime.now(UTC), days)
    start = _when(start_text) or start
    end = _when(end_text) or end
    if end <= start:
        raise click.BadParameter("--to must be after --from")
    with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
        sensors = dict(load_registry(conn).items())
        fits = fit_zones(conn, sensors, start=start, end=end)
        if not fits:
            raise click.ClickException("no zone has 3 or more water or gas pressure/flow/level sensors")
        stored = 0
        for f in fits:
            if f.detector is None:
                click.echo(f"{f.zone}: not fitted — {f.problem}", err=True)
                continue
            try:
                version = store_fit(conn, f, start=start, end=end)
            except OfflineModelError as exc:
                click.echo(f"{f.zone}: not stored — {exc}", err=True)
                continue
            stored += 1
            click.echo(f"{f.zone}: version {version}, {len(f.sensors)} sensors, {f.hours} hours")
    if stored == 0:
        raise click.ClickException(f"no zone could be fitted on {start:%Y-%m-%d} … {end:%Y-%m-%d}")


@models.command("list")
@click.pass_context
def list_models(ctx: click.Context) -> None:
    """Every stored zone model version, newest first per zone."""
    from twin.store.db import connect
    from twin.store.zone_models import list_models as stored

    s: Settings = ctx.obj
    if not s.database_url:
        raise click.UsageError("set LIFELINE_DATABASE_URL")
    with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
        for r in stored(conn):
            click.echo(
                f"{r['zone']}\tv{r['version']}\t{r['fitted_at']:%Y-%m-%d %H:%M}\t{r['period_from']:%Y-%m-%d}"
                f"…{r['period_to']:%Y-%m-%d}\t{r['sensors']} sensors\t{r['hours']} h"
            )
