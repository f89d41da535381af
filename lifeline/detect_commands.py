"""``lifeline detect``: score a wide sensor CSV with the offline detector, as any public dataset is scored."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twin.errors import LifelineError, ModelImportError

if TYPE_CHECKING:
    import pandas as pd

    from models.offline import OfflineDetector

LABEL_COLUMNS = ("ATT_FLAG", "LABEL", "FLAG")
"""Columns that carry a dataset's answer, never used as features."""


def read_wide_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV whose first column is the timestamp and every other column one sensor; label columns dropped.

    Timestamps: ISO 8601, or BATADAL's ``dd/mm/yy HH``.

    Returns:
        The sensor table (index = parsed timestamps) and the timestamps as written in the file.

    Raises:
        ModelImportError: the file cannot be read or its first column is not timestamps.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (OSError, ValueError) as exc:
        raise ModelImportError(str(path), f"cannot read as CSV: {exc}") from exc
    if frame.shape[1] < 2:
        raise ModelImportError(str(path), "needs a timestamp column and at least one sensor column", line=1)
    column = frame.columns[0]
    raw = frame.pop(column).astype(str)
    for fmt in ("%d/%m/%y %H", None):
        try:
            frame.index = pd.to_datetime(raw, format=fmt) if fmt else pd.to_datetime(raw, format="ISO8601")
            break
        except (ValueError, TypeError):
            continue
    else:
        raise ModelImportError(
            str(path), f"first column {column!r} is not timestamps (ISO 8601 or dd/mm/yy HH)", line=2, field=str(column)
        )
    frame.index.name = column
    return frame.drop(columns=[c for c in frame.columns if c.strip().upper() in LABEL_COLUMNS]), list(raw)


def explain(detector: OfflineDetector, frame: pd.DataFrame, result: pd.DataFrame, stamps: list[str]) -> pd.DataFrame:
    """Why each flagged row of *result* (:func:`models.offline.score_detector` of *frame*) was flagged.

    Returns:
        One row per flagged row: ``timestamp`` (as in the input), ``cause`` (``score``: the data-driven alarm,
        ``control``: a link's control alarm, ``both``; ``night_flow`` alone or after ``+``: a minimum-night-flow
        alert is open), ``sensors`` (the three sensors with the largest shares of
        the row's score, e.g. ``P_J280 34%; P_J14 8%; L_T1 7%``) and ``links`` (the links whose control alarm is
        on, space-separated).
    """
    import numpy as np
    import pandas as pd

    from models.control_rules import link_alarms
    from models.offline import flags_from_raw, raw_score, sensor_shares

    flagged = (result["flag"].to_numpy() == 1).nonzero()[0]
    by_score = flags_from_raw(detector, raw_score(detector, frame))[1] == 1
    by_control = result["control"].to_numpy() == 1
    by_night = result["night_flow"].to_numpy() == 1 if "night_flow" in result else np.zeros(len(result), dtype=bool)
    shares = sensor_shares(detector, frame).to_numpy()
    links = link_alarms(list(detector.controls), frame)
    sensors = list(detector.profiles)
    rows = []
    for i in flagged:
        top = [k for k in shares[i].argsort()[::-1][:3] if shares[i, k] > 0]
        cause = "both" if by_score[i] and by_control[i] else ("score" if by_score[i] else "control")
        if by_night[i]:
            cause = f"{cause}+night_flow" if by_score[i] or by_control[i] else "night_flow"
        rows.append(
            {
                "timestamp": stamps[i],
                "cause": cause,
                "sensors": "; ".join(f"{sensors[k]} {shares[i, k]:.0%}" for k in top),
                "links": " ".join(sorted(link for link, alarm in links.items() if alarm[i])),
            }
        )
    return pd.DataFrame(rows, columns=["timestamp", "cause", "sensors", "links"])


