"""``lifeline risk``: waterlogging (内涝) nowcast with SWMM, surrogate training, instant what-ifs."""

from __future__ import annotations

import itertools
import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from lifeline.settings import Settings
from lifeline.simulate_commands import load_city_and_sensors

DEFAULT_SURROGATE = Path("waterlogging-surrogate")


def _drainage_setup(settings: Settings, use_demo: bool) -> tuple[Any, Any, Any, Any]:
    """The city, its drainage network, the ponding model and the risk assets."""
    from models.waterlogging.ponding import PondingModel
    from models.waterlogging.risk import RiskAssets
    from twin.sensors import Network

    city = load_city_and_sensors(settings, demo=use_demo)
    if Network.DRAINAGE not in city.networks:
        raise click.UsageError("the twin has no drainage network (lifeline twin import model.inp)")
    network = city.networks[Network.DRAINAGE]
    model = PondingModel(network, city.terrain, city.low_points.values())
    return city, network, model, RiskAssets.for_city(city, model)


def _write_geojson(risk: Any, crs: str, out: Path, horizon: timedelta | None = None) -> None:
    from models.waterlogging.risk import risk_geojson

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(risk_geojson(risk, crs, horizon=horizon), ensure_ascii=False), encoding="utf-8")


def _show(risk: Any, limit: int = 12) -> None:
    rows = risk.graded()
    counts = {g: sum(1 for r in rows if r["grade"] == g) for g in (1, 2, 3, 4)}
    click.echo(f"graded assets: I {counts[1]}, II {counts[2]}, III {counts[3]}, IV {counts[4]}")
    for r in rows[:limit]:
        eta = f"{r['eta_s'] / 60:.0f} min" if r["eta_s"] is not None else "—"
        click.echo(f"  {r['grade']}  {r['ref']:<22} {r['depth_m']:.2f} m  eta {eta:>7}  {r['name']}")


@click.group()
def risk() -> None:
    """Waterlogging (内涝) risk: SWMM nowcast, surrogate, what-ifs."""


