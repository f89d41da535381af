"""The offline detector on the BATADAL benchmark, and the detection metrics on hand-made series."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.evaluation import (
    ANOMALY_KINDS,
    EvaluationError,
    attack_spans,
    batadal_score,
    f1_score,
    inject_anomalies,
    inject_drift,
    precision,
    recall,
    s_cm,
    s_ttd,
    select_config,
)
from models.offline import (
    MODEL_VERSION,
    DetectorConfig,
    OfflineDetector,
    OfflineModelError,
    coarser_columns,
    data_resolution,
    dump_detector,
    fit_detector,
    load_detector,
    score_detector,
    sensor_shares,
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
    detector = fit_detector(normal, resolution=data_resolution(attacked))
    fitted = time.perf_counter()
    result = score_detector(detector, attacked)
    scored = time.perf_counter()

    assert list(result.columns) == ["flag", "score", "control"]
    assert not result["control"].any()  # no control rules given: the data-driven detector alone
    assert result.index.equals(attacked.index)
    assert set(np.unique(result["flag"])) <= {0, 1}
    score = batadal_score(truth, result["flag"])
    # Settings chosen on dataset03 alone (bench/bench_batadal.py --select), fitted on dataset03 rounded to the two
    # decimals dataset04 is exported with; scored on dataset04: P 0.374, R 0.708, F1 0.490, S_TTD 0.923,
    # S_CM 0.821, S 0.872, 6.5 % of the unlabelled hours flagged (docs/models.md).
    assert score.n_attacks == 5
    assert precision(truth, result["flag"]) >= 0.34
    assert recall(truth, result["flag"]) >= 0.67
    assert f1_score(truth, result["flag"]) >= 0.45
    assert score.s_ttd >= 0.90
    assert score.s_cm >= 0.80
    assert score.s >= 0.85
    assert result["flag"][truth == 0].mean() <= 0.08
    assert fitted - started < 20.0
    assert scored - fitted < 5.0


def test_a_model_fitted_at_full_precision_reads_dataset04s_rounding_as_anomalies(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    normal, attacked, truth = batadal
    detector = fit_detector(normal)  # dataset03 as written: nine decimals
    coarse = coarser_columns(detector, attacked)
    assert len(coarse) == 28 and coarse["P_J280"] == (0.01, 0.0)
    flags = score_detector(detector, attacked)["flag"]
    assert flags[truth == 0].mean() > 0.15  # measured 20.4 %, against 6.5 % when fitted at dataset04's resolution


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


SENSITIVE = DetectorConfig(rolling_h=6.0, variance_kept=0.99, threshold_quantile=0.98, min_alarm_h=2.0)
"""The offline-2 defaults: the synthetic tables' four sensors need them (with the defaults chosen under drift,
0.95 of the variance kept and a 0.999 quantile, a 2 m pressure drop there falls inside the principal subspace and
is missed)."""


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
    result = score_detector(fit_detector(normal, config=SENSITIVE), suspect)
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
    with pytest.raises(OfflineModelError, match="not a saved offline detector"):
        load_detector(b"not a model")


def test_a_pickle_is_refused_without_being_run() -> None:
    import pickle

    with pytest.raises(OfflineModelError, match="not a saved offline detector"):
        load_detector(pickle.dumps({"version": MODEL_VERSION}))


def test_a_model_of_another_version_is_refused() -> None:
    import io
    import json

    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps({"version": "offline-pca-1"}).encode(), dtype=np.uint8))
    with pytest.raises(OfflineModelError, match="version"):
        load_detector(buffer.getvalue())


@pytest.mark.parametrize("method", ["pca", "ridge", "both"])
def test_every_method_saves_scores_and_reloads(method: str) -> None:
    normal = _synthetic(24 * 30, seed=1)
    suspect = _synthetic(24 * 10, seed=2)
    suspect.iloc[100:130, suspect.columns.get_loc("P_J1")] -= 2.0
    detector = fit_detector(normal, config=dataclasses.replace(SENSITIVE, method=method))
    restored = load_detector(dump_detector(detector))
    pd.testing.assert_frame_equal(score_detector(detector, suspect), score_detector(restored, suspect))
    assert score_detector(detector, suspect)["flag"].iloc[105:130].mean() > 0.8


def _drifting(hours: int, seed: int) -> pd.DataFrame:
    """A period whose pressure and tank level drift away from the normal one over five weeks, then stay."""
    frame = _synthetic(hours, seed)
    ramp = np.clip(np.arange(hours) / (35 * 24), 0.0, 1.0)
    frame["P_J1"] -= 1.5 * ramp  # about 10 hourly robust spreads
    frame["L_T1"] += 0.3 * ramp  # about 12
    return frame


def test_adaptive_standardisation_follows_a_slow_drift_and_still_flags_a_day_long_step() -> None:
    normal = _synthetic(24 * 90, seed=1)
    suspect = _drifting(24 * 60, seed=2)
    attack = slice(24 * 45, 24 * 46)
    suspect.iloc[attack, suspect.columns.get_loc("P_J1")] -= 2.0
    outside = np.ones(len(suspect), dtype=bool)
    outside[24 * 45 : 24 * 46 + 24] = False  # the attack and the day after it (smoothing, rolling features)

    fixed = score_detector(fit_detector(normal, config=dataclasses.replace(SENSITIVE, adapt_h=0.0)), suspect)["flag"]
    adaptive = score_detector(fit_detector(normal, config=dataclasses.replace(SENSITIVE, adapt_h=168.0)), suspect)
    adaptive = adaptive["flag"]

    assert fixed[outside].mean() > 0.5  # the fitted levels call the drift an anomaly
    assert adaptive[outside].mean() < 0.03
    assert adaptive.iloc[attack].iloc[3:].mean() > 0.9


def test_adaptive_standardisation_never_uses_the_future() -> None:
    detector = fit_detector(_synthetic(24 * 60, seed=1), config=DetectorConfig(adapt_h=168.0))
    suspect = _drifting(24 * 30, seed=2)
    whole = score_detector(detector, suspect)["score"]
    for rows in (10, 24 * 3, 24 * 20):
        head = score_detector(detector, suspect.iloc[:rows])["score"]
        pd.testing.assert_series_equal(head, whole.iloc[:rows])


def test_adaptive_setting_is_saved_with_the_model() -> None:
    detector = fit_detector(_synthetic(24 * 30, seed=1), config=DetectorConfig(adapt_h=336.0))
    restored = load_detector(dump_detector(detector))
    assert restored.config.adapt_h == 336.0
    suspect = _drifting(24 * 20, seed=2)
    pd.testing.assert_frame_equal(score_detector(detector, suspect), score_detector(restored, suspect))


def _as_offline_2(detector: OfflineDetector) -> bytes:
    """Rewrite a saved model as the version before adaptive standardisation wrote it (no ``adapt_h``)."""
    import io
    import json

    with np.load(io.BytesIO(dump_detector(detector)), allow_pickle=False) as archive:
        arrays = {name: np.asarray(archive[name]) for name in archive.files}
    header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    header["version"] = "offline-2"
    del header["config"]["adapt_h"]
    del header["resolution"]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_a_model_saved_before_adaptation_loads_without_it() -> None:
    detector = fit_detector(_synthetic(24 * 30, seed=1), config=DetectorConfig(adapt_h=0.0))
    restored = load_detector(_as_offline_2(detector))
    assert restored.config.adapt_h == 0.0
    assert restored.version == MODEL_VERSION
    suspect = _drifting(24 * 20, seed=2)
    pd.testing.assert_frame_equal(score_detector(detector, suspect), score_detector(restored, suspect))


def test_data_resolution_reads_the_decimals_a_table_is_written_with() -> None:
    frame = pd.DataFrame(
        {
            "two": [2.98, -36.38, 1234.5, np.nan],
            "whole": [0.0, 1.0, 1.0, 250000.0],
            "float32": [2.974052906, 0.41258049, 98.9984436, 1.0],
            "empty": [np.nan] * 4,
            "text": ["a", "b", "c", "d"],
        }
    )
    assert data_resolution(frame) == {"two": 0.01, "whole": 1.0, "float32": 0.0, "empty": 0.0, "text": 0.0}


def _rounding_prone(hours: int, seed: int) -> pd.DataFrame:
    """The synthetic table and a pressure that moves by millimetres with the flow, like BATADAL's P_J280."""
    frame = _synthetic(hours, seed)
    rng = np.random.default_rng(seed + 100)
    frame["P_J2"] = 2.98 + 0.0004 * (frame["F_PU1"] - 80) + rng.normal(0, 0.0003, hours)
    return frame


