"""An offline anomaly detector for wide sensor tables: learn a normal period, then flag what does not fit it.

The input is a wide table (index = timestamps, columns = sensors) such as an hourly SCADA export from a water
network. The detector learns, from a period known to be normal:

1. a robust hour-of-day profile per sensor (median and scaled MAD per hour, the scale floored), so the daily
   demand cycle is not an anomaly; a 0/1 status column's profile is its usual state per hour, and the floor turns
   an unusual switch into a large deviation. The standardised deviation is ``z``. With adaptive standardisation
   (``adapt_h`` > 0), each measured sensor's level is re-estimated from the data being scored: the rolling median
   of its deviation from the profile over the trailing ``adapt_h`` hours (past and present only, never the
   future) is subtracted before scaling, so a slow drift of the normal operating point over months is followed,
   while an attack of a few days moves a median over one or two weeks too little to be learnt away.
2. one or both of two models of how the sensors hang together:

   - **PCA** of features (``z``, its rolling mean, and for measured quantities its change per step); the score is
     the squared prediction error (SPE) outside the principal subspace plus a weighted Hotelling T² inside it;
   - **virtual sensors**: every sensor's ``z`` predicted by ridge regression from every *other* sensor's ``z`` now
     and one step before; the score is the mean squared standardised residual. A tank whose level rises while
     the flows that fill it do not, or a pump whose status and flow disagree, leaves a residual even when each
     reading alone looks normal — the physical consistency a single-sensor threshold misses, learnt from data
     without knowing the network's topology.

3. an alarm threshold: a high quantile of the smoothed score on a held-out *calibration* tail of the normal
   period, scored by a model fitted on the rest (a model scores the data it was fitted on too kindly); the final
   model is then fitted on the whole normal period. An alarm needs the smoothed score to stay above the
   threshold for a while, because an attack or a leak lasts hours while noise does not.

Windows are given in hours and turned into samples from the normal period's median time step, so the same
settings mean the same on hourly and 15-minute data. Nothing is tuned to one network: sensors are told apart only
by the quantity in their name (``P_``, ``F_``, ``L_``, ``S_``) or a mapping given by the caller. The default
settings were chosen on BATADAL's normal year alone, by cross-validation with synthetic anomalies
(``bench/bench_batadal.py --select``; docs/models.md).

A fitted model is a few numpy arrays and a JSON header, saved as a numpy ``.npz`` archive without pickles
(:func:`dump_detector`, :func:`load_detector`); it carries :data:`MODEL_VERSION`. Fitting uses exact linear
algebra only, so the same data always give the same model.

Example:
    >>> import numpy as np, pandas as pd
    >>> ts = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    >>> rng = np.random.default_rng(0)
    >>> day = np.sin(2 * np.pi * ts.hour / 24)
    >>> normal = pd.DataFrame({"P_J1": 40 + 3 * day + rng.normal(0, 0.2, ts.size),
    ...                        "F_PU1": 80 + 10 * day + rng.normal(0, 1, ts.size)}, index=ts)
    >>> detector = fit_detector(normal)
    >>> suspect = normal.copy()
    >>> suspect.iloc[500:520, 0] -= 5.0
    >>> result = score_detector(detector, suspect)
    >>> int(result["flag"].iloc[508:520].min())
    1
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.control_rules import ControlRule, control_alarm, rules_that_hold
from twin.errors import LifelineError

logger = logging.getLogger(__name__)

MODEL_VERSION: Final = "offline-5"
"""Changes whenever a fitted model's contents or meaning change; :func:`load_detector` refuses other versions."""

_READABLE_VERSIONS: Final = {"offline-2": {"adapt_h": 0.0}, "offline-3": {}, "offline-4": {}, MODEL_VERSION: {}}
"""Saved versions this code reads, with the settings an older one lacked (``offline-2`` had no adaptation; before
``offline-5`` no model carried control rules)."""

METHODS: Final = ("pca", "ridge", "both")
"""The sensor models a detector can use: PCA, virtual sensors (ridge), or the mean of both scores."""

FloatArray = npt.NDArray[np.float64]

MAX_DECIMALS: Final = 6
"""A column whose values need more decimals than this is taken as recorded at full precision (resolution 0)."""

ADAPT_WARMUP_H: Final = 24.0
"""Adaptive standardisation keeps the fitted level until this many hours of the scored data have been seen."""


class OfflineModelError(LifelineError, ValueError):
    """The data cannot be fitted or scored, or a saved model is not one this code can use."""


class SensorKind(Enum):
    """What a column measures, which decides how it is standardised and which features it gets."""

    PRESSURE = "pressure_m"
    FLOW = "flow_l_s"
    LEVEL = "level_m"
    STATUS = "status"
    OTHER = "other"


