"""The ``lifeline`` command."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from lifeline.logs import setup_logging
from lifeline.settings import Settings
from twin.errors import LifelineError


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _migrate(s: Settings) -> None:
    """Apply any pending migrations (idempotent; an advisory lock serialises concurrent starts)."""
    from twin.store.db import connect
    from twin.store.schema import migrate

    with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
        migrate(conn, schema=s.db_schema, mode=s.storage_mode)


def _need(value: str | None, name: str) -> str:
    if not value:
        raise click.UsageError(f"set LIFELINE_{name} (or run 'lifeline demo', which starts embedded servers)")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lifeline-twin")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Lifeline Twin: digital twin and IoT monitor for a city's drainage, water and gas lifelines.

    Settings come from the environment (LIFELINE_DATABASE_URL, LIFELINE_MQTT_URL, …); see the README.
    """
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's ValidationError names every bad variable
        raise click.ClickException(f"bad settings: {exc}") from exc
    setup_logging(settings.log_level)
    ctx.obj = settings


@cli.command()
@click.option("--port", type=int, default=None, help="HTTP port of the page (default: LIFELINE_HTTP_PORT, 8080).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between demo stream ticks.")
@click.option(
    "--whatif/--no-whatif",
    default=True,
    show_default=True,
    help="Train (once, then cached) the surrogate behind the 3D page's what-if panel, in the background.",
)
@click.pass_context
def demo(ctx: click.Context, port: int | None, interval: float, whatif: bool) -> None:
    """Run the whole product on one machine with a synthetic stream; Ctrl-C stops everything.

    Without LIFELINE_DATABASE_URL / LIFELINE_MQTT_URL an embedded PostgreSQL and MQTT broker are started.
    """
    from lifeline.demo import run_demo

    settings = _settings(ctx)
    if port is not None:
        settings = settings.model_copy(update={"http_port": port})
    try:
        run_demo(settings, interval_s=interval, whatif=whatif)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: everything was stopped on the way out


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Create the schema or bring it up to date (TimescaleDB when the server has it)."""
    from twin.store.db import connect
    from twin.store.schema import migrate

    s = _settings(ctx)
    with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
        mode = migrate(conn, schema=s.db_schema, mode=s.storage_mode)
    click.echo(f"schema {s.db_schema}: up to date ({mode.value})")


@db.command("status")
@click.pass_context
def db_status(ctx: click.Context) -> None:
    """What the store holds: mode, migrations, table sizes, the raw readings' span and retention."""
    from twin.store.db import connect
    from twin.store.status import store_status

    s = _settings(ctx)
    with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
        try:
            st = store_status(conn, schema=s.db_schema)
        except LifelineError as exc:
            raise click.ClickException(str(exc)) from exc

    def when(ts: object) -> str:
        return ts.isoformat(timespec="minutes") if hasattr(ts, "isoformat") else "—"

    pending = f"; {len(st.pending)} pending: run 'lifeline db migrate'" if st.pending else ", up to date"
    click.echo(f"schema {st.schema}: {st.mode.value}, migration {st.version}{pending}; {st.sensors} sensors")
    for t in st.tables:
        click.echo(f"  {t.name:<17} {'~' + format(t.rows, ','):>15} rows {t.bytes / 2**20:>10,.1f} MiB")
    click.echo(f"raw readings: {when(st.oldest_raw)} … {when(st.newest_raw)}")
    if st.raw_deleted_before is not None:
        click.echo(f"deleted by retention before {when(st.raw_deleted_before)} (rollups kept)")
    else:
        click.echo(f"retention: nothing deleted yet (plain PostgreSQL keeps {s.raw_retention_days} days, 0: all)")


