"""The water leak detector on the demo city, driven by real EPANET scenarios (a small subset of the bench)."""

from __future__ import annotations

import json
from datetime import timedelta

import networkx as nx
import numpy as np
import pytest

from models.water_leak import LeakSettings, WaterLeakDetector, cause_key, network_response
from simulators.water_scenarios import LeakEvent, WaterScenario
from twin.model import PipeNetwork
from twin.readings import Reading
from twin.sensors import Sensor

from .bench_modules import load_bench

bench = load_bench("bench_water_leak")
START = bench.START
LEAD_IN = bench.LEAD_IN


@pytest.fixture(scope="module")
def demo() -> tuple[PipeNetwork, dict[str, Sensor]]:
    network, sensors = bench.demo_network()
    return network, sensors


def test_the_response_of_a_leak_is_largest_near_it(demo: tuple[PipeNetwork, dict[str, Sensor]]) -> None:
    network, sensors = demo
    detector = WaterLeakDetector(network, sensors)
    response = detector.response
    column = response.leak[:, response.candidates.index("J0505")]
    pressure_rows = [k for k, (kind, _asset) in enumerate(response.observed) if kind == "pressure"]
    nearest = min(pressure_rows, key=lambda k: float(column[k]))
    node = network.nodes[response.observed[nearest][1]]
    leak_at = network.nodes["J0505"]
    assert ((node.x_m - leak_at.x_m) ** 2 + (node.y_m - leak_at.y_m) ** 2) ** 0.5 < 150.0
    assert float(column[pressure_rows].max()) <= 0.0  # a leak lowers every pressure
    assert network_response(network, response.observed) is response  # computed once, cached


def test_a_burst_is_raised_graded_located_and_cleared_when_repaired(
    demo: tuple[PipeNetwork, dict[str, Sensor]],
) -> None:
    network, sensors = demo
    leak_at = START + LEAD_IN + timedelta(hours=9.5)
    burst = LeakEvent(junction_id="J0303", flow_l_s=30.0, start=leak_at, end=leak_at + timedelta(hours=1))
    scenario = WaterScenario(
        network, sensors, start=START, duration=LEAD_IN + timedelta(hours=12), events=[burst], seed=31
    )
    changes = bench.replay(WaterLeakDetector(network, sensors), scenario)
    raised = [c for c in changes if c.event == "raised"]
    assert len(raised) == 1, [(c.event, c.ts) for c in changes]
    alert = raised[0]
    assert leak_at <= alert.ts <= leak_at + timedelta(minutes=15)
    assert alert.cause_key == cause_key(alert.district) and alert.kind == "water_leak"
    assert alert.detail is not None
    graph = bench.pipe_graph(network)
    best = str(alert.detail["candidates"][0]["asset"]).rsplit(":", 1)[1]
    assert nx.shortest_path_length(graph, best, "J0303", weight="weight") <= 200.0  # near it when raised
    during = [c for c in changes if c.cause_key == alert.cause_key and c.ts < leak_at + timedelta(hours=1)]
    latest = [str(c["asset"]) for c in (during[-1].detail or {})["candidates"][:3]]
    assert "water:node:J0303" in latest  # and among the top 3 once the evidence has gathered
    assert max(c.grade for c in during) <= 2  # a burst of 30 L/s is grade II or worse from the start
    assert 15.0 <= max(float(c.detail["estimated_flow_l_s"]) for c in during if c.detail) <= 60.0
    cleared = [c for c in changes if c.event == "cleared"]
    assert len(cleared) == 1 and cleared[0].ts > leak_at + timedelta(hours=1)
    # The slow deviation (and the hold) take a while to come back: cleared within two hours of the repair.
    assert cleared[0].ts <= leak_at + timedelta(hours=3)


@pytest.mark.parametrize(
    ("where", "flow_l_s", "hour", "seed"),
    [({"link_id": "P0120", "position": 0.3}, 8.0, 14.2, 41), ({"junction_id": "J0709"}, 6.0, 3.4, 42)],
)
def test_leaks_are_raised_within_two_hours_near_where_they_are(
    demo: tuple[PipeNetwork, dict[str, Sensor]], where: dict[str, object], flow_l_s: float, hour: float, seed: int
) -> None:
    network, sensors = demo
    case = bench.LeakCase(flow_l_s, hour, seed, **where)
    outcome = bench.run_case(network, sensors, case, seed)
    assert outcome.early_alarms == 0
    assert outcome.delay_min is not None and outcome.delay_min <= 120.0
    assert outcome.distance_m is not None and outcome.distance_m <= 400.0


def test_a_normal_day_raises_nothing(demo: tuple[PipeNetwork, dict[str, Sensor]]) -> None:
    network, sensors = demo
    outcome = bench.run_case(network, sensors, None, 4242, normal_days=1.0)
    assert outcome.judged_h == 24.0
    assert outcome.early_alarms == 0


