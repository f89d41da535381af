"""``lifeline replay`` and the scenario commands of ``lifeline simulate``."""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from pathlib import Path

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