def test_fitting_at_the_scored_resolution_removes_the_false_alarms_of_rounding() -> None:
    normal = _rounding_prone(24 * 90, seed=1)  # full precision
    suspect = _rounding_prone(24 * 20, seed=2).round(2)  # the same process, exported with two decimals
    suspect.iloc[200:230, suspect.columns.get_loc("P_J1")] -= 2.0

    blind = fit_detector(normal)
    assert set(coarser_columns(blind, suspect)) == {"F_PU1", "P_J1", "P_J2", "L_T1"}
    assert coarser_columns(blind, suspect)["P_J2"] == (0.01, 0.0)
    flags = score_detector(blind, suspect)["flag"]
    assert flags.iloc[:190].mean() > 0.5  # the rounding of P_J2 reads as an anomaly most of the time

    matched = fit_detector(normal, resolution=data_resolution(suspect))
    assert coarser_columns(matched, suspect) == {}
    assert matched.resolution == {"F_PU1": 0.01, "P_J1": 0.01, "P_J2": 0.01, "L_T1": 0.01, "S_PU1": 1.0}
    flags = score_detector(matched, suspect)["flag"]
    assert flags.iloc[:190].mean() < 0.02
    assert flags.iloc[205:230].all()  # the 2 m pressure drop is still flagged

    restored = load_detector(dump_detector(matched))
    assert restored.resolution == matched.resolution
    pd.testing.assert_frame_equal(score_detector(matched, suspect), score_detector(restored, suspect))


