"""An offline anomaly detector for wide sensor tables: learn a normal period, then flag what does not fit it.

The input is a wide table (index = timestamps, columns = sensors) such as an hourly SCADA export from a water
network. The detector learns, from a period known to be normal:

1. a robust hour-of-day profile per sensor (median and scaled MAD per hour, the scale floored), so the daily
   demand cycle is not an anomaly; a 0/1 status column's profile is its usual state per hour, and the floor turns
   an unusual switch into a large deviation;
2. standardised features: the deviation from the profile, its rolling mean over a short window, and for measured
   quantities (not statuses, whose change is already an event) the change per step — a tank that fills while its
   pumps are off is the kind of physical inconsistency a single-sensor threshold misses;
3. a PCA model of those features; the anomaly score is the squared prediction error (SPE, the squared residual
   outside the principal subspace) plus a weighted Hotelling T² inside it, each divided by its median on the
   normal period, so neither dominates by scale;
4. an alarm threshold: a high quantile of the normal period's smoothed score; an alarm needs the smoothed score to
   stay above it for a few steps, because an attack or a fault lasts hours while noise does not.

Nothing is tuned to one network: sensors are told apart only by the quantity in their name (or a mapping given by
the caller). The model is a few small numpy arrays; it pickles, and carries :data:`MODEL_VERSION`. The
SVD is exact (LAPACK), so there is no random state: the same data always give the same model.

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
    >>> int(result["flag"].iloc[505:520].min())
    1
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from twin.errors import LifelineError

logger = logging.getLogger(__name__)

MODEL_VERSION: Final = "offline-pca-1"
"""Changes whenever a fitted model's contents or meaning change; :func:`load_detector` refuses other versions."""

FloatArray = npt.NDArray[np.float64]


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
    """Settings of the offline detector. Windows count samples (steps of the table), so hours for hourly data.

    Attributes:
        rolling_window: length of the rolling mean of each standardised sensor, samples.
        variance_kept: fraction of the normal period's feature variance the principal subspace keeps, 0–1.
        threshold_quantile: quantile of the normal period's smoothed score used as the alarm threshold, 0–1.
        smoothing_window: length of the rolling median applied to the raw score, samples.
        min_alarm: shortest run of above-threshold samples that becomes an alarm, samples.
        scale_floor: smallest per-sensor scale, as a fraction of the sensor's overall standard deviation, so a
            sensor that is nearly constant at some hour does not turn noise into huge deviations.
        clip: standardised values are clipped to ±clip, so one broken sensor cannot dominate the score.
        t2_weight: weight of the Hotelling T² term relative to the SPE term, 0 to use SPE alone.
    """

    rolling_window: int = 6
    variance_kept: float = 0.95
    threshold_quantile: float = 0.99
    smoothing_window: int = 6
    min_alarm: int = 4
    scale_floor: float = 0.1
    clip: float = 20.0
    t2_weight: float = 0.3


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """Hour-of-day centre and scale of one sensor, in the sensor's unit."""

    kind: SensorKind
    centre: FloatArray
    """Shape (24,): median per hour of day."""
    scale: FloatArray
    """Shape (24,): robust spread per hour of day, floored; same unit as the sensor."""


@dataclass(frozen=True, slots=True)
class OfflineDetector:
    """A fitted detector: per-sensor profiles, feature scaling, the PCA model and the alarm threshold.

    Arrays are in feature order (:attr:`feature_names`); ``components`` has shape (k, n_features).
    """

    config: DetectorConfig
    columns: tuple[str, ...]
    profiles: Mapping[str, SensorProfile]
    feature_names: tuple[str, ...]
    feature_mean: FloatArray
    feature_std: FloatArray
    components: FloatArray
    component_variance: FloatArray
    spe_median: float
    t2_median: float
    threshold: float
    version: str = field(default=MODEL_VERSION)


