"""``lifeline replay`` and the scenario commands of ``lifeline simulate``."""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from lifeline.settings import Settings
from twin.errors import LifelineError


def parse_speed(text: str) -> float | None:
    """``max`` (as fast as the pipeline takes it) or a factor of real time, e.g. ``60`` (an hour a minute)."""
    if text.lower() in ("max", "inf", "0"):
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise click.BadParameter("a number (simulated seconds per real second) or 'max'") from exc
    if value <= 0:
        raise click.BadParameter("must be positive, or 'max'")
    return value


def stop_event_on_signals() -> threading.Event:
    """Return an event that Ctrl-C or SIGTERM sets, so long runs stop cleanly and keep what they wrote."""
    stop = threading.Event()

    def handler(_sig: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo("\nstopping … (again to abort)", err=True)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _need(value: str | None, name: str) -> str:
    if not value:
        raise click.UsageError(f"set LIFELINE_{name}")
    return value


def load_city_and_sensors(settings: Settings, *, demo: bool) -> Any:
    """The stored twin with its sensors, or the built-in demo city (with --demo, or when no database is set)."""
    from twin.democity.city import build_demo_city

    if demo or not settings.database_url:
        click.echo("using the built-in demo city (吉安示范片区)", err=True)
        return build_demo_city()
    from twin.store.assets import load_city
    from twin.store.db import connect
    from twin.store.sensors import load_registry

    with connect(settings.database_url, schema=settings.db_schema, autocommit=True) as conn:
        city = load_city(conn)
        city.sensors = dict(load_registry(conn).items())
    return city


def run_with_progress(
    ctx: click.Context,
    scenario: Any,
    *,
    sensors: Any,
    output: Path,
    speed: str,
    no_publish: bool,
    seed: int,
    expected: int,
    faults: Any = (),
) -> None:
    """Run *scenario* through the runner with a progress bar; publish unless --no-publish; Ctrl-C stops cleanly."""
    from simulators.publisher import Publisher
    from simulators.runner import run_scenario

    settings: Settings = ctx.obj
    factor = parse_speed(speed)
    stop = stop_event_on_signals()
    label = f"{scenario.name} → {output}"
    try:
        with click.progressbar(length=expected, label=label, file=sys.stderr) as bar:
            if no_publish:
                result = run_scenario(
                    scenario,
                    sensors=sensors,
                    prefix=settings.topic_prefix,
                    out_dir=output,
                    faults=faults,
                    seed=seed,
                    stop=stop,
                    progress=lambda _m: bar.update(1),
                )
            else:
                config = settings.mqtt_config(_need(settings.mqtt_url, "MQTT_URL (or use --no-publish)"))
                with Publisher(config, client_id=f"lifeline-sim-{uuid.uuid4().hex[:6]}") as pub:
                    result = run_scenario(
                        scenario,
                        sensors=sensors,
                        prefix=settings.topic_prefix,
                        out_dir=output,
                        faults=faults,
                        seed=seed,
                        publisher=pub,
                        speed=factor,
                        stop=stop,
                        progress=lambda _m: bar.update(1),
                    )
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "computed" if no_publish else "published"
    click.echo(
        f"{verb} {result.messages} messages in {result.wall_s:.1f} s{' (stopped early)' if stop.is_set() else ''}"
        f"; recording {result.recording}, ground truth {result.ground_truth}"
    )


def scenario_start(text: str | None, *, total: timedelta, speed: float | None) -> datetime:
    """The simulated start: *text* if given; else now for real-time runs, or now − *total* for faster runs."""
    if text:
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise click.BadParameter(f"{text!r} is not ISO 8601", param_hint="--start") from exc
        if value.tzinfo is None:
            raise click.BadParameter("give a UTC offset, e.g. 2026-06-01T08:00:00+08:00", param_hint="--start")
        return value.astimezone(UTC)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now if speed is not None and speed <= 1.0 else now - total


@click.group()
def simulate() -> None:
    """Simulated scenarios published over MQTT as real sensors would, each with its ground truth."""


@simulate.command("rainstorm")
@click.option("--return-period", type=float, default=50.0, show_default=True, help="Years.")
@click.option("--duration", type=int, default=120, show_default=True, help="Storm duration, minutes.")
@click.option("--step", type=float, default=1.0, show_default=True, help="Rain and sensor step, minutes.")
@click.option("--peak-ratio", type=float, default=0.4, show_default=True, help="Peak position (Chicago r).")
@click.option("--formula", default=None, help="City storm formula (see twin/storms.py); default: the Jiangxi one.")
@click.option(
    "--rain-csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay recorded rain (columns ts, rain_mm_h) instead of a design storm.",
)
@click.option("--drain", type=float, default=120.0, show_default=True, help="Minutes simulated after the rain.")
@click.option("--speed", default="60", show_default=True, help="Simulated seconds per real second, or 'max'.")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("scenario-rainstorm"), show_default=True
)
@click.option("--no-publish", is_flag=True, help="Compute and write the recording only; no broker needed.")
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin.")
@click.option("--start", default=None, help="Simulated start, ISO 8601 with offset (default: see below).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def rainstorm(
    ctx: click.Context,
    return_period: float,
    duration: int,
    step: float,
    peak_ratio: float,
    formula: str | None,
    rain_csv: Path | None,
    drain: float,
    speed: str,
    output: Path,
    no_publish: bool,
    use_demo: bool,
    start: str | None,
    seed: int,
) -> None:
    """Replay a design storm (芝加哥雨型) or recorded rain through the drainage model (SWMM) as sensor readings.

    Without --start, a scenario published faster than real time (or not published) ends now, so no reading is
    stamped in the future; one published in real time (--speed 1) starts now.
    """
    from simulators.rain_scenarios import RainSeries, RainstormScenario
    from twin.sensors import Network
    from twin.storms import DEFAULT_FORMULA, FORMULAS, read_rain_csv

    name = (formula or DEFAULT_FORMULA).lower()
    if name not in FORMULAS:
        raise click.BadParameter(
            f"unknown formula {name!r}; known: {', '.join(sorted(FORMULAS))}", param_hint="--formula"
        )
    settings: Settings = ctx.obj
    city = load_city_and_sensors(settings, demo=use_demo)
    if Network.DRAINAGE not in city.networks:
        raise click.ClickException("the twin has no drainage network: 'lifeline twin import model.inp' first")
    try:
        rain = (
            RainSeries.from_records(read_rain_csv(rain_csv), name=rain_csv.name)
            if rain_csv
            else RainSeries.design(
                FORMULAS[name],
                return_period_years=return_period,
                duration_min=duration,
                step_min=step,
                peak_ratio=peak_ratio,
            )
        )
        total = rain.duration + timedelta(minutes=drain)
        # Recorded rain keeps its own times unless --start moves it.
        speed_factor = None if no_publish else parse_speed(speed)
        begin = None if rain_csv and not start else scenario_start(start, total=total, speed=speed_factor)
        scenario = RainstormScenario(
            city.networks[Network.DRAINAGE],
            city.sensors,
            rain=rain,
            start=begin,
            step=timedelta(minutes=step),
            drain=timedelta(minutes=drain),
            seed=seed,
        )
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    reporting = [s for s in city.sensors.values() if s.network in (Network.DRAINAGE, Network.RAIN)]
    steps = int(scenario.duration / scenario.step)
    run_with_progress(
        ctx,
        scenario,
        sensors=city.sensors,
        output=output,
        speed=speed,
        no_publish=no_publish,
        seed=seed,
        expected=steps * len(reporting),
    )


