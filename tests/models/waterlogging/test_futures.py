"""Rain futures fitted to the observed rain, blended with the forecast's; the staged warning rule. No SWMM."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from models.waterlogging.ensemble import (
    DECILES,
    RainFuture,
    StagedWarningRule,
    WarningRule,
    blend,
    blended_futures,
    event_rain,
    fit_design_storms,
    fitted_futures,
    forecast_futures,
    observed_weight,
)
from models.waterlogging.scoring import StormCase, score_rule
from twin.errors import ConfigError
from twin.storms import FORMULAS, chicago_storm

START = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
NANCHANG = FORMULAS["nanchang"]


def test_nine_deciles_hold_the_five_member_set() -> None:
    nine = forecast_futures([10.0, 20.0], sigma=0.25, levels=DECILES)
    five = forecast_futures([10.0, 20.0], sigma=0.25, members=5)
    assert len(nine) == 9 and sum(f.weight for f in nine) == pytest.approx(1.0)
    assert [f.rain_mm_h[1] for f in nine[::2]] == pytest.approx([f.rain_mm_h[1] for f in five])
    with pytest.raises(ConfigError):
        forecast_futures([1.0], levels=(0.0, 0.5))


def test_the_event_starts_after_the_last_hour_without_rain() -> None:
    assert event_rain([0.0] * 30) == ()
    assert event_rain([5.0] * 10 + [0.0] * 70 + [0.0, 2.0, 3.0]) == (2.0, 3.0)
    assert event_rain([5.0] * 10 + [0.0] * 30 + [2.0]) == (5.0,) * 10 + (0.0,) * 30 + (2.0,)
    assert event_rain([5.0] * 10 + [0.0] * 61) == ()  # over: an hour dry since


def test_a_chicago_storm_is_recognised_from_its_first_forty_minutes() -> None:
    rain = chicago_storm(NANCHANG, return_period_years=20, duration_min=120, peak_ratio=0.4)
    best = fit_design_storms([0.0] * 30 + rain[:40], formula=NANCHANG)[0]
    assert best.duration_min == 120 and best.peak_ratio == pytest.approx(0.4)
    assert best.return_period_years == pytest.approx(20.0, rel=1e-3) and best.misfit < 1e-6
    assert best.remaining_mm == pytest.approx(sum(rain[40:]) / 60.0)
    assert fit_design_storms([0.0] * 10) == []


def test_fitted_futures_differ_and_weigh_the_same() -> None:
    rain = chicago_storm(NANCHANG, return_period_years=10, duration_min=90, peak_ratio=0.5)
    assert fitted_futures(rain[:3]) == []  # less than 1 mm so far
    futures = fitted_futures(rain[:30], fits=3)
    assert [f.name.split()[0] for f in futures] == ["chicago"] * 3 + ["persists"]
    assert sum(f.weight for f in futures) == pytest.approx(1.0)
    assert futures[-1].rain_mm_h == pytest.approx((sum(rain[:30]) / 30,) * 30)
    depths = sorted(sum(f.rain_mm_h) for f in futures[:3])
    assert all(b > 1.2 * a for a, b in itertools.pairwise(depths))


def test_blend_weighs_groups_and_the_observed_weight_grows_with_the_rain() -> None:
    a = [RainFuture("a1", 0.5, (1.0,)), RainFuture("a2", 0.5, (2.0,))]
    b = [RainFuture("b", 1.0, (3.0,))]
    mixed = blend([(a, 0.75), (b, 0.25)])
    assert [f.weight for f in mixed] == pytest.approx([0.375, 0.375, 0.25])
    assert [f.name for f in blend([(a, 0.6), ([], 0.4)])] == ["a1", "a2"]  # an empty group drops out
    assert sum(f.weight for f in blend([(a, 0.6), ([], 0.4)])) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        blend([([], 1.0)])
    assert observed_weight(0.0) == 0.0
    assert observed_weight(5.0, max_weight=0.5, full_at_mm=10.0) == pytest.approx(0.25)
    assert observed_weight(40.0, max_weight=0.5, full_at_mm=10.0) == pytest.approx(0.5)
    assert observed_weight(0.1, max_weight=0.75, full_at_mm=0.0) == pytest.approx(0.75)


def test_blended_futures_are_the_forecast_alone_before_rain_and_mixed_after() -> None:
    rain = chicago_storm(NANCHANG, return_period_years=10, duration_min=90, peak_ratio=0.5)
    early = blended_futures(rain, [], members=5)
    assert [f.name for f in early] == [f.name for f in forecast_futures(rain, members=5)]
    later = blended_futures(rain[40:], rain[:40], members=5, max_observed_weight=0.5, full_at_mm=10.0)
    assert len(later) == 9 and sum(f.weight for f in later) == pytest.approx(1.0)
    assert sum(f.weight for f in later if f.name.startswith("forecast")) == pytest.approx(0.5)
    assert [f.name for f in blended_futures(None, [])] == ["stops", "persists 30 min", "decays (20 min)"]


def test_the_staged_rule_names_more_once_the_rain_is_seen() -> None:
    rule = StagedWarningRule(WarningRule(probability=0.8, max_expected_far=1.0), later_probability=0.4, after_mm=5)
    probability = np.array([0.9, 0.5, 0.2])
    assert rule.named_mask(probability, warned_before=False, observed_mm=1.0).tolist() == [True, False, False]
    assert rule.named_mask(probability, warned_before=True, observed_mm=6.0).tolist() == [True, True, False]
    case = StormCase(
        "synthetic",
        (START, START + timedelta(minutes=10)),
        ("A", "B", "C"),
        np.array([[0.9, 0.5, 0.2], [0.9, 0.5, 0.2]]),
        {"A": 40.0, "B": 12.0, "C": 3.0},
        {"A": START + timedelta(minutes=30), "B": START + timedelta(minutes=50)},
        observed_mm=(1.0, 6.0),
    )
    score = score_rule(rule, case)
    assert score.first_warning == START and score.hit_rate_in_time == 0.5
    assert score.lead_times_s == (1800.0, 2400.0) and score.missed == ()
    with pytest.raises(ConfigError):
        StagedWarningRule(later_probability=0.0)
