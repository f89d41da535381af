"""The offline detector on the BATADAL benchmark, and the detection metrics on hand-made series."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.evaluation import (
    EvaluationError,
    attack_spans,
    batadal_score,
    f1_score,
    precision,
    recall,
    s_cm,
    s_ttd,
)
from models.offline import (
    MODEL_VERSION,
    OfflineModelError,
    dump_detector,
    fit_detector,
    load_detector,
    score_detector,
)


def _batadal_dir() -> Path:
    shared = os.environ.get("LIFELINE_SHARED_DIR")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return root / "data" / "batadal"


def _read_batadal(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.read_csv(path, skipinitialspace=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.to_datetime(frame.pop("DATETIME"), format="%d/%m/%y %H")
    # dataset04 marks attacks with 1 and everything else (normal or not labelled) with -999.
    truth = (frame.pop("ATT_FLAG") == 1).astype(int)
    return frame, truth


@pytest.fixture(scope="module")
def batadal() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    folder = _batadal_dir()
    normal_csv = folder / "BATADAL_dataset03.csv"
    attacked_csv = folder / "BATADAL_dataset04.csv"
    if not (normal_csv.exists() and attacked_csv.exists()):
        pytest.skip(f"BATADAL data not found in {folder} (set LIFELINE_SHARED_DIR to the folder holding data/batadal)")
    normal, normal_truth = _read_batadal(normal_csv)
    attacked, truth = _read_batadal(attacked_csv)
    assert normal_truth.sum() == 0
    return normal, attacked, truth


def test_detector_finds_batadal_attacks_with_few_false_alarms(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    normal, attacked, truth = batadal
    started = time.perf_counter()
    detector = fit_detector(normal)
    fitted = time.perf_counter()
    result = score_detector(detector, attacked)
    scored = time.perf_counter()

    assert list(result.columns) == ["flag", "score"]
    assert result.index.equals(attacked.index)
    assert set(np.unique(result["flag"])) <= {0, 1}
    score = batadal_score(truth, result["flag"])
    # Measured with the default configuration: P 0.462, R 0.685, F1 0.551, S_TTD 0.847, S_CM 0.820, S 0.834.
    assert score.n_attacks == 5
    assert precision(truth, result["flag"]) >= 0.44
    assert recall(truth, result["flag"]) >= 0.66
    assert f1_score(truth, result["flag"]) >= 0.53
    assert score.s_ttd >= 0.82
    assert score.s_cm >= 0.80
    assert score.s >= 0.81
    assert fitted - started < 20.0
    assert scored - fitted < 5.0


def test_normal_year_raises_few_alarms(batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series]) -> None:
    normal, _, _ = batadal
    flags = score_detector(fit_detector(normal), normal)["flag"]
    assert flags.mean() <= 0.01


def test_fitting_twice_gives_the_same_scores(batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series]) -> None:
    normal, attacked, _ = batadal
    first = score_detector(fit_detector(normal), attacked)
    second = score_detector(fit_detector(normal.copy()), attacked)
    pd.testing.assert_frame_equal(first, second)


def test_saved_detector_scores_like_the_original(batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series]) -> None:
    normal, attacked, _ = batadal
    detector = fit_detector(normal)
    restored = load_detector(dump_detector(detector))
    assert restored.version == MODEL_VERSION
    pd.testing.assert_frame_equal(score_detector(detector, attacked), score_detector(restored, attacked))


def _synthetic(hours: int, seed: int) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    rng = np.random.default_rng(seed)
    day = np.sin(2 * np.pi * ts.hour / 24)
    flow = 80 + 10 * day + rng.normal(0, 1, hours)
    return pd.DataFrame(
        {
            "F_PU1": flow,
            "P_J1": 40 - 0.1 * flow + rng.normal(0, 0.1, hours),
            "L_T1": 3 + 0.5 * day + rng.normal(0, 0.02, hours),
            "S_PU1": (day > 0).astype(float),
        },
        index=ts,
    )


def test_synthetic_pressure_drop_is_flagged_and_quiet_elsewhere() -> None:
    normal = _synthetic(24 * 90, seed=1)
    suspect = _synthetic(24 * 20, seed=2)
    suspect.iloc[200:230, suspect.columns.get_loc("P_J1")] -= 2.0
    result = score_detector(fit_detector(normal), suspect)
    assert result["flag"].iloc[205:230].all()
    assert result["flag"].iloc[:190].mean() < 0.05


def test_scoring_without_a_fitted_sensor_is_refused() -> None:
    normal = _synthetic(24 * 30, seed=1)
    with pytest.raises(OfflineModelError, match="missing sensors"):
        score_detector(fit_detector(normal), normal.drop(columns=["P_J1"]))


def test_fitting_needs_timestamps() -> None:
    with pytest.raises(OfflineModelError, match="timestamps"):
        fit_detector(pd.DataFrame({"P_J1": [1.0, 2.0, 3.0]}))


def test_garbage_bytes_are_not_a_detector() -> None:
    with pytest.raises(OfflineModelError):
        load_detector(b"not a pickle")


def test_metrics_count_steps() -> None:
    truth = [0, 1, 1, 1, 0, 0, 0, 0]
    alarm = [0, 0, 1, 1, 1, 1, 0, 0]
    assert precision(truth, alarm) == pytest.approx(0.5)
    assert recall(truth, alarm) == pytest.approx(2 / 3)
    assert f1_score(truth, alarm) == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_metrics_are_zero_without_alarms() -> None:
    assert precision([0, 1, 1], [0, 0, 0]) == 0.0
    assert f1_score([0, 1, 1], [0, 0, 0]) == 0.0


def test_attack_spans_are_runs_of_ones() -> None:
    assert attack_spans([1, 1, 0, 0, 1, 0, 1]) == [(0, 2), (4, 5), (6, 7)]


def test_detection_at_attack_start_gives_full_s_ttd() -> None:
    assert s_ttd([0, 1, 1, 1, 0], [0, 1, 0, 0, 0]) == pytest.approx(1.0)


def test_undetected_attack_counts_its_whole_duration() -> None:
    # Attack 1 (4 steps) found after 2 steps: 2/4; attack 2 (2 steps) never found: 2/2.
    truth = [1, 1, 1, 1, 0, 0, 1, 1, 0]
    alarm = [0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert s_ttd(truth, alarm) == pytest.approx(1 - (0.5 + 1.0) / 2)


def test_alarm_before_an_attack_does_not_detect_it() -> None:
    assert s_ttd([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_batadal_score_combines_ttd_and_confusion_equally() -> None:
    truth = [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    alarm = [1, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    score = batadal_score(truth, alarm)
    assert score.tpr == pytest.approx(3 / 4)
    assert score.tnr == pytest.approx(5 / 6)
    assert score.s_cm == pytest.approx(s_cm(truth, alarm)) == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert score.s_ttd == pytest.approx(1 - 1 / 4)
    assert score.s == pytest.approx(0.5 * (1 - 1 / 4) + 0.5 * (3 / 4 + 5 / 6) / 2)
    assert score.n_attacks == 1


def test_metrics_refuse_mismatched_or_non_binary_series() -> None:
    with pytest.raises(EvaluationError):
        precision([0, 1], [0, 1, 1])
    with pytest.raises(EvaluationError):
        recall([0, 2], [0, 1])
    with pytest.raises(EvaluationError, match="no attack"):
        s_ttd([0, 0], [0, 1])
