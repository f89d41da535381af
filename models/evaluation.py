"""Detection quality: precision, recall, F1 and the BATADAL score of a 0/1 alarm series against the truth.

The BATADAL score follows the competition rules in Taormina, R. et al. (2018), "The Battle of the Attack Detection
Algorithms: Disclosing Cyber Attacks on Water Distribution Networks", J. Water Resour. Plann. Manage. 144(8),
04018048: S = γ·S_TTD + (1 − γ)·S_CM with γ = 0.5. Series are compared position by position (same length and
order, one entry per time step); an attack is a maximal run of 1s in the truth.

Example:
    >>> import pandas as pd
    >>> truth = pd.Series([0, 1, 1, 1, 1, 0])
    >>> alarm = pd.Series([0, 0, 1, 1, 1, 0])
    >>> round(batadal_score(truth, alarm).s_ttd, 3)
    0.75
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.offline import DetectorConfig, fit_detector, flags_from_raw, raw_score, with_alarm
from twin.errors import LifelineError

BATADAL_GAMMA = 0.5
"""Weight of S_TTD against S_CM in the BATADAL score (Taormina et al., 2018)."""

BoolArray = npt.NDArray[np.bool_]


class EvaluationError(LifelineError, ValueError):
    """Truth and prediction cannot be compared (different lengths, or values other than 0/1)."""


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts of time steps: true/false positives and negatives."""

    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True, slots=True)
class BatadalScore:
    """The BATADAL score and its parts, all dimensionless in 0–1 (higher is better)."""

    s: float
    s_ttd: float
    s_cm: float
    tpr: float
    tnr: float
    n_attacks: int


