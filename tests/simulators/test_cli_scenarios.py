"""`lifeline simulate leak | gas-leak | scenario`: engine scenarios from the command line, with ground truth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from simulators.scenario_file import load_plan
from twin.democity.city import build_demo_city
from twin.errors import ConfigError
from twin.model import City


def _lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _truth(folder: Path) -> dict[str, object]:
    truth: dict[str, object] = orjson.loads((folder / "ground_truth.json").read_bytes())
    return truth


def test_leak_and_gas_leak_commands_write_recordings_with_their_events(tmp_path: Path) -> None:
    start = "2026-07-01T00:00:00+08:00"
    water = _lifeline(
        "simulate",
        "leak",
        "--demo",
        "--no-publish",
        "--junction",
        "J0505",
        "--flow",
        "30",
        "--at",
        "1",
        "--hours",
        "3",
        "--start",
        start,
        "--output",
        str(tmp_path / "w"),
    )
    assert water.returncode == 0, water.stderr
    events = _truth(tmp_path / "w")["events"]
    assert isinstance(events, list) and events[0]["kind"] == "burst"
    gas = _lifeline(
        "simulate",
        "gas-leak",
        "--demo",
        "--no-publish",
        "--pipe",
        "LP0007",
        "--flow",
        "30",
        "--at",
        "0.5",
        "--hours",
        "2",
        "--start",
        start,
        "--output",
        str(tmp_path / "g"),
    )
    assert gas.returncode == 0, gas.stderr
    assert (tmp_path / "g" / "recording.jsonl").stat().st_size > 0
    missing = _lifeline("simulate", "leak", "--demo", "--no-publish")
    assert missing.returncode == 2 and "--junction or --pipe" in missing.stderr
    unknown = _lifeline(
        "simulate",
        "leak",
        "--demo",
        "--no-publish",
        "--junction",
        "NOPE",
        "--hours",
        "1",
        "--at",
        "0.5",
        "--output",
        str(tmp_path / "x"),
    )
    assert unknown.returncode == 1 and "NOPE" in unknown.stderr


def test_scenario_file_combines_storm_leak_and_faults(tmp_path: Path) -> None:
    plan = tmp_path / "drill.toml"
    plan.write_text(
        """
[scenario]
name = "汛期综合演练"
start = "2026-06-01T08:00:00+08:00"
hours = 3
seed = 7

[rainstorm]
return_period = 20
duration_min = 60

[[water.leak]]
junction = "J0707"
flow_l_s = 8
at_h = 1
growth = "incipient"
ramp_h = 1

[[fault]]
kind = "stuck"
sensor = "RG-01"
from_h = 0.5
to_h = 1.5
""",
        encoding="utf-8",
    )
    result = _lifeline("simulate", "scenario", str(plan), "--demo", "--no-publish", "--output", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    truth = _truth(tmp_path / "o")
    scenario = truth["scenario"]
    assert isinstance(scenario, dict) and [p["kind"] for p in scenario["parts"]] == ["rainstorm", "water_supply"]
    assert truth["faults"] == [
        {
            "kind": "stuck",
            "sensor_id": "RG-01",
            "start": "2026-06-01T00:30:00+00:00",
            "end": "2026-06-01T01:30:00+00:00",
            "magnitude": 0.0,
        }
    ]
    lines = (tmp_path / "o" / "recording.jsonl").read_bytes().splitlines()
    topics = {orjson.loads(line)["topic"].split("/")[2] for line in lines}
    assert topics == {"drainage", "rain", "water"}
    assert any(orjson.loads(line)["label"] == "stuck" for line in lines)
    times = [orjson.loads(line)["at"] for line in lines]
    assert times == sorted(times)

    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nstart = "2026-06-01T08:00:00"\nhours = 1\n[rainstorm]\nreturn_period = 5\n')
    result = _lifeline("simulate", "scenario", str(bad), "--demo", "--no-publish")
    assert result.returncode == 1 and "bad.toml [scenario]: start needs a UTC offset" in result.stderr


# One hour of a gas leak in the demo city, the methane detectors reporting regularly or also on change.
GAS_START = "2026-07-01T00:00:00+08:00"
GAS_LEAK = (
    "simulate",
    "gas-leak",
    "--demo",
    "--no-publish",
    "--pipe",
    "LP0007",
    "--flow",
    "30",
    "--at",
    "0.25",
    "--hours",
    "1",
    "--start",
    GAS_START,
    "--seed",
    "3",
)


def _methane_readings(folder: Path) -> int:
    lines = (folder / "recording.jsonl").read_bytes().splitlines()
    return sum(1 for line in lines if orjson.loads(line)["sensor_id"].startswith("GM-"))


@pytest.fixture(scope="module")
def demo_city() -> City:
    return build_demo_city()


@pytest.fixture(scope="module")
def gas_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gas")
    regular = _lifeline(*GAS_LEAK, "--output", str(folder / "regular"))
    assert regular.returncode == 0, regular.stderr
    change = _lifeline(
        *GAS_LEAK,
        "--methane-report",
        "change",
        "--methane-sample-s",
        "10",
        "--methane-change",
        "2.5",
        "--output",
        str(folder / "change"),
    )
    assert change.returncode == 0, change.stderr
    return {"regular": folder / "regular", "change": folder / "change"}


def test_gas_leak_with_methane_reported_on_change_publishes_more_methane_readings(
    gas_runs: dict[str, Path], tmp_path: Path
) -> None:
    regular, change = _truth(gas_runs["regular"]), _truth(gas_runs["change"])
    assert isinstance(regular["scenario"], dict) and regular["scenario"]["methane_reporting"] is None
    assert isinstance(regular["summary"], dict) and "readings_on_change" not in regular["summary"]
    assert isinstance(change["scenario"], dict)
    assert change["scenario"]["methane_reporting"] == {"sample_s": 10, "change_pct_lel": 2.5, "alarm_pct_lel": 20.0}
    assert isinstance(change["summary"], dict)
    on_change = change["summary"]["readings_on_change"]
    assert isinstance(on_change, int) and on_change > 0
    assert _methane_readings(gas_runs["change"]) == _methane_readings(gas_runs["regular"]) + on_change
    assert change["summary"]["readings"] == regular["summary"]["readings"] + on_change
    # Values the scenario cannot use are click errors, not tracebacks.
    odd = _lifeline(
        *GAS_LEAK, "--methane-report", "change", "--methane-sample-s", "7", "--output", str(tmp_path / "odd")
    )
    assert odd.returncode == 1, odd.stderr
    assert "methane sampling period 7 s must divide the sensor step 60 s" in odd.stderr
    assert "Traceback" not in odd.stderr
    for option, value in (("--methane-change", "-1"), ("--methane-sample-s", "0"), ("--methane-report", "often")):
        refused = _lifeline(*GAS_LEAK, option, value, "--output", str(tmp_path / "refused"))
        assert refused.returncode == 2 and option in refused.stderr and "Traceback" not in refused.stderr, (
            refused.stderr
        )


GAS_PLAN = """
[scenario]
start = "2026-07-01T00:00:00+08:00"
hours = 1
seed = 3