PREFIX_KINDS: Final[Mapping[str, SensorKind]] = {
    "P_": SensorKind.PRESSURE,
    "F_": SensorKind.FLOW,
    "L_": SensorKind.LEVEL,
    "S_": SensorKind.STATUS,
}
"""Column-name prefixes and the quantity they carry (pressure m, flow L/s, level m, status 0/1)."""


def sensor_kind(column: str, kinds: Mapping[str, SensorKind] | None = None) -> SensorKind:
    """Return the quantity a column measures: from *kinds* if it names the column, else from its prefix.

    Args:
        column: column name, such as ``"P_J280"`` or ``"L_T1"``.
        kinds: explicit column → kind mapping; wins over the prefix.
    """
    if kinds is not None and column in kinds:
        return kinds[column]
    for prefix, kind in PREFIX_KINDS.items():
        if column.upper().startswith(prefix):
            return kind
    return SensorKind.OTHER


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Settings of the offline detector. The defaults were chosen on BATADAL's normal year only (module docstring).

    Attributes:
        method: ``"pca"``, ``"ridge"`` (virtual sensors) or ``"both"`` (mean of the two scores).
        rolling_h: length of the rolling mean of each standardised sensor (PCA features), hours.
        variance_kept: fraction of the normal period's feature variance the principal subspace keeps, 0–1.
        t2_weight: weight of the Hotelling T² term relative to the SPE term, 0 to use SPE alone.
        ridge_alpha: ridge penalty per sample on standardised inputs, dimensionless (0.01 is mild).
        top_k: the virtual-sensor score is the mean squared residual of the *top_k* worst sensors at each step
            (an attack or a leak moves few sensors, which a mean over all would dilute); 0 for all sensors.
        calibration_fraction: share of the normal period, at its end, held out to set the score's scale and the
            threshold, 0–0.5; 0 sets them on the data the model was fitted on.
        threshold_quantile: quantile of the calibration period's smoothed score used as the threshold, 0–1.
        smoothing_h: length of the rolling median applied to the raw score, hours.
        min_alarm_h: shortest time above the threshold that becomes an alarm, hours.
        scale_floor: smallest per-sensor scale, as a fraction of the sensor's overall standard deviation, so a
            sensor that is nearly constant at some hour does not turn noise into huge deviations.
        clip: standardised values and residuals are clipped to ±clip, so one broken sensor cannot dominate.
        adapt_h: adaptive standardisation window, hours; 0 turns it off. When on, each measured (not status)
            sensor's deviation from its hour-of-day profile has its rolling median over the trailing *adapt_h*
            hours of the data being standardised subtracted (the fitted level is kept until a day of data has
            been seen). Used alike when fitting and scoring.
    """

    method: str = "pca"
    rolling_h: float = 6.0
    variance_kept: float = 0.99
    t2_weight: float = 0.0
    ridge_alpha: float = 0.01
    top_k: int = 0
    calibration_fraction: float = 0.25
    threshold_quantile: float = 0.98
    smoothing_h: float = 1.0
    min_alarm_h: float = 2.0
    scale_floor: float = 0.1
    clip: float = 20.0
    adapt_h: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OfflineModelError(f"method {self.method!r}: expected one of {METHODS}")
        if not 0.0 <= self.calibration_fraction <= 0.5:
            raise OfflineModelError(f"calibration_fraction {self.calibration_fraction}: expected 0–0.5")
        if not 0.0 < self.threshold_quantile < 1.0 or not 0.0 < self.variance_kept <= 1.0:
            raise OfflineModelError("threshold_quantile and variance_kept must be in (0, 1)")
        if min(self.rolling_h, self.smoothing_h, self.min_alarm_h) <= 0 or min(self.ridge_alpha, self.top_k) < 0:
            raise OfflineModelError("windows must be positive, ridge_alpha and top_k not negative")
        if self.adapt_h < 0 or (0 < self.adapt_h < ADAPT_WARMUP_H):
            raise OfflineModelError(f"adapt_h {self.adapt_h}: expected 0 (off) or at least {ADAPT_WARMUP_H:g} h")


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """Hour-of-day centre and scale of one sensor, in the sensor's unit."""

    kind: SensorKind
    centre: FloatArray
    """Shape (24,): median per hour of day."""
    scale: FloatArray
    """Shape (24,): robust spread per hour of day, floored; same unit as the sensor."""


@dataclass(frozen=True, slots=True)
class PcaModel:
    """PCA of the standardised features; ``components`` has shape (k, n_features)."""

    feature_names: tuple[str, ...]
    feature_mean: FloatArray
    feature_std: FloatArray
    components: FloatArray
    component_variance: FloatArray


@dataclass(frozen=True, slots=True)
class RidgeModel:
    """Virtual sensors: ``z_hat = ((x - input_mean) / input_std) @ coef + intercept``.

    Inputs ``x`` are every sensor's ``z`` now and one step before, shape (2m,); ``coef`` has shape (2m, m) with
    zeros where a sensor would predict itself; ``residual_scale`` (m,) is each residual's robust spread.
    """

    input_mean: FloatArray
    input_std: FloatArray
    coef: FloatArray
    intercept: FloatArray
    residual_scale: FloatArray