def _night_flow(inp_path: Path, normal: pd.DataFrame, frame: pd.DataFrame, utc_offset_h: float) -> Any:
    """Run the night-flow check on the tables; print what it did; return its per-row flags (None when idle)."""
    from models.night_flow_table import night_flow_on_tables
    from twin.water import read_epanet

    loggers = [logging.getLogger(name) for name in ("wntr.epanet.io", "twin.water")]
    levels = [lg.level for lg in loggers]
    try:
        # Unused curves and the like: WNTR's remarks about the model, not the user's business here.
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            network = read_epanet(inp_path)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    night = night_flow_on_tables(network, normal, frame, utc_offset_h=utc_offset_h)
    if night.unmetered is not None:
        click.echo(f"night flow: not judged ({night.unmetered})")
        return None
    assert night.windows is not None
    (n0, n1), reference = night.windows
    raised = [c for c in night.changes if c.event == "raised"]
    early = sum(c.event == "raised" for c in night.changes_normal)
    click.echo(
        f"night flow: {len(night.meters)} inflow meters; night {n0:g}–{n1:g} h"
        + (f", reference {reference[0]:g}–{reference[1]:g} h" if reference else "")
        + f" local; {len(raised)} leak alerts raised"
        + (f" (first {raised[0].ts:%Y-%m-%d %H:%M} UTC, {float(raised[0].value or 0):.1f} L/s)" if raised else "")
        + (f"; {early} in the normal period" if early else "")
    )
    return night.flags


def flagged_runs(result: pd.DataFrame, reasons: pd.DataFrame, stamps: list[str]) -> list[str]:
    """One line per run of consecutive flagged rows, longest first: its span, length, causes, the sensors most often
    on top and the links in alarm (``reasons`` from :func:`explain`)."""
    flagged = (result["flag"].to_numpy() == 1).nonzero()[0]
    runs: list[list[int]] = []
    for i in flagged:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(int(i))
        else:
            runs.append([int(i)])
    by_stamp = reasons.set_index("timestamp")
    lines = []
    for run in sorted(runs, key=len, reverse=True):
        rows = by_stamp.loc[[stamps[i] for i in run]]
        causes = ", ".join(f"{c} {n}" for c, n in rows["cause"].value_counts().items())
        tops = rows["sensors"].str.split(" ").str[0].value_counts().index[:3].tolist()
        links = sorted({link for cell in rows["links"].fillna("") for link in str(cell).split()})
        lines.append(
            f"flagged {stamps[run[0]]} – {stamps[run[-1]]} ({len(run)} rows; {causes}): mostly {', '.join(tops)}"
            + (f"; control alarm on {' '.join(links)}" if links else "")
        )
    return lines


