"""Fast surrogate of SWMM for what-ifs: per-node flood volume from a design storm's parameters, in milliseconds.

Training runs SWMM (the nowcast's worker, :func:`models.waterlogging.nowcast.run_job`, in a process pool) on many
design storms — Chicago hyetographs of the city's formula over return periods, durations and peak positions — each
after an antecedent rain that wets the ground (``antecedent_mm`` spread over one hour, then
:data:`ANTECEDENT_GAP` dry), and records each node's flood volume during the design storm and the drain after it.

The model is scikit-learn's Gaussian process regression (an RBF kernel with one length scale per feature, plus a
white-noise term) from the storm's features (:func:`features`: log return period, duration, peak position,
antecedent rain, depth and the peak 10-, 30- and 60-minute intensities, standardised) to the square root of every
node's volume at once (the root tames the spread between a trickle and a big flood). Prediction is one kernel
row times the fitted weights, done here in numpy; the fitted arrays are saved as ``surrogate.npz`` with a JSON
description, never as a pickle.

Times: each node's first flooding is taken to come a node-specific offset after the design storm's peak, and to last
a node-specific share of the storm's duration — the medians over the training storms in which the node floods
(nodes that never flood there take the medians over all nodes). So the what-if risk map has, like SWMM's, an
expected time to flooding and a duration per asset.

Its error against SWMM on storms it never saw is measured by :func:`evaluate` (R² of node flood volumes pooled
over storms and nodes, the agreement of the risk grades the volumes give, and the error of the times).

Example:
    >>> with swmm_pool(2) as pool:                                                       # doctest: +SKIP
    ...     runs = simulate_storms(network, sample_storms(60, seed=1), executor=pool)
    >>> surrogate = Surrogate.fit(runs, network_name=network.name)                         # doctest: +SKIP
    >>> surrogate.predict(StormFeatures(20, 120, 0.4, 10))["MHX0203"]                    # doctest: +SKIP
    212.4
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.waterlogging.nowcast import SwmmJob, run_job, swmm_pool
from models.waterlogging.risk import RiskAssets, RiskMap, assess
from twin.errors import ConfigError
from twin.model import PipeNetwork
from twin.storms import DEFAULT_FORMULA, FORMULAS, StormFormula, chicago_storm

log = logging.getLogger(__name__)

ANTECEDENT_SPAN = timedelta(hours=1)
ANTECEDENT_GAP = timedelta(hours=3)
DRAIN = timedelta(hours=2)
FEATURES = (
    "log10_return_period",
    "duration_min",
    "peak_ratio",
    "antecedent_mm",
    "depth_mm",
    "peak_10min_mm_h",
    "peak_30min_mm_h",
    "peak_60min_mm_h",
)
FORMAT_VERSION = 1
_START = datetime(2026, 7, 1, tzinfo=UTC)
RECORD_S = 300
"""How often a training run reads node flooding, seconds (the resolution of the times)."""
TIMED_M3 = 1.0
"""A node counts as flooding in a storm, for the times, from this volume, m³."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StormFeatures:
    """A design storm: return period (years), duration (min), Chicago peak position, antecedent rain (mm)."""

    return_period_years: float
    duration_min: int
    peak_ratio: float
    antecedent_mm: float = 0.0

    def __post_init__(self) -> None:
        if not 0.25 <= self.return_period_years <= 1000:
            raise ConfigError("return period must be between 0.25 and 1000 years")
        if not 10 <= self.duration_min <= 24 * 60:
            raise ConfigError("duration must be between 10 and 1440 minutes")
        if not 0 < self.peak_ratio < 1:
            raise ConfigError("peak ratio must be between 0 and 1")
        if not 0 <= self.antecedent_mm <= 500:
            raise ConfigError("antecedent rain must be between 0 and 500 mm")

    def hyetograph(self, formula: StormFormula) -> list[float]:
        """The storm's one-minute intensities, mm/h."""
        return chicago_storm(
            formula,
            return_period_years=self.return_period_years,
            duration_min=self.duration_min,
            peak_ratio=self.peak_ratio,
        )


def features(storm: StormFeatures, formula: StormFormula) -> FloatArray:
    """Return the storm's feature vector (:data:`FEATURES` order)."""
    rain = np.asarray(storm.hyetograph(formula))

    def peak(window: int) -> float:
        if len(rain) <= window:
            return float(rain.mean())
        return float(np.convolve(rain, np.ones(window) / window, mode="valid").max())

    return np.array(
        [
            math.log10(storm.return_period_years),
            float(storm.duration_min),
            storm.peak_ratio,
            storm.antecedent_mm,
            float(rain.sum() / 60.0),
            peak(10),
            peak(30),
            peak(60),
        ]
    )