@dataclass(frozen=True, slots=True)
class OfflineDetector:
    """A fitted detector: per-sensor profiles, the sensor models, the score's scale and the alarm threshold.

    Attributes:
        step_h: the normal period's median time step, hours; windows are turned into samples with it.
        spe_median, t2_median, ridge_median: medians of each raw score part on the calibration period.
        calibration_score: the calibration period's raw (unsmoothed) score, kept so that the alarm settings can
            be changed without refitting (:func:`with_alarm`).
        threshold: alarm threshold on the smoothed score, dimensionless.
        resolution: column → the step its readings were fitted at (the normal period rounded to it), in the
            sensor's unit; columns recorded at full precision are absent. Scored readings are rounded to the same
            step, and a scored column recorded more coarsely than this is reported (:func:`coarser_columns`).
        controls: the network model's pump and valve control rules that the normal period obeys
            (:mod:`models.control_rules`); a scored sample is also flagged while a link's control alarm is on.
    """

    config: DetectorConfig
    columns: tuple[str, ...]
    step_h: float
    profiles: Mapping[str, SensorProfile]
    pca: PcaModel | None
    ridge: RidgeModel | None
    spe_median: float
    t2_median: float
    ridge_median: float
    calibration_score: FloatArray
    threshold: float
    resolution: Mapping[str, float] = field(default_factory=dict)
    controls: tuple[ControlRule, ...] = ()
    version: str = field(default=MODEL_VERSION)


def _steps(hours: float, step_h: float) -> int:
    return max(1, round(hours / step_h))


def _hourly_profile(values: pd.Series, kind: SensorKind, scale_floor: float) -> SensorProfile:
    hours = np.asarray(values.index.hour)
    data = values.to_numpy(dtype=np.float64)
    overall_std = float(np.std(data)) if data.size > 1 else 0.0
    floor = max(scale_floor * overall_std, 1e-3)
    centre = np.full(24, float(np.median(data)))
    scale = np.full(24, floor)
    for hour in np.unique(hours):
        group = data[hours == hour]
        median = float(np.median(group))
        centre[hour] = median
        scale[hour] = max(float(np.median(np.abs(group - median))) * 1.4826, floor)
    return SensorProfile(kind=kind, centre=centre, scale=scale)


def trailing_level(deviation: pd.DataFrame, window: int, warmup: int) -> pd.DataFrame:
    """Return each column's rolling median over the trailing *window* rows (this row and those before it).

    Rows before *warmup* rows have been seen get 0 (the fitted level). Nothing after a row is used.
    """
    level = deviation.rolling(window, min_periods=min(warmup, window)).median()
    return level.fillna(0.0)


def _standardise(
    frame: pd.DataFrame, profiles: Mapping[str, SensorProfile], config: DetectorConfig, step_h: float
) -> pd.DataFrame:
    hours = np.asarray(frame.index.hour)
    columns = list(profiles)
    centre = np.array([profiles[c].centre for c in columns]).T[hours]
    scale = np.array([profiles[c].scale for c in columns]).T[hours]
    deviation = pd.DataFrame(frame[columns].to_numpy(dtype=np.float64) - centre, index=frame.index, columns=columns)
    if config.adapt_h > 0:
        measured = [c for c in columns if profiles[c].kind is not SensorKind.STATUS]
        if measured:
            window = _steps(config.adapt_h, step_h)
            level = trailing_level(deviation[measured], window, _steps(ADAPT_WARMUP_H, step_h))
            deviation[measured] = deviation[measured] - level
    z = np.clip(deviation.to_numpy(dtype=np.float64) / scale, -config.clip, config.clip)
    return pd.DataFrame(z, index=frame.index, columns=columns)


def _pca_features(z: pd.DataFrame, profiles: Mapping[str, SensorProfile], window: int) -> pd.DataFrame:
    rolling = z.rolling(window, min_periods=1).mean().add_suffix("_mean")
    changing = [c for c, p in profiles.items() if p.kind is not SensorKind.STATUS]
    step = z[changing].diff().fillna(0.0).add_suffix("_step")
    return pd.concat([z, rolling, step], axis=1).fillna(0.0)


def _ridge_inputs(z: pd.DataFrame) -> FloatArray:
    now = z.to_numpy(dtype=np.float64)
    before = np.vstack([now[:1], now[:-1]])
    return np.hstack([now, before])


