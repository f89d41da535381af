"""The streaming water-leak detector on a network it was not tuned on: WNTR's Net6, fed minute by minute.

    python bench/bench_transfer_streaming.py                 # 30 normal days, then 20 days with 10 leaks
    python bench/bench_transfer_streaming.py --cache /tmp/net6-stream   # keep (or reuse) the simulated readings
    python bench/bench_transfer_streaming.py --network .venv/lib/python3.11/site-packages/wntr/library/networks/ky10.inp

The same network, sensors, leaks and seeds as ``bench/bench_transfer.py`` (which scores the offline detector on
hourly tables): sensors placed by ``models.transfer_data.place_sensors`` (25 pressures by farthest-point sampling,
42 flows in every link at a tank or the reservoir, 32 tank levels); a normal month (seed 11), then 20 days (seed
12) with 10 leaks of 24 h at random junctions (0.5, 1, 2, 5 and 10 % of the mean demand, each twice, half abrupt
and half growing over 6 h), simulated by the project's water simulator (EPANET 2.2, its demand variation and
sensor noise) at ``--step-min`` (1 minute by default). The leak month is a separate run that follows the normal
one (each run starts a day early from the model's initial tank levels; that day is dropped).

Every minute's readings of all 99 sensors go to :class:`models.water_leak.WaterLeakDetector` as one batch in time
order, ``now`` = the batch's time, and the result is committed, as ingest does; the detector has its default
settings (nothing chosen on Net6). It learns its baseline on the first day and calibrates on the next three (on a
network run by its tanks and pumps, as Net6, ky10 and ky4 are; one day elsewhere); the rest of the normal month is
judged for false alarms, then the leak month.

Printed per leak: size (L/s and % of the mean demand), growth, whether an alert was raised within 24 h of its start
(while it lasts), the delay, the true junction's rank among the alert's listed candidates at the raise and at its
last update, the pipe distance from the best candidate to the leak and the estimated flow at the last update; the
largest test statistic during each leak, and the share of the normal month's judged days whose largest statistic
reaches it (``p(day)``: how often a leak-free day looks at least as bad); false alarms (raised outside leak
windows) per day per 100 judged sensors
(pressure and flow; tank levels are inputs, not judged); wall times.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from models.night_flow import NightFlowDetector
from models.transfer_data import (
    SensorStream,
    mean_demand_l_s,
    net6_inp,
    place_sensors,
    plan_leaks,
    simulate_stream,
)
from models.water_leak import WaterLeakDetector
from simulators.water_scenarios import LeakEvent
from twin.alerts import AlertChange
from twin.model import LinkKind, PipeNetwork
from twin.readings import Reading
from twin.sensors import Sensor
from twin.water import read_epanet

START = datetime(2025, 2, 28, 16, tzinfo=UTC)  # midnight, 1 March 2025, China Standard Time (as bench_transfer)
NORMAL_SEED, LEAK_SEED = 11, 12


@dataclass(slots=True)
class Replay:
    """What the detector did over a stream: every alert change, and its test statistic at every batch."""

    changes: list[AlertChange] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    statistic: list[float] = field(default_factory=list)
    threshold: float = float("nan")
    seconds: float = 0.0
    night_changes: list[AlertChange] = field(default_factory=list)
    night_seconds: float = 0.0


def replay(
    detector: WaterLeakDetector,
    stream: SensorStream,
    result: Replay,
    *,
    label: str,
    night: NightFlowDetector | None = None,
    progress_days: float = 5.0,
) -> None:
    """Feed *stream* to *detector* (and *night*, the night-flow detector ingest runs beside it) one batch per sensor
    step (every sensor's reading at that time), in time order, committing each result as ingest does; append what
    happened to *result*."""
    started = time.perf_counter()
    ids = stream.sensor_ids
    next_report = progress_days
    first = stream.times[0]
    for ts_pd, row in zip(stream.times, stream.values.tolist(), strict=True):
        ts = ts_pd.to_pydatetime()
        readings = [Reading(sid, ts, value, 0) for sid, value in zip(ids, row, strict=True)]
        outcome = detector.evaluate(readings, now=ts, suspect=frozenset())
        detector.commit(outcome)
        result.changes.extend(outcome.changes)
        judgement = detector.last_judgement
        result.times.append(ts)
        result.statistic.append(judgement.statistic if judgement is not None else float("nan"))
        if night is not None:
            tick = time.perf_counter()
            verdict = night.evaluate(readings, now=ts, suspect=frozenset())
            night.commit(verdict)
            result.night_changes.extend(verdict.changes)
            result.night_seconds += time.perf_counter() - tick
        done = (ts_pd - first).total_seconds() / 86_400.0
        if done >= next_report:
            print(f"  {label}: {done:.0f} days fed in {time.perf_counter() - started:.0f} s", flush=True)
            next_report += progress_days
    result.seconds += time.perf_counter() - started


def save_stream(path: Path, stream: SensorStream) -> None:
    np.savez_compressed(
        path,
        times=stream.times.asi8,
        ids=np.array(stream.sensor_ids),
        values=stream.values,
    )


def load_stream(path: Path) -> SensorStream:
    with np.load(path) as data:
        times = pd.DatetimeIndex(data["times"]).tz_localize("UTC")
        return SensorStream(times, tuple(str(s) for s in data["ids"]), data["values"])


def simulate(
    network: PipeNetwork, sensors: Sequence[Sensor], args: argparse.Namespace
) -> tuple[SensorStream, SensorStream, list[LeakEvent], float, list[dict[str, Any]]]:
    """Simulate (or load from ``--cache``) the normal month and the leak month; return both, the leaks, the mean
    demand and the leak run's ground-truth events."""
    step = timedelta(minutes=args.step_min)
    normal_span, leak_span = timedelta(days=args.normal_days), timedelta(days=args.leak_days)
    leak_start = START + normal_span
    cache: Path | None = args.cache
    tag = (
        f"{args.network.stem}-n{args.normal_days}-l{args.leak_days}-k{args.leaks}-h{args.leak_h:g}-g{args.gap_h:g}"
        f"-s{args.step_min:g}"
    )
    if cache is not None and (cache / f"{tag}.json").exists():
        meta = json.loads((cache / f"{tag}.json").read_text())
        demand = float(meta["demand_l_s"])
        print(f"readings loaded from {cache} ({tag})")
        normal = load_stream(cache / f"{tag}-normal.npz")
        leaky = load_stream(cache / f"{tag}-leaks.npz")
        events: list[dict[str, Any]] = meta["events"]
    else:
        started = time.perf_counter()
        normal, normal_truth = simulate_stream(
            network, sensors, start=START, duration=normal_span, seed=NORMAL_SEED, step=step
        )
        demand = mean_demand_l_s(normal_truth)
        print(f"  simulated {args.normal_days} normal days in {time.perf_counter() - started:.0f} s", flush=True)
        leaks = plan_leaks(
            network,
            start=leak_start,
            duration=leak_span,
            count=args.leaks,
            mean_demand_l_s=demand,
            seed=LEAK_SEED,
            leak_h=args.leak_h,
            gap_h=args.gap_h,
        )
        started = time.perf_counter()
        leaky, leak_truth = simulate_stream(
            network, sensors, start=leak_start, duration=leak_span, seed=LEAK_SEED, events=leaks, step=step
        )
        print(
            f"  simulated {args.leak_days} days with {args.leaks} leaks in {time.perf_counter() - started:.0f} s;"
            f" unbalanced solves {normal_truth.summary['unbalanced_solves']} + "
            f"{leak_truth.summary['unbalanced_solves']}",
            flush=True,
        )
        events = leak_truth.events
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            save_stream(cache / f"{tag}-normal.npz", normal)
            save_stream(cache / f"{tag}-leaks.npz", leaky)
            (cache / f"{tag}.json").write_text(json.dumps({"demand_l_s": demand, "events": events}))
    leaks = plan_leaks(
        network,
        start=leak_start,
        duration=leak_span,
        count=args.leaks,
        mean_demand_l_s=demand,
        seed=LEAK_SEED,
        leak_h=args.leak_h,
        gap_h=args.gap_h,
    )
    return normal, leaky, leaks, demand, events


def pipe_graph(network: PipeNetwork) -> nx.Graph:
    """The network as an undirected graph weighted by pipe length, m (pumps and valves: 0)."""
    graph = nx.Graph()
    for link in network.links.values():
        graph.add_edge(link.from_id, link.to_id, weight=link.length_m if link.kind is LinkKind.PIPE else 0.0)
    return graph


def listed(change: AlertChange) -> list[str]:
    """The candidate junctions an alert change lists, best first."""
    return [str(c["asset"]).rsplit(":", 1)[1] for c in (change.detail or {}).get("candidates", [])]


def rank_of(junction: str, candidates: list[str]) -> str:
    return str(candidates.index(junction) + 1) if junction in candidates else f">{len(candidates)}"


def night_report(
    night: NightFlowDetector,
    leaks: Sequence[LeakEvent],
    events: Sequence[dict[str, Any]],
    normal_run: Replay,
    leak_run: Replay,
    demand: float,
    args: argparse.Namespace,
    outside: Any,
    leak_found: Sequence[bool],
) -> None:
    """Per leak: whether the night-flow detector raised it while it lasted or within 24 h of its start, when, and
    the flow it estimated; its windows and false alarms."""
    night_h, reference_h = night.windows
    print(
        f"\nnight flow (default settings): night {night_h[0]:g}–{night_h[1]:g} h, reference"
        f" {reference_h[0]:g}–{reference_h[1]:g} h local (configured {night.settings.night_h[0]:g}–"
        f"{night.settings.night_h[1]:g}); {len(night.verdicts)} days judged"
        if reference_h is not None
        else f"\nnight flow: night {night_h[0]:g}–{night_h[1]:g} h, no reference"
    )
    raised = [c for c in leak_run.night_changes if c.event == "raised"]
    found = either = 0
    for leak, event, by_leak_detector in zip(leaks, events, leak_found, strict=True):
        end = leak.end or leak.start + timedelta(hours=args.leak_h)
        horizon = min(end, leak.start + timedelta(hours=args.within_h))
        hit = next((c for c in raised if leak.start <= c.ts < horizon), None)
        found += hit is not None
        either += hit is not None or by_leak_detector
        when = f"raised after {(hit.ts - leak.start).total_seconds() / 3600:5.2f} h, estimated" if hit else "not raised"
        flow = f" {float(hit.value or 0):6.1f} L/s" if hit else ""
        print(
            f"  {leak.junction_id:>14} {leak.flow_l_s:6.1f} L/s ({leak.flow_l_s / demand:5.1%}, lost"
            f" {event['flow_at_full_l_s']:6.1f}) {leak.growth:>9}: {when}{flow}"
        )
    normal_raised = [c for c in normal_run.night_changes if c.event == "raised"]
    strays = [c for c in raised if outside(c, 0.0)]
    print(
        f"night flow: {found}/{len(leaks)} leaks raised within {args.within_h:g} h; {len(normal_raised)} raised in the"
        f" normal month, {len(strays)} outside leaks in the leak month;"
        f" {leak_run.night_seconds + normal_run.night_seconds:.0f} s"
    )
    print(f"either detector (water_leak or night flow): {either}/{len(leaks)} leaks raised within {args.within_h:g} h")
    normal_days = [v.excess_l_s for v in night.verdicts if v.status == "normal"]
    cfg = night.settings
    if len(normal_days) > 1:
        print(
            f"night flow, days judged normal: {len(normal_days)}, estimate σ {float(np.std(normal_days)):.1f} L/s,"
            f" largest {float(np.max(np.abs(normal_days))):.1f} L/s; raising level"
            f" {max(cfg.threshold_l_s, cfg.threshold_sigma * night.verdicts[-1].sigma_l_s):.1f} L/s"
        )


def main() -> None:
    """Simulate, replay through the detector and print per-leak and overall figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal-days", type=int, default=30)
    parser.add_argument("--leak-days", type=int, default=20)
    parser.add_argument("--leaks", type=int, default=10)
    parser.add_argument("--leak-h", type=float, default=24.0, help="hours each leak lasts until repaired")
    parser.add_argument("--gap-h", type=float, default=24.0, help="least hours between leaks")
    parser.add_argument("--step-min", type=float, default=1.0, help="sensor step, minutes")
    parser.add_argument("--within-h", type=float, default=24.0, help="a leak counts if raised this soon")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the simulated readings in")
    parser.add_argument("--network", type=Path, default=net6_inp(), help="an EPANET .inp file (default: WNTR's Net6)")
    args = parser.parse_args()
    wall = time.perf_counter()

    network = read_epanet(args.network)
    sensors = place_sensors(network)
    print(f"{args.network.name}: {len(sensors)} sensors, step {args.step_min:g} min")
    normal, leaky, leaks, demand, events = simulate(network, sensors, args)
    simulated = time.perf_counter()

    started = time.perf_counter()
    detector = WaterLeakDetector(network, {s.sensor_id: s for s in sensors})
    response_s = time.perf_counter() - started
    used = len(detector.sensors)
    print(
        f"detector: {used} sensors judged (pressure and flow), {len(detector.response.candidates)} candidate"
        f" junctions, {detector.response.modes.shape[1]} common modes; network response in {response_s:.1f} s"
    )
    night = NightFlowDetector(network, {s.sensor_id: s for s in sensors}, require_metering=False)
    print(f"night flow: {'idle, ' + night.unmetered if night.unmetered else f'{len(night.sensors)} inflow meters'}")
    normal_run, leak_run = Replay(), Replay()
    replay(detector, normal, normal_run, label="normal month", night=night)
    state = detector.dump_state()
    cfg = detector.settings
    threshold = max(cfg.threshold, cfg.threshold_factor * float(state["calib_max"]))
    replay(detector, leaky, leak_run, label="leak month", night=night)

    # --- per leak ---
    graph = pipe_graph(network)
    stats = pd.Series(leak_run.statistic, index=pd.DatetimeIndex(leak_run.times))
    raised = [c for c in leak_run.changes if c.event == "raised"]
    judged_from = normal.times[0] + pd.Timedelta(seconds=cfg.learn_s + detector.calibration_s)
    normal_stats = pd.Series(normal_run.statistic, index=pd.DatetimeIndex(normal_run.times))
    normal_stats = normal_stats[normal_stats.index >= judged_from]
    # The largest statistic of each whole judged day of the normal month: how often a leak-free day reaches a
    # leak's peak (an empirical p-value of the leak's 24 h window).
    day_of = ((normal_stats.index - judged_from).total_seconds() // 86_400).astype(int)
    daily_max = normal_stats.groupby(day_of).max()
    step = pd.Timedelta(minutes=args.step_min)
    daily_max = daily_max[daily_max.index < int((normal.times[-1] + step - judged_from).total_seconds() // 86_400)]
    print(
        f"\n{'junction':>14} {'start':>11} {'L/s':>6} {'% dem':>6} {'growth':>9} {'lost L/s':>8} {'near dP kPa':>11}"
        f" {'max stat':>8} {'p(day)':>6} {'raised?':>7} {'delay h':>7} {'rank@raise':>10} {'rank@last':>9}"
        f" {'dist m':>7} {'est L/s':>7}"
    )
    windows: list[tuple[datetime, datetime]] = []
    found_by_leak_detector: list[bool] = []
    detected = 0
    delays: list[float] = []
    top3 = 0
    for leak, event in zip(leaks, events, strict=True):
        end = leak.end or leak.start + timedelta(hours=args.leak_h)
        windows.append((leak.start, end))
        horizon = min(end, leak.start + timedelta(hours=args.within_h))
        inside = stats[(stats.index >= leak.start) & (stats.index < end)]
        peak = float(inside.max()) if len(inside) else float("nan")
        hit = next((c for c in raised if leak.start <= c.ts < horizon), None)
        found_by_leak_detector.append(hit is not None)
        # An alert raised before the leak and still active when it starts would hide it; say so.
        near = event["pressure_change"][0]["mean_drop_kpa"] if event["pressure_change"] else float("nan")
        share = float((daily_max >= peak).mean()) if len(daily_max) else float("nan")
        row = (
            f"{leak.junction_id:>14} {leak.start:%m-%d %H:%M} {leak.flow_l_s:6.1f} {leak.flow_l_s / demand:6.1%}"
            f" {leak.growth:>9} {event['flow_at_full_l_s']:8.1f} {near:11.2f} {peak:8.2f} {share:6.2f}"
        )
        if hit is None:
            print(f"{row} {'no':>7} {'-':>7} {'-':>10} {'-':>9} {'-':>7} {'-':>7}")
            continue
        detected += 1
        delay = (hit.ts - leak.start).total_seconds() / 3600.0
        delays.append(delay)
        updates = [
            c
            for c in leak_run.changes
            if c.event == "updated" and c.cause_key == hit.cause_key and hit.ts <= c.ts < end
        ]
        last = updates[-1] if updates else hit
        at_raise, at_last = listed(hit), listed(last)
        top3 += int(leak.junction_id in at_raise[:3])
        junction = str(leak.junction_id)
        distance = nx.shortest_path_length(graph, at_last[0], junction, weight="weight") if at_last else float("nan")
        print(
            f"{row} {'yes':>7} {delay:7.2f} {rank_of(junction, at_raise):>10} {rank_of(junction, at_last):>9}"
            f" {distance:7.0f} {float((last.detail or {}).get('estimated_flow_l_s', float('nan'))):7.1f}"
        )

    # --- false alarms ---
    def outside(change: AlertChange, grace_h: float) -> bool:
        return not any(a <= change.ts < b + timedelta(hours=grace_h) for a, b in windows)

    normal_raised = [c for c in normal_run.changes if c.event == "raised" and c.ts >= judged_from]
    normal_days = (normal.times[-1] + step - judged_from).total_seconds() / 86_400.0
    leak_days = args.leak_days
    strict = [c for c in raised if outside(c, 0.0)]
    graced = [c for c in raised if outside(c, 12.0)]

    def rate(count: int, days: float) -> float:
        return count / days / used * 100.0

    print(
        f"\nthreshold {threshold:.2f} (max({cfg.threshold:g}, {cfg.threshold_factor:g} × calibration max); calibrated"
        f" {detector.calibration_s / 86_400:g} days after {cfg.learn_s / 86_400:g} of learning)"
    )
    print(f"leaks raised within {args.within_h:g} h: {detected}/{len(leaks)}", end="")
    print(f"; median delay {float(np.median(delays)):.2f} h" if delays else "")
    print(f"true junction in the top 3 at the raise: {top3}/{detected}" if detected else "")
    print(
        f"normal month after calibration ({normal_days:.1f} days): {len(normal_raised)} alerts raised,"
        f" {rate(len(normal_raised), normal_days):.2f} /day/100 sensors; statistic median"
        f" {float(normal_stats.median()):.2f}, 99th pct {float(normal_stats.quantile(0.99)):.2f},"
        f" max {float(normal_stats.max()):.2f}; {len(daily_max)} whole days, daily max median"
        f" {float(daily_max.median()):.2f}"
    )
    print(
        f"leak month ({leak_days} days): {len(raised)} alerts raised, {len(strict)} outside leaks"
        f" ({rate(len(strict), leak_days):.2f} /day/100 sensors), {len(graced)} outside leaks and 12 h after"
        f" each repair ({rate(len(graced), leak_days):.2f} /day/100 sensors)"
    )
    for change in raised:
        where = "in a leak" if not outside(change, 0.0) else ("after a repair" if not outside(change, 12.0) else "")
        print(f"  raised {change.ts:%m-%d %H:%M} stat {(change.detail or {}).get('statistic')} {where}")
    night_report(night, leaks, events, normal_run, leak_run, demand, args, outside, found_by_leak_detector)
    print(
        f"wall time {time.perf_counter() - wall:.0f} s (simulation or cache {simulated - wall:.0f} s, network response"
        f" {response_s:.0f} s, detector {normal_run.seconds + leak_run.seconds:.0f} s for"
        f" {len(normal.times) + len(leaky.times)} batches)"
    )


if __name__ == "__main__":
    main()