def test_state_survives_json_and_suspect_readings_change_nothing(
    demo: tuple[PipeNetwork, dict[str, Sensor]],
) -> None:
    network, sensors = demo
    scenario = WaterScenario(network, sensors, start=START, duration=LEAD_IN + timedelta(hours=1), seed=7)
    batches = list(bench.batches(scenario))
    detector = WaterLeakDetector(network, sensors)
    for ts, readings in batches[:-1]:
        detector.commit(detector.evaluate(readings, now=ts, suspect=frozenset()))
    restored = WaterLeakDetector(network, sensors)
    restored.load_state(json.loads(json.dumps(detector.dump_state(), allow_nan=False)))
    ts, readings = batches[-1]
    a = detector.evaluate(readings, now=ts, suspect=frozenset())
    b = restored.evaluate(readings, now=ts, suspect=frozenset())
    assert a.changes == b.changes
    assert np.allclose(a.state.dev, b.state.dev) and np.allclose(a.state.baseline, b.state.baseline)
    assert (a.state.cross_num, a.state.cross_den) == (b.state.cross_num, b.state.cross_den)
    # The calibration day scales the demand-noise covariance: the simulator draws each consumer's demand with a
    # relative spread of 10 % (variance 0.01), which the fitted scale should find, give or take.
    alpha = detector.dump_state()["cross_num"] / detector.dump_state()["cross_den"]
    assert 0.004 < alpha < 0.025, alpha

    sid = next(iter(detector.sensors))  # the first row
    wild = [r if r.sensor_id != sid else Reading(sid, r.ts, r.value + 500.0, 0) for r in readings]
    c = detector.evaluate(wild, now=ts, suspect=frozenset({(sid, ts)}))
    before = detector.dump_state()["sensors"][sid]
    assert c.state.dev[0] == before["dev"] and c.state.last_ts[0] == before["last_ts"]
    assert np.allclose(c.state.dev[1:], a.state.dev[1:])


def test_batches_of_several_minutes_in_any_order_learn_what_one_minute_batches_learn(
    demo: tuple[PipeNetwork, dict[str, Sensor]],
) -> None:
    network, sensors = demo
    scenario = WaterScenario(network, sensors, start=START, duration=timedelta(hours=25), seed=8)
    batches = list(bench.batches(scenario))
    by_minute = WaterLeakDetector(network, sensors)
    for ts, readings in batches:
        by_minute.commit(by_minute.evaluate(readings, now=ts, suspect=frozenset()))
    by_five = WaterLeakDetector(network, sensors)
    rng = np.random.default_rng(3)
    for k in range(0, len(batches), 5):
        part = [r for _ts, readings in batches[k : k + 5] for r in readings]
        part.append(part[0])  # a reading delivered twice counts once
        order = rng.permutation(len(part))
        by_five.commit(by_five.evaluate([part[i] for i in order], now=batches[k : k + 5][-1][0], suspect=frozenset()))
    a, b = by_minute.dump_state(), by_five.dump_state()
    assert a["first_ts"] == b["first_ts"]
    for sid, entry in a["sensors"].items():
        other = b["sensors"][sid]
        assert np.allclose(entry["baseline"], other["baseline"]) and entry["count"] == other["count"]
        assert np.isclose(entry["dev"], other["dev"]) and np.isclose(entry["fast"], other["fast"])
        assert entry["last_ts"] == other["last_ts"]
    assert any(abs(entry["dev"]) > 0 for entry in a["sensors"].values())  # past learning: deviations are tracked


def test_the_benchs_what_if_layouts_meter_exactly_the_pipes_between_zones(
    demo: tuple[PipeNetwork, dict[str, Sensor]],
) -> None:
    network, sensors = demo
    zone = bench.zones_by_bisection(network, 8)
    sizes = np.bincount(list(zone.values()))
    assert len(sizes) == 8 and sizes.max() - sizes.min() <= 1
    _net, metered = bench.demo_network(bench.WhatIf(district_meters=8))
    added = set(metered) - set(sensors)
    crossing = {
        f"WF-{k}"
        for k, link in network.links.items()
        if link.from_id in zone and link.to_id in zone and zone[link.from_id] != zone[link.to_id]
    }
    assert added == crossing - set(sensors) and added
    assert all(metered[s].quantity.value == "flow" and metered[s].asset_id == f"water:{s[3:]}" for s in added)
    _net, dense = bench.demo_network(bench.WhatIf(pressure_every=1))
    pressure = {s for s, v in dense.items() if v.quantity.value == "pressure"}
    junctions = {n for n, node in network.nodes.items() if node.kind.value == "junction"}
    assert pressure == {f"WP-{n}" for n in junctions}


def test_the_long_calibration_can_be_asked_for_on_a_network_without_controls(
    demo: tuple[PipeNetwork, dict[str, Sensor]],
) -> None:
    network, sensors = demo
    assert WaterLeakDetector(network, sensors).calibration_s == 24 * 3600.0
    asked = WaterLeakDetector(network, sensors, settings=LeakSettings(long_calibration=True))
    assert asked.calibration_s == LeakSettings().cycle_calibrate_s == 3 * 24 * 3600.0