def _as_bool(values: pd.Series | npt.ArrayLike, name: str) -> BoolArray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise EvaluationError(f"{name}: expected one value per time step, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise EvaluationError(f"{name}: values must be 0/1 (or booleans)")
    return array.astype(bool)


def _pair(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> tuple[BoolArray, BoolArray]:
    t = _as_bool(truth, "truth")
    p = _as_bool(predicted, "predicted")
    if t.shape != p.shape:
        raise EvaluationError(f"truth has {t.size} steps, predicted {p.size}")
    return t, p


def confusion(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> Confusion:
    """Count true/false positives and negatives.

    Args:
        truth: shape (n,), 1 where an anomaly is under way.
        predicted: shape (n,), 1 where the detector raises an alarm.

    Raises:
        EvaluationError: lengths differ or a value is not 0/1.
    """
    t, p = _pair(truth, predicted)
    return Confusion(tp=int((t & p).sum()), fp=int((~t & p).sum()), tn=int((~t & ~p).sum()), fn=int((t & ~p).sum()))


def precision(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> float:
    """Return TP / (TP + FP): the share of alarm steps that are true; 0 when nothing is flagged."""
    c = confusion(truth, predicted)
    return c.tp / (c.tp + c.fp) if c.tp + c.fp else 0.0


def recall(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> float:
    """Return TP / (TP + FN), the true positive rate: the share of anomalous steps flagged; 0 when none exist."""
    c = confusion(truth, predicted)
    return c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0


def f1_score(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> float:
    """Return the harmonic mean of precision and recall; 0 when both are 0."""
    p = precision(truth, predicted)
    r = recall(truth, predicted)
    return 2 * p * r / (p + r) if p + r else 0.0


def attack_spans(truth: pd.Series | npt.ArrayLike) -> list[tuple[int, int]]:
    """Return each attack as (start, stop) positions, stop exclusive: the maximal runs of 1s in *truth*."""
    t = _as_bool(truth, "truth").astype(np.int8)
    edges = np.diff(np.concatenate(([0], t, [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def s_ttd(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> float:
    """Return the time-to-detection score S_TTD = 1 − (1/n_attacks)·Σ TTD_i/ΔT_i (Taormina et al., 2018).

    For attack i, ΔT_i is its duration in steps and TTD_i the steps from its start to the first alarm inside it
    (ΔT_i when no alarm falls inside it). A detection at the first step of every attack gives 1; missing every
    attack gives 0. Alarms before an attack starts do not count as detecting it.

    Args:
        truth: shape (n,), 1 during attacks.
        predicted: shape (n,), 1 where the detector raises an alarm.

    Raises:
        EvaluationError: lengths differ, a value is not 0/1, or *truth* holds no attack.
    """
    t, p = _pair(truth, predicted)
    spans = attack_spans(t)
    if not spans:
        raise EvaluationError("truth holds no attack: S_TTD is undefined")
    ratios = []
    for start, stop in spans:
        hits = np.flatnonzero(p[start:stop])
        duration = stop - start
        ttd = int(hits[0]) if hits.size else duration
        ratios.append(ttd / duration)
    return 1.0 - float(np.mean(ratios))


def s_cm(truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike) -> float:
    """Return the classification score S_CM = (TPR + TNR)/2 (Taormina et al., 2018).

    TPR = TP/(TP + FN) and TNR = TN/(TN + FP), over time steps; a rate whose denominator is 0 counts as 0.

    Raises:
        EvaluationError: lengths differ or a value is not 0/1.
    """
    c = confusion(truth, predicted)
    tpr = c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0
    tnr = c.tn / (c.tn + c.fp) if c.tn + c.fp else 0.0
    return (tpr + tnr) / 2


def batadal_score(
    truth: pd.Series | npt.ArrayLike, predicted: pd.Series | npt.ArrayLike, *, gamma: float = BATADAL_GAMMA
) -> BatadalScore:
    """Return the BATADAL score S = γ·S_TTD + (1 − γ)·S_CM and its parts (Taormina et al., 2018, γ = 0.5).

    Args:
        truth: shape (n,), 1 during attacks, 0 otherwise, one entry per time step.
        predicted: shape (n,), the detector's 0/1 alarm per time step.
        gamma: weight of S_TTD, 0–1.

    Raises:
        EvaluationError: lengths differ, a value is not 0/1, or *truth* holds no attack.
    """
    c = confusion(truth, predicted)
    ttd = s_ttd(truth, predicted)
    cm = s_cm(truth, predicted)
    return BatadalScore(
        s=gamma * ttd + (1 - gamma) * cm,
        s_ttd=ttd,
        s_cm=cm,
        tpr=c.tp / (c.tp + c.fn) if c.tp + c.fn else 0.0,
        tnr=c.tn / (c.tn + c.fp) if c.tn + c.fp else 0.0,
        n_attacks=len(attack_spans(truth)),
    )


# --- synthetic anomalies and model selection on a normal period alone ----------------------------------------------

ANOMALY_KINDS = ("offset", "replay", "switch", "drift", "freeze", "scale")
"""What :func:`inject_anomalies` can do to readings (see there)."""


@dataclass(frozen=True, slots=True)
class InjectedAnomaly:
    """One synthetic anomaly: its kind, the rows it spans (start, stop exclusive) and the columns it changed."""

    kind: str
    start: int
    stop: int
    columns: tuple[str, ...]


def _column_prefix(column: str) -> str:
    return column[:2].upper()


def inject_anomalies(
    frame: pd.DataFrame,
    *,
    rng: np.random.Generator,
    count: int,
    duration_h: tuple[float, float] = (12.0, 72.0),
    gap_h: float = 48.0,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
) -> tuple[pd.DataFrame, npt.NDArray[np.int64], list[InjectedAnomaly]]:
    """Return a copy of a normal period with synthetic anomalies, the 0/1 truth per row, and what was done.

    The anomalies imitate, on the readings alone, what the BATADAL attacks and real faults do (Taormina et al.,
    2018): ``offset`` adds 2–4 normal standard deviations to one or two measured sensors; ``replay`` replaces two
    to four sensors of one quantity with their own readings from a week earlier (a concealment: each sensor still
    looks normal, their relation to the rest does not); ``switch`` forces a status column to the state it is
    least in, with its flow (the ``F_`` column with the same suffix) set to 0 or to its usual running value;
    ``drift`` ramps one level or pressure sensor away by 3 standard deviations over the anomaly; ``freeze`` holds
    two sensors at their first value; ``scale`` multiplies one flow by 0.7–0.85 or 1.15–1.3. Sizes are fixed
    here, not tuned on any result. Columns are chosen only by their prefix (``P_``, ``F_``, ``L_``, ``S_``).

    Args:
        frame: a normal period (index = timestamps, columns = sensors), at least a week longer than the
            anomalies need.
        rng: the random generator (seeded by the caller).
        count: how many anomalies, placed in turn through *kinds*, without overlap.
        duration_h: shortest and longest duration, hours.
        gap_h: least time between two anomalies, and before the first, hours.
        kinds: the kinds to use, from :data:`ANOMALY_KINDS`.

    Raises:
        EvaluationError: an unknown kind, or the period is too short for *count* anomalies.
    """
    unknown = set(kinds) - set(ANOMALY_KINDS)
    if unknown:
        raise EvaluationError(f"unknown anomaly kinds {sorted(unknown)}")
    out = frame.copy()
    values = out.to_numpy(dtype=np.float64, copy=True)
    step_h = float(np.median(np.diff(frame.index.asi8))) / 3.6e12 if len(frame) > 1 else 1.0
    week = round(168 / step_h)
    n = len(frame)
    columns = [str(c) for c in frame.columns]
    std = np.nanstd(values, axis=0)
    by_prefix = {
        p: [i for i, c in enumerate(columns) if _column_prefix(c) == p and std[i] > 0] for p in ("P_", "F_", "L_", "S_")
    }
    measured = by_prefix["P_"] + by_prefix["F_"] + by_prefix["L_"]
    truth = np.zeros(n, dtype=np.int64)
    done: list[InjectedAnomaly] = []
    lengths = [round(rng.uniform(*duration_h) / step_h) for _ in range(count)]
    slack = n - week - sum(lengths) - round(gap_h / step_h) * count
    if slack <= 0:
        raise EvaluationError(f"{n} rows are too few for {count} anomalies of {duration_h} h with {gap_h} h gaps")
    cuts = np.sort(rng.integers(0, slack, size=count))
    cursor = week
    for k, (length, cut) in enumerate(zip(lengths, np.diff(np.concatenate(([0], cuts))), strict=True)):
        start = cursor + round(gap_h / step_h) + int(cut)
        stop = start + length
        cursor = stop
        kind = kinds[k % len(kinds)]
        rows = slice(start, stop)
        ramp = np.linspace(0.0, 1.0, length)
        touched: list[int] = []
        if kind == "offset" and measured:
            touched = list(rng.choice(measured, size=min(2, len(measured)), replace=False))
            for i in touched:
                values[rows, i] += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0) * std[i]
        elif kind == "replay":
            groups = [g for g in by_prefix.values() if len(g) >= 2]
            group = groups[int(rng.integers(len(groups)))] if groups else measured
            touched = list(rng.choice(group, size=min(len(group), int(rng.integers(2, 5))), replace=False))
            for i in touched:
                values[rows, i] = frame.to_numpy(dtype=np.float64)[start - week : stop - week, i]
        elif kind == "switch" and by_prefix["S_"]:
            i = int(rng.choice(by_prefix["S_"]))
            on_share = float(np.nanmean(values[:, i] > 0.5))
            state = 0.0 if on_share > 0.5 else 1.0
            values[rows, i] = state
            touched = [i]
            flow = "F_" + columns[i][2:]
            if flow in columns:
                j = columns.index(flow)
                running = values[:, j][values[:, i] > 0.5]
                values[rows, j] = float(np.median(running)) if state and running.size else 0.0
                touched.append(j)
        elif kind == "drift" and (by_prefix["L_"] or by_prefix["P_"]):
            i = int(rng.choice(by_prefix["L_"] + by_prefix["P_"]))
            values[rows, i] += rng.choice([-1.0, 1.0]) * 3.0 * std[i] * ramp
            touched = [i]
        elif kind == "freeze" and measured:
            touched = list(rng.choice(measured, size=min(2, len(measured)), replace=False))
            for i in touched:
                values[rows, i] = values[start, i]
        elif (kind == "scale" or not touched) and by_prefix["F_"]:
            i = int(rng.choice(by_prefix["F_"]))
            values[rows, i] *= rng.uniform(0.7, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3)
            touched = [i]
        if not touched:
            continue
        truth[rows] = 1
        done.append(InjectedAnomaly(kind, start, stop, tuple(columns[i] for i in touched)))
    out.iloc[:, :] = values
    return out, truth, done


DRIFT_SHARE = 1 / 3
"""Share of the measured sensors (``P_``, ``F_``, ``L_``) that :func:`inject_drift` moves."""
DRIFT_SIZE_STD = (1.0, 2.0)
"""Range of the final drift of each moved sensor, in standard deviations of its readings."""
DRIFT_RAMP_H = 28 * 24.0
"""How long each drift takes to reach its final size, hours (four weeks; then it stays)."""
DRIFT_START_H = 14 * 24.0
"""Each drift starts at a random time within this many hours of the period's start."""


def inject_drift(frame: pd.DataFrame, *, rng: np.random.Generator) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Return a copy of a normal period whose normal operating point drifts slowly, and the columns moved.

    An imitation of what two years do to a network (demand growth, pump wear, changed set points), not an
    anomaly: a third of the measured sensors (:data:`DRIFT_SHARE`, chosen at random) each get an offset that
    ramps linearly from 0 to ±1–2 of the sensor's standard deviations (:data:`DRIFT_SIZE_STD`, sign and size at
    random) over four weeks (:data:`DRIFT_RAMP_H`), starting within the first two weeks (:data:`DRIFT_START_H`),
    and then stays. Status columns are not touched. Sizes are fixed here, chosen before any attacked data were
    scored with drift-adaptive settings.

    Args:
        frame: a normal period (index = timestamps, columns = sensors).
        rng: the random generator (seeded by the caller).
    """
    out = frame.copy()
    values = out.to_numpy(dtype=np.float64, copy=True)
    step_h = float(np.median(np.diff(frame.index.asi8))) / 3.6e12 if len(frame) > 1 else 1.0
    columns = [str(c) for c in frame.columns]
    std = np.nanstd(values, axis=0)
    measured = [i for i, c in enumerate(columns) if _column_prefix(c) in ("P_", "F_", "L_") and std[i] > 0]
    chosen = sorted(int(i) for i in rng.choice(measured, size=round(len(measured) * DRIFT_SHARE), replace=False))
    t = np.arange(len(frame)) * step_h
    for i in chosen:
        start = rng.uniform(0.0, DRIFT_START_H)
        size = rng.choice([-1.0, 1.0]) * rng.uniform(*DRIFT_SIZE_STD) * std[i]
        values[:, i] += size * np.clip((t - start) / DRIFT_RAMP_H, 0.0, 1.0)
    out.iloc[:, :] = values
    return out, tuple(columns[i] for i in chosen)


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """How one detector configuration did in cross-validation on a normal period.

    Attributes:
        config: the configuration.
        s: mean BATADAL score over the folds' injected anomalies, 0–1.
        f1: mean F1 over the same, 0–1.
        detected: share of injected anomalies with an alarm inside them, 0–1.
        false_alarm_rate: mean share of flagged steps on the folds' clean held-out data, 0–1; with drift, the
            larger of the rates with and without it.
        detected_by_kind: (anomaly kind, share detected) for each kind injected.
        false_alarm_rate_undrifted: mean share of flagged steps on the clean held-out data without drift, 0–1
            (the same as *false_alarm_rate* when no drift is injected).
    """

    config: DetectorConfig
    s: float
    f1: float
    detected: float
    false_alarm_rate: float
    detected_by_kind: tuple[tuple[str, float], ...]
    false_alarm_rate_undrifted: float = 0.0


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen configuration and every candidate's cross-validated figures (best first)."""

    chosen: DetectorConfig
    candidates: tuple[CandidateResult, ...]
    within_budget: bool


def select_config(
    normal: pd.DataFrame,
    *,
    models: Sequence[DetectorConfig],
    alarms: Sequence[tuple[float, float, float]],
    folds: int = 4,
    anomalies_per_fold: int = 6,
    repeats: int = 2,
    false_alarm_budget: float = 0.01,
    seed: int = 0,
    drift: bool = False,
) -> Selection:
    """Choose detector settings on a normal period alone, by cross-validation with synthetic anomalies.

    The period is cut into *folds* contiguous parts. For each part, the detector is fitted on the others and
    scores the part as it is (every flag is a false alarm) and *repeats* copies of it with
    :func:`inject_anomalies` (the same copies for every candidate). A candidate is one of *models* with one of
    *alarms*; the chosen one has the highest mean S among those whose mean false-alarm rate is within
    *false_alarm_budget*, or, if none is, the lowest false-alarm rate.

    With *drift*, each held-out part first gets a slow drift of its normal operating point
    (:func:`inject_drift`, drawn once per part from its own generator, so the anomalies are the same as
    without drift); the injected copies are made from the drifted part, and the false-alarm rate that counts
    is the larger of the drifted and the undrifted clean part's.

    Args:
        normal: the normal period (index = timestamps, columns = sensors), long enough for *folds* parts that
            each hold *anomalies_per_fold* anomalies and a week of history.
        models: configurations that differ in how the model is fitted (method, windows, penalties).
        alarms: (threshold quantile 0–1, smoothing h, minimum alarm h) settings tried with every model.
        folds: number of contiguous parts.
        anomalies_per_fold: synthetic anomalies in each injected copy.
        repeats: injected copies per part.
        false_alarm_budget: the largest acceptable share of flagged steps on held-out normal data, 0–1.
        seed: seed of the injections.
        drift: inject a slow drift into every held-out part (see above).

    Raises:
        EvaluationError: the period is too short for the folds and anomalies asked for.
    """
    edges = np.linspace(0, len(normal), folds + 1).astype(int)
    rng = np.random.default_rng(seed)
    drift_rng = np.random.default_rng([seed, 1])
    parts = []
    for k in range(folds):
        undrifted = normal.iloc[edges[k] : edges[k + 1]]
        held = inject_drift(undrifted, rng=drift_rng)[0] if drift else undrifted
        train = pd.concat([normal.iloc[: edges[k]], normal.iloc[edges[k + 1] :]])
        injected = [inject_anomalies(held, rng=rng, count=anomalies_per_fold) for _ in range(repeats)]
        parts.append((train, held, undrifted, injected))
    totals: dict[tuple[int, int], list[tuple[float, float, float, float, float]]] = {}
    kind_hits: dict[tuple[int, int], dict[str, list[bool]]] = {}
    for m, model in enumerate(models):
        for train, held, undrifted, injected in parts:
            detector = fit_detector(train, config=model)
            clean_raw = raw_score(detector, held)
            undrifted_raw = raw_score(detector, undrifted) if drift else clean_raw
            injected_raw = [(raw_score(detector, frame), truth, done) for frame, truth, done in injected]
            for a, (quantile, smoothing_h, min_alarm_h) in enumerate(alarms):
                tuned = with_alarm(
                    detector, threshold_quantile=quantile, smoothing_h=smoothing_h, min_alarm_h=min_alarm_h
                )
                far_undrifted = float(flags_from_raw(tuned, undrifted_raw)[1].mean())
                far = max(float(flags_from_raw(tuned, clean_raw)[1].mean()), far_undrifted)
                for raw, truth, done in injected_raw:
                    flags = flags_from_raw(tuned, raw)[1]
                    hits = [bool(flags[d.start : d.stop].any()) for d in done]
                    for d, is_hit in zip(done, hits, strict=True):
                        kind_hits.setdefault((m, a), {}).setdefault(d.kind, []).append(is_hit)
                    hit = float(np.mean(hits))
                    totals.setdefault((m, a), []).append(
                        (batadal_score(truth, flags).s, f1_score(truth, flags), hit, far, far_undrifted)
                    )
    results = []
    for (m, a), rows in totals.items():
        quantile, smoothing_h, min_alarm_h = alarms[a]
        config = dataclasses.replace(
            models[m], threshold_quantile=quantile, smoothing_h=smoothing_h, min_alarm_h=min_alarm_h
        )
        s, f1, found, far, far_undrifted = (float(v) for v in np.mean(rows, axis=0))
        by_kind = tuple((kind, float(np.mean(v))) for kind, v in sorted(kind_hits[m, a].items()))
        results.append(CandidateResult(config, s, f1, found, far, by_kind, far_undrifted))
    within = [r for r in results if r.false_alarm_rate <= false_alarm_budget]
    ranked = sorted(within, key=lambda r: (-r.s, r.false_alarm_rate)) + sorted(
        (r for r in results if r.false_alarm_rate > false_alarm_budget), key=lambda r: (r.false_alarm_rate, -r.s)
    )
    return Selection(chosen=ranked[0].config, candidates=tuple(ranked), within_budget=bool(within))