def _common(func: Any) -> Any:
    """The options every engine scenario command shares."""
    for option in reversed(
        [
            click.option("--hours", type=float, default=24.0, show_default=True, help="Simulated hours."),
            click.option(
                "--speed", default="600", show_default=True, help="Simulated seconds per real second, or 'max'."
            ),
            click.option("--no-publish", is_flag=True, help="Compute and write the recording only; no broker needed."),
            click.option(
                "--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin."
            ),
            click.option("--start", default=None, help="Simulated start, ISO 8601 with offset."),
            click.option("--seed", type=int, default=0, show_default=True),
        ]
    ):
        func = option(func)
    return func


def _sensor_count(sensors: Any, *networks: Any) -> int:
    return sum(1 for s in sensors.values() if s.network in networks)


def _run_leak(
    ctx: click.Context,
    network: Any,
    build: Any,
    *,
    located: bool,
    hours: float,
    start: str | None,
    speed: str,
    no_publish: bool,
    use_demo: bool,
    output: Path,
    seed: int,
) -> None:
    """What the leak commands share: the city, the checks, the start time, errors, and the run with progress."""
    settings: Settings = ctx.obj
    city = load_city_and_sensors(settings, demo=use_demo)
    if network not in city.networks:
        raise click.ClickException(f"the twin has no {network.value} network: 'lifeline twin import …' first")
    if not located:
        raise click.UsageError("give --junction or --pipe")
    total = timedelta(hours=hours)
    begin = scenario_start(start, total=total, speed=None if no_publish else parse_speed(speed))
    try:
        scenario = build(city, begin, total)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    run_with_progress(
        ctx,
        scenario,
        sensors=city.sensors,
        output=output,
        speed=speed,
        no_publish=no_publish,
        seed=seed,
        expected=int(total / scenario.step) * _sensor_count(city.sensors, network),
    )


