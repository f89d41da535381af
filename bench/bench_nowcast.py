"""Waterlogging warnings on the demo city against SWMM on the true rain; timing of the nowcast and the surrogate.

For each storm the simulator's rainstorm scenario (SWMM stepped on the true rain) is the ground truth. Ensemble
nowcasts (:mod:`models.waterlogging.ensemble`) are issued every ``--every`` minutes from the storm's start to its
end, each from the last one's hot start, with the gauges' rain up to then and a forecast of the rest: the true
remaining rain times a per-nowcast factor drawn from a log-normal (σ = ``--forecast-error``) and shifted by up to
±10 min, so the forecast is never exact. The ensemble scales that forecast by ``--members`` quantiles of a
log-normal of σ ``--ensemble-sigma``. Levels at the level sensors come from the truth run.

The warning rule (probability to name a location, expected false-alarm ratio and hit rate before the first
warning) is chosen on the ``tune`` storms and scored once on the different ``score`` storms: Chicago design storms
of other return periods, durations and peak positions, and recorded-rain-like irregular storms (random bursts,
minute-to-minute noise, dry gaps). The earlier warning — the forecast itself names what it floods — is scored on
the same runs ("single forecast"). ``--under-catch``: the gauges (and the forecast, calibrated on them) read
``--catch`` of the true rain, so the model drifts and the level correction has to act.

``--futures blend``: every nowcast runs the forecast × its 9 deciles and the futures fitted to the observed rain
(three Chicago continuations and the last 30 min persisting, :func:`~models.waterlogging.ensemble.fitted_futures`);
all members' volumes are kept, and every weighting of them (5 or 9 forecast members, which observation-based ones,
their weight and how fast it grows with the event's rain), each with its rule — also the staged rule that names
more once *x* mm has fallen — is chosen on the tune storms and scored on the score storms. ``--shard K/N`` runs
every N-th storm only (into the cache), so several processes can share the runs; a last run without it reports.

    python bench/bench_nowcast.py --workers 1             # ~40 min on 1 worker
    python bench/bench_nowcast.py --workers 1 --futures blend --skip-timing --shard 0/2   # and 1/2 alongside, then
    python bench/bench_nowcast.py --workers 1 --futures blend --skip-timing              # the report from the cache
    python bench/bench_nowcast.py --workers 1 --futures blend --skip-timing --more-tune  # rule chosen on 24 storms
    python bench/bench_nowcast.py --quick                 # timing only
    python bench/bench_nowcast.py --train 60              # + train, score and time the surrogate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import re
import statistics
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from models.waterlogging.ensemble import (
    DECILES,
    EnsembleNowcast,
    StagedWarningRule,
    WarningRule,
    blend,
    ensemble_nowcast,
    event_rain,
    fitted_futures,
    forecast_futures,
    observed_weight,
)
from models.waterlogging.nowcast import nowcast, swmm_pool
from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, assess
from models.waterlogging.scoring import (
    NamingRule,
    PooledScore,
    StormCase,
    WarningScore,
    choose_rule,
    pool_scores,
    score_named,
    score_rule,
)
from simulators.rain_scenarios import RainSeries, RainstormScenario
from twin.democity.city import build_demo_city
from twin.model import City, PipeNetwork
from twin.sensors import Network, Quantity
from twin.storms import DEFAULT_FORMULA, FORMULAS

START = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
STORMS = [  # scored: (return period years, duration min, peak ratio) — the storms of the earlier figures
    (3, 60, 0.4),
    (5, 120, 0.35),
    (10, 90, 0.5),
    (20, 120, 0.4),
    (30, 180, 0.3),
    (50, 60, 0.45),
    (50, 120, 0.4),
    (100, 150, 0.55),
]
SCORE_IRREGULAR = [(5, 120, 1, 11), (20, 90, 2, 12), (50, 150, 1, 13), (100, 120, 2, 14)]  # (rp, min, bursts, seed)
TUNE_CHICAGO = [(2, 90, 0.4), (5, 60, 0.5), (10, 120, 0.35), (20, 150, 0.45), (40, 90, 0.4), (80, 120, 0.5)]
TUNE_IRREGULAR = [(10, 120, 1, 1), (30, 90, 2, 2)]
# --more-tune: 16 more tune storms (fixed before any was run; none is a score storm), so the rule is chosen on 24
TUNE_MORE_CHICAGO = [
    (3, 120, 0.45),
    (7, 90, 0.35),
    (15, 60, 0.4),
    (25, 120, 0.5),
    (30, 150, 0.35),
    (50, 90, 0.55),
    (60, 180, 0.4),
    (100, 90, 0.45),
]
TUNE_MORE_IRREGULAR = [
    (5, 90, 1, 3),
    (10, 150, 2, 4),
    (20, 120, 1, 5),
    (40, 60, 1, 6),
    (50, 120, 2, 7),
    (80, 150, 1, 8),
    (100, 90, 2, 9),
    (30, 120, 1, 10),
]
FORECAST_SLOTS = len(DECILES)  # --futures blend: the forecast × its deciles, then
OBSERVED_SLOTS = 4  # up to 3 fitted Chicago continuations and the last 30 min persisting
FIVE = (0, 2, 4, 6, 8)  # the deciles that are the 5-member set (10, 30, 50, 70, 90 %)
PROBABILITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # naming levels of the blended rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the nowcast's timing only")
    parser.add_argument("--workers", type=int, default=2, help="SWMM worker processes")
    parser.add_argument("--every", type=int, default=10, help="minutes between nowcasts")
    parser.add_argument("--forecast-error", type=float, default=0.25, help="σ of the log forecast factor")
    parser.add_argument("--members", type=int, default=5, help="rain futures per nowcast")
    parser.add_argument("--ensemble-sigma", type=float, default=0.25, help="σ the ensemble assumes")
    parser.add_argument("--after", type=int, default=120, help="minutes each nowcast runs past the storm's end")
    parser.add_argument("--under-catch", action="store_true", help="also score gauges catching --catch of the rain")
    parser.add_argument("--catch", type=float, default=0.75, help="gauge catch in the under-catch variant")
    parser.add_argument("--min-volume", type=float, default=10.0, help="m³ that make a node a flooded location")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-waterlogging"), help="runs kept here")
    parser.add_argument("--surrogate", type=Path, default=None, help="a trained surrogate folder to time")
    parser.add_argument("--train", type=int, default=0, help="train a surrogate on N storms, test on N/3 unseen")
    parser.add_argument("--skip-nowcast", action="store_true", help="only the surrogate")
    parser.add_argument("--skip-timing", action="store_true", help="no nowcast timing")
    parser.add_argument("--sensitivity", action="store_true", help="only: how the flooded set moves with the rain")
    parser.add_argument(
        "--futures",
        choices=("forecast", "blend"),
        default="forecast",
        help="forecast: --members quantiles of the forecast; blend: the forecast's 9 deciles and the futures fitted "
        "to the observed rain, all run, then every weighting of them chosen on the tune storms and scored",
    )
    parser.add_argument(
        "--more-tune", action="store_true", help="choose the rule on 24 tune storms instead of 8 (16 more runs)"
    )
    parser.add_argument("--shard", default="0/1", help="K/N: run only every N-th storm from the K-th (no report)")
    args = parser.parse_args()
    city = build_demo_city()
    network = city.networks[Network.DRAINAGE]
    model = PondingModel(network, city.terrain, city.low_points.values())
    assets = RiskAssets.for_city(city, model)
    level_nodes = {
        s.sensor_id: (s.asset_id or "").removeprefix("drainage:")
        for s in city.sensors.values()
        if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL
    }
    with swmm_pool(args.workers) as pool:
        if args.sensitivity:
            sensitivity(city, network, pool, args.min_volume)
            return
        if args.train:
            args.surrogate = train_surrogate(network, assets, pool, args.train)
        if not args.skip_nowcast and not args.skip_timing:
            timing(network, pool, args.members, args.futures)
        if not args.skip_nowcast and not args.quick:
            print(
                f"\nforecast error σ {args.forecast_error:g}, ensemble of {args.members} (σ {args.ensemble_sigma:g}), "
                f"nowcast every {args.every} min, flooded location ≥ {args.min_volume:g} m³"
            )
            sets = storm_sets(more_tune=args.more_tune)
            shard, shards = (int(v) for v in args.shard.split("/"))
            if shards > 1:
                every = [s for storms in sets.values() for s in storms]
                for storm in every[shard::shards]:
                    cached_run(city, network, level_nodes, pool, storm, 1.0, args)
                return
            results = {
                name: [cached_run(city, network, level_nodes, pool, s, 1.0, args) for s in storms]
                for name, storms in sets.items()
            }
            if args.futures == "blend":
                compare_variants(results, model, assets, args.min_volume)
                return
            rules = candidate_rules(args.min_volume, args.members)
            rule, tuned = choose_rule(rules, [r.case for r in results["tune"]])
            print(
                f"rule chosen on {len(results['tune'])} tune storms: {rule} (tune: hit {tuned.hit_rate:.3f}, FAR "
                f"{tuned.false_alarm_ratio:.3f}, median lead {tuned.median_lead_s / 60:.0f} min)"
            )
            assert isinstance(rule, WarningRule)
            report("tune storms", results["tune"], rule, model, assets, args.min_volume)
            report("score storms (never used to choose)", results["score"], rule, model, assets, args.min_volume)
            local, tuned = choose_rule(rules, [r.case for r in results["tune"]], per_location=True)
            print(
                f"\nper location, rule chosen on the tune storms by the per-location targets: {local} (tune: hit "
                f"{tuned.location_hit_rate:.3f}, FAR {tuned.location_false_alarm_ratio:.3f})"
            )
            report("score storms, per-location rule", results["score"], local, model, assets, args.min_volume)
            if args.under_catch:
                chosen = [Storm.chicago(*p) for p in STORMS[::2]]
                caught = [cached_run(city, network, level_nodes, pool, s, args.catch, args) for s in chosen]
                report(f"under-catch (gauges {args.catch:g})", caught, rule, model, assets, args.min_volume)
    if args.surrogate is not None:
        time_surrogate(args.surrogate, assets)


def cached_run(
    city: City,
    network: PipeNetwork,
    level_nodes: dict[str, str],
    pool: Executor,
    storm: Storm,
    catch: float,
    args: argparse.Namespace,
) -> StormResult:
    """:func:`run_storm`, kept as npz + JSON under ``args.cache`` keyed by the storm and the settings."""
    key = (
        f"{storm.name}|catch={catch:g}|err={args.forecast_error:g}|m={args.members}|s={args.ensemble_sigma:g}|"
        f"every={args.every}|after={args.after}|v={args.min_volume:g}"
    )
    if args.futures == "blend":
        key += "|futures=blend"
    path = args.cache / (re.sub(r"[^A-Za-z0-9.=-]+", "_", key) + ".npz")
    if path.exists():
        data = np.load(path)
        meta = json.loads(str(data["meta"]))
        case = StormCase(
            meta["name"],
            tuple(START + timedelta(minutes=m) for m in meta["minutes"]),
            tuple(meta["node_ids"]),
            data["probability"],
            meta["truth_volume"],
            {n: datetime.fromisoformat(ts) for n, ts in meta["truth_first"].items()},
            meta["min_volume"],
            tuple(meta.get("observed_mm", [0.0] * len(meta["minutes"]))),
        )
        result = StormResult(
            case,
            data["central"],
            meta["truth_volume"],
            tuple(meta["factors"]),
            tuple(meta["walls"]),
            data.get("volumes"),
        )
    else:
        started = time.perf_counter()
        result = run_storm(city, network, level_nodes, pool, storm, catch, args)
        print(f"  ran {storm.name} (catch {catch:g}) in {time.perf_counter() - started:.0f} s", flush=True)
        case = result.case
        meta = {
            "name": case.name,
            "minutes": [round((t - START).total_seconds() / 60) for t in case.times],
            "node_ids": list(case.node_ids),
            "truth_volume": result.truth_volume,
            "truth_first": {n: t.isoformat() for n, t in case.truth_first_flood.items()},
            "min_volume": case.min_volume_m3,
            "factors": list(result.rain_factors),
            "walls": list(result.wall_s),
            "observed_mm": list(case.observed_mm or ()),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"probability": case.probability, "central": result.central_volume_m3}
        if result.volumes_m3 is not None:
            arrays["volumes"] = result.volumes_m3
        np.savez(path, meta=json.dumps(meta), **arrays)
    return result


def timing(network: PipeNetwork, pool: Executor, members: int, kind: str = "forecast") -> None:
    rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=50, duration_min=120)
    observed, forecast = rain.rain_mm_h[:60], rain.rain_mm_h[60:]
    walls = []
    for _ in range(3):
        cast = nowcast(
            network,
            now=START + timedelta(hours=1),
            observed_rain_mm_h=observed,
            forecast_rain_mm_h=forecast,
            horizon=timedelta(hours=6),
            executor=pool,
        )
        walls.append(cast.wall_s)
    print(
        f"nowcast, 6 h horizon after a 1 h warm-up, warm pool: {min(walls):.2f} s best, "
        f"{statistics.median(walls):.2f} s median of 3 (target < 10 s)"
    )
    walls = []
    futures = forecast_futures(forecast, members=members)
    if kind == "blend":
        futures = blend([(forecast_futures(forecast, levels=DECILES), 0.5), (fitted_futures(observed), 0.5)])
    for _ in range(2):
        ensemble = ensemble_nowcast(
            network,
            now=START + timedelta(hours=1),
            observed_rain_mm_h=observed,
            futures=futures,
            horizon=timedelta(hours=6),
            executor=pool,
        )
        walls.append(ensemble.wall_s)
    print(
        f"ensemble nowcast of {len(futures)} futures ({kind}), 6 h horizon after a 1 h warm-up: {min(walls):.2f} s "
        "best of 2"
    )


def sensitivity(city: City, network: PipeNetwork, pool: Executor, min_volume: float) -> None:
    """Print the locations a nowcast at the storm's start names when the whole storm is forecast × a factor."""
    for rp, duration, peak in ((5, 120, 0.35), (20, 120, 0.4), (100, 150, 0.55)):
        rain = RainSeries.design(
            FORMULAS[DEFAULT_FORMULA], return_period_years=rp, duration_min=duration, peak_ratio=peak
        )
        truth = RainstormScenario(network, city.sensors, rain=rain, start=START, drain=timedelta(hours=4)).run()
        flooded = {n for n, f in truth.floods.items() if f.volume_m3 >= min_volume}
        row = []
        for factor in (0.7, 0.85, 1.0, 1.2, 1.4):
            cast = nowcast(
                network,
                now=START,
                observed_rain_mm_h=[],
                forecast_rain_mm_h=[v * factor for v in rain.rain_mm_h],
                horizon=timedelta(hours=6),
                executor=pool,
            )
            named = set(cast.flooded(min_volume_m3=min_volume))
            hit = len(named & flooded) / len(flooded) if flooded else math.nan
            far = len(named - flooded) / len(named) if named else math.nan
            row.append(f"×{factor:g}: {len(named)} named, hit {hit:.2f}, FAR {far:.2f}")
        print(f"{rp:>3}-yr {duration} min: {len(flooded)} flooded on the true rain; forecast " + "; ".join(row))


