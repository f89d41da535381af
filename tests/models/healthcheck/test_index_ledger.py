"""Health index and diagnosis (pure), and the treatment ledger's diagnose → treat → re-check cycle on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from models.healthcheck.index import band, diagnose, health_index, score
from models.healthcheck.indicators import Evidence, IndicatorValue, compute_indicator, load_definitions
from models.healthcheck.ledger import (
    LedgerError,
    UnknownProblemError,
    add_task,
    ledger,
    open_problems,
    recheck,
    set_task_status,
)
from twin.store.db import DictConnection
from twin.store.readings import ReadingStore
from twin.store.schema import current_mode

DEFS = load_definitions()
T0 = datetime(2026, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _value(indicator: str, value: float | None, district: str = "") -> IndicatorValue:
    return IndicatorValue(indicator, district, T0, T0 + DAY, value, Evidence(sensors=("X",)))


def test_scores_fall_linearly_between_band_edges_both_ways() -> None:
    leak = DEFS["water_leakage_rate"]  # lower is better: 9, 10, 12, 15
    assert score(leak, 8.0) == 100.0 and band(leak, 9.0) == "green"
    assert score(leak, 9.5) == pytest.approx(87.5) and band(leak, 9.5) == "yellow"
    assert score(leak, 11.0) == pytest.approx(62.5) and band(leak, 11.0) == "orange"
    assert score(leak, 13.5) == pytest.approx(25.0) and band(leak, 13.5) == "red"
    assert score(leak, 30.0) == 0.0
    online = DEFS["sensors_online"]  # higher is better: 98, 95, 90, 80
    assert score(online, 99.0) == 100.0
    assert score(online, 96.5) == pytest.approx(87.5) and band(online, 96.5) == "yellow"
    assert score(online, 85.0) == pytest.approx(25.0) and band(online, 85.0) == "red"


def test_index_is_the_weighted_mean_over_indicators_with_a_value() -> None:
    values = [
        _value("water_leakage_rate", 9.5),  # 87.5, weight 0.20
        _value("sensors_online", 85.0),  # 25, weight 0.04
        _value("gas_leak_alarms", None),  # no value: left out
        _value("water_leakage_mnf", 30.0),  # weight 0: shown, not scored
        _value("water_leakage_rate", 20.0, district="吉州区"),  # another district: ignored
    ]
    index = health_index(DEFS, values, "")
    assert index.value == pytest.approx((0.20 * 87.5 + 0.04 * 25.0) / 0.24)
    assert len(index.parts) == len(DEFS.indicators)
    assert health_index(DEFS, [], "").value is None


def test_diagnosis_opens_a_problem_for_every_value_outside_the_green_band() -> None:
    values = [_value("water_leakage_rate", 13.0), _value("sensors_online", 99.0), _value("gas_leak_alarms", 1.0)]
    problems = diagnose(DEFS, values)
    assert [(p.indicator_id, p.band) for p in problems] == [
        ("water_leakage_rate", "red"),
        ("gas_leak_alarms", "yellow"),
    ]
    assert problems[0].evidence.sensors == ("X",) and problems[0].target == 9.0


def _methane_day(db: DictConnection, schema: str, day: datetime, minutes_over: int) -> None:
    mode = current_mode(db, schema=schema)
    assert mode is not None
    rows = [("G-M-003", day + timedelta(seconds=30 * k), 40.0 if k < 2 * minutes_over else 1.0, 0) for k in range(2880)]
    with db.transaction():
        ReadingStore(db, mode=mode).write(rows)


def test_a_problem_is_treated_then_rechecked_closed_or_reopened(db: DictConnection, schema: str) -> None:
    # the health check tables come with the migrations (migration 7)
    methane = DEFS["methane_exceedance_hours"]
    _methane_day(db, schema, T0, minutes_over=180)  # 3 h over 20 %LEL in 青原区: orange
    before = compute_indicator(db, methane, definitions=DEFS, start=T0, end=T0 + DAY, district="青原区")
    assert before.value == pytest.approx(3.0)
    problems = [p for p in diagnose(DEFS, [before])]
    assert [p.band for p in problems] == ["orange"]
    (pid,) = open_problems(db, problems, start=T0, end=T0 + DAY)
    assert open_problems(db, problems, start=T0, end=T0 + DAY) == [pid]  # diagnosing again finds it
    task = add_task(db, pid, title="更换地下车库燃气立管接头", owner="青原燃气所", deadline=date(2026, 5, 20))
    set_task_status(db, task, "done")
    with pytest.raises(LedgerError):
        set_task_status(db, task, "finished")
    with pytest.raises(UnknownProblemError):
        add_task(db, 999_999, title="x", owner="y", deadline=date(2026, 5, 20))

    still = T0 + 30 * DAY  # the re-check month still leaks for 30 min: yellow, the problem reopens
    _methane_day(db, schema, still, minutes_over=30)
    after = compute_indicator(db, methane, definitions=DEFS, start=still, end=still + DAY, district="青原区")
    assert recheck(db, pid, after, definitions=DEFS) == "reopened"
    fixed = T0 + 60 * DAY
    _methane_day(db, schema, fixed, minutes_over=0)
    after = compute_indicator(db, methane, definitions=DEFS, start=fixed, end=fixed + DAY, district="青原区")
    assert after.value == 0.0
    assert recheck(db, pid, after, definitions=DEFS) == "closed"
    (entry,) = ledger(db, start=T0, end=T0 + DAY)
    assert entry["status"] == "closed" and entry["closed_at"] is not None
    assert [t["status"] for t in entry["tasks"]] == ["done"]
    assert [(c["before_value"], c["after_value"], c["outcome"]) for c in entry["rechecks"]] == [
        (3.0, 0.5, "reopened"),
        (3.0, 0.0, "closed"),
    ]
    assert entry["evidence"]["sensors"] == ["G-M-003"]
    wrong = compute_indicator(db, methane, definitions=DEFS, start=fixed, end=fixed + DAY, district="吉州区")
    with pytest.raises(LedgerError, match="吉州区"):
        recheck(db, pid, wrong, definitions=DEFS)
