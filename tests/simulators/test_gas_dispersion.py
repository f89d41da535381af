"""The methane box model: exact steps, steady state, ranking by distance and the 20 %LEL crossing time."""

from __future__ import annotations

import pytest

from simulators.gas_dispersion import (
    SpaceExposure,
    leak_flow_m3_h,
    share_reaching,
    step_concentration,
    time_to_reach,
    to_pct_lel,
)


def test_small_steps_and_one_big_step_agree_and_approach_steady_state() -> None:
    space = SpaceExposure("V1", volume_m3=4.0, distance_m=3.0, air_changes_per_h=0.5)
    inflow = 0.05  # m³/h
    c = 0.0
    for _ in range(600):
        c = step_concentration(c, inflow_m3_h=inflow, volume_m3=space.volume_m3, air_changes_per_h=0.5, dt_h=0.01)
    one = step_concentration(0.0, inflow_m3_h=inflow, volume_m3=4.0, air_changes_per_h=0.5, dt_h=6.0)
    assert c == pytest.approx(one, rel=1e-9)
    steady = inflow / (4.0 * 0.5)
    assert one == pytest.approx(steady * (1 - 2.718281828**-3), rel=1e-6)
    assert to_pct_lel(steady) == pytest.approx(50.0)


def test_crossing_time_matches_the_stepped_model() -> None:
    space = SpaceExposure("V1", volume_m3=4.0, distance_m=3.0)
    t = time_to_reach(20.0, inflow_m3_h=0.05, space=space)
    assert t is not None
    c = step_concentration(0.0, inflow_m3_h=0.05, volume_m3=4.0, air_changes_per_h=0.5, dt_h=t)
    assert to_pct_lel(c) == pytest.approx(20.0)
    assert time_to_reach(20.0, inflow_m3_h=0.01, space=space) is None  # steady state stays below 20 %LEL


def test_nearer_spaces_receive_more() -> None:
    assert share_reaching(2.0) > share_reaching(10.0) > share_reaching(40.0) > 0
    assert share_reaching(0.0) == pytest.approx(0.3)
    assert leak_flow_m3_h(0.001) == pytest.approx(5.0, rel=1e-3)