def test_a_resolution_too_coarse_for_every_column_is_refused() -> None:
    normal = _synthetic(24 * 30, seed=1)
    with pytest.raises(OfflineModelError, match="resolution"):
        fit_detector(normal, resolution=dict.fromkeys(normal.columns, 1000.0))


@pytest.mark.parametrize("adapt_h", [-1.0, 6.0])
def test_an_adaptation_window_shorter_than_a_day_is_refused(adapt_h: float) -> None:
    with pytest.raises(OfflineModelError, match="adapt_h"):
        DetectorConfig(adapt_h=adapt_h)


def test_windows_are_hours_whatever_the_step() -> None:
    hourly = fit_detector(_synthetic(24 * 30, seed=1))
    quarter = _synthetic(24 * 30 * 4, seed=1)
    quarter.index = pd.date_range("2024-01-01", periods=len(quarter), freq="15min", tz="UTC")
    fine = fit_detector(quarter)
    assert hourly.step_h == pytest.approx(1.0) and fine.step_h == pytest.approx(0.25)


def test_injected_anomalies_change_only_what_they_say(batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series]) -> None:
    normal = batadal[0].iloc[:2000]
    injected, truth, done = inject_anomalies(normal, rng=np.random.default_rng(3), count=6)
    assert [d.kind for d in done] == list(ANOMALY_KINDS)
    assert attack_spans(truth) == [(d.start, d.stop) for d in done]
    changed = injected.ne(normal)
    assert not changed[truth == 0].to_numpy().any()
    for d in done:
        touched = changed.iloc[d.start : d.stop]
        assert touched.any().loc[list(d.columns)].any()
        assert not touched.drop(columns=list(d.columns)).to_numpy().any()