def _hourly_profile(values: pd.Series, kind: SensorKind, config: DetectorConfig) -> SensorProfile:
    hours = values.index.hour
    overall_std = float(values.std(ddof=0)) if values.size > 1 else 0.0
    floor = max(config.scale_floor * overall_std, 1e-3)
    centre = np.zeros(24)
    scale = np.full(24, floor)
    grouped = values.groupby(hours)
    median = grouped.median()
    for hour, group in grouped:
        mad = float(np.median(np.abs(group.to_numpy() - median[hour]))) * 1.4826
        centre[int(hour)] = float(median[hour])
        scale[int(hour)] = max(mad, floor)
    missing = np.setdiff1d(np.arange(24), np.unique(np.asarray(hours)))
    if missing.size:
        centre[missing] = float(values.median())
    return SensorProfile(kind=kind, centre=centre, scale=scale)


def _standardise(frame: pd.DataFrame, detector_profiles: Mapping[str, SensorProfile], clip: float) -> pd.DataFrame:
    hours = np.asarray(frame.index.hour)
    out = {}
    for column, profile in detector_profiles.items():
        z = (frame[column].to_numpy(dtype=np.float64) - profile.centre[hours]) / profile.scale[hours]
        out[column] = np.clip(z, -clip, clip)
    return pd.DataFrame(out, index=frame.index)


def _features(z: pd.DataFrame, profiles: Mapping[str, SensorProfile], window: int) -> pd.DataFrame:
    rolling = z.rolling(window, min_periods=1).mean().add_suffix("_mean")
    changing = [c for c, p in profiles.items() if p.kind is not SensorKind.STATUS]
    step = z[changing].diff().fillna(0.0).add_suffix("_step")
    return pd.concat([z, rolling, step], axis=1).fillna(0.0)


def _check_frame(frame: pd.DataFrame, what: str) -> None:
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise OfflineModelError(f"{what}: the index must be timestamps (DatetimeIndex), got {type(frame.index)}")
    if frame.empty:
        raise OfflineModelError(f"{what}: no rows")
    if not frame.index.is_monotonic_increasing:
        raise OfflineModelError(f"{what}: timestamps must be increasing")


def _raw_scores(
    x: FloatArray, mean: FloatArray, std: FloatArray, components: FloatArray, variance: FloatArray
) -> tuple[FloatArray, FloatArray]:
    centred = (x - mean) / std
    projected = centred @ components.T
    residual = centred - projected @ components
    spe = np.einsum("ij,ij->i", residual, residual)
    t2 = np.einsum("ij,ij->i", projected / variance, projected)
    return spe, t2


def _smooth(score: pd.Series, window: int) -> pd.Series:
    return score.rolling(window, min_periods=1).median()


