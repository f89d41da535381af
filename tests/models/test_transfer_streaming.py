"""The streaming water-leak detector on a network it was not tuned on: WNTR's Net6, fed minute by minute.

A reduced version of ``bench/bench_transfer_streaming.py``: one run of the project's water simulator with the
bench's sensor rule; the detector (default settings) learns on the first day and, as on every network run by
its tanks and pumps, calibrates on the next three; the fifth day is leak-free and judged; at local midnight
of the sixth, the bench's abrupt leak of 10 % of the mean demand (the 5th of its plan) starts and lasts 24 h.

This guards the path that makes Net6 visible at all (without the measured tanks as inputs every statistic is 0:
the 96 tank modes absorb every leak) and the leak the bench finds most clearly. It is not a recall figure: the
bench raises 3 of its 10 leaks (2 clearly above any normal day), and a 10 % abrupt leak at another junction
(JUNCTION-633, 6 h) was not raised in a reduced run like this one.

The night-flow detector's test (7 days) guards its learned quiet hours on Net6 (the bench: 9 of 10 leaks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.transfer_data import net6_inp, place_sensors, plan_leaks, simulate_stream
from models.water_leak import WaterLeakDetector
from simulators.water_scenarios import LeakEvent
from twin.alerts import AlertChange
from twin.sensors import Quantity
from twin.water import read_epanet

from .streams import replay

START = datetime(2025, 2, 28, 16, tzinfo=UTC)  # midnight, 1 March 2025, China Standard Time
JUDGED = START + timedelta(days=4)  # after learning (1 day) and a network with measured tanks' calibration (3)
LEAK_AT = START + timedelta(days=5)


@pytest.fixture(scope="module")
def replayed() -> tuple[list[AlertChange], LeakEvent, WaterLeakDetector]:
    network = read_epanet(net6_inp())
    sensors = place_sensors(network)
    detector = WaterLeakDetector(network, {s.sensor_id: s for s in sensors})
    assert detector.calibration_s == 3 * 86_400.0
    demand = float(detector.response.demand_l_s.sum())  # the network's mean demand, L/s, from its patterns
    # The bench's plan (bench/bench_transfer_streaming.py: 10 leaks over 20 days, seed 12); its 5th is abrupt, 10 %.
    planned = plan_leaks(network, start=START, duration=timedelta(days=20), count=10, mean_demand_l_s=demand, seed=12)[
        4
    ]
    assert planned.growth == "abrupt" and abs(planned.flow_l_s - 0.10 * demand) < 0.01 * demand
    leak = LeakEvent(
        junction_id=planned.junction_id, flow_l_s=planned.flow_l_s, start=LEAK_AT, end=LEAK_AT + timedelta(hours=24)
    )
    assert leak.end is not None
    stream, truth = simulate_stream(network, sensors, start=START, duration=leak.end - START, seed=31, events=[leak])
    assert truth.events[0]["flow_at_full_l_s"] > 0.08 * demand
    changes = replay(detector, stream)
    return changes, leak, detector


def test_the_leak_free_day_raises_nothing(replayed: tuple[list[AlertChange], LeakEvent, WaterLeakDetector]) -> None:
    changes, leak, _detector = replayed
    assert leak.start - JUDGED == timedelta(hours=24)
    assert [c for c in changes if c.ts < leak.start] == []


def test_the_large_abrupt_leak_is_raised_within_24_h(
    replayed: tuple[list[AlertChange], LeakEvent, WaterLeakDetector],
) -> None:
    changes, leak, detector = replayed
    raised = [c for c in changes if c.event == "raised"]
    assert raised, f"not raised; last judgement {detector.last_judgement}"
    assert leak.start <= raised[0].ts <= leak.start + timedelta(hours=24)
    assert (raised[0].detail or {})["statistic"] > (raised[0].detail or {})["threshold"]
    assert (raised[0].detail or {})["estimated_flow_l_s"] > 0


def test_night_flow_learns_net6s_quiet_hours_and_finds_a_2_percent_leak() -> None:
    """Net6 is quietest at 17:00–19:00, not 02:00–04:00: the night-flow detector moves its night there at the end of
    learning (5 days) and finds the bench's abrupt 2 % leak (its 3rd) at that day's verdict, with nothing before."""
    from models.night_flow import NightFlowDetector

    network = read_epanet(net6_inp())
    sensors = [s for s in place_sensors(network) if s.quantity is Quantity.FLOW]  # the inflow meters
    detector = NightFlowDetector(network, {s.sensor_id: s for s in sensors})
    assert detector.unmetered is None and len(detector.sensors) == 42
    demand = 1336.6  # L/s, the bench's mean demand (bench_transfer_streaming's normal month)
    planned = plan_leaks(network, start=START, duration=timedelta(days=20), count=10, mean_demand_l_s=demand, seed=12)[
        2
    ]
    assert planned.growth == "abrupt" and abs(planned.flow_l_s - 0.02 * demand) < 0.01
    leak_at = START + timedelta(days=6)  # local midnight of the 7th day
    leak = LeakEvent(
        junction_id=planned.junction_id, flow_l_s=planned.flow_l_s, start=leak_at, end=leak_at + timedelta(hours=24)
    )
    assert leak.end is not None
    stream, _truth = simulate_stream(network, sensors, start=START, duration=leak.end - START, seed=31, events=[leak])
    changes = replay(detector, stream)
    assert detector.windows == ((17.0, 19.0), (11.0, 17.0))
    assert [v.status for v in detector.verdicts] == ["learning"] * 5 + ["normal", "leak"]
    assert [c.event for c in changes] == ["raised"]
    assert changes[0].ts == leak_at + timedelta(hours=19, minutes=5)
    assert abs(float(changes[0].value or 0.0) - planned.flow_l_s) < 0.3 * planned.flow_l_s  # 26.7 L/s