[[gas.leak]]
pipe = "LP0007"
flow_m3_h = 30
at_h = 0.25
"""


def test_scenario_file_methane_reporting_table_gives_the_same_run_as_the_command(
    gas_runs: dict[str, Path], tmp_path: Path
) -> None:
    plan = tmp_path / "gas.toml"
    plan.write_text(GAS_PLAN + "\n[gas.methane_reporting]\nsample_s = 10\nchange_pct_lel = 2.5\n", encoding="utf-8")
    result = _lifeline("simulate", "scenario", str(plan), "--demo", "--no-publish", "--output", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    truth = _truth(tmp_path / "o")
    assert isinstance(truth["scenario"], dict)
    assert truth["scenario"]["methane_reporting"] == {"sample_s": 10, "change_pct_lel": 2.5, "alarm_pct_lel": 20.0}
    assert (tmp_path / "o" / "recording.jsonl").read_bytes() == (gas_runs["change"] / "recording.jsonl").read_bytes()
    assert _methane_readings(tmp_path / "o") > _methane_readings(gas_runs["regular"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[gas.methane_reporting]\nsample_s = 5.0\n", "'sample_s' must be int, not float"),
        ('[gas.methane_reporting]\nchange_pct_lel = "2"\n', "'change_pct_lel' must be float, not str"),
        ("[gas.methane_reporting]\nalarm_pct_lel = true\n", "'alarm_pct_lel' must be float, not bool"),
        ("[gas.methane_reporting]\nchange_pct_lel = -1\n", "'change_pct_lel' must be positive, not -1.0"),
        ("[gas.methane_reporting]\nsample_s = 0\n", "'sample_s' must be positive, not 0"),
    ],
    ids=["sample-float", "change-str", "alarm-bool", "change-negative", "sample-zero"],
)
def test_scenario_file_methane_reporting_with_a_wrong_value_names_file_table_and_key(
    tmp_path: Path, demo_city: City, table: str, message: str
) -> None:
    plan = tmp_path / "bad.toml"
    plan.write_text(GAS_PLAN + "\n" + table, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_plan(plan, demo_city)
    assert str(caught.value) == f"{plan} [gas.methane_reporting]: {message}"


def test_scenario_file_methane_reporting_must_be_a_table(tmp_path: Path, demo_city: City) -> None:
    plan = tmp_path / "bad.toml"
    plan.write_text(GAS_PLAN.replace("[[gas.leak]]", "[gas]\nmethane_reporting = 5\n\n[[gas.leak]]"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml \[gas\]: 'methane_reporting' must be dict, not int"):
        load_plan(plan, demo_city)