def _persistent(above: npt.NDArray[np.bool_], min_run: int) -> npt.NDArray[np.int64]:
    flags = np.zeros(above.size, dtype=np.int64)
    start: int | None = None
    for i, on in enumerate(np.append(above, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start >= min_run:
                flags[start:i] = 1
            start = None
    return flags


def fit_detector(
    normal: pd.DataFrame,
    *,
    config: DetectorConfig | None = None,
    kinds: Mapping[str, SensorKind] | None = None,
) -> OfflineDetector:
    """Learn what normal looks like from a period without anomalies.

    Args:
        normal: sensor readings, DataFrame (index = increasing timestamps, columns = sensor names); numeric values
            in the sensor's unit (pressure m, flow L/s, level m, status 0/1). Columns that are constant or all
            missing are ignored. At least a few days of data are needed; a year covers seasons.
        config: detector settings; defaults to :class:`DetectorConfig`.
        kinds: column → :class:`SensorKind`, for columns whose names do not start with ``P_``, ``F_``, ``L_``,
            ``S_``.

    Returns:
        The fitted detector.

    Raises:
        OfflineModelError: the index is not timestamps, the table is empty, or no column varies.
    """
    config = config or DetectorConfig()
    _check_frame(normal, "normal period")
    numeric = normal.apply(pd.to_numeric, errors="coerce")
    numeric = numeric.interpolate(limit_direction="both")
    columns = tuple(str(c) for c in numeric.columns if numeric[c].notna().any() and numeric[c].nunique() > 1)
    if not columns:
        raise OfflineModelError("normal period: no column varies, nothing to learn")
    profiles = {c: _hourly_profile(numeric[c], sensor_kind(c, kinds), config) for c in columns}
    features = _features(_standardise(numeric[list(columns)], profiles, config.clip), profiles, config.rolling_window)
    x = features.to_numpy(dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-9] = 1.0
    centred = (x - mean) / std
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(x.shape[0] - 1, 1)
    kept = int(np.searchsorted(np.cumsum(variance) / variance.sum(), config.variance_kept) + 1)
    kept = min(kept, vt.shape[0])
    signs = np.sign(vt[:kept, np.argmax(np.abs(vt[:kept]), axis=1)].diagonal())
    components = vt[:kept] * signs[:, None]
    component_variance = np.maximum(variance[:kept], 1e-12)
    spe, t2 = _raw_scores(x, mean, std, components, component_variance)
    spe_median = max(float(np.median(spe)), 1e-12)
    t2_median = max(float(np.median(t2)), 1e-12)
    score = pd.Series(spe / spe_median + config.t2_weight * t2 / t2_median, index=normal.index)
    threshold = float(_smooth(score, config.smoothing_window).quantile(config.threshold_quantile))
    logger.info("offline detector fitted: %s sensors, %s features, %s components", len(columns), x.shape[1], kept)
    return OfflineDetector(
        config=config,
        columns=columns,
        profiles=profiles,
        feature_names=tuple(str(c) for c in features.columns),
        feature_mean=mean,
        feature_std=std,
        components=components,
        component_variance=component_variance,
        spe_median=spe_median,
        t2_median=t2_median,
        threshold=threshold,
    )


def score_detector(detector: OfflineDetector, frame: pd.DataFrame) -> pd.DataFrame:
    """Score a period against the fitted normal behaviour.

    Args:
        detector: a fitted detector.
        frame: sensor readings, DataFrame (index = increasing timestamps, columns = at least the fitted sensors,
            same units as when fitted). Extra columns are ignored; gaps are interpolated.

    Returns:
        DataFrame (index = *frame*'s timestamps) with ``score`` (float, dimensionless: smoothed SPE and T², each
        relative to its normal-period median, so about 2 is typical) and ``flag`` (int 0/1: 1 where the smoothed
        score stays above the threshold for at least ``min_alarm`` samples).

    Raises:
        OfflineModelError: the index is not timestamps, the table is empty, or a fitted sensor is missing.
    """
    _check_frame(frame, "scored period")
    missing = [c for c in detector.columns if c not in frame.columns]
    if missing:
        raise OfflineModelError(f"scored period: missing sensors {missing[:10]}")
    config = detector.config
    numeric = frame[list(detector.columns)].apply(pd.to_numeric, errors="coerce").interpolate(limit_direction="both")
    numeric = numeric.fillna(pd.Series({c: float(p.centre.mean()) for c, p in detector.profiles.items()}))
    features = _features(
        _standardise(numeric, detector.profiles, config.clip), detector.profiles, config.rolling_window
    )
    x = features[list(detector.feature_names)].to_numpy(dtype=np.float64)
    spe, t2 = _raw_scores(
        x, detector.feature_mean, detector.feature_std, detector.components, detector.component_variance
    )
    raw = spe / detector.spe_median + config.t2_weight * t2 / detector.t2_median
    score = _smooth(pd.Series(raw, index=frame.index), config.smoothing_window)
    flags = _persistent(score.to_numpy() > detector.threshold, config.min_alarm)
    return pd.DataFrame({"flag": flags, "score": score.to_numpy()}, index=frame.index)


def dump_detector(detector: OfflineDetector) -> bytes:
    """Serialise a fitted detector (pickle); write the bytes wherever the caller keeps models."""
    return pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)


def load_detector(data: bytes) -> OfflineDetector:
    """Rebuild a detector from :func:`dump_detector` bytes. Unpickle only bytes you trust.

    Raises:
        OfflineModelError: the bytes are not a detector, or one saved by another :data:`MODEL_VERSION`.
    """
    try:
        detector = pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise OfflineModelError("not a saved offline detector") from exc
    if not isinstance(detector, OfflineDetector):
        raise OfflineModelError(f"not a saved offline detector: {type(detector).__name__}")
    if detector.version != MODEL_VERSION:
        raise OfflineModelError(f"saved model version {detector.version!r}, this code reads {MODEL_VERSION!r}")
    return detector