def test_injected_drift_is_slow_and_moves_a_third_of_the_measured_sensors(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    normal = batadal[0].iloc[: 24 * 90]
    drifted, moved = inject_drift(normal, rng=np.random.default_rng(5))
    measured = [c for c in normal.columns if c[:2] in ("P_", "F_", "L_") and normal[c].std() > 0]
    assert len(moved) == round(len(measured) / 3) and set(moved) <= set(measured)
    change = drifted - normal
    assert not change.drop(columns=list(moved)).to_numpy().any()
    assert not change.iloc[0].to_numpy().any()
    std = normal[list(moved)].std(ddof=0)
    final = change[list(moved)].iloc[-1].abs() / std
    assert final.between(1.0 - 1e-9, 2.0 + 1e-9).all()
    steepest = change[list(moved)].diff().abs().max() / std
    assert (steepest <= 2.0 / (28 * 24) + 1e-9).all()


def test_selection_with_drift_sees_why_adaptation_matters(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    # On half the normal year, never on dataset04: with a slow drift in the held-out halves, the fixed levels
    # flag most of them, the adaptive ones few; without the drift both are quiet. Measured: 87 % against 6.4 %
    # flagged with the drift (two weeks' window: 29 %, it lags the four-week ramp more), 1.4 % and 1.7 % without.
    normal = batadal[0].iloc[: 24 * 180]
    selection = select_config(
        normal,
        models=[DetectorConfig(method="pca", adapt_h=0.0), DetectorConfig(method="pca", adapt_h=168.0)],
        alarms=[(0.98, 1.0, 2.0)],
        folds=2,
        anomalies_per_fold=5,
        repeats=1,
        false_alarm_budget=0.02,
        drift=True,
    )
    by_window = {r.config.adapt_h: r for r in selection.candidates}
    assert by_window[0.0].false_alarm_rate > 0.5
    assert by_window[168.0].false_alarm_rate < 0.1
    assert max(r.false_alarm_rate_undrifted for r in selection.candidates) < 0.05
    assert selection.chosen.adapt_h == 168.0


def test_selection_on_the_normal_year_keeps_the_false_alarm_budget(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    # A small version of bench/bench_batadal.py --select, on half the normal year and never on dataset04.
    normal = batadal[0].iloc[: 24 * 180]
    selection = select_config(
        normal,
        models=[DetectorConfig(method="pca"), DetectorConfig(method="ridge")],
        alarms=[(0.98, 1.0, 2.0), (0.995, 6.0, 3.0)],
        folds=2,
        anomalies_per_fold=5,
        repeats=1,
        false_alarm_budget=0.02,
    )
    assert len(selection.candidates) == 4
    best = selection.candidates[0]
    assert selection.within_budget and best.false_alarm_rate <= 0.02
    assert best.config == selection.chosen
    # Offsets, switches and replays of a few sensors are found; measured S about 0.7 on this subset.
    assert best.detected >= 0.6
    assert best.s >= 0.55


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


def test_the_sensor_that_moved_carries_the_score() -> None:
    ts = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    rng = np.random.default_rng(0)
    day = np.sin(2 * np.pi * ts.hour / 24)
    demand = rng.normal(0, 1, ts.size)  # what moves the whole network together, as demand does
    columns = {
        f"P_J{k}": 40 + (2 + k % 3) * day - (0.4 + 0.05 * k) * demand + rng.normal(0, 0.1, ts.size) for k in range(8)
    }
    columns |= {f"F_PU{k}": 80 + 10 * day + (3.0 + k) * demand + rng.normal(0, 0.5, ts.size) for k in range(3)}
    normal = pd.DataFrame(columns, index=ts)
    suspect = normal.copy()
    suspect.loc[suspect.index[500:520], "P_J3"] -= 2.0  # one pressure drops by 2 m
    for method in ("pca", "ridge", "both"):
        shares = sensor_shares(fit_detector(normal, config=DetectorConfig(method=method)), suspect)
        assert list(shares.columns) == list(columns)
        assert np.allclose(shares.sum(axis=1), 1.0)
        assert (shares.iloc[500:520].idxmax(axis=1) == "P_J3").all(), method
        # 0.35 (PCA), 0.87 (virtual sensors): three times an even share of 1/11 at least
        assert shares["P_J3"].iloc[500:520].mean() > 3 / 11, method