def sample_storms(count: int, *, seed: int, max_return_period: float = 100.0) -> list[StormFeatures]:
    """Return *count* storms spread over the space (stratified per parameter): return period log-uniform from 1
    year to *max_return_period*, duration 60–180 min in 15-minute steps, peak 0.3–0.6, antecedent 0–40 mm."""
    if count < 1:
        raise ConfigError("sample at least one storm")
    rng = np.random.default_rng(seed)

    def strata() -> FloatArray:
        return (rng.permutation(count) + rng.uniform(size=count)) / count

    rp = 10 ** (strata() * math.log10(max_return_period))
    duration = 60 + 15 * np.floor(strata() * 9)
    peak = 0.3 + 0.3 * strata()
    wet = 40.0 * strata()
    return [
        StormFeatures(round(float(a), 2), int(b), round(float(c), 3), round(float(d), 1))
        for a, b, c, d in zip(rp, duration, peak, wet, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class StormRun:
    """SWMM's flood volume per node for one storm (during the design storm and its drain), m³.

    ``eta_s``: seconds from the design storm's start to each node's first flooding (NaN where it does not flood);
    ``duration_s``: seconds from its first to its last flooding (0 where none). Resolution :data:`RECORD_S`.
    """

    storm: StormFeatures
    node_ids: tuple[str, ...]
    volume_m3: FloatArray
    wall_s: float
    eta_s: FloatArray | None = None
    duration_s: FloatArray | None = None


def flood_times(rate: FloatArray, record_s: int) -> tuple[FloatArray, FloatArray]:
    """First flooding (s after the first record step's start; NaN: none) and duration (s) from flooding rates."""
    wet = rate > 1e-6
    any_wet = wet.any(axis=0)
    first = wet.argmax(axis=0)
    last = wet.shape[0] - 1 - wet[::-1].argmax(axis=0)
    eta = np.where(any_wet, first * record_s, np.nan).astype(float)
    duration = np.where(any_wet, (last - first + 1) * record_s, 0).astype(float)
    return eta, duration


def _peak_s(storm: StormFeatures) -> float:
    """Seconds from the design storm's start to its peak."""
    return storm.peak_ratio * storm.duration_min * 60.0


def storm_job(network: PipeNetwork, storm: StormFeatures, formula: StormFormula) -> SwmmJob:
    """Return the SWMM job of a training storm: antecedent rain, dry gap, the design storm, the drain."""
    lead_min = int((ANTECEDENT_SPAN + ANTECEDENT_GAP).total_seconds() // 60)
    antecedent = [storm.antecedent_mm] * 60  # mm/h for one hour = antecedent_mm
    rain = antecedent + [0.0] * (lead_min - 60) + storm.hyetograph(formula)
    end_s = (lead_min + storm.duration_min) * 60 + int(DRAIN.total_seconds())
    return SwmmJob(network.source, _START, tuple(rain), 60, lead_min * 60, end_s, RECORD_S)


def simulate_storms(
    network: PipeNetwork,
    storms: Sequence[StormFeatures],
    *,
    formula: StormFormula | None = None,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[StormRun]:
    """Run SWMM on every storm in worker processes; return their per-node flood volumes, in *storms* order.

    Args:
        progress: called with (done, total) after each run.

    Raises:
        SimulationError: SWMM rejects the model or stops.
    """
    chosen = formula or FORMULAS[DEFAULT_FORMULA]
    own = executor is None
    pool = swmm_pool(2) if executor is None else executor
    try:
        futures = [pool.submit(run_job, storm_job(network, s, chosen)) for s in storms]
        out = []
        for k, (storm, future) in enumerate(zip(storms, futures, strict=True)):
            run = future.result()
            eta, duration = flood_times(run.flood_rate_m3_s, RECORD_S)
            out.append(
                StormRun(
                    storm,
                    run.node_ids,
                    np.clip(run.volume_m3 - run.volume_before_m3, 0, None),
                    run.wall_s,
                    eta,
                    duration,
                )
            )
            if progress is not None:
                progress(k + 1, len(storms))
    finally:
        if own:
            pool.shutdown()
    return out


@dataclass(frozen=True, slots=True)
class SurrogateScore:
    """The surrogate against SWMM on storms it never saw.

    Attributes:
        storms: test storms; ``r2_volume``: R² of node flood volumes pooled over storms × nodes.
        mae_m3: mean absolute error of node volumes over storm × node pairs where either floods, m³.
        grade_agreement: share of assets graded (by either) that get the same grade from both.
        grade_agreement_all: the same over every asset (ungraded by both counts as agreement).
        timed_pairs: storm × node pairs where both SWMM and the surrogate have the node flooding ≥ ``TIMED_M3``.
        eta_median_abs_min, eta_p90_abs_min: median and 90th percentile of |surrogate − SWMM| first flooding time
            over those pairs, minutes (NaN without times).
        duration_median_abs_min: the same for the flooding's duration, minutes.
    """

    storms: int
    r2_volume: float
    mae_m3: float
    grade_agreement: float
    grade_agreement_all: float
    timed_pairs: int = 0
    eta_median_abs_min: float = math.nan
    eta_p90_abs_min: float = math.nan
    duration_median_abs_min: float = math.nan


class Surrogate:
    """A fitted surrogate: storm features → flood volume of every node, m³."""

    def __init__(
        self,
        *,
        node_ids: Sequence[str],
        x_train: FloatArray,
        alpha: FloatArray,
        x_mean: FloatArray,
        x_scale: FloatArray,
        y_mean: FloatArray,
        y_scale: FloatArray,
        length_scales: FloatArray,
        amplitude: float,
        formula: StormFormula,
        info: Mapping[str, Any],
        eta_offset_s: FloatArray | None = None,
        duration_share: FloatArray | None = None,
    ) -> None:
        self.node_ids = tuple(node_ids)
        self.x_train = x_train
        self.alpha = alpha
        self.x_mean, self.x_scale = x_mean, x_scale
        self.y_mean, self.y_scale = y_mean, y_scale
        self.length_scales = length_scales
        self.amplitude = amplitude
        self.formula = formula
        self.info = dict(info)
        self.eta_offset_s = eta_offset_s
        """Per node: seconds from the storm's peak to its first flooding (None: a surrogate saved without times)."""
        self.duration_share = duration_share
        """Per node: its flooding's duration as a share of the storm's duration."""
        self._scaled_train = x_train / length_scales

    @classmethod
    def fit(cls, runs: Sequence[StormRun], *, network_name: str, formula: StormFormula | None = None) -> Surrogate:
        """Fit on SWMM runs (:func:`simulate_storms`).

        Raises:
            ConfigError: fewer than 5 runs, or runs of different networks.
        """
        from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
        from sklearn.gaussian_process import GaussianProcessRegressor  # type: ignore[import-untyped]
        from sklearn.gaussian_process.kernels import (  # type: ignore[import-untyped]
            RBF,
            ConstantKernel,
            WhiteKernel,
        )

        if len(runs) < 5:
            raise ConfigError("fit the surrogate on at least 5 storm runs")
        nodes = runs[0].node_ids
        if any(r.node_ids != nodes for r in runs):
            raise ConfigError("every run must come from the same network")
        chosen = formula or FORMULAS[DEFAULT_FORMULA]
        started = time.perf_counter()
        x = np.array([features(r.storm, chosen) for r in runs])
        y = np.sqrt(np.array([r.volume_m3 for r in runs]))
        x_mean, x_scale = x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        y_mean, y_scale = y.mean(axis=0), np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
        xs, ys = (x - x_mean) / x_scale, (y - y_mean) / y_scale
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(np.ones(x.shape[1]), (1e-2, 1e3)) + WhiteKernel(
            1e-3, (1e-8, 1e0)
        )
        gp = GaussianProcessRegressor(kernel, normalize_y=False, n_restarts_optimizer=2, random_state=0)
        with warnings.catch_warnings():
            # A length scale at its upper bound is a feature the fit found no use for: said below, in the log.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(xs, ys)
        fitted = gp.kernel_
        amplitude = float(fitted.k1.k1.constant_value)
        lengths = np.atleast_1d(np.asarray(fitted.k1.k2.length_scale, dtype=float))
        unused = [name for name, length in zip(FEATURES, lengths, strict=False) if length >= 0.99e3]
        if unused:
            log.info("surrogate: %s change nothing among these storms (length scale at its bound)", ", ".join(unused))
        info = {
            "network": network_name,
            "storms": len(runs),
            "kernel": str(fitted),
            "fit_s": round(time.perf_counter() - started, 2),
            "trained": datetime.now(UTC).isoformat(),
            "ranges": {name: [float(x[:, k].min()), float(x[:, k].max())] for k, name in enumerate(FEATURES)},
        }
        log.info("surrogate fitted on %d storms in %.1f s: %s", len(runs), info["fit_s"], fitted)
        eta_offset_s, duration_share = _fit_times(runs)
        return cls(
            node_ids=nodes,
            x_train=xs,
            alpha=np.asarray(gp.alpha_, dtype=float).reshape(len(runs), -1),
            x_mean=x_mean,
            x_scale=x_scale,
            y_mean=y_mean,
            y_scale=y_scale,
            length_scales=lengths,
            amplitude=amplitude,
            formula=chosen,
            info=info,
            eta_offset_s=eta_offset_s,
            duration_share=duration_share,
        )

    def predict_times(self, storm: StormFeatures, volume_m3: FloatArray) -> tuple[FloatArray, FloatArray] | None:
        """Return each node's first flooding (s from the storm's start; NaN where *volume_m3* < ``TIMED_M3``) and
        duration (s), in :attr:`node_ids` order; None for a surrogate saved without times."""
        if self.eta_offset_s is None or self.duration_share is None:
            return None
        flooding = volume_m3 >= TIMED_M3
        eta = np.where(flooding, np.clip(_peak_s(storm) + self.eta_offset_s, 0.0, None), np.nan)
        duration = np.where(flooding, self.duration_share * storm.duration_min * 60.0, 0.0)
        return eta, duration

    def predict_array(self, storm: StormFeatures) -> FloatArray:
        """Return the flood volume of every node (:attr:`node_ids` order), m³."""
        x = (features(storm, self.formula) - self.x_mean) / self.x_scale
        d = ((self._scaled_train - x / self.length_scales) ** 2).sum(axis=1)
        k = self.amplitude * np.exp(-0.5 * d)
        root = k @ self.alpha * self.y_scale + self.y_mean
        return np.asarray(np.clip(root, 0.0, None) ** 2, dtype=float)

    def predict(self, storm: StormFeatures) -> dict[str, float]:
        """Return the flood volume by node id, m³."""
        return {n: float(v) for n, v in zip(self.node_ids, self.predict_array(storm), strict=True)}

    def risk_map(self, storm: StormFeatures, assets: RiskAssets, *, issued: datetime) -> RiskMap:
        """Return the risk map the storm would make if it began at *issued*: surrogate volumes → ponds → grades,
        with times to flooding and durations (unknown for a surrogate saved without times)."""
        volumes = self.predict_array(storm)
        times = self.predict_times(storm, volumes)
        if tuple(assets.model.node_ids) != self.node_ids:
            index = {n: k for k, n in enumerate(self.node_ids)}
            order = np.array([index.get(n, -1) for n in assets.model.node_ids])

            def pick(values: FloatArray, missing: float) -> FloatArray:
                return np.where(order >= 0, values[np.clip(order, 0, None)], missing)

            volumes = pick(volumes, 0.0)
            times = None if times is None else (pick(times[0], np.nan), pick(times[1], 0.0))
        return assess(
            assets,
            assets.model.fill(volumes),
            issued=issued,
            source="surrogate",
            node_eta_s=None if times is None else times[0],
            node_duration_s=None if times is None else times[1],
        )

    def save(self, folder: Path) -> Path:
        """Write ``surrogate.npz`` and ``surrogate.json`` into *folder*; return the folder."""
        folder.mkdir(parents=True, exist_ok=True)
        times = (
            {"eta_offset_s": self.eta_offset_s, "duration_share": self.duration_share}
            if self.eta_offset_s is not None and self.duration_share is not None
            else {}
        )
        np.savez(
            folder / "surrogate.npz",
            x_train=self.x_train,
            alpha=self.alpha,
            x_mean=self.x_mean,
            x_scale=self.x_scale,
            y_mean=self.y_mean,
            y_scale=self.y_scale,
            length_scales=self.length_scales,
            **times,  # type: ignore[arg-type]
        )
        meta = {
            "format": FORMAT_VERSION,
            "features": list(FEATURES),
            "node_ids": list(self.node_ids),
            "amplitude": self.amplitude,
            "formula": asdict(self.formula),
            "info": self.info,
        }
        (folder / "surrogate.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> Surrogate:
        """Read a surrogate written by :meth:`save` (arrays only: pickles are refused).

        Raises:
            ConfigError: files missing, of another format version, or inconsistent.
        """
        try:
            meta = json.loads((folder / "surrogate.json").read_text(encoding="utf-8"))
            with np.load(folder / "surrogate.npz", allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k], dtype=float) for k in data.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder}: not a readable surrogate ({exc})") from exc
        if meta.get("format") != FORMAT_VERSION or list(meta.get("features", [])) != list(FEATURES):
            raise ConfigError(f"{folder}: surrogate of another format; train it again")
        if arrays["alpha"].shape != (arrays["x_train"].shape[0], len(meta["node_ids"])):
            raise ConfigError(f"{folder}: surrogate arrays do not match its node list")
        timed = "eta_offset_s" in arrays and "duration_share" in arrays
        if timed and not arrays["eta_offset_s"].shape == arrays["duration_share"].shape == (len(meta["node_ids"]),):
            raise ConfigError(f"{folder}: surrogate times do not match its node list")
        return cls(
            node_ids=meta["node_ids"],
            x_train=arrays["x_train"],
            alpha=arrays["alpha"],
            x_mean=arrays["x_mean"],
            x_scale=arrays["x_scale"],
            y_mean=arrays["y_mean"],
            y_scale=arrays["y_scale"],
            length_scales=arrays["length_scales"],
            amplitude=float(meta["amplitude"]),
            formula=StormFormula(**meta["formula"]),
            info=meta.get("info", {}),
            eta_offset_s=arrays["eta_offset_s"] if timed else None,
            duration_share=arrays["duration_share"] if timed else None,
        )


def _fit_times(runs: Sequence[StormRun]) -> tuple[FloatArray | None, FloatArray | None]:
    """Per node, the median offset of its first flooding from the storm's peak (s) and the median share of the
    storm's duration it floods, over the runs where it floods ≥ ``TIMED_M3``; nodes that never do take the
    medians over every node's floods. (None, None) when the runs carry no times or nothing floods."""
    if any(r.eta_s is None or r.duration_s is None for r in runs):
        return None, None
    volume = np.array([r.volume_m3 for r in runs])
    eta = np.array([r.eta_s for r in runs], dtype=float)
    duration = np.array([r.duration_s for r in runs], dtype=float)
    peak = np.array([_peak_s(r.storm) for r in runs])[:, None]
    length = np.array([r.storm.duration_min * 60.0 for r in runs])[:, None]
    timed = (volume >= TIMED_M3) & np.isfinite(eta)
    if not timed.any():
        return None, None
    offset = np.where(timed, eta - peak, np.nan)
    share = np.where(timed, duration / length, np.nan)
    some = timed.any(axis=0)
    node_offset = np.full(volume.shape[1], float(np.nanmedian(offset)))
    node_share = np.full(volume.shape[1], float(np.nanmedian(share)))
    node_offset[some] = np.nanmedian(offset[:, some], axis=0)
    node_share[some] = np.nanmedian(share[:, some], axis=0)
    return node_offset, node_share


def evaluate(surrogate: Surrogate, runs: Sequence[StormRun], assets: RiskAssets | None = None) -> SurrogateScore:
    """Score the surrogate against SWMM runs of storms it never saw."""
    truth = np.array([r.volume_m3 for r in runs])
    predicted = np.array([surrogate.predict_array(r.storm) for r in runs])
    ss_res = float(((truth - predicted) ** 2).sum())
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    either = (truth > 0.1) | (predicted > 0.1)
    mae = float(np.abs(truth - predicted)[either].mean()) if either.any() else 0.0
    agree, agree_all = math.nan, math.nan
    if assets is not None:
        same = graded = same_all = total = 0
        for r, p in zip(runs, predicted, strict=True):
            a = assess(assets, assets.model.fill(r.volume_m3), issued=_START, source="swmm").grade
            b = assess(assets, assets.model.fill(p), issued=_START, source="surrogate").grade
            mask = (a > 0) | (b > 0)
            same += int((a[mask] == b[mask]).sum())
            graded += int(mask.sum())
            same_all += int((a == b).sum())
            total += len(a)
        agree = same / graded if graded else 1.0
        agree_all = same_all / total if total else 1.0
    eta_errors: list[FloatArray] = []
    duration_errors: list[FloatArray] = []
    for r, p in zip(runs, predicted, strict=True):
        times = surrogate.predict_times(r.storm, p)
        if times is None or r.eta_s is None or r.duration_s is None:
            continue
        both = (r.volume_m3 >= TIMED_M3) & (p >= TIMED_M3) & np.isfinite(r.eta_s)
        eta_errors.append(np.abs(times[0] - r.eta_s)[both] / 60.0)
        duration_errors.append(np.abs(times[1] - r.duration_s)[both] / 60.0)
    eta_err = np.concatenate(eta_errors) if eta_errors else np.array([])
    duration_err = np.concatenate(duration_errors) if duration_errors else np.array([])
    return SurrogateScore(
        len(runs),
        r2,
        mae,
        agree,
        agree_all,
        timed_pairs=int(eta_err.size),
        eta_median_abs_min=float(np.median(eta_err)) if eta_err.size else math.nan,
        eta_p90_abs_min=float(np.quantile(eta_err, 0.9)) if eta_err.size else math.nan,
        duration_median_abs_min=float(np.median(duration_err)) if duration_err.size else math.nan,
    )
