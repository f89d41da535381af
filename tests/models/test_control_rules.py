"""Control-rule consistency: rules read from EPANET models, judged on records of real EPANET runs and on BATADAL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.control_rules import (
    ControlRule,
    broken_summary,
    check_rules,
    control_alarm,
    link_alarms,
    rules_from_inp,
    rules_that_hold,
)
from models.evaluation import attack_spans, batadal_score
from models.offline import dump_detector, fit_detector, load_detector, score_detector
from twin.errors import ModelImportError

from .test_offline import batadal  # noqa: F401  (the fixture)

NET1 = Path(__import__("wntr").__file__).parent / "library" / "networks" / "Net1.inp"


def _record(inp: Path, *, days: int, drop_control: str | None = None) -> pd.DataFrame:
    """An hourly wide record (tank 2's level, pump 9's status) of a real EPANET run of Net1."""
    import wntr

    model = wntr.network.WaterNetworkModel(str(inp))
    if drop_control is not None:
        model.remove_control(drop_control)
    model.options.time.duration = days * 24 * 3600
    model.options.time.report_timestep = 3600
    results = wntr.sim.EpanetSimulator(model).run_sim(file_prefix=str(inp.parent / "run"))
    level = results.node["pressure"]["2"].to_numpy()  # a tank's "pressure" is its level, m
    status = results.link["status"]["9"].to_numpy()
    index = pd.date_range("2024-01-01", periods=level.size, freq="h")
    return pd.DataFrame({"L_2": np.round(level, 3), "S_9": status.astype(int)}, index=index)


def test_rules_come_from_the_model_in_si_units() -> None:
    rules, skipped = rules_from_inp(NET1)
    assert skipped == []
    # Net1 is written in feet: LINK 9 OPEN IF NODE 2 BELOW 110, CLOSED IF ABOVE 140.
    assert [r.describe() for r in rules] == ["9 open if 2 level < 33.528 m", "9 closed if 2 level > 42.672 m"]
    assert rules[0] == ControlRule(link="9", node="2", quantity="level", below=True, threshold=33.528, opens=True)


def test_a_pump_that_runs_past_its_stop_level_is_flagged_from_the_first_hour(tmp_path: Path) -> None:
    rules, _ = rules_from_inp(NET1)
    normal = _record(NET1, days=7)
    kept, dropped = rules_that_hold(rules, normal)
    assert kept == rules and dropped == []
    assert not control_alarm(rules, normal).any()

    # The controller stops acting on the level: pump 9 no longer stops at 140 ft and the tank overfills.
    closing = next(
        name for name, c in __import__("wntr").network.WaterNetworkModel(str(NET1)).controls() if "CLOSED" in str(c)
    )
    failed = _record(NET1, days=7, drop_control=closing)
    over = (failed["L_2"] > 42.672 + 0.002) & (failed["S_9"] == 1)
    assert over.any(), "the failed controller should let the tank rise above its stop level"
    alarm = control_alarm(rules, failed)
    first = int(np.flatnonzero(over.to_numpy())[0])
    assert not alarm[:first].any() and alarm[first]
    summary = broken_summary(rules, failed)
    assert [(r.describe(), n) for r, n, _ in summary] == [("9 closed if 2 level > 42.672 m", int(over.sum()))]


def test_the_alarm_lasts_until_the_controller_is_seen_obeying_again() -> None:
    rules = [
        ControlRule(link="PU1", node="T1", quantity="level", below=True, threshold=4.0, opens=True),
        ControlRule(link="PU1", node="T1", quantity="level", below=False, threshold=6.0, opens=False),
    ]
    level = [5.0, 6.5, 5.5, 4.5, 5.0, 3.5, 5.0, 6.5, 5.0]
    status = [1, 1, 1, 1, 1, 1, 1, 0, 0]  # runs above 6 m (broken), then runs below 4 m (kept), later stops (kept)
    frame = pd.DataFrame({"L_T1": level, "S_PU1": status}, index=pd.date_range("2024-01-01", periods=9, freq="h"))
    assert control_alarm(rules, frame).tolist() == [False, True, True, True, True, False, False, False, False]
    # Between the thresholds nothing is judged; within two recording steps (0.2 m here) of one neither.
    checks = {c.rule.describe(): c for c in check_rules(rules, frame)}
    assert checks["PU1 closed if T1 level > 6 m"].checked.tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0]
    flows = frame.rename(columns={"S_PU1": "F_PU1"}).assign(F_PU1=[80.0 * s for s in status])
    assert link_alarms(rules, flows)["PU1"].tolist() == control_alarm(rules, frame).tolist()  # flow as status


def test_rules_the_normal_period_breaks_or_cannot_see_are_not_used() -> None:
    index = pd.date_range("2024-01-01", periods=1000, freq="h")
    rng = np.random.default_rng(1)
    level = rng.uniform(0, 10, index.size).round(2)
    normal = pd.DataFrame({"L_T1": level, "S_PU1": (level < 3).astype(int), "S_PU2": 1}, index=index)
    obeyed = ControlRule(link="PU1", node="T1", quantity="level", below=True, threshold=3.0, opens=True)
    ignored = ControlRule(link="PU2", node="T1", quantity="level", below=False, threshold=8.0, opens=False)
    blind = ControlRule(link="PU3", node="T1", quantity="level", below=True, threshold=1.0, opens=True)
    kept, dropped = rules_that_hold([obeyed, ignored, blind], normal)
    assert kept == [obeyed]
    reasons = {r.link: why for r, why in dropped}
    assert reasons["PU2"].startswith("broken in ") and reasons["PU3"] == "no L_T1 or S_/F_PU3 column"


def test_a_model_file_that_is_not_epanet_gets_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.inp"
    bad.write_text("[JUNCTIONS]\nJ1 not-a-number\n")
    with pytest.raises(ModelImportError, match=r"bad\.inp: cannot read as an EPANET model"):
        rules_from_inp(bad)
    with pytest.raises(ModelImportError, match="no such file"):
        rules_from_inp(tmp_path / "missing.inp")


def test_batadal_attacks_break_c_town_rules_the_normal_year_obeys(
    batadal: tuple[pd.DataFrame, pd.DataFrame, pd.Series],  # noqa: F811
) -> None:
    from .test_offline import _batadal_dir

    normal, attacked, truth = batadal
    rules, skipped = rules_from_inp(_batadal_dir() / "CTOWN.INP")
    assert len(rules) == 20 and skipped == []
    assert sum(int(c.broken.sum()) for c in check_rules(rules, normal)) == 0  # the normal year never breaks one
    detector = fit_detector(
        normal, resolution={c: 0.01 for c in normal.columns if not c.startswith("S_")}, controls=rules
    )
    assert detector.controls == tuple(rules)
    result = score_detector(detector, attacked)
    for start, _stop in attack_spans(truth):  # every labelled attack breaks a rule in its first hour
        assert result["control"].iloc[start], f"attack at {attacked.index[start]} not flagged by the rules at once"
    control_only = batadal_score(truth, result["control"])
    both = batadal_score(truth, result["flag"])
    without = batadal_score(truth, score_detector(dataclasses.replace(detector, controls=()), attacked)["flag"])
    assert control_only.s_ttd == 1.0 and control_only.s > 0.93  # 0.941; precision 0.871
    assert both.s > without.s and both.s >= 0.95  # 0.963 against 0.872 without the rules
    assert result["control"][truth == 0].mean() < 0.01  # 0.63 % of the unlabelled hours, next to attacks
    again = load_detector(dump_detector(detector))
    assert again.controls == detector.controls
    pd.testing.assert_frame_equal(score_detector(again, attacked), result)
