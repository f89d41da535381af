"""The offline detector on a network it was not tuned on: WNTR's Net6, fitted on a normal month, scored on leaks.

    python bench/bench_transfer.py                      # 30 normal days, then 20 days with 10 leaks (~15 min)
    python bench/bench_transfer.py --normal-days 14 --leak-days 14 --leaks 10 --out /tmp/net6

Net6 (3,323 junctions, 32 tanks, 61 pumps) is simulated by the project's water simulator (EPANET 2.2) with sensors
placed by ``models.transfer_data.place_sensors`` (25 pressures spread by farthest-point sampling, flows in every
link at a tank or the reservoir, every tank level), hourly. The normal period and the leak period are separate
runs with other seeds (other demand variation and noise), the leak period following the normal one. Leaks go at
random junctions, sized 0.5 %, 1 %, 2 %, 5 % and 10 % of the mean demand in turn, half abrupt and half incipient
(6 h ramp), each repaired after ``--leak-h``. Both tables are written as CSV and scored by the command line,
exactly as a user would, with the detector's default settings (chosen on BATADAL's normal year, not on Net6):

    lifeline detect --fit normal.csv --csv leaks.csv --out flags.csv

It is then run again with the network's EPANET model, as a user who has it would:

    lifeline detect --fit normal.csv --csv leaks.csv --out flags-inp.csv --inp Net6.inp

which adds the check of its controls and the zone's minimum night flow (every link at a tank or the reservoir is
metered: the inflow is known); both sets of flags are scored.

The leak-period run is repeated by the simulator once per leak (its ground truth has each leak's effect alone),
which is most of the time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.evaluation import batadal_score, f1_score, precision, recall
from models.transfer_data import (
    balance_check,
    leak_labels,
    leak_outcomes,
    mean_demand_l_s,
    net6_inp,
    place_sensors,
    plan_leaks,
    simulate_table,
    write_wide_csv,
)
from simulators.scenario import GroundTruth
from simulators.water_scenarios import LeakEvent
from twin.water import read_epanet

START = datetime(2025, 2, 28, 16, tzinfo=UTC)  # midnight, 1 March 2025, China Standard Time


def main() -> None:
    """Simulate, score with ``lifeline detect`` and print per-leak and overall figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal-days", type=int, default=30)
    parser.add_argument("--leak-days", type=int, default=20)
    parser.add_argument("--leaks", type=int, default=10)
    parser.add_argument("--leak-h", type=float, default=24.0, help="hours each leak lasts until repaired")
    parser.add_argument("--gap-h", type=float, default=24.0, help="least hours between leaks")
    parser.add_argument("--out", type=Path, default=None, help="folder for the CSVs (a temporary one by default)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="net6-transfer-"))
    out.mkdir(parents=True, exist_ok=True)

    network = read_epanet(net6_inp())
    sensors = place_sensors(network)
    counts = pd.Series([s.quantity.value for s in sensors]).value_counts().to_dict()
    print(f"Net6: {len(sensors)} sensors {counts}; CSVs in {out}")
    started = time.perf_counter()
    normal_span = timedelta(days=args.normal_days)
    normal, normal_truth = simulate_table(network, sensors, start=START, duration=normal_span, seed=11)
    simulated = time.perf_counter()
    demand = mean_demand_l_s(normal_truth)
    leak_start, leak_span = START + normal_span, timedelta(days=args.leak_days)
    leaks = plan_leaks(
        network,
        start=leak_start,
        duration=leak_span,
        count=args.leaks,
        mean_demand_l_s=demand,
        seed=12,
        leak_h=args.leak_h,
        gap_h=args.gap_h,
    )
    leaky, leak_truth = simulate_table(network, sensors, start=leak_start, duration=leak_span, seed=12, events=leaks)
    simulated_leaks = time.perf_counter()
    print(
        f"simulated {args.normal_days} normal days in {simulated - started:.0f} s and {args.leak_days} days with"
        f" {args.leaks} leaks in {simulated_leaks - simulated:.0f} s; mean demand {demand:.0f} L/s;"
        f" unbalanced solves {normal_truth.summary['unbalanced_solves']} + {leak_truth.summary['unbalanced_solves']}"
    )
    write_wide_csv(normal, out / "normal.csv")
    write_wide_csv(leaky, out / "leaks.csv")
    truth = leak_labels(leaky.index, leaks)
    base = [
        sys.executable,
        "-m",
        "lifeline",
        "detect",
        "--fit",
        str(out / "normal.csv"),
        "--csv",
        str(out / "leaks.csv"),
    ]
    for label, extra in (
        ("the data-driven detector alone", ["--out", str(out / "flags.csv")]),
        (
            "with the network's model (--inp: its controls, and the zone's night flow)",
            ["--out", str(out / "flags-inp.csv"), "--inp", str(net6_inp())],
        ),
    ):
        print(f"\n== lifeline detect, {label}")
        detect_started = time.perf_counter()
        subprocess.run(base + extra, check=True)
        print(f"lifeline detect: {time.perf_counter() - detect_started:.1f} s")
        flags = pd.read_csv(extra[1])["flag"].to_numpy()
        report(leaky, leaks, leak_truth, flags, truth, demand)
    balance(normal, leaky, leaks, demand)


def report(
    leaky: pd.DataFrame,
    leaks: list[LeakEvent],
    leak_truth: GroundTruth,
    flags: npt.NDArray[np.int64],
    truth: npt.NDArray[np.int64],
    demand: float,
) -> None:
    """Print per-leak and overall figures of one set of flags."""

    print(
        f"{'junction':>14} {'L/s':>7} {'% dem':>6} {'growth':>9} {'lost L/s':>8} {'near dP kPa':>11}"
        f" {'24 h?':>5} {'delay h':>7}"
    )
    outcomes = leak_outcomes(leaky.index, flags, leaks)
    for outcome, event in zip(outcomes, leak_truth.events, strict=True):
        near = event["pressure_change"][0]["mean_drop_kpa"] if event["pressure_change"] else float("nan")
        delay = f"{outcome.delay_h:.0f}" if outcome.delay_h is not None else "-"
        print(
            f"{outcome.junction_id:>14} {outcome.flow_l_s:7.1f} {outcome.flow_l_s / demand:6.1%}"
            f" {outcome.growth:>9} {event['flow_at_full_l_s']:8.1f} {near:11.2f}"
            f" {'yes' if outcome.detected else 'no':>5} {delay:>7}"
        )
    score = batadal_score(truth, flags)
    after = np.zeros_like(truth)
    for leak in leaks:
        end = pd.Timestamp(leak.end) if leak.end else leaky.index[-1]
        after[(leaky.index >= end) & (leaky.index < end + pd.Timedelta(hours=12))] = 1
    quiet = (truth == 0) & (after == 0)
    print(f"leaks detected within 24 h: {sum(o.detected for o in outcomes)}/{len(outcomes)}")
    print(
        f"false-alarm rate (flagged hours outside leaks): {flags[truth == 0].mean():.2%};"
        f" excluding 12 h after each repair: {flags[quiet].mean():.2%}"
    )
    print(
        f"precision {precision(truth, flags):.3f} recall {recall(truth, flags):.3f} F1 {f1_score(truth, flags):.3f}"
        f" S_TTD {score.s_ttd:.3f} S_CM {score.s_cm:.3f} S {score.s:.3f}"
    )


def balance(normal: pd.DataFrame, leaky: pd.DataFrame, leaks: list[LeakEvent], demand: float) -> None:
    """The daily water-balance check (not part of ``lifeline detect``)."""
    # A network-independent daily water balance on the same tables (not part of 'lifeline detect'): does it set the
    # leaks apart from the normal month at all?
    for modes in (0, 1, 3):
        check = balance_check(normal, leaky, leaks, modes=modes)
        ratios = " ".join(
            f"{leak.flow_l_s / demand:.1%}:{r:.2f}" for leak, r in zip(leaks, check.peak_ratio, strict=True)
        )
        print(
            f"daily water balance, {modes} daily modes off: leak peak / normal max {ratios};"
            f" leak-free hours above the normal max {check.quiet_above:.1%}"
        )


if __name__ == "__main__":
    main()