@risk.command("nowcast")
@click.option("--return-period", type=float, default=20.0, show_default=True, help="Forecast design storm, years.")
@click.option("--duration", type=int, default=120, show_default=True, help="Forecast storm duration, minutes.")
@click.option("--peak-ratio", type=float, default=0.4, show_default=True, help="Chicago peak position.")
@click.option(
    "--forecast-csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Forecast rain (ts, rain_mm_h at a regular step) instead of a design storm.",
)
@click.option(
    "--observed-csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gauge rain up to now (ts, rain_mm_h, same step); the model warms up on it.",
)
@click.option("--horizon", type=float, default=6.0, show_default=True, help="Hours ahead.")
@click.option(
    "--members",
    type=click.IntRange(1, 15),
    default=1,
    show_default=True,
    help="Rain futures: 1 runs the forecast as given; more run it scaled by quantiles of its error and warn "
    "by the probability of flooding (the rule chosen in bench/bench_nowcast.py).",
)
@click.option(
    "--forecast-sigma",
    type=click.FloatRange(0.0, 2.0),
    default=0.25,
    show_default=True,
    help="Log-normal σ of the forecast's depth error, for --members > 1.",
)
@click.option(
    "--every",
    type=click.IntRange(10, 24 * 3600),
    default=None,
    help="Run every SECONDS (e.g. 300) on the gauges' rain and the levels in the database, store the risk map "
    "and push the alerts; the forecast comes from --forecast-csv (re-read each time), else from the newest "
    "stored forecast, else from the gauges alone.",
)
@click.option("--cycles", type=click.IntRange(0), default=0, show_default=True, help="With --every: stop after N.")
@click.option(
    "--forecast-max-age",
    type=click.IntRange(1, 24 * 60),
    default=180,
    show_default=True,
    help="With --every and no --forecast-csv: use the newest stored forecast (lifeline risk forecast put, "
    "POST /api/risk/forecast) issued at most this many minutes ago and covering now; else the gauges alone.",
)
@click.option(
    "--warm-up", type=click.IntRange(10, 24 * 60), default=180, show_default=True, help="With --every: minutes."
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("risk-map.geojson"), show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin.")
@click.pass_context
def nowcast_command(
    ctx: click.Context,
    return_period: float,
    duration: int,
    peak_ratio: float,
    forecast_csv: Path | None,
    observed_csv: Path | None,
    horizon: float,
    members: int,
    forecast_sigma: float,
    every: int | None,
    cycles: int,
    forecast_max_age: int,
    warm_up: int,
    out: Path,
    use_demo: bool,
) -> None:
    """Run SWMM ahead of now on the observed and forecast rain; write the risk map and print the warnings."""
    from models.waterlogging.ensemble import WarningRule, ensemble_nowcast, forecast_futures, warned_volumes
    from models.waterlogging.nowcast import nowcast, swmm_pool
    from models.waterlogging.risk import alert_changes, assess
    from twin.errors import LifelineError
    from twin.storms import DEFAULT_FORMULA, FORMULAS, chicago_storm, read_rain_csv

    if horizon <= 0 or horizon > 48:
        raise click.BadParameter("between 0 and 48 hours", param_hint="--horizon")
    settings: Settings = ctx.obj
    city, network, model, assets = _drainage_setup(settings, use_demo)
    if every is not None:
        _scheduled(
            settings,
            city,
            network,
            model,
            assets,
            every_s=every,
            cycles=cycles,
            warm_up=timedelta(minutes=warm_up),
            forecast_csv=forecast_csv,
            forecast_max_age=timedelta(minutes=forecast_max_age),
            members=members,
            forecast_sigma=forecast_sigma,
            horizon=timedelta(hours=horizon),
        )
        return
    step = timedelta(minutes=1)
    try:
        if forecast_csv is not None:
            records = read_rain_csv(forecast_csv)
            forecast = [v for _ts, v in records]
            if len(records) > 1:
                step = records[1][0] - records[0][0]
        else:
            forecast = chicago_storm(
                FORMULAS[DEFAULT_FORMULA],
                return_period_years=return_period,
                duration_min=duration,
                peak_ratio=peak_ratio,
            )
        observed = [v for _ts, v in read_rain_csv(observed_csv)] if observed_csv is not None else []
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        click.echo(
            f"nowcast: {len(network.nodes)} nodes, {horizon:g} h ahead, {members} rain future(s), SWMM in worker "
            "processes …",
            err=True,
        )
        started = time.perf_counter()
        with swmm_pool(min(members, 2)) as pool:
            if members == 1:
                cast = nowcast(
                    network,
                    now=now,
                    observed_rain_mm_h=observed,
                    forecast_rain_mm_h=forecast,
                    rain_step=step,
                    horizon=timedelta(hours=horizon),
                    executor=pool,
                )
                volumes, runs = cast.volume_m3, cast.runs
            else:
                ensemble = ensemble_nowcast(
                    network,
                    now=now,
                    observed_rain_mm_h=observed,
                    futures=forecast_futures(forecast, sigma=forecast_sigma, members=members),
                    rain_step=step,
                    horizon=timedelta(hours=horizon),
                    executor=pool,
                )
                cast = ensemble.central()
                runs = sum(m.runs for m in ensemble.members)
                rule = WarningRule()
                probability = ensemble.probability(min_volume_m3=rule.min_volume_m3)
                named = rule.named(ensemble, warned_before=False)
                click.echo(
                    f"locations with a chance of flooding ≥ {rule.min_volume_m3:g} m³: {int((probability > 0).sum())}; "
                    f"named by the warning rule (p ≥ {rule.probability:g}): {len(named)}"
                )
                if not named and (probability >= rule.probability).any():
                    click.echo("no warning yet: the futures disagree too much on where (the rule waits)")
                volumes = warned_volumes(ensemble, named)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"done in {time.perf_counter() - started:.1f} s ({runs} SWMM run(s))", err=True)
    flooded = [n for n, v in zip(cast.node_ids, volumes, strict=True) if v >= 1.0]
    click.echo(f"nodes expected to flood: {len(flooded)}, {float(volumes.sum()):.0f} m³ in all")
    order = [cast.node_ids.index(n) for n in model.node_ids]
    risk_map = assess(
        assets,
        model.fill(dict(zip(cast.node_ids, volumes, strict=True))),
        issued=cast.issued,
        source="nowcast",
        node_eta_s=cast.eta_s[order],
        node_duration_s=cast.duration_s[order],
    )
    _show(risk_map)
    changes, _active = alert_changes(risk_map, {})
    for change in changes:
        click.echo(f"预警 {change.cause_key} 级别{change.grade}: {change.message}")
    _write_geojson(risk_map, city.crs, out, timedelta(hours=horizon))
    click.echo(f"risk map: {out}")