def storm_sets(*, more_tune: bool = False) -> dict[str, list[Storm]]:
    """The storms the warning rule is chosen on (``tune``) and the different ones it is scored on (``score``)."""
    tune = [Storm.chicago(*p) for p in TUNE_CHICAGO] + [Storm.irregular(*p) for p in TUNE_IRREGULAR]
    if more_tune:
        tune += [Storm.chicago(*p) for p in TUNE_MORE_CHICAGO] + [Storm.irregular(*p) for p in TUNE_MORE_IRREGULAR]
    score = [Storm.chicago(*p) for p in STORMS] + [Storm.irregular(*p) for p in SCORE_IRREGULAR]
    return {"tune": tune, "score": score}


@dataclass(frozen=True)
class Storm:
    """A storm of the bench: its name and one-minute intensities, mm/h."""

    name: str
    rain_mm_h: tuple[float, ...]

    @classmethod
    def chicago(cls, rp: float, duration: int, peak: float) -> Storm:
        rain = RainSeries.design(
            FORMULAS[DEFAULT_FORMULA], return_period_years=rp, duration_min=duration, peak_ratio=peak
        )
        return cls(f"chicago {rp:g}-yr {duration} min r={peak:.2f}", rain.rain_mm_h)

    @classmethod
    def irregular(cls, rp: float, duration: int, bursts: int, seed: int) -> Storm:
        """A recorded-rain-like storm: the depth of the formula's *rp*-year *duration*-minute rain, in *bursts*
        bumps at random times, times minute-to-minute log-normal AR(1) noise (ρ 0.85, σ 0.6), a few dry gaps."""
        rng = np.random.default_rng(seed)
        t = np.arange(duration) + 0.5
        shape = np.zeros(duration)
        for _ in range(bursts):
            centre = rng.uniform(0.15, 0.75) * duration
            width = rng.uniform(0.06, 0.18) * duration
            shape += rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
        shape += 0.03
        noise = np.zeros(duration)
        for k in range(1, duration):
            noise[k] = 0.85 * noise[k - 1] + math.sqrt(1 - 0.85**2) * rng.normal(0.0, 0.6)
        rain = shape * np.exp(noise)
        rain[rain < 0.08 * rain.max()] = 0.0
        depth = FORMULAS[DEFAULT_FORMULA].depth_mm(rp, duration)
        rain *= depth / (rain.sum() / 60.0)
        return cls(f"irregular {rp:g}-yr {duration} min {bursts} burst(s) #{seed}", tuple(float(v) for v in rain))