@simulate.command("leak")
@click.option("--junction", default=None, help="Junction id of the leak.")
@click.option("--pipe", default=None, help="Pipe id of the leak (split between its ends by --position).")
@click.option("--position", type=float, default=0.5, show_default=True, help="Along the pipe, 0 … 1.")
@click.option("--flow", "flow_l_s", type=float, default=10.0, show_default=True, help="Full size, L/s (≥ 20: burst).")
@click.option("--at", "at_h", type=float, default=2.0, show_default=True, help="Hours after the start.")
@click.option("--growth", type=click.Choice(["abrupt", "incipient"]), default="abrupt", show_default=True)
@click.option("--ramp", "ramp_h", type=float, default=0.0, show_default=True, help="Incipient growth time, hours.")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("scenario-leak"), show_default=True
)
@_common
@click.pass_context
def leak(
    ctx: click.Context,
    junction: str | None,
    pipe: str | None,
    position: float,
    flow_l_s: float,
    at_h: float,
    growth: str,
    ramp_h: float,
    output: Path,
    hours: float,
    speed: str,
    no_publish: bool,
    use_demo: bool,
    start: str | None,
    seed: int,
) -> None:
    """A water leak or burst through the water model (EPANET): pressure and flow readings, with ground truth."""
    from simulators.water_scenarios import LeakEvent, WaterScenario
    from twin.sensors import Network

    def build(city: Any, begin: datetime, total: timedelta) -> Any:
        event = LeakEvent(
            flow_l_s=flow_l_s,
            start=begin + timedelta(hours=at_h),
            junction_id=junction,
            link_id=pipe,
            position=position,
            growth=growth,  # type: ignore[arg-type]  # click.Choice guarantees the literal
            ramp_h=ramp_h,
        )
        return WaterScenario(
            city.networks[Network.WATER], city.sensors, start=begin, duration=total, events=[event], seed=seed
        )

    _run_leak(
        ctx,
        Network.WATER,
        build,
        located=junction is not None or pipe is not None,
        hours=hours,
        start=start,
        speed=speed,
        no_publish=no_publish,
        use_demo=use_demo,
        output=output,
        seed=seed,
    )


@simulate.command("gas-leak")
@click.option("--junction", default=None, help="Junction id of the leak.")
@click.option("--pipe", default=None, help="Pipe id of the leak.")
@click.option("--position", type=float, default=0.5, show_default=True, help="Along the pipe, 0 … 1.")
@click.option("--flow", "flow_m3_h", type=float, default=20.0, show_default=True, help="Leak flow, m³/h.")
@click.option("--at", "at_h", type=float, default=1.0, show_default=True, help="Hours after the start.")
@click.option("--growth", type=click.Choice(["abrupt", "incipient"]), default="abrupt", show_default=True)
@click.option("--ramp", "ramp_h", type=float, default=0.0, show_default=True, help="Incipient growth time, hours.")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("scenario-gas-leak"), show_default=True
)
@click.option(
    "--methane-report",
    type=click.Choice(["regular", "change"]),
    default="regular",
    show_default=True,
    help="How methane detectors report: once a sensor step, or also at once when the value moves (by exception).",
)
@click.option(
    "--methane-sample-s",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="With 'change': the detectors' sampling period, seconds dividing the sensor step (60 s).",
)
@click.option(
    "--methane-change",
    "methane_change_pct_lel",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="With 'change': a sample this far from the last value published is published at once, %LEL.",
)
@_common
@click.pass_context
def gas_leak(
    ctx: click.Context,
    junction: str | None,
    pipe: str | None,
    position: float,
    flow_m3_h: float,
    at_h: float,
    growth: str,
    ramp_h: float,
    output: Path,
    methane_report: str,
    methane_sample_s: int,
    methane_change_pct_lel: float,
    hours: float,
    speed: str,
    no_publish: bool,
    use_demo: bool,
    start: str | None,
    seed: int,
) -> None:
    """A gas leak through the gas model (pandapipes) and methane gathering in nearby underground spaces.

    With --methane-report change, the methane detectors also publish between their regular reports (report by
    exception): they sample every --methane-sample-s seconds and publish a sample at once when it moved
    --methane-change %LEL from the last value published, or reached the 20 %LEL alarm from below it.
    """
    from simulators.gas_scenarios import GasLeakEvent, GasScenario, MethaneReporting
    from twin.sensors import Network

    reporting = (
        MethaneReporting(sample_s=methane_sample_s, change_pct_lel=methane_change_pct_lel)
        if methane_report == "change"
        else None
    )

    def build(city: Any, begin: datetime, total: timedelta) -> Any:
        event = GasLeakEvent(
            start=begin + timedelta(hours=at_h),
            junction_id=junction,
            pipe_id=pipe,
            position=position,
            volume_flow_m3_h=flow_m3_h,
            growth=growth,  # type: ignore[arg-type]
            ramp_h=ramp_h,
        )
        return GasScenario(
            city.networks[Network.GAS],
            city.spaces,
            city.sensors,
            start=begin,
            duration=total,
            events=[event],
            seed=seed,
            methane_reporting=reporting,
        )

    _run_leak(
        ctx,
        Network.GAS,
        build,
        located=junction is not None or pipe is not None,
        hours=hours,
        start=start,
        speed=speed,
        no_publish=no_publish,
        use_demo=use_demo,
        output=output,
        seed=seed,
    )


