"""Drainage warnings on the real SWMM engine: a 10-year, 1-hour design storm on the demo city, levels with 1 cm noise.

Each minute's readings are evaluated as one batch at that minute; SWMM's own node flooding and the noise-free
levels are the truth. The twelve-storm evaluation is ``bench/bench_gas_drainage.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from models.drainage import DrainageDetector, geometry_of
from simulators.rain_scenarios import RainSeries, RainstormScenario
from simulators.scenario import Step
from twin.alerts import AlertChange
from twin.democity.city import build_demo_city
from twin.model import City
from twin.readings import Reading
from twin.sensors import Grade, Network, Quantity
from twin.storms import DEFAULT_FORMULA, FORMULAS

START = datetime(2026, 7, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Storm:
    city: City
    steps: list[Step]
    flooded: dict[str, datetime]  # watched node's sensor → first flooding
    surcharged: set[str]  # sensors whose noise-free level passed the crown


def _replay(detector: DrainageDetector, steps: Iterable[Step]) -> list[AlertChange]:
    changes: list[AlertChange] = []
    for step in steps:
        batch = [Reading(r.sensor_id, r.ts, r.value, 0) for r in step.readings]
        result = detector.evaluate(batch, now=step.ts, suspect=frozenset())
        detector.commit(result)
        changes += result.changes
    return changes


@pytest.fixture(scope="module")
def storm() -> Storm:
    city = build_demo_city()
    rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=10, duration_min=60)
    scenario = RainstormScenario(
        city.networks[Network.DRAINAGE], city.sensors, rain=rain, start=START, level_noise_m=0.01, seed=5
    )
    truth = scenario.ground_truth()
    run = scenario.run()
    levels = {sid for sid, s in city.sensors.items() if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL}
    flooded = {
        f"DL-{e['node_id']}": datetime.fromisoformat(e["start"]) for e in truth.events if f"DL-{e['node_id']}" in levels
    }
    surcharged = {
        sid
        for col, sid in enumerate(run.sensor_ids)
        if sid in levels and float(run.values[:, col].max()) > geometry_of(city, city.sensors[sid]).crown_m
    }
    assert len(flooded) >= 10, "the test storm must flood watched nodes"
    return Storm(city, list(scenario.steps()), flooded, surcharged)


@pytest.fixture(scope="module")
def changes(storm: Storm) -> list[AlertChange]:
    return _replay(DrainageDetector(storm.city.sensors, city=storm.city), storm.steps)


def test_every_flooded_watched_node_is_flagged_overflow_imminent_no_later_than_it_floods(
    storm: Storm, changes: list[AlertChange]
) -> None:
    imminent: dict[str, datetime] = {}
    for c in changes:
        if c.event != "cleared" and c.grade <= int(Grade.II) and c.sensor_id and c.sensor_id not in imminent:
            imminent[c.sensor_id] = c.ts
            assert c.detail is not None and c.detail["overflow_imminent"]
    caught = [s for s, t in storm.flooded.items() if s in imminent and imminent[s] <= t]
    assert len(caught) >= 0.9 * len(storm.flooded), sorted(set(storm.flooded) - set(caught))


def test_surcharge_alerts_are_raised_only_where_the_level_passed_the_crown(
    storm: Storm, changes: list[AlertChange]
) -> None:
    raised = {c.sensor_id for c in changes if c.event == "raised"}
    assert raised <= storm.surcharged
    assert len(raised) >= 0.9 * len(storm.surcharged)


def test_one_alert_per_node_updated_while_it_lasts_and_cleared_when_the_level_falls_back(
    changes: list[AlertChange],
) -> None:
    open_now: set[str] = set()
    for c in changes:
        assert c.kind == "drainage" and c.network == "drainage" and c.cause_key == f"drainage:{c.sensor_id}"
        assert c.message and c.message_en
        if c.event == "raised":
            assert c.cause_key not in open_now
            open_now.add(c.cause_key)
        else:
            assert c.cause_key in open_now
            if c.event == "cleared":
                open_now.remove(c.cause_key)
    assert open_now == set()  # two hours of drain after the rain


def test_projected_time_to_the_rim_is_given_while_rising(changes: list[AlertChange]) -> None:
    etas = [c.detail["eta_s"] for c in changes if c.detail and c.event != "cleared" and "eta_s" in c.detail]
    assert etas and all(e >= 0 for e in etas)


def test_suspect_readings_are_ignored(storm: Storm) -> None:
    detector = DrainageDetector(storm.city.sensors, city=storm.city)
    target = sorted(storm.flooded)[0]
    found: list[AlertChange] = []
    for step in storm.steps:
        batch = [Reading(r.sensor_id, r.ts, r.value, 0) for r in step.readings]
        suspect = frozenset((r.sensor_id, r.ts) for r in batch if r.sensor_id == target)
        result = detector.evaluate(batch, now=step.ts, suspect=suspect)
        detector.commit(result)
        found += result.changes
    assert found and all(c.sensor_id != target for c in found)


def test_state_survives_a_restart_through_json(storm: Storm, changes: list[AlertChange]) -> None:
    first_flood = min(storm.flooded.values())
    half = next(k for k, s in enumerate(storm.steps) if s.ts >= first_flood - timedelta(minutes=3))
    first = DrainageDetector(storm.city.sensors, city=storm.city)
    early = _replay(first, storm.steps[:half])
    second = DrainageDetector(storm.city.sensors, city=storm.city)
    second.load_state(json.loads(json.dumps(first.dump_state())))
    late = _replay(second, storm.steps[half:])
    assert [(c.event, c.cause_key, c.grade, c.ts) for c in early + late] == [
        (c.event, c.cause_key, c.grade, c.ts) for c in changes
    ]