@dataclass(frozen=True)
class StormResult:
    """A storm's chain of ensemble nowcasts and its truth."""

    case: StormCase
    central_volume_m3: np.ndarray  # (nowcasts, nodes): the forecast itself (the middle member), event volumes
    truth_volume: dict[str, float]
    rain_factors: tuple[float, ...]
    wall_s: tuple[float, ...]
    # --futures blend: event volumes of every member, (nowcasts, FORECAST_SLOTS + OBSERVED_SLOTS, nodes), NaN: not run
    volumes_m3: np.ndarray | None = None
    median_volume_m3: np.ndarray | None = None  # a variant's weighted median event volume, (nowcasts, nodes)


def ponded_volume(result: StormResult) -> np.ndarray:
    """The event volumes a warning's risk map ponds: a variant's weighted median, else the middle member's."""
    return result.median_volume_m3 if result.median_volume_m3 is not None else result.central_volume_m3


def run_storm(
    city: City,
    network: PipeNetwork,
    level_nodes: dict[str, str],
    pool: Executor,
    storm: Storm,
    catch: float,
    args: argparse.Namespace,
) -> StormResult:
    """Run the storm's truth, then a chain of ensemble nowcasts every ``args.every`` minutes from its start."""
    rain = RainSeries(storm.rain_mm_h, source={"kind": "bench", "name": storm.name})
    scenario = RainstormScenario(network, city.sensors, rain=rain, start=START, drain=timedelta(hours=4))
    truth = scenario.run()
    truth_volume = {n: f.volume_m3 for n, f in truth.floods.items()}
    truth_first = {n: f.first_flood for n, f in truth.floods.items()}
    col = {sid: k for k, sid in enumerate(truth.sensor_ids)}
    duration = len(storm.rain_mm_h)
    rng = random.Random(f"{storm.name}/{catch}")
    true_rain = list(storm.rain_mm_h) + [0.0] * 360
    previous: EnsembleNowcast | None = None
    times, probability, central, factors, walls = [], [], [], [], []
    volumes, observed_mm = [], []
    for minute in range(0, duration + 1, args.every):
        now = START + timedelta(minutes=minute)
        factor = math.exp(rng.gauss(0.0, args.forecast_error))
        shift = rng.randint(-10, 10)
        future = true_rain[minute:]
        future = ([0.0] * shift + future) if shift > 0 else future[-shift:]
        forecast = [v * factor * catch for v in future[: duration - minute + 30]]
        observed = [v * catch for v in true_rain[:minute]]
        depth = {}
        if minute > 0:
            depth = {level_nodes[s]: float(truth.values[minute - 1, col[s]]) for s in level_nodes if s in col}
        observed_mm.append(sum(event_rain(observed)) / 60.0)
        if args.futures == "blend":
            fitted = fitted_futures(observed)
            futures = blend(
                [(forecast_futures(forecast, sigma=args.ensemble_sigma, levels=DECILES), 0.5), (fitted, 0.5)]
            )
        else:
            futures = forecast_futures(forecast, sigma=args.ensemble_sigma, members=args.members)
        cast = ensemble_nowcast(
            network,
            now=now,
            observed_rain_mm_h=observed,
            futures=futures,
            horizon=timedelta(minutes=duration - minute + args.after),
            observed_depth_m=depth,
            previous=previous,
            executor=pool,
        )
        previous = cast
        times.append(now)
        if args.futures == "blend":
            event = cast.event_volume_m3
            slots = np.full((FORECAST_SLOTS + OBSERVED_SLOTS, event.shape[1]), np.nan)
            slots[:FORECAST_SLOTS] = event[:FORECAST_SLOTS]
            slots[FORECAST_SLOTS : FORECAST_SLOTS + len(fitted)] = event[FORECAST_SLOTS:]
            volumes.append(slots)
            five = event[list(FIVE)]
            probability.append(np.mean(five >= args.min_volume, axis=0))
            central.append(event[DECILES.index(0.5)])
        else:
            probability.append(cast.probability(min_volume_m3=args.min_volume))
            central.append(cast.event_volume_m3[len(cast.members) // 2])
        factors.append(cast.members[0].rain_factor)
        walls.append(cast.wall_s)
    case = StormCase(
        storm.name,
        tuple(times),
        cast.node_ids,
        np.array(probability),
        truth_volume,
        truth_first,
        args.min_volume,
        tuple(observed_mm),
    )
    stacked = np.array(volumes, dtype=np.float32) if volumes else None
    return StormResult(case, np.array(central), truth_volume, tuple(factors), tuple(walls), stacked)


def score_single(result: StormResult, min_volume: float) -> WarningScore:
    named = [
        (ts, [n for n, v in zip(result.case.node_ids, row, strict=True) if v >= min_volume])
        for ts, row in zip(result.case.times, result.central_volume_m3, strict=True)
    ]
    return score_named(named, result.case.truth_volume_m3, result.case.truth_first_flood, min_volume_m3=min_volume)


def candidate_rules(min_volume: float, members: int) -> list[WarningRule]:
    levels = sorted({round((k + 1) / members, 6) for k in range(members)})
    return [
        WarningRule(probability=p, max_expected_far=f, min_expected_hit=h, min_volume_m3=min_volume)
        for p in levels
        for f in (0.05, 0.1, 0.15, 0.2, 0.3, 1.0)
        for h in (0.0, 0.8, 0.85, 0.9, 0.95)
    ]


def ponding_error(result: StormResult, score: WarningScore, model: PondingModel, assets: RiskAssets) -> float:
    """Mean absolute ponding depth error at the first warning over assets wet in either, m (NaN: never warned)."""
    if score.first_warning is None:
        return math.nan
    k = result.case.times.index(score.first_warning)
    predicted = assess(
        assets,
        model.fill(dict(zip(result.case.node_ids, ponded_volume(result)[k], strict=True))),
        issued=score.first_warning,
        source="nowcast",
    )
    actual = assess(assets, model.fill(result.truth_volume), issued=score.first_warning, source="truth")
    wet = (predicted.depth_m > 0.01) | (actual.depth_m > 0.01)
    return float(np.mean(np.abs(predicted.depth_m[wet] - actual.depth_m[wet]))) if wet.any() else 0.0


def report(
    label: str,
    results: list[StormResult],
    rule: NamingRule,
    model: PondingModel,
    assets: RiskAssets,
    min_volume: float,
) -> None:
    print(f"-- {label}: rule {rule}")
    ens, single, errs = [], [], []
    for r in results:
        s = score_rule(rule, r.case)
        b = score_single(r, min_volume)
        ens.append(s)
        single.append(b)
        err = ponding_error(r, s, model, assets)
        if not math.isnan(err):
            errs.append(err)
        first = (s.first_warning - START).total_seconds() / 60 if s.first_warning else math.nan
        bfirst = (b.first_warning - START).total_seconds() / 60 if b.first_warning else math.nan
        print(
            f"  {r.case.name:<40} flooded {s.truth:>3} | ensemble: warned {s.warned:>3} at +{first:.0f} min, hit "
            f"{s.hit_rate:.2f} (in time {s.hit_rate_in_time:.2f}), FAR {s.false_alarm_ratio:.2f}, median lead "
            f"{s.median_lead_s / 60:.0f} min, missed {len(s.missed)}, ponding MAE {err:.3f} m | single forecast: "
            f"warned {b.warned:>3} at +{bfirst:.0f} min, hit {b.hit_rate:.2f}, FAR {b.false_alarm_ratio:.2f} | "
            f"rain factors {sorted(set(r.rain_factors))}, ensemble {statistics.median(r.wall_s):.1f} s"
        )
    for name, scores in (("ensemble", ens), ("single forecast", single)):
        p = pool_scores(scores)
        print(
            f"  pooled {name}: {p.storms} storms with flooding ({p.warned_storms} warned), hit rate {p.hit_rate:.3f} "
            f"({p.hits}/{p.flooded}), in time {p.hit_rate_in_time:.3f} ({p.hits_in_time}/{p.flooded}), "
            f"false-alarm ratio {p.false_alarm_ratio:.3f} ({p.false_alarms}/{p.named}), median lead "
            f"{p.median_lead_s / 60:.0f} min (n={len(p.lead_times_s)}), missed {p.missed}, false warnings in dry "
            f"storms {p.false_warnings} (FAR counting them {p.false_alarm_ratio_all:.3f}), critical success index "
            f"{p.critical_success_index:.3f}; per location: hit {p.location_hit_rate:.3f} "
            f"({p.flooded - p.missed}/{p.flooded}), FAR {p.location_false_alarm_ratio:.3f} "
            f"({p.false_alarms_ever + p.dry_named_ever}/{p.named_ever + p.dry_named_ever})"
        )
    if errs:
        print(
            f"  ponding depth MAE at the first warning (ensemble): mean {statistics.mean(errs):.3f} m over "
            f"{len(errs)} storms"
        )


@dataclass(frozen=True)
class Variant:
    """How to weigh the stored members of a ``--futures blend`` run.

    Attributes:
        name: for people.
        forecast: the forecast slots used (deciles), equal weights.
        observed: the observation-based slots used, equal weights among those run.
        max_observed: the weight the observation-based members reach (:func:`observed_weight`); 0: forecast only;
            negative: every member run weighs the same.
        full_at_mm: the event's rain at which they reach it, mm.
    """

    name: str
    forecast: tuple[int, ...]
    observed: tuple[int, ...] = ()
    max_observed: float = 0.0
    full_at_mm: float = 0.0


def variants() -> list[Variant]:
    """Forecast ×5 or ×9 alone, and with the fitted Chicago continuations and/or persistence at each weighting."""
    out = [Variant("forecast ×5", FIVE), Variant("forecast ×9 (deciles)", tuple(range(FORECAST_SLOTS)))]
    observed = {
        "chicago ×3 + persistence": tuple(range(FORECAST_SLOTS, FORECAST_SLOTS + OBSERVED_SLOTS)),
        "chicago ×3": tuple(range(FORECAST_SLOTS, FORECAST_SLOTS + OBSERVED_SLOTS - 1)),
        "persistence": (FORECAST_SLOTS + OBSERVED_SLOTS - 1,),
    }
    for label, slots in (("5", FIVE), ("9", tuple(range(FORECAST_SLOTS)))):
        for kind, members in observed.items():
            out.append(Variant(f"forecast ×{label} + {kind}, all members equal", slots, members, -1.0))
            for weight in (0.25, 0.5, 0.75, 1.0):
                for full_at in (0.0, 5.0, 10.0, 20.0):
                    name = f"forecast ×{label} + {kind}, {weight:g} from {full_at:g} mm"
                    out.append(Variant(name, slots, members, weight, full_at))
    return out


def variant_result(result: StormResult, variant: Variant, min_volume: float) -> StormResult:
    """*result* with the probabilities and median volumes of *variant*'s weighting of its stored members."""
    assert result.volumes_m3 is not None and result.case.observed_mm is not None
    volumes = np.asarray(result.volumes_m3, dtype=float)
    weights = np.zeros(volumes.shape[:2])
    for t, mm in enumerate(result.case.observed_mm):
        seen = [k for k in variant.observed if np.isfinite(volumes[t, k, 0])]
        share = observed_weight(mm, max_weight=variant.max_observed, full_at_mm=variant.full_at_mm) if seen else 0.0
        if variant.max_observed < 0:
            share = len(seen) / (len(seen) + len(variant.forecast))
        weights[t, list(variant.forecast)] = (1 - share) / len(variant.forecast)
        if seen and share > 0:
            weights[t, seen] = share / len(seen)
    filled = np.nan_to_num(volumes, nan=0.0)
    probability = np.einsum("ts,tsn->tn", weights, (filled >= min_volume).astype(float))
    order = np.argsort(filled, axis=1, kind="stable")
    ranked = np.take_along_axis(filled, order, axis=1)
    spread = np.broadcast_to(weights[:, :, None], filled.shape)
    cumulative = np.cumsum(np.take_along_axis(spread, order, axis=1), axis=1)
    pick = np.argmax(cumulative >= 0.5 - 1e-9, axis=1)
    median = np.take_along_axis(ranked, pick[:, None, :], axis=1)[:, 0, :]
    case = dataclasses.replace(result.case, probability=probability)
    return dataclasses.replace(result, case=case, median_volume_m3=median)


def staged_rules(base: list[WarningRule]) -> list[NamingRule]:
    """Rules that add lower-probability locations once the event has rained *x* mm, on top of *base*."""
    out: list[NamingRule] = []
    for rule in base:
        for later in PROBABILITIES:
            if later < rule.probability - 1e-9:
                out.extend(StagedWarningRule(rule, later, mm) for mm in (2.0, 5.0, 10.0, 20.0))
    return out


def rank_key(pooled: PooledScore) -> tuple[bool, float, float, float]:
    """:func:`choose_rule`'s order: meeting both targets, then the longest lead, hit rate and FAR (met) or the best
    CSI, then the longest lead (not met)."""
    met = pooled.hit_rate_in_time >= 0.9 and pooled.false_alarm_ratio <= 0.2
    lead = float(np.nan_to_num(pooled.median_lead_s))
    if met:
        return (True, lead, pooled.hit_rate_in_time, -pooled.false_alarm_ratio)
    return (False, pooled.critical_success_index, lead, 0.0)


def rule_label(rule: NamingRule) -> str:
    """p/f/h of a rule, and p2 ≥ x mm of a staged one."""
    if isinstance(rule, StagedWarningRule):
        return f"{rule_label(rule.rule)} p{rule.later_probability:g}≥{rule.after_mm:g}mm"
    assert isinstance(rule, WarningRule)
    return f"p{rule.probability:g} f{rule.max_expected_far:g} h{rule.min_expected_hit:g}"


Scored = tuple[Variant, NamingRule, PooledScore, list[StormResult], list[StormResult]]
"""A weighting, its rule chosen on the tune storms, the rule's pooled tune score, the tune and score storms."""


def compare_variants(
    results: dict[str, list[StormResult]], model: PondingModel, assets: RiskAssets, min_volume: float
) -> None:
    """Every weighting of the stored members, each with its rule chosen on the tune storms, scored on both sets;
    then the staged rules on the best weighting and the forecast-only ones; the combination best on the tune
    storms in full."""
    base = [
        WarningRule(probability=p, max_expected_far=f, min_expected_hit=h, min_volume_m3=min_volume)
        for p in PROBABILITIES
        for f in (0.05, 0.1, 0.15, 0.2, 0.3, 1.0)
        for h in (0.0, 0.8, 0.85, 0.9, 0.95)
    ]
    irregular = [k for k, r in enumerate(results["score"]) if r.case.name.startswith("irregular")]
    scored: list[Scored] = []
    for variant in variants():
        tune = [variant_result(r, variant, min_volume) for r in results["tune"]]
        score = [variant_result(r, variant, min_volume) for r in results["score"]]
        rule, tuned = choose_rule(base, [r.case for r in tune])
        scored.append((variant, rule, tuned, tune, score))
    scored.sort(key=lambda v: rank_key(v[2]), reverse=True)
    staged: list[Scored] = []
    for variant, _, _, tune, score in [scored[0], *[v for v in scored if v[0].max_observed == 0]]:
        rule, tuned = choose_rule(staged_rules(base), [r.case for r in tune])
        staged.append((dataclasses.replace(variant, name=variant.name + ", staged rule"), rule, tuned, tune, score))
    everything = sorted([*scored, *staged], key=lambda v: rank_key(v[2]), reverse=True)
    print(
        "\nweightings, best on the tune storms first (rule chosen on the tune storms; hit = in time; "
        "ponding = mean depth error at the first warning):"
    )
    print(
        f"{'variant':<72} {'rule':<24} | tune hit   FAR   CSI  lead | score hit   FAR FARdry   CSI  lead "
        "ponding | irregular hit   FAR   CSI"
    )
    for variant, rule, tuned, _, score in everything:
        scores = [score_rule(rule, r.case) for r in score]
        pooled = pool_scores(scores)
        odd = pool_scores([scores[k] for k in irregular])
        errs = [
            e for r, sc in zip(score, scores, strict=True) if not math.isnan(e := ponding_error(r, sc, model, assets))
        ]
        print(
            f"{variant.name:<72} {rule_label(rule):<24} | {tuned.hit_rate_in_time:8.3f} {tuned.false_alarm_ratio:5.3f} "
            f"{tuned.critical_success_index:5.3f} {tuned.median_lead_s / 60:5.0f} | {pooled.hit_rate_in_time:9.3f} "
            f"{pooled.false_alarm_ratio:5.3f} {pooled.false_alarm_ratio_all:6.3f} {pooled.critical_success_index:5.3f} "
            f"{pooled.median_lead_s / 60:5.0f} {statistics.mean(errs) if errs else math.nan:7.3f} | "
            f"{odd.hit_rate_in_time:13.3f} {odd.false_alarm_ratio:5.3f} {odd.critical_success_index:5.3f}"
        )
    per_location(scored, base)
    variant, rule, tuned, tune, score = everything[0]
    print(f"\nbest on the tune storms: {variant.name}")
    report("tune storms", tune, rule, model, assets, min_volume)
    report("score storms (never used to choose)", score, rule, model, assets, min_volume)


def per_location(scored: list[Scored], base: list[WarningRule]) -> None:
    """The same runs scored per location (each location's own first warning; every location warned counts): for
    every weighting, the rule chosen on the tune storms by the per-location targets, scored on both sets."""
    print(
        "\nper location (a flooded location is a hit when a warning named it before it flooded; every location "
        "warned that did not flood is a false alarm, dry storms included), rule chosen on the tune storms by these:"
    )
    print(f"{'variant':<72} {'rule':<24} | tune hit   FAR   CSI  lead | score hit   FAR   CSI  lead")
    rows = []
    for variant, _, _, tune, score in scored:
        rule, tuned = choose_rule(base, [r.case for r in tune], per_location=True)
        pooled = pool_scores([score_rule(rule, r.case) for r in score])
        rows.append((variant, rule, tuned, pooled))
    rows.sort(key=lambda v: location_rank_key(v[2]), reverse=True)
    for variant, rule, tuned, pooled in rows:
        print(
            f"{variant.name:<72} {rule_label(rule):<24} | {tuned.location_hit_rate:8.3f} "
            f"{tuned.location_false_alarm_ratio:5.3f} {tuned.location_critical_success_index:5.3f} "
            f"{tuned.median_lead_s / 60:5.0f} | {pooled.location_hit_rate:9.3f} "
            f"{pooled.location_false_alarm_ratio:5.3f} {pooled.location_critical_success_index:5.3f} "
            f"{pooled.median_lead_s / 60:5.0f}"
        )


def location_rank_key(pooled: PooledScore) -> tuple[bool, float, float, float]:
    """:func:`rank_key` with the per-location figures."""
    met = pooled.location_hit_rate >= 0.9 and pooled.location_false_alarm_ratio <= 0.2
    lead = float(np.nan_to_num(pooled.median_lead_s))
    if met:
        return (True, lead, pooled.location_hit_rate, -pooled.location_false_alarm_ratio)
    return (False, pooled.location_critical_success_index, lead, 0.0)


def train_surrogate(network: PipeNetwork, assets: RiskAssets, pool: Executor, count: int) -> Path:
    from models.waterlogging.surrogate import Surrogate, evaluate, sample_storms, simulate_storms

    started = time.perf_counter()
    train = simulate_storms(network, sample_storms(count, seed=1), executor=pool)
    unseen = simulate_storms(network, sample_storms(max(count // 3, 5), seed=2), executor=pool)
    sim_s = time.perf_counter() - started
    surrogate = Surrogate.fit(train, network_name=network.name)
    score = evaluate(surrogate, unseen, assets)
    print(
        f"surrogate: {count} training storms + {len(unseen)} unseen simulated in {sim_s:.0f} s (2 workers), fitted "
        f"in {surrogate.info['fit_s']} s; unseen: R² {score.r2_volume:.3f} on node volumes, MAE "
        f"{score.mae_m3:.1f} m³ (nodes flooding in either), grade agreement {score.grade_agreement:.3f} over graded "
        f"assets, {score.grade_agreement_all:.4f} over all; times over {score.timed_pairs} storm × node pairs "
        f"flooding in both: first flooding off by {score.eta_median_abs_min:.1f} min median "
        f"({score.eta_p90_abs_min:.1f} min 90th percentile), duration by {score.duration_median_abs_min:.1f} min median"
    )
    return surrogate.save(Path("/tmp") / "bench-waterlogging-surrogate")


def time_surrogate(folder: Path, assets: RiskAssets) -> None:
    from models.waterlogging.surrogate import StormFeatures, Surrogate

    surrogate = Surrogate.load(folder)
    storm = StormFeatures(return_period_years=20, duration_min=120, peak_ratio=0.4, antecedent_mm=10)
    walls = []
    for _ in range(50):
        t = time.perf_counter()
        surrogate.risk_map(storm, assets, issued=START)
        walls.append(time.perf_counter() - t)
    print(
        f"surrogate whole-city risk map ({len(assets.assets)} assets): median {statistics.median(walls) * 1000:.1f} "
        f"ms, max {max(walls) * 1000:.1f} ms (target < 50 ms)"
    )


if __name__ == "__main__":
    main()