def _check_frame(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise OfflineModelError(f"{what}: the index must be timestamps (DatetimeIndex), got {type(frame.index)}")
    if frame.empty:
        raise OfflineModelError(f"{what}: no rows")
    if not frame.index.is_monotonic_increasing:
        raise OfflineModelError(f"{what}: timestamps must be increasing")


def _median_step_h(index: pd.DatetimeIndex) -> float:
    if index.size < 2:
        return 1.0
    seconds = np.diff(index.asi8) / 1e9 if index.tz is None else np.diff(index.tz_convert("UTC").asi8) / 1e9
    step = float(np.median(seconds)) / 3600.0
    return step if step > 0 else 1.0


def _fit_pca(z: pd.DataFrame, profiles: Mapping[str, SensorProfile], config: DetectorConfig, step_h: float) -> PcaModel:
    features = _pca_features(z, profiles, _steps(config.rolling_h, step_h))
    x = features.to_numpy(dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-9] = 1.0
    _, singular, vt = np.linalg.svd((x - mean) / std, full_matrices=False)
    variance = singular**2 / max(x.shape[0] - 1, 1)
    kept = int(np.searchsorted(np.cumsum(variance) / variance.sum(), config.variance_kept) + 1)
    kept = min(kept, vt.shape[0])
    signs = np.sign(vt[:kept, np.argmax(np.abs(vt[:kept]), axis=1)].diagonal())
    return PcaModel(
        feature_names=tuple(str(c) for c in features.columns),
        feature_mean=mean,
        feature_std=std,
        components=vt[:kept] * signs[:, None],
        component_variance=np.maximum(variance[:kept], 1e-12),
    )


def _fit_ridge(z: pd.DataFrame, config: DetectorConfig) -> RidgeModel:
    x = _ridge_inputs(z)
    target = z.to_numpy(dtype=np.float64)
    n, m = target.shape
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-9] = 1.0
    xs = (x - mean) / std
    intercept = target.mean(axis=0)
    gram = xs.T @ xs
    cross = xs.T @ (target - intercept)
    coef = np.zeros((2 * m, m))
    penalty = config.ridge_alpha * n
    for j in range(m):
        keep = np.ones(2 * m, dtype=bool)
        keep[[j, m + j]] = False
        sub = gram[np.ix_(keep, keep)] + penalty * np.eye(int(keep.sum()))
        coef[keep, j] = np.linalg.solve(sub, cross[keep, j])
    ridge = RidgeModel(mean, std, coef, intercept, np.ones(m))
    residual = target - _ridge_predict(ridge, x)
    return dataclasses.replace(ridge, residual_scale=_robust_scale(residual))


def _robust_scale(residual: FloatArray) -> FloatArray:
    median = np.median(residual, axis=0)
    mad = np.median(np.abs(residual - median), axis=0) * 1.4826
    return np.maximum(mad, 1e-3)


def _ridge_predict(ridge: RidgeModel, x: FloatArray) -> FloatArray:
    predicted: FloatArray = ((x - ridge.input_mean) / ridge.input_std) @ ridge.coef + ridge.intercept
    return predicted


@dataclass(frozen=True, slots=True)
class _Core:
    profiles: dict[str, SensorProfile]
    pca: PcaModel | None
    ridge: RidgeModel | None


def _fit_core(
    numeric: pd.DataFrame,
    columns: tuple[str, ...],
    kinds: Mapping[str, SensorKind] | None,
    config: DetectorConfig,
    step_h: float,
) -> _Core:
    profiles = {c: _hourly_profile(numeric[c], sensor_kind(c, kinds), config.scale_floor) for c in columns}
    z = _standardise(numeric[list(columns)], profiles, config, step_h)
    pca = _fit_pca(z, profiles, config, step_h) if config.method in ("pca", "both") else None
    ridge = _fit_ridge(z, config) if config.method in ("ridge", "both") else None
    return _Core(profiles, pca, ridge)