@click.command()
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Wide CSV to score: a timestamp column, then one column per sensor (P_ pressure m, F_ flow "
    "L/s, L_ level m, S_ status).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write timestamp,flag,score.",
)
@click.option(
    "--fit",
    "fit_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A normal-period CSV of the same sensors to fit on first.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Load a fitted model (without --fit), or save the one fitted (with --fit): a numpy .npz archive with a "
    "JSON header; anything else (a pickle included) is refused.",
)
@click.option(
    "--inp",
    "inp_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The network's EPANET model (with --fit): its pump and valve controls are checked against the record "
    "(a tank above the level that stops a pump while the pump runs is flagged), using the rules the normal "
    "period obeys; and where every link at a tank or reservoir has a flow column (F_<link>), the zone's minimum "
    "night flow is judged day by day, as ingest judges it.",
)
@click.option(
    "--sensors",
    "sensors_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A CSV describing columns whose names do not carry the quantity: column,quantity[,unit][,element] "
    "(quantity pressure/flow/level/status/ignore; element: the EPANET id for --inp). Give it again with --model.",
)
@click.option(
    "--explain",
    "explain_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write, for every flagged row, why: timestamp,cause,sensors,links — the cause (score, control, "
    "both, night_flow), the sensors that make most of its score with their shares, and the links whose control "
    "alarm is on.",
)
@click.option(
    "--utc-offset",
    "utc_offset_h",
    type=click.FloatRange(-14.0, 14.0),
    default=8.0,
    show_default=True,
    help="Local time minus UTC, hours, for timestamps written without a zone (the night-flow check's windows are "
    "in local time).",
)
def detect(
    csv_path: Path,
    out_path: Path,
    fit_path: Path | None,
    model_path: Path | None,
    inp_path: Path | None,
    sensors_path: Path | None,
    explain_path: Path | None,
    utc_offset_h: float,
) -> None:
    """Flag anomalies in a wide sensor CSV (fit on a normal period with --fit, or load a saved --model).

    With --inp and --fit, the network's controls are checked, and where every link between a tank or reservoir
    and the network carries a flow column (``F_<link>``), the zone's minimum night flow is judged as ingest judges
    it (:mod:`models.night_flow_table`): learned on the normal period, then judged day by day.
    """
    import numpy as np
    import pandas as pd

    from models.control_rules import ControlRule, broken_summary, rules_from_inp
    from models.offline import (
        coarser_columns,
        data_resolution,
        dump_detector,
        fit_detector,
        load_detector,
        score_detector,
    )
    from models.sensor_map import apply_sensor_map, read_sensor_map

    if fit_path is None and model_path is None:
        raise click.UsageError("give --fit NORMAL.csv, or --model FILE saved by an earlier --fit")
    if inp_path is not None and fit_path is None:
        raise click.UsageError("--inp is read when fitting: give it with --fit (a saved --model keeps its rules)")
    try:
        rules: list[ControlRule] = []
        if inp_path is not None:
            rules, skipped = rules_from_inp(inp_path)
            click.echo(
                f"{len(rules)} control rules read from {inp_path.name}"
                + (f" ({len(skipped)} controls of other kinds not checked)" if skipped else "")
            )
        entries = read_sensor_map(sensors_path) if sensors_path is not None else {}
        frame, stamps = read_wide_csv(csv_path)
        if sensors_path is not None:
            frame, absent = apply_sensor_map(frame, entries)
            described = len(entries) - len(absent)
            click.echo(
                f"{described} columns of {csv_path.name} described by {sensors_path.name}"
                + (f"; not in the file: {', '.join(absent[:5])}{' …' if len(absent) > 5 else ''}" if absent else "")
            )
        if fit_path is not None:
            normal = read_wide_csv(fit_path)[0]
            if entries:
                normal = apply_sensor_map(normal, entries)[0]
            own = data_resolution(normal)
            detector = fit_detector(normal, resolution=data_resolution(frame), controls=rules)
            if rules:
                unused = [r for r in rules if r not in detector.controls]
                click.echo(
                    f"{len(detector.controls)} control rules hold on {fit_path.name} and are checked"
                    + (
                        f"; not used ({len(unused)}): {', '.join(r.describe() for r in unused[:5])}"
                        f"{' …' if len(unused) > 5 else ''} (columns missing, or broken in the normal period)"
                        if unused
                        else ""
                    )
                )
            matched = sorted(c for c, step in detector.resolution.items() if step > own.get(c, 0.0))
            if matched:
                click.echo(
                    f"{len(matched)} sensors of {fit_path.name} rounded to the steps {csv_path.name} is recorded at"
                    f" before fitting ({', '.join(matched[:5])}{' …' if len(matched) > 5 else ''})"
                )
            if model_path is not None:
                model_path.write_bytes(dump_detector(detector))
        else:
            assert model_path is not None
            try:
                detector = load_detector(model_path.read_bytes())
            except OSError as exc:
                raise click.ClickException(f"{model_path}: cannot read the model: {exc}") from exc
            except LifelineError as exc:
                raise click.ClickException(f"{model_path}: {exc}") from exc
            coarse = coarser_columns(detector, frame)
            if coarse:
                names = ", ".join(
                    f"{c} ({scored:g} against {fitted:g})" for c, (scored, fitted) in list(coarse.items())[:5]
                )
                click.echo(
                    f"warning: {len(coarse)} sensors of {csv_path.name} are recorded more coarsely than the model was"
                    f" fitted at: {names}{' …' if len(coarse) > 5 else ''}. The rounding can raise false alarms;"
                    " fit again with --fit on the normal period and this file.",
                    err=True,
                )
        result = score_detector(detector, frame)
        if inp_path is not None and fit_path is not None:
            night = _night_flow(inp_path, normal, frame, utc_offset_h)
            if night is not None:
                result["night_flow"] = night.astype(np.int64)
                result["flag"] = result["flag"].to_numpy() | result["night_flow"].to_numpy()
        for rule, count, first in broken_summary(list(detector.controls), frame):
            click.echo(f"control rule broken: {rule.describe()} at {count} samples, first {first}")
        if explain_path is not None:
            reasons = explain(detector, frame, result, stamps)
            reasons.to_csv(explain_path, index=False)
            for line in flagged_runs(result, reasons, stamps)[:10]:
                click.echo(line)
    except LifelineError as exc:
        raise click.ClickException(str(exc)) from exc
    out = pd.DataFrame(
        {
            "timestamp": stamps,
            "flag": result["flag"].to_numpy(),
            "score": result["score"].round(6).to_numpy(),
        }
    )
    out.to_csv(out_path, index=False)
    click.echo(f"{len(out)} rows scored, {int(out['flag'].sum())} flagged → {out_path}")
    if explain_path is not None:
        click.echo(f"why each flagged row was flagged → {explain_path}")