@db.command("prune")
@click.option(
    "--keep-days",
    type=click.IntRange(min=1),
    default=None,
    help="Raw history to keep, days (default: LIFELINE_RAW_RETENTION_DAYS, 800).",
)
@click.option(
    "--slice-hours",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Hours deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing: say how many raw readings would go.")
@click.pass_context
def db_prune(ctx: click.Context, keep_days: int | None, slice_hours: float, dry_run: bool) -> None:
    """Delete raw readings older than the retention, on plain PostgreSQL (the rollups are kept).

    TimescaleDB's retention policy does this by itself there. Safe beside a running ingest; a stopped run keeps
    what it deleted and the next one goes on from the oldest reading left.
    """
    from datetime import datetime, timedelta

    from twin.store.db import connect
    from twin.store.retention import prune_readings

    s = _settings(ctx)
    days = keep_days if keep_days is not None else s.raw_retention_days
    if days <= 0:
        raise click.UsageError("LIFELINE_RAW_RETENTION_DAYS is 0 (keep everything): give --keep-days")
    shown = [0.0]

    def progress(end: datetime, deleted: int, done: int, planned: int) -> None:
        now = time.monotonic()
        if done == planned or now - shown[0] >= 2.0:
            shown[0] = now
            click.echo(f"  up to {end.isoformat(timespec='minutes')}: {deleted:,} rows deleted, slice {done}/{planned}")

    with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
        try:
            result = prune_readings(
                conn,
                schema=s.db_schema,
                keep=timedelta(days=days),
                slice_span=timedelta(hours=slice_hours),
                progress=progress,
                dry_run=dry_run,
            )
        except LifelineError as exc:
            raise click.ClickException(str(exc)) from exc
    cutoff = result.cutoff.isoformat(timespec="minutes")
    if result.skipped:
        click.echo(f"schema {s.db_schema}: nothing deleted — {result.skipped}")
    elif result.oldest is None:
        click.echo(f"schema {s.db_schema}: no readings")
    elif result.planned == 0:
        click.echo(f"schema {s.db_schema}: nothing before {cutoff} (oldest reading {result.oldest.isoformat()})")
    elif dry_run:
        click.echo(
            f"schema {s.db_schema}: would delete {result.to_delete:,} raw readings before {cutoff} (oldest"
            f" {result.oldest.isoformat(timespec='minutes')}) in {result.planned} slices; nothing deleted"
        )
    else:
        click.echo(
            f"schema {s.db_schema}: {result.deleted:,} raw readings before {cutoff} deleted in {result.slices} slices,"
            f" {result.seconds:.1f} s; the 1-minute and 1-hour rollups are kept"
        )


@cli.group()
def sensors() -> None:
    """The sensors the twin knows."""


@sensors.command("load")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--demo", "with_demo", is_flag=True, help="Load the built-in demo sensors.")
@click.pass_context
def sensors_load(ctx: click.Context, files: tuple[Path, ...], with_demo: bool) -> None:
    """Load sensors from TOML FILES ([[sensor]] tables) and/or the demo set; existing ids are updated."""
    from twin.demo import demo_sensors
    from twin.sensors import Sensor, load_sensors_file
    from twin.store.db import connect
    from twin.store.sensors import upsert_sensors

    s = _settings(ctx)
    found: list[Sensor] = demo_sensors() if with_demo else []
    try:
        for path in files:
            found.extend(load_sensors_file(path))
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    if not found:
        raise click.UsageError("name one or more files, or --demo")
    with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
        n = upsert_sensors(conn, found)
    click.echo(f"{n} sensors loaded into schema {s.db_schema}")


@cli.command()
@click.option(
    "--health-port", type=int, default=None, help="Serve GET /health here (default: LIFELINE_INGEST_HEALTH_PORT)."
)
@click.pass_context
def ingest(ctx: click.Context, health_port: int | None) -> None:
    """Consume sensor messages from MQTT into the database until SIGINT/SIGTERM.

    While the database is away, batches are spooled to disk (LIFELINE_SPOOL_DIR) and replayed when it returns.
    """
    from ingest.service import IngestService
    from ingest.spool import SpoolError

    s = _settings(ctx)
    _migrate(s)
    mqtt_config = s.mqtt_config(_need(s.mqtt_url, "MQTT_URL"))
    svc = IngestService(
        conninfo=_need(s.database_url, "DATABASE_URL"),
        schema=s.db_schema,
        mqtt_config=mqtt_config,
        prefix=s.topic_prefix,
        limits=s.payload_limits(),
        batch_max=s.ingest_batch_max,
        flush_interval_s=s.ingest_flush_interval_s,
        db_writers=s.ingest_db_writers,
        fold_interval_s=s.ingest_fold_interval_s,
        batch_idle_s=s.ingest_batch_idle_s,
        live_batch_messages=s.ingest_live_batch_messages,
        settle_gc=True,
        failpoint=s.ingest_failpoint,
        spool_dir=s.spool_directory(mqtt_config.client_id),
        spool_max_bytes=s.spool_max_bytes,
        health_port=health_port if health_port is not None else s.ingest_health_port,
        health_host=s.ingest_health_host,
        statement_timeout_s=s.ingest_statement_timeout_s,
        raw_retention_days=s.raw_retention_days,
    )
    _stop_on_signals(svc.stop)
    try:
        svc.run_forever()
    except SpoolError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.option("--host", default=None, help="Bind address (default: LIFELINE_HTTP_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: LIFELINE_HTTP_PORT).")
@click.option(
    "--scene-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder written by 'lifeline twin export-scene', for the 3D page.",
)
@click.option(
    "--surrogate",
    "surrogate_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder written by 'lifeline risk train-surrogate': instant what-if risk maps (GET /api/risk/whatif, "
    "the 3D page's what-if panel) for the stored twin.",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, scene_dir: Path | None, surrogate_dir: Path | None
) -> None:
    """Serve the API, the alert websockets, the operations page and (with --scene-dir) the 3D page."""
    import uvicorn

    from viewer.app import create_app

    s = _settings(ctx)
    _migrate(s)
    whatif = None
    if surrogate_dir is not None:
        from twin.errors import LifelineError
        from twin.store.assets import load_city
        from twin.store.db import connect
        from viewer.whatif import WhatIf

        try:
            with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
                city = load_city(conn)
            whatif = WhatIf.load(surrogate_dir, city)
        except LifelineError as exc:
            raise click.ClickException(f"--surrogate {surrogate_dir}: {exc}") from exc
        click.echo(f"what-ifs from the surrogate in {surrogate_dir} ({whatif.surrogate.info.get('storms')} storms)")
    drill_env = (
        {
            "LIFELINE_MQTT_URL": s.mqtt_url,
            "LIFELINE_MQTT_PROTOCOL": s.mqtt_protocol,
            "LIFELINE_TOPIC_PREFIX": s.topic_prefix,
            "LIFELINE_DATABASE_URL": _need(s.database_url, "DATABASE_URL"),
            "LIFELINE_DB_SCHEMA": s.db_schema,
        }
        if s.mqtt_url
        else None
    )
    app = create_app(
        conninfo=_need(s.database_url, "DATABASE_URL"),
        schema=s.db_schema,
        drill_env=drill_env,
        scene_dir=scene_dir,
        auth=_authenticator(s),
        cors_origins=s.cors_origins,
        webhooks=_webhooks(s),
        whatif=whatif,
    )
    uvicorn.run(app, host=host or s.http_host, port=port or s.http_port, log_level=s.log_level.lower())


def _webhooks(s: Settings) -> Any:
    from viewer.webhooks import parse_hooks

    try:
        hooks = parse_hooks(
            s.webhook_urls, events=s.webhook_events, max_grade=s.webhook_max_grade, secret=s.webhook_secret
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if hooks:
        click.echo(f"webhooks: {len(hooks)} ({', '.join(s.webhook_events)}; grade ≤ {s.webhook_max_grade})", err=True)
    return hooks


def _authenticator(s: Settings) -> Any:
    """The API's authenticator from the settings; refuses to run without tokens unless auth is off on purpose."""
    import logging

    from viewer.auth import Authenticator

    if s.auth == "off":
        logging.getLogger("lifeline").warning(
            "LIFELINE_AUTH=off: the API and websockets are open to anyone who can reach this port"
        )
        return Authenticator.open(rate_per_s=s.api_rate_per_s)
    if s.api_tokens_file is None:
        raise click.ClickException(
            "the API needs tokens: create them with 'lifeline tokens create --name ops-1 --role operator"
            " --file tokens.toml' and set LIFELINE_API_TOKENS_FILE=tokens.toml"
            " (or LIFELINE_AUTH=off on a closed network)"
        )
    try:
        auth = Authenticator.from_file(s.api_tokens_file, rate_per_s=s.api_rate_per_s, burst=s.api_burst)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"API tokens: {len(auth.entries or [])} from {s.api_tokens_file}", err=True)
    return auth


def _stop_on_signals(stop: Any) -> None:
    def handler(_sig: int, _frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@cli.command("broker-config")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo sensors instead of the database's.")
@click.option("--port", type=int, default=1883, show_default=True)
@click.option("--tls-dir", default=None, help="Folder with ca.crt, server.crt, server.key: listen with TLS only.")
@click.pass_context
def broker_config(ctx: click.Context, out_dir: Path, use_demo: bool, port: int, tls_dir: str | None) -> None:
    """Write a Mosquitto config, password file and ACL: each sensor may publish only to its own topic."""
    from lifeline.broker_config import accounts_for, write_broker_config
    from twin.demo import demo_sensors
    from twin.store.db import connect
    from twin.store.sensors import load_registry

    s = _settings(ctx)
    if use_demo:
        found = demo_sensors()
    else:
        with connect(_need(s.database_url, "DATABASE_URL"), schema=s.db_schema, autocommit=True) as conn:
            found = list(load_registry(conn).values())
    files = write_broker_config(out_dir, accounts_for(found, prefix=s.topic_prefix), port=port, tls_dir=tls_dir)
    click.echo(
        f"{len(found)} sensor accounts + 3 service accounts → {files.config}, {files.acl}, {files.passwords};"
        f" clear passwords for provisioning in {files.credentials} (mode 0600)"
    )


from lifeline.alerts_client import alerts as _alerts  # noqa: E402 - registered after the group exists
from lifeline.detect_commands import detect as _detect  # noqa: E402
from lifeline.evaluate_commands import evaluate as _evaluate  # noqa: E402
from lifeline.models_commands import models as _models  # noqa: E402
from lifeline.report_commands import report as _report  # noqa: E402
from lifeline.report_commands import simulate_year_command as _simulate_year  # noqa: E402
from lifeline.risk_commands import risk as _risk  # noqa: E402
from lifeline.simulate_commands import replay as _replay  # noqa: E402
from lifeline.simulate_commands import simulate as _simulate  # noqa: E402
from lifeline.token_commands import tokens as _tokens  # noqa: E402
from lifeline.twin_commands import twin as _twin_group  # noqa: E402

cli.add_command(_twin_group)
cli.add_command(_replay)
cli.add_command(_simulate)
cli.add_command(_detect)
cli.add_command(_evaluate)
cli.add_command(_tokens)
cli.add_command(_alerts)
cli.add_command(_risk)
cli.add_command(_models)
cli.add_command(_report)
_simulate.add_command(_simulate_year)


def main() -> None:
    """Entry point of the ``lifeline`` console script."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