def _residuals(
    core: _Core, numeric: pd.DataFrame, config: DetectorConfig, step_h: float, *, per_sensor_parts: bool = False
) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
    """Raw score parts per sample (``spe`` and ``t2`` from PCA, ``ridge`` the mean squared residual) and, with
    *per_sensor_parts* (else empty), each sensor's part in them (``spe``: the reconstruction-based contribution of
    its features; ``ridge``: its clipped squared residual), each of shape (n, len(core.profiles))."""
    z = _standardise(numeric, core.profiles, config, step_h)
    sensors = list(core.profiles)
    parts: dict[str, FloatArray] = {}
    per_sensor: dict[str, FloatArray] = {}
    if core.pca is not None:
        pca = core.pca
        features = _pca_features(z, core.profiles, _steps(config.rolling_h, step_h))
        x = features[list(pca.feature_names)].to_numpy(dtype=np.float64)
        centred = (x - pca.feature_mean) / pca.feature_std
        projected = centred @ pca.components.T
        residual = centred - projected @ pca.components
        parts["spe"] = np.einsum("ij,ij->i", residual, residual)
        parts["t2"] = np.einsum("ij,ij->i", projected / pca.component_variance, projected)
    if core.pca is not None and per_sensor_parts:
        # Reconstruction-based contribution of each sensor's features J (Alcala and Qin, 2009): r_Jᵀ C̃_JJ⁺ r_J with
        # C̃ = I − PᵀP and r = C̃x; unlike the plain squared residuals, it does not smear a fault onto sensors
        # whose features the residual subspace happens to weigh more.
        owner = np.array([sensors.index(_feature_sensor(name, sensors)) for name in pca.feature_names])
        by_sensor = np.zeros((len(x), len(sensors)))
        group = int(np.bincount(owner).max())
        if len(pca.feature_names) - len(pca.components) > group:
            c_tilde = np.eye(len(pca.feature_names)) - pca.components.T @ pca.components
            for k in range(len(sensors)):
                j = np.flatnonzero(owner == k)
                if j.size:
                    r_j = residual[:, j]
                    by_sensor[:, k] = np.einsum("ij,jk,ik->i", r_j, np.linalg.pinv(c_tilde[np.ix_(j, j)]), r_j)
        else:
            # A residual subspace no wider than one sensor's features: any sensor could explain all of it, so the
            # reconstruction says nothing; each sensor's own squared residuals are the fallback.
            np.add.at(by_sensor.T, owner, (residual**2).T)
        per_sensor["spe"] = np.maximum(by_sensor, 0.0)
    if core.ridge is not None:
        residual = (
            z.to_numpy(dtype=np.float64) - _ridge_predict(core.ridge, _ridge_inputs(z))
        ) / core.ridge.residual_scale
        squared = np.minimum(residual**2, config.clip**2)
        if per_sensor_parts:
            per_sensor["ridge"] = squared
        if 0 < config.top_k < squared.shape[1]:
            squared = np.sort(squared, axis=1)[:, -config.top_k :]
        parts["ridge"] = np.mean(squared, axis=1)
    return parts, per_sensor


def _feature_sensor(feature: str, sensors: list[str]) -> str:
    """The sensor a PCA feature belongs to (``P_J1``, ``P_J1_mean``, ``P_J1_step``)."""
    for suffix in ("_mean", "_step"):
        if feature.endswith(suffix) and feature[: -len(suffix)] in sensors:
            return feature[: -len(suffix)]
    return feature


def _score_parts(core: _Core, numeric: pd.DataFrame, config: DetectorConfig, step_h: float) -> dict[str, FloatArray]:
    """Raw score parts per sample: ``spe`` and ``t2`` (PCA) and ``ridge`` (mean squared residual)."""
    return _residuals(core, numeric, config, step_h)[0]


def _combine(parts: Mapping[str, FloatArray], config: DetectorConfig, medians: Mapping[str, float]) -> FloatArray:
    scores = []
    if "spe" in parts:
        pca = parts["spe"] / medians["spe"] + config.t2_weight * parts["t2"] / medians["t2"]
        scores.append(pca / (1.0 + config.t2_weight))
    if "ridge" in parts:
        scores.append(parts["ridge"] / medians["ridge"])
    combined: FloatArray = np.mean(scores, axis=0)
    return combined


def _medians(parts: Mapping[str, FloatArray]) -> dict[str, float]:
    medians = {"spe": 1.0, "t2": 1.0, "ridge": 1.0}
    medians.update({name: max(float(np.median(values)), 1e-12) for name, values in parts.items()})
    return medians


def smooth(raw: FloatArray, window: int) -> FloatArray:
    """Return the rolling median of *raw* over *window* samples (the first samples use what there is)."""
    smoothed: FloatArray = pd.Series(raw).rolling(window, min_periods=1).median().to_numpy(dtype=np.float64)
    return smoothed


def persistent(above: npt.NDArray[np.bool_], min_run: int) -> npt.NDArray[np.int64]:
    """Return 1 on every run of True in *above* at least *min_run* samples long, from the run's first sample."""
    flags = np.zeros(above.size, dtype=np.int64)
    padded = np.concatenate(([False], above, [False])).astype(np.int8)
    edges = np.diff(padded)
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if stop - start >= min_run:
            flags[start:stop] = 1
    return flags


def _threshold(calibration_score: FloatArray, config: DetectorConfig, step_h: float) -> float:
    smoothed = smooth(calibration_score, _steps(config.smoothing_h, step_h))
    return float(np.quantile(smoothed, config.threshold_quantile))


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    return numeric.interpolate(limit_direction="both")


def data_resolution(frame: pd.DataFrame) -> dict[str, float]:
    """Return the step each column's readings were recorded at: 10⁻ᵏ for the fewest decimals k that hold them all.

    An export rounded to two decimals gives 0.01, whole numbers 1.0. A column whose values need more than
    :data:`MAX_DECIMALS` decimals, or that holds no number, is recorded at full precision and gets 0.0.

    Example:
        >>> data_resolution(pd.DataFrame({"P_J1": [2.98, 2.99, 3.0], "S_PU1": [0, 1, 1], "F_1": [0.1234567, 1.0, 2.0]}))
        {'P_J1': 0.01, 'S_PU1': 1.0, 'F_1': 0.0}
    """
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    steps: dict[str, float] = {}
    for column in numeric.columns:
        values = numeric[column].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        steps[str(column)] = 0.0
        if values.size == 0:
            continue
        for decimals in range(MAX_DECIMALS + 1):
            scaled = values * 10.0**decimals
            tolerance = 1e-6 + 8 * np.finfo(np.float64).eps * float(np.max(np.abs(scaled)))
            if np.max(np.abs(scaled - np.round(scaled))) <= tolerance:
                steps[str(column)] = 10.0**-decimals
                break
    return steps


