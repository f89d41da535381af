"""Minimum night flow in ``lifeline detect --inp`` (:mod:`models.night_flow_table`), on WNTR's ky10 hourly tables.

ky10's bench sensor rule meters every link between a tank or reservoir and the network (18 flows), so its inflow is
known. 8 normal days are simulated (the detector learns its baseline on the first 5 judged), then 4 days with an
abrupt leak of 9.5 L/s (10 % of the mean demand) from local midnight of the second: it must be flagged that day,
at the day's verdict, and nothing before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import wntr

from models.night_flow_table import night_flow_on_tables, utc_times
from models.transfer_data import place_sensors, simulate_table, write_wide_csv
from simulators.water_scenarios import LeakEvent
from twin.model import PipeNetwork
from twin.water import read_epanet

START = datetime(2025, 5, 31, 16, tzinfo=UTC)  # local midnight, 1 June 2025 (UTC+8)
LEAK_AT = START + timedelta(days=9)
KY10 = Path(wntr.__file__).parent / "library" / "networks" / "ky10.inp"


@pytest.fixture(scope="module")
def tables() -> tuple[PipeNetwork, pd.DataFrame, pd.DataFrame, LeakEvent]:
    network = read_epanet(KY10)
    sensors = place_sensors(network)
    normal, _ = simulate_table(network, sensors, start=START, duration=timedelta(days=8), seed=51)
    leak = LeakEvent(junction_id="J-6", flow_l_s=9.5, start=LEAK_AT, end=LEAK_AT + timedelta(days=2))
    leaky, _ = simulate_table(
        network, sensors, start=START + timedelta(days=8), duration=timedelta(days=4), seed=52, events=[leak]
    )
    return network, normal, leaky, leak


def _lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_leak_is_flagged_at_its_first_verdict_and_nothing_before(
    tables: tuple[PipeNetwork, pd.DataFrame, pd.DataFrame, LeakEvent],
) -> None:
    network, normal, leaky, leak = tables
    night = night_flow_on_tables(network, normal, leaky)
    assert night.unmetered is None and len(night.meters) == 18
    assert night.changes_normal == []
    flagged = leaky.index[night.flags]
    assert len(flagged) > 0 and flagged[0] >= pd.Timestamp(leak.start)
    assert flagged[0] < pd.Timestamp(leak.start) + pd.Timedelta(hours=24)
    raised = [c for c in night.changes if c.event == "raised"]
    # The estimated excess, L/s: the emitter loses about 5.5 L/s at its pressure (5.8 estimated when written).
    assert len(raised) == 1 and 3.0 < float(raised[0].value or 0.0) < 14.0


def test_timestamps_without_a_zone_are_local_time(
    tables: tuple[PipeNetwork, pd.DataFrame, pd.DataFrame, LeakEvent],
) -> None:
    network, normal, leaky, _leak = tables
    local = [t.index.tz_convert("Asia/Shanghai").tz_localize(None) for t in (normal, leaky)]
    assert (utc_times(local[1], 8.0) == leaky.index).all()
    naive = night_flow_on_tables(network, normal.set_axis(local[0]), leaky.set_axis(local[1]))
    assert (naive.flags == night_flow_on_tables(network, normal, leaky).flags).all()


def test_an_inflow_not_metered_everywhere_is_not_judged(
    tables: tuple[PipeNetwork, pd.DataFrame, pd.DataFrame, LeakEvent],
) -> None:
    network, normal, leaky, _leak = tables
    meter = next(c for c in leaky.columns if c.startswith("F_"))
    night = night_flow_on_tables(network, normal.drop(columns=[meter]), leaky.drop(columns=[meter]))
    assert night.unmetered is not None and "without a flow sensor" in night.unmetered
    assert not night.flags.any()


def test_detect_with_inp_flags_the_leak_and_says_why(
    tmp_path: Path, tables: tuple[PipeNetwork, pd.DataFrame, pd.DataFrame, LeakEvent]
) -> None:
    _network, normal, leaky, leak = tables
    write_wide_csv(normal, tmp_path / "normal.csv")
    write_wide_csv(leaky, tmp_path / "leaks.csv")
    args = ["detect", "--fit", str(tmp_path / "normal.csv"), "--csv", str(tmp_path / "leaks.csv")]
    plain = _lifeline(*args, "--out", str(tmp_path / "plain.csv"))
    assert plain.returncode == 0, plain.stderr
    assert "night flow" not in plain.stdout
    run = _lifeline(
        *args, "--out", str(tmp_path / "flags.csv"), "--inp", str(KY10), "--explain", str(tmp_path / "why.csv")
    )
    assert run.returncode == 0, run.stderr
    assert "night flow: 18 inflow meters" in run.stdout and "1 leak alerts raised" in run.stdout
    flags = pd.read_csv(tmp_path / "flags.csv")
    plain_flags = pd.read_csv(tmp_path / "plain.csv")
    assert list(flags.columns) == ["timestamp", "flag", "score"]
    assert (flags["flag"] >= plain_flags["flag"]).all()  # night flow only adds flags
    why = pd.read_csv(tmp_path / "why.csv")
    night_rows = why[why["cause"].str.contains("night_flow")]
    assert len(night_rows) > 0
    assert pd.to_datetime(night_rows["timestamp"]).min() >= pd.Timestamp(leak.start)
