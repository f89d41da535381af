"""Ensemble nowcast, the warning rule and its scoring: pure checks, and SWMM on a pystorms network."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pystorms
import pytest

from models.waterlogging.ensemble import (
    RainFuture,
    WarningRule,
    ensemble_nowcast,
    forecast_futures,
    observed_futures,
)
from models.waterlogging.nowcast import swmm_pool
from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, alert_changes, assess
from models.waterlogging.scoring import StormCase, choose_rule, pool_scores, score_named, score_rule
from twin.drainage import check_swmm, read_swmm
from twin.errors import ConfigError, ModelImportError
from twin.model import City
from twin.sensors import Network

START = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


def test_forecast_futures_are_the_forecast_scaled_by_equally_likely_quantiles() -> None:
    futures = forecast_futures([10.0, 40.0, 20.0], sigma=0.25, members=5)
    assert len(futures) == 5 and sum(f.weight for f in futures) == pytest.approx(1.0)
    factors = [f.rain_mm_h[1] / 40.0 for f in futures]
    assert factors == sorted(factors)
    assert futures[2].rain_mm_h == pytest.approx((10.0, 40.0, 20.0))
    assert math.log(factors[0]) == pytest.approx(-math.log(factors[-1]))  # symmetric in log
    assert factors[-1] == pytest.approx(math.exp(0.25 * 1.2816), rel=1e-3)  # the 90 % quantile
    with pytest.raises(ConfigError):
        forecast_futures([1.0], sigma=-0.1)


def test_observed_futures_stop_persist_or_decay_from_the_last_quarter_hour() -> None:
    futures = observed_futures([0.0] * 30 + [30.0] * 15)
    assert [f.name for f in futures] == ["stops", "persists 30 min", "decays (20 min)"]
    assert sum(f.weight for f in futures) == pytest.approx(1.0)
    assert max(futures[0].rain_mm_h) == 0.0
    assert futures[1].rain_mm_h == (30.0,) * 30
    decay = futures[2].rain_mm_h
    assert decay[0] < 30.0 and decay[20] == pytest.approx(decay[0] * math.exp(-1.0))


def test_the_first_warning_waits_until_the_named_set_is_sharp() -> None:
    rule = WarningRule(probability=0.6, max_expected_far=0.2, min_expected_hit=0.8)
    blurred = np.array([1.0, 0.6, 0.6, 0.6, 0.2, 0.0])  # expected FAR of the four named: 0.3
    assert not rule.named_mask(blurred, warned_before=False).any()
    assert rule.named_mask(blurred, warned_before=True).tolist() == [True, True, True, True, False, False]
    sharp = np.array([1.0, 1.0, 0.8, 0.0, 0.2, 0.0])  # expected FAR 0.067, expected hit 2.8 / 3.0
    assert rule.named_mask(sharp, warned_before=False).tolist() == [True, True, True, False, False, False]
    spread = np.array([1.0, 0.8, 0.4, 0.4, 0.4, 0.4])  # sharp where named, but most of the water is elsewhere
    assert not rule.named_mask(spread, warned_before=False).any()
    with pytest.raises(ConfigError):
        WarningRule(probability=0.0)


def _case(probability: list[list[float]]) -> StormCase:
    """Nodes A, B flood (at +30 and +50 min), C does not; a nowcast every 10 minutes from START."""
    return StormCase(
        "synthetic",
        tuple(START + timedelta(minutes=10 * k) for k in range(len(probability))),
        ("A", "B", "C"),
        np.array(probability),
        {"A": 40.0, "B": 12.0, "C": 3.0},
        {"A": START + timedelta(minutes=30), "B": START + timedelta(minutes=50)},
    )


def test_a_late_first_warning_hits_but_not_in_time() -> None:
    score = score_named(
        [(START, []), (START + timedelta(minutes=40), ["A", "B"])],
        {"A": 40.0, "B": 12.0, "C": 3.0},
        {"A": START + timedelta(minutes=30), "B": START + timedelta(minutes=50)},
    )
    assert score.hit_rate == 1.0 and score.false_alarm_ratio == 0.0
    assert score.hit_rate_in_time == 0.5  # A had flooded 10 minutes before
    assert score.lead_times_s == (600.0,) and score.missed == ("A",)


def test_the_rule_meeting_both_targets_with_the_longest_lead_is_chosen() -> None:
    case = _case([[0.8, 0.4, 0.6], [1.0, 0.6, 0.6], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    eager = WarningRule(probability=0.6, max_expected_far=1.0, min_expected_hit=0.0)  # names C at +0 min
    patient = WarningRule(probability=0.6, max_expected_far=0.1, min_expected_hit=0.9)  # waits for +20 min
    eager_score = score_rule(eager, case)
    assert eager_score.first_warning == START and eager_score.false_alarm_ratio == 0.5
    patient_score = score_rule(patient, case)
    assert patient_score.first_warning == START + timedelta(minutes=20)
    assert patient_score.hit_rate == 1.0 and patient_score.false_alarm_ratio == 0.0
    assert patient_score.lead_times_s == (600.0, 1800.0)
    rule, pooled = choose_rule([eager, patient], [case])
    assert rule is patient and pooled.hit_rate == 1.0 and pooled.median_lead_s == 1200.0
    dry = StormCase("dry", case.times, case.node_ids, case.probability, {"C": 3.0}, {})
    pooled = pool_scores([score_rule(eager, case), score_rule(eager, dry)])
    assert pooled.storms == 1 and pooled.false_warnings == 1 and pooled.false_alarm_ratio == 0.5
    assert pooled.dry_named == 2 and pooled.false_alarm_ratio_all == 0.75  # A and C named in the dry storm too


def test_per_location_scores_count_each_locations_own_first_warning() -> None:
    case = _case([[0.8, 0.4, 0.6], [1.0, 0.6, 0.6], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    eager = WarningRule(probability=0.6, max_expected_far=1.0, min_expected_hit=0.0)
    score = score_rule(eager, case)
    assert score.warned == 2 and score.hit_rate_in_time == 0.5  # the first nowcast named A and C
    assert score.named_ever == 3 and score.false_alarms_ever == 1  # B named at +10 min, before it flooded
    pooled = pool_scores([score])
    assert pooled.location_hit_rate == 1.0 and pooled.location_false_alarm_ratio == pytest.approx(1 / 3)
    late = _case([[0.0, 0.0, 0.0]] * 4 + [[1.0, 1.0, 0.0]])  # named at +40 min: A flooded at +30
    pooled = pool_scores([score_rule(eager, late)])
    assert pooled.location_hit_rate == 0.5 and pooled.location_false_alarm_ratio == 0.0
    dry = StormCase("dry", case.times, case.node_ids, case.probability, {"C": 3.0}, {})
    pooled = pool_scores([score, score_rule(eager, dry)])
    assert pooled.dry_named_ever == 3 and pooled.location_false_alarm_ratio == pytest.approx(4 / 6)
    cautious = WarningRule(probability=1.0, max_expected_far=1.0, min_expected_hit=0.0)  # A at +10, B at +20
    rule, chosen = choose_rule([eager, cautious], [case], per_location=True, max_false_alarm_ratio=0.2)
    assert rule is cautious and chosen.location_hit_rate == 1.0 and chosen.location_false_alarm_ratio == 0.0
    rule, _ = choose_rule([eager, cautious], [case])  # by the first nowcast's figures neither meets both targets
    assert rule is cautious


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with swmm_pool(1) as executor:
        yield executor


def test_ensemble_warnings_on_a_pystorms_network(pool: ProcessPoolExecutor) -> None:
    path = Path(pystorms.__file__).parent / "networks" / "gamma.inp"
    try:
        check_swmm(path)
    except ModelImportError as exc:
        pytest.skip(f"SWMM rejects {path.name}: {exc}")
    network = read_swmm(path)
    step = timedelta(minutes=5)
    rain = [0.0] * 6 + [45.0] * 18 + [0.0] * 6  # mm/h, 5-minute steps: 67.5 mm in 1.5 h
    casts = []
    previous = None
    for k in (6, 12):
        cast = ensemble_nowcast(
            network,
            now=START + k * step,
            observed_rain_mm_h=rain[:k],
            futures=forecast_futures(rain[k:], sigma=0.4, members=3),
            rain_step=step,
            horizon=timedelta(hours=3),
            previous=previous,
            executor=pool,
        )
        casts.append(cast)
        previous = cast
    first, second = casts
    volumes = first.event_volume_m3
    assert volumes.shape == (3, len(first.node_ids))
    assert np.all(volumes[0] <= volumes[1] + 1e-6) and np.all(volumes[1] <= volumes[2] + 1e-6)  # more rain, more water
    probability = first.probability(min_volume_m3=1.0)
    assert probability.max() == pytest.approx(1.0) and set(np.round(probability * 3, 6)) <= {0.0, 1.0, 2.0, 3.0}
    assert float(second.so_far_m3.sum()) > 0.0  # the event's water so far goes on through the hot start
    assert float(second.so_far_m3.sum()) >= float(first.so_far_m3.sum())
    named = WarningRule(probability=2 / 3, max_expected_far=0.5, min_expected_hit=0.5, min_volume_m3=1.0).named(
        second, warned_before=False
    )
    assert named, "67.5 mm in 1.5 h floods the gamma network"
    model = PondingModel(network, None)
    city = City(name="gamma", crs="EPSG:3857", networks={Network.DRAINAGE: network})
    assets = RiskAssets.for_city(city, model)
    central = second.central()
    order = [central.node_ids.index(n) for n in model.node_ids]
    risk = assess(
        assets,
        model.fill(central.volumes()),
        issued=central.issued,
        source="nowcast",
        node_eta_s=second.eta_s()[order],
    )
    changes, active = alert_changes(risk, {})
    assert changes and active and all(c.kind == "waterlogging" for c in changes)


def test_ensemble_refuses_weights_that_do_not_add_up() -> None:
    network = read_swmm(Path(pystorms.__file__).parent / "networks" / "gamma.inp")
    with pytest.raises(ConfigError, match="add up"):
        ensemble_nowcast(network, now=START, observed_rain_mm_h=[], futures=[RainFuture("half", 0.5, (1.0,))])
    with pytest.raises(ConfigError, match="at least one"):
        ensemble_nowcast(network, now=START, observed_rain_mm_h=[], futures=[])