def _quantised(numeric: pd.DataFrame, resolution: Mapping[str, float]) -> pd.DataFrame:
    """Return *numeric* with every column named in *resolution* rounded to its step (others unchanged)."""
    rounded = [c for c in numeric.columns if resolution.get(str(c), 0.0) > 0]
    if not rounded:
        return numeric
    out = numeric.copy()
    step = np.array([resolution[str(c)] for c in rounded])
    out[rounded] = np.round(numeric[rounded].to_numpy(dtype=np.float64) / step) * step
    return out


def coarser_columns(detector: OfflineDetector, frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Return the fitted columns *frame* records more coarsely than *detector* was fitted at: column → (scored, fitted).

    A model fitted on full-precision readings reads the rounding of a coarser export as noise it never saw (on
    BATADAL, dataset04's two decimals against dataset03's nine flagged a fifth of its normal hours). Fit again with
    ``fit_detector(normal, resolution=data_resolution(frame))`` — ``lifeline detect --fit`` does so itself.
    """
    scored = data_resolution(frame[[c for c in detector.columns if c in frame.columns]])
    return {
        c: (step, detector.resolution.get(c, 0.0))
        for c, step in scored.items()
        if step > 0 and step > detector.resolution.get(c, 0.0) * (1 + 1e-9)
    }


def fit_detector(
    normal: pd.DataFrame,
    *,
    config: DetectorConfig | None = None,
    kinds: Mapping[str, SensorKind] | None = None,
    resolution: Mapping[str, float] | None = None,
    controls: Sequence[ControlRule] = (),
) -> OfflineDetector:
    """Learn what normal looks like from a period without anomalies.

    Args:
        normal: sensor readings, DataFrame (index = increasing timestamps, columns = sensor names); numeric values
            in the sensor's unit (pressure m, flow L/s, level m, status 0/1). Columns that are constant or all
            missing are ignored. At least a couple of weeks are needed (a quarter of them is held out to set the
            threshold); a year covers seasons.
        config: detector settings; defaults to :class:`DetectorConfig`.
        kinds: column → :class:`SensorKind`, for columns whose names do not start with ``P_``, ``F_``, ``L_``,
            ``S_``.
        resolution: column → the step the data to be scored are recorded at (:func:`data_resolution` of them),
            in the sensor's unit. Each column of the normal period is rounded to the coarser of this and its own
            step before fitting, so that the rounding of the scored export is part of what normal looks like.
            ``None``: the normal period's own steps.
        controls: the network's control rules (:func:`models.control_rules.rules_from_inp`); those whose columns
            are present and that the normal period obeys are kept (:func:`models.control_rules.rules_that_hold`).

    Returns:
        The fitted detector.

    Raises:
        OfflineModelError: the index is not timestamps, the table is empty or too short, or no column varies.
    """
    config = config or DetectorConfig()
    _check_frame(normal, "normal period")
    numeric = _prepared(normal)
    columns = tuple(str(c) for c in numeric.columns if numeric[c].notna().any() and numeric[c].nunique() > 1)
    if not columns:
        raise OfflineModelError("normal period: no column varies, nothing to learn")
    steps = data_resolution(normal[list(columns)])
    for column, step in (resolution or {}).items():
        if column in steps and step > steps[column]:
            steps[column] = float(step)
    fitted_steps = {c: step for c, step in steps.items() if step > 0}
    numeric = _quantised(numeric[list(columns)], fitted_steps)
    columns = tuple(c for c in columns if numeric[c].nunique() > 1)
    if not columns:
        raise OfflineModelError("normal period: no column varies at the resolution asked for, nothing to learn")
    numeric = numeric[list(columns)]
    fitted_steps = {c: step for c, step in fitted_steps.items() if c in columns}
    step_h = _median_step_h(normal.index)
    held_out = round(len(numeric) * config.calibration_fraction)
    if config.calibration_fraction > 0 and (held_out < 24 or len(numeric) - held_out < 48):
        raise OfflineModelError(
            f"normal period: {len(numeric)} rows are too few to hold {config.calibration_fraction:.0%} out "
            "for calibration (needs at least 24 held out and 48 left)"
        )
    if held_out:
        head, tail = numeric.iloc[:-held_out], numeric.iloc[-held_out:]
        varying = tuple(c for c in columns if head[c].nunique() > 1)
        split_core = _fit_core(head, varying, kinds, config, step_h)
        parts = _score_parts(split_core, tail[list(varying)], config, step_h)
    else:
        parts = {}
    core = _fit_core(numeric, columns, kinds, config, step_h)
    if not held_out:
        parts = _score_parts(core, numeric, config, step_h)
    medians = _medians(parts)
    calibration_score = _combine(parts, config, medians)
    threshold = _threshold(calibration_score, config, step_h)
    kept_controls, _dropped = rules_that_hold(list(controls), normal) if controls else ([], [])
    logger.info(
        "offline detector fitted: %s sensors, method %s, threshold %.3f, %d control rules",
        len(columns),
        config.method,
        threshold,
        len(kept_controls),
    )
    return OfflineDetector(
        config=config,
        columns=columns,
        step_h=step_h,
        profiles=core.profiles,
        pca=core.pca,
        ridge=core.ridge,
        spe_median=medians["spe"],
        t2_median=medians["t2"],
        ridge_median=medians["ridge"],
        calibration_score=calibration_score,
        threshold=threshold,
        resolution=fitted_steps,
        controls=tuple(kept_controls),
    )


def with_alarm(
    detector: OfflineDetector, *, threshold_quantile: float, smoothing_h: float, min_alarm_h: float
) -> OfflineDetector:
    """Return *detector* with other alarm settings and the threshold they give on its calibration score.

    The sensor models are unchanged, so this costs no refit (model selection tries many alarm settings).
    """
    config = dataclasses.replace(
        detector.config, threshold_quantile=threshold_quantile, smoothing_h=smoothing_h, min_alarm_h=min_alarm_h
    )
    threshold = _threshold(detector.calibration_score, config, detector.step_h)
    return dataclasses.replace(detector, config=config, threshold=threshold)


def _scored_numeric(detector: OfflineDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """The fitted sensors of *frame*, rounded to the fitted steps, gaps filled with each sensor's mean level."""
    _check_frame(frame, "scored period")
    missing = [c for c in detector.columns if c not in frame.columns]
    if missing:
        raise OfflineModelError(
            f"scored period: missing sensors {missing[:10]} (the columns fitted on, named as after any sensors file)"
        )
    numeric = _quantised(_prepared(frame[list(detector.columns)]), detector.resolution)
    return numeric.fillna(pd.Series({c: float(p.centre.mean()) for c, p in detector.profiles.items()}))


def raw_score(detector: OfflineDetector, frame: pd.DataFrame) -> FloatArray:
    """Return the unsmoothed score of every row of *frame*, shape (n,), dimensionless (about 1 when normal).

    Raises:
        OfflineModelError: the index is not timestamps, the table is empty, or a fitted sensor is missing.
    """
    numeric = _scored_numeric(detector, frame)
    core = _Core(dict(detector.profiles), detector.pca, detector.ridge)
    parts = _score_parts(core, numeric, detector.config, detector.step_h)
    medians = {"spe": detector.spe_median, "t2": detector.t2_median, "ridge": detector.ridge_median}
    return _combine(parts, detector.config, medians)


def sensor_shares(detector: OfflineDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """Each fitted sensor's share of every row's raw score: which sensors make an alarm.

    PCA: each sensor's reconstruction-based contribution to the squared prediction error (how much of it goes if
    that sensor's features are corrected), as a share of all sensors'; virtual sensors: its share of the squared
    residuals; with both, the two shares averaged. Rows sum to 1 (0 where the score is 0).

    Returns:
        DataFrame (index = *frame*'s, columns = the fitted sensors), shares 0–1.

    Raises:
        OfflineModelError: as :func:`raw_score`.
    """
    numeric = _scored_numeric(detector, frame)
    core = _Core(dict(detector.profiles), detector.pca, detector.ridge)
    _parts, per_sensor = _residuals(core, numeric, detector.config, detector.step_h, per_sensor_parts=True)
    shares = []
    for squared in per_sensor.values():
        total = squared.sum(axis=1, keepdims=True)
        shares.append(np.divide(squared, total, out=np.zeros_like(squared), where=total > 0))
    mean_share: FloatArray = np.mean(shares, axis=0)
    return pd.DataFrame(mean_share, index=frame.index, columns=list(detector.profiles))


def flags_from_raw(detector: OfflineDetector, raw: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Smooth a raw score and turn it into alarms with *detector*'s settings; return (score, flag), each (n,)."""
    config = detector.config
    score = smooth(raw, _steps(config.smoothing_h, detector.step_h))
    flags = persistent(score > detector.threshold, _steps(config.min_alarm_h, detector.step_h))
    return score, flags


def score_detector(detector: OfflineDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """Score a period against the fitted normal behaviour.

    Args:
        detector: a fitted detector.
        frame: sensor readings, DataFrame (index = increasing timestamps, columns = at least the fitted sensors,
            same units as when fitted). Extra columns are ignored; gaps are interpolated.

    Returns:
        DataFrame (index = *frame*'s timestamps) with ``flag`` (int 0/1: 1 where the smoothed score stays above
        the threshold for at least ``min_alarm_h``, or a control alarm is on), ``score`` (float, dimensionless:
        the smoothed score, about 1 when normal) and ``control`` (int 0/1: a link's control alarm is on,
        :mod:`models.control_rules`; 0 throughout without control rules).

    Raises:
        OfflineModelError: the index is not timestamps, the table is empty, or a fitted sensor is missing.
    """
    score, flags = flags_from_raw(detector, raw_score(detector, frame))
    control = control_alarm(detector.controls, frame) if detector.controls else np.zeros(len(frame), dtype=bool)
    return pd.DataFrame(
        {"flag": flags | control.astype(np.int64), "score": score, "control": control.astype(np.int64)},
        index=frame.index,
    )


# --- saving and loading: numpy arrays and a JSON header in an .npz archive, never pickles -------------------------

_PCA_ARRAYS = ("feature_mean", "feature_std", "components", "component_variance")
_RIDGE_ARRAYS = ("input_mean", "input_std", "coef", "intercept", "residual_scale")


def dump_detector(detector: OfflineDetector) -> bytes:
    """Serialise a fitted detector as a numpy ``.npz`` archive (arrays plus a JSON header, no pickles)."""
    header: dict[str, Any] = {
        "version": detector.version,
        "config": dataclasses.asdict(detector.config),
        "columns": list(detector.columns),
        "kinds": [detector.profiles[c].kind.value for c in detector.columns],
        "step_h": detector.step_h,
        "spe_median": detector.spe_median,
        "t2_median": detector.t2_median,
        "ridge_median": detector.ridge_median,
        "threshold": detector.threshold,
        "pca_features": list(detector.pca.feature_names) if detector.pca else None,
        "resolution": dict(detector.resolution),
        "controls": [rule.to_json() for rule in detector.controls],
    }
    arrays: dict[str, FloatArray] = {
        "profile_centre": np.array([detector.profiles[c].centre for c in detector.columns]),
        "profile_scale": np.array([detector.profiles[c].scale for c in detector.columns]),
        "calibration_score": detector.calibration_score,
    }
    if detector.pca is not None:
        arrays |= {f"pca_{name}": getattr(detector.pca, name) for name in _PCA_ARRAYS}
    if detector.ridge is not None:
        arrays |= {f"ridge_{name}": getattr(detector.ridge, name) for name in _RIDGE_ARRAYS}
    buffer = io.BytesIO()
    meta = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(buffer, header=meta, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_detector(data: bytes) -> OfflineDetector:
    """Rebuild a detector from :func:`dump_detector` bytes; nothing in them is executed.

    Raises:
        OfflineModelError: the bytes are not a saved detector (a pickle, another file, a damaged archive), or one
            saved by another :data:`MODEL_VERSION`.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise OfflineModelError("not a saved offline detector (expected a numpy .npz archive with a header)") from exc
    if not isinstance(header, dict) or header.get("version") not in _READABLE_VERSIONS:
        version = header.get("version") if isinstance(header, dict) else None
        readable = ", ".join(repr(v) for v in _READABLE_VERSIONS)
        raise OfflineModelError(f"saved model version {version!r}, this code reads {readable}")
    try:
        config = DetectorConfig(**(_READABLE_VERSIONS[header["version"]] | header["config"]))
        columns = tuple(str(c) for c in header["columns"])
        profiles = {
            c: SensorProfile(
                SensorKind(kind),
                arrays["profile_centre"][i].astype(np.float64),
                arrays["profile_scale"][i].astype(np.float64),
            )
            for i, (c, kind) in enumerate(zip(columns, header["kinds"], strict=True))
        }
        pca = (
            PcaModel(tuple(header["pca_features"]), *(arrays[f"pca_{n}"].astype(np.float64) for n in _PCA_ARRAYS))
            if header["pca_features"] is not None
            else None
        )
        ridge = (
            RidgeModel(*(arrays[f"ridge_{n}"].astype(np.float64) for n in _RIDGE_ARRAYS))
            if "ridge_coef" in arrays
            else None
        )
        return OfflineDetector(
            config=config,
            columns=columns,
            step_h=float(header["step_h"]),
            profiles=profiles,
            pca=pca,
            ridge=ridge,
            spe_median=float(header["spe_median"]),
            t2_median=float(header["t2_median"]),
            ridge_median=float(header["ridge_median"]),
            calibration_score=arrays["calibration_score"].astype(np.float64),
            threshold=float(header["threshold"]),
            resolution={str(c): float(v) for c, v in header.get("resolution", {}).items()},
            controls=tuple(ControlRule.from_json(rule) for rule in header.get("controls", [])),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise OfflineModelError(f"saved offline detector is incomplete or damaged: {exc}") from exc
