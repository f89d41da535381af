"""`lifeline simulate leak | gas-leak | scenario`: engine scenarios from the command line, with ground truth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson


def _lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.run([sys.executable, "-m", "lifeline", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def _truth(folder: Path) -> dict[str, object]:
    truth: dict[str, object] = orjson.loads((folder / "ground_truth.json").read_bytes())
    return truth


def test_leak_and_gas_leak_commands_write_recordings_with_their_events(tmp_path: Path) -> None:
    start = "2026-07-01T00:00:00+08:00"
    water = _lifeline("simulate", "leak", "--demo", "--no-publish", "--junction", "J0505", "--flow", "30",
                      "--at", "1", "--hours", "3", "--start", start, "--output", str(tmp_path / "w"))
    assert water.returncode == 0, water.stderr
    events = _truth(tmp_path / "w")["events"]
    assert isinstance(events, list) and events[0]["kind"] == "burst"
    gas = _lifeline("simulate", "gas-leak", "--demo", "--no-publish", "--pipe", "LP0007", "--flow", "30",
                    "--at", "0.5", "--hours", "2", "--start", start, "--output", str(tmp_path / "g"))
    assert gas.returncode == 0, gas.stderr
    assert (tmp_path / "g" / "recording.jsonl").stat().st_size > 0
    missing = _lifeline("simulate", "leak", "--demo", "--no-publish")
    assert missing.returncode == 2 and "--junction or --pipe" in missing.stderr
    unknown = _lifeline("simulate", "leak", "--demo", "--no-publish", "--junction", "NOPE", "--hours", "1",
                        "--at", "0.5", "--output", str(tmp_path / "x"))
    assert unknown.returncode == 1 and "NOPE" in unknown.stderr


def test_scenario_file_combines_storm_leak_and_faults(tmp_path: Path) -> None:
    plan = tmp_path / "drill.toml"
    plan.write_text("""
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
""", encoding="utf-8")
    result = _lifeline("simulate", "scenario", str(plan), "--demo", "--no-publish", "--output", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    truth = _truth(tmp_path / "o")
    scenario = truth["scenario"]
    assert isinstance(scenario, dict) and [p["kind"] for p in scenario["parts"]] == ["rainstorm", "water_supply"]
    assert truth["faults"] == [{"kind": "stuck", "sensor_id": "RG-01", "start": "2026-06-01T00:30:00+00:00",
                                "end": "2026-06-01T01:30:00+00:00", "magnitude": 0.0}]
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
