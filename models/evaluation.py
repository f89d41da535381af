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

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

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
