"""Minimum night flow leak detection, measured on the demo city with the real EPANET engine.

The leaks are drawn as in ``bench_water_leak.py`` (:func:`bench_water_leak.draw_cases`: 24 leaks of 1–50 L/s, a
third on pipes, a sixth growing over an hour, at any local hour) but after a longer normal lead-in,
``LEAD_IN`` = 6 days: the night-flow detector learns on its first 5 judged days. Each scenario runs until 48 h
after the leak starts. Normal scenarios (no event, seeds ``seed * 10 + k``) run the lead-in and ``--normal-days``
judged days more. Readings are replayed one batch per minute, ``now`` = the batch's time.

Several settings of the night-flow detector run side by side on the same readings (they are cheap): the default,
a grid of thresholds, and no reference window (the day factor left as noise). The existing pressure/flow detector
(``water_leak``) runs on the same leak scenarios from 48 h before the leak (its own lead-in) to 48 h after it.

    python bench/bench_night_flow.py --workers 1              # the reported draw (seed 2025)
    python bench/bench_night_flow.py --seed 7 --grid          # a tuning draw (also --seed 8), every setting
    python bench/bench_night_flow.py --leaks 4 --normal 1 --no-water-leak   # a quick look

Figures printed, per setting: recall by the first full night's verdict after the leak starts (the verdict comes
once the night's reference window is over, 12:05 local by default) and within 48 h, for leaks ≥ 5 L/s and 1–5 L/s;
the estimated leak flow against the nominal one and the emitter's peak flow (a leak's flow is highest at night,
when pressure is); false alarms per day on the normal days; the spread of the normal days' excess; and, with
``water_leak``, the leaks found by either within 48 h.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench_water_leak import START, LeakCase, batches, demo_network, draw_cases

from models.night_flow import NightFlowDetector, NightFlowSettings
from models.water_leak import WaterLeakDetector
from simulators.water_scenarios import LeakEvent, WaterScenario
from twin.model import PipeNetwork
from twin.sensors import Sensor

LEAD_IN = timedelta(days=6)
"""Normal days before a leak: 5 learning verdicts and one judged day."""
AFTER = timedelta(hours=48)
WATER_LEAK_LEAD_IN = timedelta(hours=48)

DEFAULT = "default"
NO_REFERENCE = "no-reference"


def variants(grid: bool) -> dict[str, NightFlowSettings]:
    """The settings run side by side: the default and no reference; with *grid*, thresholds around them."""
    out = {DEFAULT: NightFlowSettings(), NO_REFERENCE: NightFlowSettings(reference_h=None, threshold_l_s=5.0)}
    if grid:
        for absolute in (1.0, 1.5, 2.0, 2.5, 3.0):
            for sigmas in (2.5, 3.0, 3.5, 4.0, 5.0):
                out[f"abs{absolute:g}-k{sigmas:g}"] = NightFlowSettings(threshold_l_s=absolute, threshold_sigma=sigmas)
        for absolute in (5.0, 10.0):
            for sigmas in (3.0, 4.0):
                out[f"noref-abs{absolute:g}-k{sigmas:g}"] = NightFlowSettings(
                    reference_h=None, threshold_l_s=absolute, threshold_sigma=sigmas
                )
        out["ref06-22"] = NightFlowSettings(reference_h=(6.0, 22.0))
        out["learn3"] = NightFlowSettings(learn_nights=3)
        out["learn7"] = NightFlowSettings(learn_nights=7)
    return out


@dataclass(slots=True)
class Found:
    """What one night-flow setting did in one scenario."""

    raised_ts: float | None = None
    flow_at_raise: float | None = None
    early_alarms: int = 0
    alarms: int = 0
    judged: int = 0
    excess: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    case: LeakCase | None
    seed: int
    leak_ts: float | None
    first_night_ts: float | None
    peak_flow_l_s: float | None
    found: dict[str, Found]
    water_leak_delay_h: float | None = None
    run_s: float = 0.0


def first_verdict_after(leak_ts: float, settings: NightFlowSettings) -> float:
    """The verdict time of the first local night whose window starts at or after *leak_ts*."""
    offset = settings.utc_offset_h * 3600.0
    day = int((leak_ts + offset) // 86_400)
    night_start = day * 86_400 + settings.night_h[0] * 3600.0 - offset
    if night_start < leak_ts:
        day += 1
    windows = [settings.night_h] + ([settings.reference_h] if settings.reference_h else [])
    end = max(hi for _lo, hi in windows)
    return day * 86_400 + end * 3600.0 - offset + settings.grace_s


def run_case(
    network: PipeNetwork,
    sensors: dict[str, Sensor],
    case: LeakCase | None,
    seed: int,
    settings: dict[str, NightFlowSettings],
    *,
    normal_days: int,
    water_leak: bool,
) -> Outcome:
    started = time.perf_counter()
    events: list[LeakEvent] = []
    leak_at: datetime | None = None
    if case is None:
        duration = LEAD_IN + timedelta(days=normal_days)
    else:
        leak_at = START + LEAD_IN + timedelta(hours=case.hour)
        duration = leak_at - START + AFTER
        events = [case.event(leak_at)]
    scenario = WaterScenario(network, sensors, start=START, duration=duration, events=events, seed=seed)
    detectors = {name: NightFlowDetector(network, sensors, settings=s) for name, s in settings.items()}
    inflow = set(next(iter(detectors.values())).sensors)
    leak_det = WaterLeakDetector(network, sensors) if water_leak and leak_at is not None else None
    leak_ts = leak_at.timestamp() if leak_at is not None else None
    found = {name: Found() for name in settings}
    judged_from = (START + LEAD_IN).timestamp()
    wl_raised: datetime | None = None
    for ts, readings in batches(scenario):
        mine = [r for r in readings if r.sensor_id in inflow]
        for name, det in detectors.items():
            result = det.evaluate(mine, now=ts, suspect=frozenset())
            det.commit(result)
            f = found[name]
            for change in result.changes:
                if change.event != "raised":
                    continue
                t = change.ts.timestamp()
                if leak_ts is None:
                    f.alarms += int(t >= judged_from)
                elif t < leak_ts:
                    f.early_alarms += 1
                elif f.raised_ts is None:
                    f.raised_ts = t
                    f.flow_at_raise = float((change.detail or {})["estimated_flow_l_s"])
        if leak_det is not None and leak_at is not None and ts >= leak_at - WATER_LEAK_LEAD_IN:
            result = leak_det.evaluate(readings, now=ts, suspect=frozenset())
            leak_det.commit(result)
            if wl_raised is None and ts >= leak_at and any(c.event == "raised" for c in result.changes):
                wl_raised = ts
    for name, det in detectors.items():
        judged = [v for v in det.verdicts if v.status in ("normal", "leak") and v.ts >= judged_from]
        if leak_ts is not None:
            judged = [v for v in judged if v.ts < leak_ts]
        found[name].judged = len(judged)
        found[name].excess = [v.excess_l_s for v in judged]
    peak = None
    if case is not None:
        truth = scenario.ground_truth().events[0]
        peak = float(truth.get("peak_flow_l_s", float("nan")))
    return Outcome(
        case,
        seed,
        leak_ts,
        None if leak_ts is None else first_verdict_after(leak_ts, NightFlowSettings()),
        peak,
        found,
        None if wl_raised is None or leak_at is None else (wl_raised - leak_at).total_seconds() / 3600.0,
        time.perf_counter() - started,
    )


def _worker(args: tuple[LeakCase | None, int, bool, int, bool]) -> Outcome:
    case, seed, grid, normal_days, water_leak = args
    network, sensors = demo_network()
    return run_case(network, sensors, case, seed, variants(grid), normal_days=normal_days, water_leak=water_leak)


def summarise(outcomes: Sequence[Outcome], name: str, settings: NightFlowSettings) -> dict[str, Any]:
    """The figures of one setting over a draw."""
    leaks = [o for o in outcomes if o.case is not None]
    normal = [o for o in outcomes if o.case is None]

    def recall(group: list[Outcome], by_first_night: bool) -> str:
        hits = 0
        for o in group:
            f = o.found[name]
            if f.raised_ts is None or o.leak_ts is None:
                continue
            limit = first_verdict_after(o.leak_ts, settings) if by_first_night else o.leak_ts + AFTER.total_seconds()
            hits += f.raised_ts <= limit
        return f"{hits}/{len(group)}"

    big = [o for o in leaks if o.case is not None and o.case.flow_l_s >= 5.0]
    small = [o for o in leaks if o.case is not None and o.case.flow_l_s < 5.0]
    days = sum(o.found[name].judged for o in normal)
    alarms = sum(o.found[name].alarms for o in normal)
    excess = [e for o in normal for e in o.found[name].excess]
    ratios: list[float] = []
    peak_ratios: list[float] = []
    for o in leaks:
        estimate = o.found[name].flow_at_raise
        if o.case is None or estimate is None:
            continue
        ratios.append(estimate / o.case.flow_l_s)
        if o.peak_flow_l_s:
            peak_ratios.append(estimate / o.peak_flow_l_s)
    out: dict[str, Any] = {
        "first night ≥5": recall(big, True),
        "first night 1-5": recall(small, True),
        "48 h ≥5": recall(big, False),
        "48 h 1-5": recall(small, False),
        "FA/day": f"{alarms}/{days}" + (f" = {alarms / days:.3f}" if days else ""),
        "lead-in FA": sum(o.found[name].early_alarms for o in leaks),
        "normal excess sd": round(statistics.pstdev(excess), 2) if len(excess) > 1 else None,
        "normal excess max": round(max(excess), 2) if excess else None,
        "est/nominal median": round(statistics.median(ratios), 2) if ratios else None,
        "est/peak median [min, max]": f"{statistics.median(peak_ratios):.2f} [{min(peak_ratios):.2f}, "
        f"{max(peak_ratios):.2f}]"
        if peak_ratios
        else None,
    }
    return out


def either(outcomes: Sequence[Outcome], name: str, small: bool) -> str:
    """Leaks (1–5 L/s if *small*, else ≥ 5) that ``water_leak`` or the night-flow setting *name* found within 48 h."""
    group = [o for o in outcomes if o.case is not None and (o.case.flow_l_s < 5.0) == small]
    hits = sum(o.water_leak_delay_h is not None or o.found[name].raised_ts is not None for o in group)
    return f"{hits}/{len(group)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaks", type=int, default=24)
    parser.add_argument("--normal", type=int, default=6, help="normal scenarios")
    parser.add_argument("--normal-days", type=int, default=14, help="judged days of each normal scenario")
    parser.add_argument("--seed", type=int, default=2025, help="draws the leaks and the normal scenarios' seeds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grid", action="store_true", help="also every setting of the grid (for tuning)")
    parser.add_argument("--no-water-leak", action="store_true", help="do not run the existing detector")
    args = parser.parse_args()
    network, _sensors = demo_network()
    cases = draw_cases(network, args.leaks, args.seed)
    normal_seeds = [args.seed * 10 + k for k in range(args.normal)]
    water_leak = not args.no_water_leak
    jobs: list[tuple[LeakCase | None, int, bool, int, bool]] = [
        (c, c.seed, args.grid, args.normal_days, water_leak) for c in cases
    ]
    jobs += [(None, s, args.grid, args.normal_days, water_leak) for s in normal_seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        outcomes = list(pool.map(_worker, jobs))
    settings = variants(args.grid)
    print(f"lead-in {LEAD_IN.days} days; leaks judged until 48 h after they start; seed {args.seed}")
    print(
        f"{'flow L/s':>8} {'peak':>6} {'where':>16} {'h':>5} {'ramp':>4} {'MNF h':>6} {'1st':>3} {'est':>6} "
        f"{'no-ref h':>8} {'water_leak h':>12}"
    )
    for o in outcomes:
        f = o.found[DEFAULT]
        if o.case is None:
            print(
                f"normal seed {o.seed}: {f.alarms} alarms in {f.judged} judged days, excess "
                f"{' '.join(f'{e:.1f}' for e in f.excess)} ({o.run_s:.1f} s)"
            )
            continue
        c = o.case
        assert o.leak_ts is not None and o.first_night_ts is not None
        where = c.junction_id or f"{c.link_id}@{c.position:g}"
        h = "-" if f.raised_ts is None else f"{(f.raised_ts - o.leak_ts) / 3600:.1f}"
        first = "yes" if f.raised_ts is not None and f.raised_ts <= o.first_night_ts else "no"
        est = "-" if f.flow_at_raise is None else f"{f.flow_at_raise:.1f}"
        nr = o.found[NO_REFERENCE]
        nrh = "-" if nr.raised_ts is None else f"{(nr.raised_ts - o.leak_ts) / 3600:.1f}"
        wl = "-" if o.water_leak_delay_h is None else f"{o.water_leak_delay_h:.2f}"
        print(
            f"{c.flow_l_s:8.2f} {o.peak_flow_l_s or 0:6.2f} {where:>16} {c.hour:5.1f} {c.ramp_h:4.1f} {h:>6} "
            f"{first:>3} {est:>6} {nrh:>8} {wl:>12}" + (f"  lead-in alarms {f.early_alarms}" if f.early_alarms else "")
        )
    print()
    rows = {name: summarise(outcomes, name, s) for name, s in settings.items()}
    if water_leak:
        for name, row in rows.items():
            row["either 48 h ≥5 / 1-5"] = " / ".join(either(outcomes, name, small) for small in (False, True))
    keys = list(next(iter(rows.values())))
    print(f"{'setting':22s} " + " | ".join(keys))
    for name, row in rows.items():
        print(f"{name:22s} " + " | ".join(str(row[k]) for k in keys))
    leaks = [o for o in outcomes if o.case is not None]
    if water_leak and leaks:
        print()
        for label, group in (
            ("≥ 5 L/s", [o for o in leaks if o.case is not None and o.case.flow_l_s >= 5.0]),
            ("1–5 L/s", [o for o in leaks if o.case is not None and o.case.flow_l_s < 5.0]),
        ):
            wl2 = sum(o.water_leak_delay_h is not None and o.water_leak_delay_h <= 2.0 for o in group)
            wl48 = sum(o.water_leak_delay_h is not None for o in group)
            mnf = sum(o.found[DEFAULT].raised_ts is not None for o in group)
            both = sum(o.water_leak_delay_h is not None or o.found[DEFAULT].raised_ts is not None for o in group)
            either2 = sum(
                (o.water_leak_delay_h is not None and o.water_leak_delay_h <= 2.0)
                or o.found[DEFAULT].raised_ts is not None
                for o in group
            )
            print(
                f"{label}: water_leak within 2 h {wl2}/{len(group)}, within 48 h {wl48}/{len(group)}; "
                f"night flow within 48 h {mnf}/{len(group)}; either within 48 h {both}/{len(group)} "
                f"(water_leak within 2 h or night flow within 48 h: {either2}/{len(group)})"
            )
    print(f"wall time {time.perf_counter() - started:.0f} s ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")


if __name__ == "__main__":
    main()