@simulate.command("scenario")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", default="600", show_default=True, help="Simulated seconds per real second, or 'max'.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Default: a folder named after the file.",
)
@click.option("--no-publish", is_flag=True, help="Compute and write the recording only; no broker needed.")
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city instead of the stored twin.")
@click.pass_context
def scenario_cmd(
    ctx: click.Context, file: Path, speed: str, output: Path | None, no_publish: bool, use_demo: bool
) -> None:
    """Run a scenario file (TOML) combining a storm, water leaks, gas leaks and sensor faults."""
    from simulators.scenario_file import load_plan

    settings: Settings = ctx.obj
    city = load_city_and_sensors(settings, demo=use_demo)
    try:
        plan = load_plan(file, city)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    steps = int(plan.scenario.duration / plan.scenario.step)
    run_with_progress(
        ctx,
        plan.scenario,
        sensors=city.sensors,
        output=output or Path(f"scenario-{file.stem}"),
        speed=speed,
        no_publish=no_publish,
        seed=plan.seed,
        expected=steps * len(city.sensors),
        faults=plan.faults,
    )


@click.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", default="1", show_default=True, help="Factor of real time, or 'max'.")
@click.pass_context
def replay(ctx: click.Context, recording: Path, speed: str) -> None:
    """Publish a recorded stream (recording.jsonl) again, keeping its timing scaled by --speed."""
    from simulators.publisher import Publisher
    from simulators.recording import play, read_recording

    settings: Settings = ctx.obj
    if not settings.mqtt_url:
        raise click.UsageError("set LIFELINE_MQTT_URL")
    factor = parse_speed(speed)
    total = sum(1 for line in recording.open("rb") if line.strip())
    stop = stop_event_on_signals()
    try:
        with (
            Publisher(settings.mqtt_config(), client_id=f"lifeline-replay-{uuid.uuid4().hex[:6]}") as pub,
            click.progressbar(length=total, label=f"replaying {recording.name}", file=sys.stderr) as bar,
        ):
            sent = play(
                read_recording(recording), publisher=pub, speed=factor, stop=stop, on_message=lambda _m: bar.update(1)
            )
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"published {sent} of {total} messages{' (stopped early)' if stop.is_set() else ''}")


@simulate.command("demo-stream")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between ticks.")
@click.option("--count", type=int, default=None, help="Stop after this many ticks (default: run until Ctrl-C).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.pass_context
def simulate_demo_stream(ctx: click.Context, interval: float, count: int | None, seed: int) -> None:
    """Publish a synthetic stream for the stored sensors (or the 21 built-in ones without a database).

    A storm crosses the alarm limits every 90 ticks.
    """
    from simulators.demo_stream import run_demo_stream
    from twin.demo import demo_sensors

    s: Settings = ctx.obj
    sensors = demo_sensors()
    if s.database_url:
        from twin.store.db import connect
        from twin.store.sensors import load_registry

        with connect(s.database_url, schema=s.db_schema, autocommit=True) as conn:
            sensors = list(load_registry(conn).values()) or sensors
    stop = stop_event_on_signals()
    n = run_demo_stream(
        sensors=sensors,
        mqtt_config=s.mqtt_config(_need(s.mqtt_url, "MQTT_URL")),
        prefix=s.topic_prefix,
        interval_s=interval,
        stop=stop,
        seed=seed,
        count=count,
    )
    click.echo(f"published {n} messages")