def _csv_forecast(path: Path, now: datetime) -> list[float]:
    """The forecast CSV (re-read each cycle) as the intensity of each minute from *now*, mm/h.

    Any regular step is resampled to minutes keeping the depth (as stored forecasts are); a forecast that starts
    after *now* has no rain before its start.

    Raises:
        LifelineError: the file cannot be read, or its rows are not at a regular step (the cycle fails, not the loop).
    """
    from twin.errors import ConfigError
    from twin.store.forecasts import resample_to_minutes
    from twin.storms import read_rain_csv

    records = read_rain_csv(path)
    if not records:
        return []
    steps = {later[0] - earlier[0] for earlier, later in itertools.pairwise(records)}
    if len(steps) > 1 or any(step.total_seconds() <= 0 for step in steps):
        raise ConfigError(f"{path.name}: the forecast's rows must be at one regular step (found {len(steps)})")
    step_s = int(steps.pop().total_seconds()) if steps else 60
    first, minutes = resample_to_minutes(records[0][0], step_s, [value for _ts, value in records])
    ahead = int((now - first).total_seconds() // 60)
    return minutes[ahead:] if ahead >= 0 else [0.0] * -ahead + minutes


def _scheduled(
    settings: Settings,
    city: Any,
    network: Any,
    model: Any,
    assets: Any,
    *,
    every_s: int,
    cycles: int,
    warm_up: timedelta,
    forecast_csv: Path | None,
    forecast_max_age: timedelta,
    members: int,
    forecast_sigma: float,
    horizon: timedelta,
) -> None:
    """The ``--every`` loop: one ensemble nowcast per cycle from the database's readings; a failed cycle is
    reported and the next one tried.

    The forecast of each cycle is the CSV file when given, else the newest stored forecast issued at most
    *forecast_max_age* ago that covers the cycle's minute (:func:`twin.store.forecasts.latest_forecast`), else
    none: futures from the gauges alone. The cycle line says which.
    """
    import psycopg

    from models.waterlogging.ensemble import WarningRule
    from models.waterlogging.nowcast import swmm_pool
    from models.waterlogging.risk import risk_geojson
    from models.waterlogging.schedule import WarningChain, read_observations
    from twin.errors import LifelineError
    from twin.store.alerts import active_alerts, apply_changes
    from twin.store.db import connect
    from twin.store.risk_maps import save_risk_map

    if not settings.database_url:
        raise click.UsageError("--every reads the gauges and levels from the database: set LIFELINE_DATABASE_URL")
    url, schema = settings.database_url, settings.db_schema
    chain = WarningChain(WarningRule(), members=members, sigma=forecast_sigma, warm_up=warm_up, horizon=horizon)
    click.echo(
        f"scheduled nowcast every {every_s} s: {len(network.nodes)} nodes, {members} rain future(s) per forecast, "
        f"{horizon.total_seconds() / 3600:g} h ahead (Ctrl-C stops)",
        err=True,
    )
    # The waterlogging alerts a previous run left active: the first cycle updates or clears them, instead of
    # raising them again or leaving them active for ever.
    try:
        with connect(url, schema=schema, autocommit=True) as conn:
            chain.grades = {
                str(a["cause_key"]): int(a["grade"]) for a in active_alerts(conn) if a["kind"] == "waterlogging"
            }
    except psycopg.Error as exc:
        raise click.ClickException(f"cannot read the active alerts: {exc}") from exc
    if chain.grades:
        click.echo(
            f"{len(chain.grades)} waterlogging alert(s) active from before "
            f"({', '.join(sorted(chain.grades))}): the first cycle updates or clears them",
            err=True,
        )
    done = 0
    with swmm_pool(2) as pool:
        while True:
            started = time.monotonic()
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            done += 1
            grades = dict(chain.grades)
            try:
                forecast: list[float] | None = None
                used = "gauges alone"
                if forecast_csv is not None:
                    forecast = _csv_forecast(forecast_csv, now)
                    used = f"forecast {forecast_csv.name}"
                with connect(url, schema=schema, autocommit=True) as conn:
                    if forecast_csv is None:
                        forecast, used = _stored_forecast(conn, now, forecast_max_age)
                    seen = read_observations(conn, city.sensors, start=chain.start_for(now), now=now)
                cycle = chain.run(
                    network, model, assets, now=now, observations=seen, forecast_mm_h=forecast, executor=pool
                )
                with connect(url, schema=schema) as conn, conn.transaction():
                    events = apply_changes(conn, cycle.changes, schema=schema)
                    map_id = save_risk_map(conn, risk_geojson(cycle.risk, city.crs, horizon=horizon))
                misfit = cycle.ensemble.members[0].misfit
                click.echo(
                    f"cycle {done} at {now:%Y-%m-%d %H:%M}Z: {used}; rain {seen.depth_mm:.1f} mm since "
                    f"{seen.start:%H:%M}Z ({seen.gauges} gauges, {seen.missing_minutes} minutes missing), "
                    f"{len(seen.depth_m)} levels"
                    + (f" off by {misfit.rmse_m:.2f} m RMSE" if misfit else "")
                    + f"; {'new chain, ' if cycle.restarted else ''}named {len(cycle.named)}, graded "
                    f"{int((cycle.risk.grade > 0).sum())}; alerts {sum(e is not None for e in events)} "
                    f"({', '.join(f'{c.event} {c.cause_key}' for c in cycle.changes) or 'none'}); risk map #{map_id}; "
                    f"{cycle.ensemble.wall_s:.1f} s"
                )
            except (LifelineError, psycopg.Error) as exc:
                chain.grades = grades  # the alerts were not stored: the next cycle raises them again
                click.echo(f"cycle {done} at {now:%H:%M}Z failed: {exc}", err=True)
            if cycles and done >= cycles:
                return
            time.sleep(max(0.0, every_s - (time.monotonic() - started)))


def _stored_forecast(conn: Any, now: datetime, max_age: timedelta) -> tuple[list[float] | None, str]:
    """The newest fresh stored forecast's rain from *now* and how the cycle line names it; None: gauges alone."""
    import psycopg

    from twin.store.forecasts import latest_forecast

    try:
        with conn.transaction():  # a missing table must not leave the connection in a failed transaction
            current = latest_forecast(conn, now, max_age)
    except psycopg.errors.UndefinedTable:
        return None, "no forecast table (lifeline db migrate): gauges alone"
    if current is None:
        return None, (
            f"no fresh forecast: gauges alone (none issued in the last {max_age.total_seconds() / 60:g} min covers now)"
        )
    f = current.forecast
    return list(current.rain_mm_h), (
        f"forecast #{f.id} {f.source} issued {f.issued_at:%Y-%m-%d %H:%M}Z, {current.age.total_seconds() / 60:.0f} min "
        f"old, {len(current.rain_mm_h)} min ahead"
    )


def _login() -> str:
    """Who runs the command, for a forecast's ``sent_by``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "cli"


@risk.group("forecast")
def forecast_group() -> None:
    """Rain forecasts in the store, for the scheduled nowcast (lifeline risk nowcast --every)."""


@forecast_group.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default=None, help="Who issued it (e.g. 气象局); default: the file's name.")
@click.option(
    "--issued-at",
    default=None,
    help="When it was issued, ISO 8601 with a UTC offset (e.g. 2026-07-01T08:00+08:00); default: now.",
)
@click.option("--sent-by", default=None, help="Who sends it, for the record; default: cli:<login name>.")
@click.pass_context
def forecast_put(
    ctx: click.Context, file: Path, source: str | None, issued_at: str | None, sent_by: str | None
) -> None:
    """Store a rain forecast from FILE, a CSV of ts,rain_mm_h at a regular step (as --forecast-csv reads).

    Each row's intensity holds from its time to the next row's; the step is the first two rows' (one minute for
    a single row) and is resampled to one minute. Sending the same forecast again stores nothing and says so.
    """
    import itertools

    import psycopg

    from twin.errors import LifelineError
    from twin.store.db import connect
    from twin.store.forecasts import save_forecast
    from twin.storms import read_rain_csv

    settings: Settings = ctx.obj
    if not settings.database_url:
        raise click.UsageError("forecasts are stored in the database: set LIFELINE_DATABASE_URL")
    now = datetime.now(UTC).replace(microsecond=0)
    if issued_at is None:
        issued = now
    else:
        try:
            issued = datetime.fromisoformat(issued_at)
        except ValueError as exc:
            raise click.BadParameter(f"{issued_at!r} is not ISO 8601", param_hint="--issued-at") from exc
        if issued.tzinfo is None:
            raise click.BadParameter("needs a UTC offset (e.g. +08:00 or Z)", param_hint="--issued-at")
    try:
        records = read_rain_csv(file)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    steps = {b[0] - a[0] for a, b in itertools.pairwise(records)} or {timedelta(minutes=1)}
    if len(steps) > 1:
        raise click.ClickException(f"{file}: the rows must be at a regular step (found {len(steps)} different steps)")
    step_s = next(iter(steps)).total_seconds()
    if step_s != int(step_s):
        raise click.ClickException(f"{file}: the step ({step_s:g} s) must be a whole number of seconds")
    try:
        with connect(settings.database_url, schema=settings.db_schema, autocommit=True) as conn:
            saved = save_forecast(
                conn,
                source=source if source is not None else file.name,
                issued_at=issued,
                start=records[0][0],
                step_s=int(step_s),
                rain_mm_h=[v for _ts, v in records],
                sent_by=sent_by if sent_by is not None else _login(),
                received_at=now,
            )
    except psycopg.errors.UndefinedTable as exc:
        raise click.ClickException("the database has no forecast table yet: run lifeline db migrate") from exc
    except (LifelineError, psycopg.Error) as exc:
        raise click.ClickException(str(exc)) from exc
    f = saved.forecast
    what = f"stored forecast #{f.id}" if saved.created else f"already stored as #{f.id}: nothing written"
    click.echo(
        f"{what} ({f.source}, issued {f.issued_at:%Y-%m-%d %H:%M:%S}Z): {len(f.rain_mm_h)} minutes from "
        f"{f.start:%Y-%m-%d %H:%M}Z, {sum(f.rain_mm_h) / 60:.1f} mm"
        + (f" (resampled from {f.sent_values} steps of {f.sent_step_s} s)" if f.sent_step_s != 60 else "")
    )


@risk.command("train-surrogate")
@click.option("--storms", type=int, default=60, show_default=True, help="Training storms (SWMM runs).")
@click.option("--test", "test_storms", type=int, default=20, show_default=True, help="Unseen storms to score.")
@click.option("--workers", type=int, default=2, show_default=True, help="SWMM worker processes.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_SURROGATE, show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin.")
@click.pass_context
def train_surrogate(
    ctx: click.Context, storms: int, test_storms: int, workers: int, seed: int, out: Path, use_demo: bool
) -> None:
    """Run SWMM on many design storms, fit the surrogate, score it on unseen storms and save it (npz + JSON)."""
    from models.waterlogging.nowcast import swmm_pool
    from models.waterlogging.surrogate import Surrogate, evaluate, sample_storms, simulate_storms
    from twin.errors import LifelineError

    if storms < 5 or test_storms < 1 or workers < 1:
        raise click.UsageError("need at least 5 training storms, 1 test storm and 1 worker")
    settings: Settings = ctx.obj
    _city, network, _model, assets = _drainage_setup(settings, use_demo)

    def progress(done: int, total: int) -> None:
        if done == total or done % 5 == 0:
            click.echo(f"  SWMM runs {done}/{total}", err=True)

    try:
        with swmm_pool(workers) as pool:
            click.echo(f"simulating {storms} training storms …", err=True)
            train = simulate_storms(network, sample_storms(storms, seed=seed), executor=pool, progress=progress)
            click.echo(f"simulating {test_storms} unseen storms …", err=True)
            unseen = simulate_storms(
                network, sample_storms(test_storms, seed=seed + 1000), executor=pool, progress=progress
            )
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    surrogate = Surrogate.fit(train, network_name=network.name)
    score = evaluate(surrogate, unseen, assets)
    surrogate.info["unseen"] = {
        "storms": score.storms,
        "r2_volume": score.r2_volume,
        "mae_m3": score.mae_m3,
        "grade_agreement": score.grade_agreement,
        "grade_agreement_all": score.grade_agreement_all,
        "timed_pairs": score.timed_pairs,
        **{
            name: None if math.isnan(value) else value  # no pair flooding in both: unknown, not NaN in the JSON
            for name, value in (
                ("eta_median_abs_min", score.eta_median_abs_min),
                ("eta_p90_abs_min", score.eta_p90_abs_min),
                ("duration_median_abs_min", score.duration_median_abs_min),
            )
        },
    }
    surrogate.save(out)
    click.echo(
        f"unseen storms: R² {score.r2_volume:.3f} on node flood volume, grade agreement "
        f"{score.grade_agreement:.1%} (graded assets), {score.grade_agreement_all:.2%} (all); first flooding off by "
        f"{score.eta_median_abs_min:.1f} min, duration by {score.duration_median_abs_min:.1f} min (medians)"
    )
    click.echo(f"saved: {out}")


@risk.command("whatif")
@click.option("--return-period", type=float, required=True, help="Years.")
@click.option("--duration", type=int, default=120, show_default=True, help="Minutes.")
@click.option("--peak-ratio", type=float, default=0.4, show_default=True)
@click.option("--antecedent", type=float, default=10.0, show_default=True, help="Rain in the hours before, mm.")
@click.option(
    "--surrogate",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SURROGATE,
    show_default=True,
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("whatif.geojson"), show_default=True)
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin.")
@click.pass_context
def whatif(
    ctx: click.Context,
    return_period: float,
    duration: int,
    peak_ratio: float,
    antecedent: float,
    folder: Path,
    out: Path,
    use_demo: bool,
) -> None:
    """Show at once what a design storm would flood, from the trained surrogate (no SWMM run)."""
    from models.waterlogging.surrogate import StormFeatures, Surrogate
    from twin.errors import ConfigError

    try:
        storm = StormFeatures(return_period, duration, peak_ratio, antecedent)
        surrogate = Surrogate.load(folder)
    except ConfigError as exc:
        raise click.ClickException(f"{exc} (train one with: lifeline risk train-surrogate)") from exc
    settings: Settings = ctx.obj
    city, _network, _model, assets = _drainage_setup(settings, use_demo)
    started = time.perf_counter()
    risk_map = surrogate.risk_map(storm, assets, issued=datetime.now(UTC))
    click.echo(f"surrogate risk map in {(time.perf_counter() - started) * 1000:.1f} ms")
    _show(risk_map)
    _write_geojson(risk_map, city.crs, out)
    click.echo(f"risk map: {out}")
