"""``lifeline evaluate SCENARIO_DIR``: score the detectors on a simulator run against its ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from twin.errors import LifelineError, ModelImportError


@click.command("evaluate")
@click.argument("scenario_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--demo", "use_demo", is_flag=True, help="Use the built-in demo city (default when no database is set).")
@click.option("--batch", "batch_s", type=float, default=60.0, show_default=True, help="Simulated seconds per batch.")
@click.option("--within", "within_h", type=float, default=2.0, show_default=True, help="Detection window, hours.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the score here.")
@click.pass_context
def evaluate(
    ctx: click.Context, scenario_dir: Path, use_demo: bool, batch_s: float, within_h: float, json_out: Path | None
) -> None:
    """Replay SCENARIO_DIR's recording through the detectors and score them against its ground truth.

    SCENARIO_DIR is what 'lifeline simulate … --output DIR' wrote (recording.jsonl, ground_truth.json). Prints
    recall, detection delay, false alarms per day per 100 sensors, localisation error and sensor-fault detection.
    """
    from lifeline.simulate_commands import load_city_and_sensors
    from models.chain import DetectorChain
    from models.registry import learned_detectors
    from models.scoring import in_top, replay, score_run
    from simulators.recording import read_recording
    from simulators.runner import GROUND_TRUTH, RECORDING

    recording, truth_path = scenario_dir / RECORDING, scenario_dir / GROUND_TRUTH
    for path in (recording, truth_path):
        if not path.is_file():
            raise click.ClickException(f"{path} is missing: SCENARIO_DIR must hold what 'lifeline simulate' wrote")
    try:
        truth = orjson.loads(truth_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{truth_path}: not JSON ({exc})") from exc
    city = load_city_and_sensors(ctx.obj, demo=use_demo)
    sensors = city.sensors
    chain = DetectorChain.default(sensors, extra=learned_detectors(city))
    click.echo(f"replaying {recording} through: {', '.join(d.name for d in chain.detectors)}", err=True)
    try:
        result = replay(read_recording(recording), sensors=sensors, chain=chain, batch_s=batch_s)
    except (ModelImportError, LifelineError) as exc:
        raise click.ClickException(str(exc)) from exc
    within_s = within_h * 3600.0
    score = score_run(truth, result.changes, sensors=sensors, networks=city.networks, within_s=within_s)
    summary: dict[str, Any] = score.as_dict(within_s=within_s)
    summary["top3"] = [in_top(e, 3, city.networks.get(_network(e.network))) for e in score.events]
    summary["replay"] = {
        "messages": result.messages,
        "readings": result.readings,
        "rejected": result.rejected,
        "wall_s": round(result.wall_s, 2),
        "detector_s": {k: round(v, 3) for k, v in result.detector_s.items()},
    }
    _print(summary, within_h)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        click.echo(f"score written to {json_out}", err=True)


def _network(name: str) -> Any:
    from twin.sensors import Network

    return Network(name)


def _print(s: dict[str, Any], within_h: float) -> None:
    click.echo(f"events: {s['events']}, detected within {within_h:g} h: {s['detected']} (recall {s['recall']})")
    click.echo(f"median detection delay: {s['median_delay_min']} min")
    click.echo(
        f"false alarms: {s['false_alarms']} ({s['false_alarms_per_day_per_100_sensors']} per day per 100 sensors,"
        f" {s['sensors']} sensors, {s['days']} days)"
    )
    if s["median_localisation_error_m"] is not None:
        top3 = sum(bool(x) for x in s["top3"])
        click.echo(
            f"localisation: median error {s['median_localisation_error_m']} m; true location in the top 3:"
            f" {top3} of {s['events']}"
        )
    click.echo(
        f"sensor faults: {s['faults_detected']} of {s['faults']} detected; {s['false_health_alerts']} other"
        " maintenance alerts"
    )
    for e in s["per_event"]:
        delay = "missed" if e["delay_min"] is None else f"{e['delay_min']} min"
        click.echo(
            f"  {e['kind']:<9} {e['where'] or '':<10} size {e['size']}  start {e['start']}  → {delay}"
            f"  {e['alert'] or ''}  {', '.join(e['candidates'])}"
        )
    r = s["replay"]
    click.echo(
        f"replayed {r['messages']} messages ({r['readings']} readings, {r['rejected']} refused) in {r['wall_s']} s"
    )
