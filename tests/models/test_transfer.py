"""The offline detector on a network it was not tuned on: WNTR's Net6, simulated by the project's water simulator.

A reduced version of ``bench/bench_transfer.py``: a normal week, then three days with one large leak; the
detector runs with its default settings (chosen on BATADAL's normal year, never on Net6).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from models.evaluation import batadal_score
from models.offline import fit_detector, score_detector
from models.transfer_data import (
    balance_check,
    column_name,
    leak_labels,
    leak_outcomes,
    mean_demand_l_s,
    net6_inp,
    place_sensors,
    plan_leaks,
    simulate_table,
)
from simulators.water_scenarios import LeakEvent
from twin.model import NodeKind, PipeNetwork
from twin.sensors import Quantity
from twin.water import read_epanet

START = datetime(2025, 2, 28, 16, tzinfo=UTC)  # midnight, 1 March 2025, China Standard Time
NORMAL = timedelta(days=7)
LEAKY = timedelta(days=3)


@pytest.fixture(scope="module")
def net6() -> PipeNetwork:
    return read_epanet(net6_inp())


@pytest.fixture(scope="module")
def transfer(net6: PipeNetwork) -> tuple[pd.DataFrame, pd.DataFrame, list[LeakEvent], float]:
    sensors = place_sensors(net6)
    normal, truth = simulate_table(net6, sensors, start=START, duration=NORMAL, seed=21)
    demand = mean_demand_l_s(truth)
    leaks = plan_leaks(
        net6, start=START + NORMAL, duration=LEAKY, count=1, mean_demand_l_s=demand, seed=22, fractions=(0.10,)
    )
    leaky, _ = simulate_table(net6, sensors, start=START + NORMAL, duration=LEAKY, seed=22, events=leaks)
    return normal, leaky, leaks, demand


def test_sensors_are_placed_by_the_rule(net6: PipeNetwork) -> None:
    sensors = place_sensors(net6, pressure_count=25)
    by_kind = {q: [s for s in sensors if s.quantity is q] for q in Quantity}
    assert len(by_kind[Quantity.PRESSURE]) == 25
    assert len(by_kind[Quantity.LEVEL]) == sum(n.kind is NodeKind.TANK for n in net6.nodes.values()) == 32
    storage = {n.node_id for n in net6.nodes.values() if n.kind in (NodeKind.TANK, NodeKind.RESERVOIR)}
    for sensor in by_kind[Quantity.FLOW]:
        link = net6.links[sensor.sensor_id.removeprefix("WF-")]
        assert link.from_id in storage or link.to_id in storage
    # Spread: no two pressure sensors closer than a tenth of the network's extent.
    xy = np.array([[s.x_m, s.y_m] for s in by_kind[Quantity.PRESSURE]])
    gaps = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(axis=2)) + np.eye(len(xy)) * 1e12
    extent = np.ptp([[n.x_m, n.y_m] for n in net6.nodes.values()], axis=0).max()
    assert gaps.min() > extent / 10
    assert len({column_name(s) for s in sensors}) == len(sensors)


def test_leaks_do_not_overlap_and_are_sized_from_the_demand(net6: PipeNetwork) -> None:
    leaks = plan_leaks(net6, start=START, duration=timedelta(days=20), count=10, mean_demand_l_s=1000.0, seed=1)
    assert [round(leak.flow_l_s) for leak in leaks] == [5, 10, 20, 50, 100] * 2
    for earlier, later in itertools.pairwise(leaks):
        assert earlier.end is not None and later.start >= earlier.end + timedelta(hours=24)
    with pytest.raises(ValueError, match="do not fit"):
        plan_leaks(net6, start=START, duration=timedelta(days=5), count=10, mean_demand_l_s=1000.0, seed=1)


def test_a_large_leak_on_net6_is_flagged_within_hours_with_the_batadal_settings(
    transfer: tuple[pd.DataFrame, pd.DataFrame, list[LeakEvent], float],
) -> None:
    normal, leaky, leaks, demand = transfer
    assert normal.shape == (24 * 7, 25 + 42 + 32) and leaky.shape == (24 * 3, normal.shape[1])
    assert 1000.0 < demand < 1700.0  # L/s, Net6's mean demand with the simulator's variation
    result = score_detector(fit_detector(normal), leaky)
    truth = leak_labels(leaky.index, leaks)
    (outcome,) = leak_outcomes(leaky.index, result["flag"], leaks)
    # Measured: flagged 2 h after it starts, 92 % of its hours flagged, 15 % of the other hours, S 0.90.
    assert outcome.detected and outcome.delay_h is not None and outcome.delay_h <= 4.0
    assert result["flag"].to_numpy()[truth == 1].mean() >= 0.75
    assert result["flag"].to_numpy()[truth == 0].mean() <= 0.25
    assert batadal_score(truth, result["flag"]).s >= 0.8


def test_the_daily_balance_sets_a_day_of_extra_supply_apart_and_leaves_a_normal_month_alone() -> None:
    rng = np.random.default_rng(5)
    hours = pd.date_range(START, periods=24 * 40, freq="h")
    day = np.sin(2 * np.pi * np.arange(len(hours)) / 24.0)
    wetness = np.repeat(rng.normal(1.0, 0.05, 40), 24)  # each day's demand factor moves both flows alike
    table = pd.DataFrame(
        {
            "F_supply": 100.0 * wetness * (1.0 + 0.3 * day) + rng.normal(0.0, 1.0, len(hours)),
            "F_tank": 40.0 * wetness * (1.0 + 0.3 * day) + rng.normal(0.0, 1.0, len(hours)),
            "L_tank": 3.0 + 0.5 * day + rng.normal(0.0, 0.01, len(hours)),
            "P_node": 300.0 + rng.normal(0.0, 1.0, len(hours)),  # pressures are not part of the balance
        },
        index=hours,
    )
    normal, period = table.iloc[: 24 * 30], table.iloc[24 * 30 :].copy()
    start = period.index[48].to_pydatetime()
    leak = LeakEvent(junction_id="J1", flow_l_s=20.0, start=start, end=start + timedelta(hours=24))
    quiet = balance_check(normal, period, [leak], modes=1)
    period.loc[(period.index >= start) & (period.index < start + timedelta(hours=24)), "F_supply"] += 20.0
    leaky = balance_check(normal, period, [leak], modes=1)
    assert quiet.peak_ratio[0] < 1.0 <= leaky.peak_ratio[0]
    assert leaky.quiet_above == quiet.quiet_above < 0.05
