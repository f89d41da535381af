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

    python bench/bench_nowcast.py --workers 1             # ~40 min on 1 worker
    python bench/bench_nowcast.py --quick                 # timing only
    python bench/bench_nowcast.py --train 60              # + train, score and time the surrogate
"""

from __future__ import annotations

import argparse
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

import numpy as np

from models.waterlogging.ensemble import EnsembleNowcast, WarningRule, ensemble_nowcast, forecast_futures
from models.waterlogging.nowcast import nowcast, swmm_pool
from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, assess
from models.waterlogging.scoring import StormCase, WarningScore, choose_rule, pool_scores, score_named, score_rule
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
            timing(network, pool, args.members)
        if not args.skip_nowcast and not args.quick:
            print(
                f"\nforecast error σ {args.forecast_error:g}, ensemble of {args.members} (σ {args.ensemble_sigma:g}), "
                f"nowcast every {args.every} min, flooded location ≥ {args.min_volume:g} m³"
            )
            sets = storm_sets()
            results = {
                name: [cached_run(city, network, level_nodes, pool, s, 1.0, args) for s in storms]
                for name, storms in sets.items()
            }
            rules = candidate_rules(args.min_volume, args.members)
            rule, tuned = choose_rule(rules, [r.case for r in results["tune"]])
            print(
                f"rule chosen on {len(results['tune'])} tune storms: {rule} (tune: hit {tuned.hit_rate:.3f}, FAR "
                f"{tuned.false_alarm_ratio:.3f}, median lead {tuned.median_lead_s / 60:.0f} min)"
            )
            assert isinstance(rule, WarningRule)
            report("tune storms", results["tune"], rule, model, assets, args.min_volume)
            report("score storms (never used to choose)", results["score"], rule, model, assets, args.min_volume)
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
        )
        result = StormResult(case, data["central"], meta["truth_volume"], tuple(meta["factors"]), tuple(meta["walls"]))
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
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, probability=case.probability, central=result.central_volume_m3, meta=json.dumps(meta))
    return result


def timing(network: PipeNetwork, pool: Executor, members: int) -> None:
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
    for _ in range(2):
        ensemble = ensemble_nowcast(
            network,
            now=START + timedelta(hours=1),
            observed_rain_mm_h=observed,
            futures=forecast_futures(forecast, members=members),
            horizon=timedelta(hours=6),
            executor=pool,
        )
        walls.append(ensemble.wall_s)
    print(f"ensemble nowcast of {members} futures, 6 h horizon after a 1 h warm-up: {min(walls):.2f} s best of 2")


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


def storm_sets() -> dict[str, list[Storm]]:
    """The storms the warning rule is chosen on (``tune``) and the different ones it is scored on (``score``)."""
    tune = [Storm.chicago(*p) for p in TUNE_CHICAGO] + [Storm.irregular(*p) for p in TUNE_IRREGULAR]
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
        cast = ensemble_nowcast(
            network,
            now=now,
            observed_rain_mm_h=observed,
            futures=forecast_futures(forecast, sigma=args.ensemble_sigma, members=args.members),
            horizon=timedelta(minutes=duration - minute + args.after),
            observed_depth_m=depth,
            previous=previous,
            executor=pool,
        )
        previous = cast
        times.append(now)
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
    )
    return StormResult(case, np.array(central), truth_volume, tuple(factors), tuple(walls))


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


def report(
    label: str,
    results: list[StormResult],
    rule: WarningRule,
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
        err = math.nan
        if s.first_warning is not None:
            k = r.case.times.index(s.first_warning)
            predicted = assess(
                assets,
                model.fill(dict(zip(r.case.node_ids, r.central_volume_m3[k], strict=True))),
                issued=s.first_warning,
                source="nowcast",
            )
            actual = assess(assets, model.fill(r.truth_volume), issued=s.first_warning, source="truth")
            wet = (predicted.depth_m > 0.01) | (actual.depth_m > 0.01)
            err = float(np.mean(np.abs(predicted.depth_m[wet] - actual.depth_m[wet]))) if wet.any() else 0.0
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
            f"{p.critical_success_index:.3f}"
        )
    if errs:
        print(
            f"  ponding depth MAE at the first warning (ensemble): mean {statistics.mean(errs):.3f} m over "
            f"{len(errs)} storms"
        )


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
        f"assets, {score.grade_agreement_all:.4f} over all"
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
