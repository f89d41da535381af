"""Scoring a simulator run: replay its recording through the detectors and compare with its ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from lifeline.cli import cli
from models.chain import DetectorChain
from models.scoring import replay, score_run
from simulators.faults import Fault, FaultKind
from simulators.gas_scenarios import GasLeakEvent, GasScenario
from simulators.recording import read_recording
from simulators.runner import run_scenario
from twin.democity.city import build_demo_city
from twin.model import City
from twin.sensors import Network

START = datetime(2025, 7, 1, 16, tzinfo=UTC)  # local midnight


@pytest.fixture(scope="module")
def city() -> City:
    return build_demo_city()


@pytest.fixture(scope="module")
def gas_run(city: City, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hours of the gas network: a 30 m³/h leak at L0909 after 30 min, and a stuck pressure sensor."""
    out = tmp_path_factory.mktemp("gas-run")
    gas_sensors = {sid: s for sid, s in city.sensors.items() if s.network is Network.GAS}
    leak = GasLeakEvent(junction_id="L0909", volume_flow_m3_h=30.0, start=START + timedelta(minutes=30))
    scenario = GasScenario(
        city.networks[Network.GAS],
        list(city.spaces.values()),
        list(gas_sensors.values()),
        start=START,
        duration=timedelta(hours=3),
        events=[leak],
    )
    stuck_sensor = sorted(sid for sid in gas_sensors if sid.startswith("GP-"))[0]
    fault = Fault(FaultKind.STUCK, stuck_sensor, START + timedelta(minutes=90), START + timedelta(minutes=150))
    run_scenario(scenario, sensors=gas_sensors, prefix="lifeline/v1", out_dir=out, faults=[fault])
    return out


def test_replay_and_score_a_gas_leak_with_a_stuck_sensor(city: City, gas_run: Path) -> None:
    truth = orjson.loads((gas_run / "ground_truth.json").read_bytes())
    crossing = [s["crossed_20_pct_lel_at"] for s in truth["events"][0]["spaces"] if s["crossed_20_pct_lel_at"]]
    assert crossing, "the leak is meant to bring a space to 20 %LEL"
    chain = DetectorChain.default(city.sensors)
    result = replay(read_recording(gas_run / "recording.jsonl"), sensors=city.sensors, chain=chain)
    assert result.readings == result.messages > 0 and result.rejected == 0
    score = score_run(truth, result.changes, sensors=city.sensors, networks=city.networks)
    [event] = score.events
    # The threshold detector alone raises when a methane sensor reaches 20 %LEL: no earlier than the first crossing.
    assert event.detected_at is not None
    assert event.detected_at >= min(datetime.fromisoformat(t) for t in crossing) - timedelta(minutes=2)
    assert [f.detected_at is not None for f in score.faults] == [True]
    summary = score.as_dict()
    assert summary["recall"] == 1.0 and summary["faults_detected"] == 1
    assert summary["sensors"] == len(truth["scenario"]["sensors"])


def test_a_warning_outside_every_event_is_a_false_alarm(city: City, gas_run: Path) -> None:
    truth = orjson.loads((gas_run / "ground_truth.json").read_bytes())
    truth["events"] = []  # as if nothing had happened: every lifeline warning is false
    chain = DetectorChain.default(city.sensors)
    result = replay(read_recording(gas_run / "recording.jsonl"), sensors=city.sensors, chain=chain)
    score = score_run(truth, result.changes, sensors=city.sensors)
    assert score.false_alarms and all(c.kind != "sensor_health" for c in score.false_alarms)
    assert score.false_alarms_per_day_per_100 == pytest.approx(
        len(score.false_alarms) / 0.125 / (len(truth["scenario"]["sensors"]) / 100)
    )


def test_evaluate_command_prints_and_writes_the_score(gas_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "score.json"
    res = CliRunner().invoke(cli, ["evaluate", str(gas_run), "--demo", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "events: 1, detected within 2 h: 1" in res.output
    score = orjson.loads(out.read_bytes())
    assert score["faults_detected"] == 1 and score["replay"]["rejected"] == 0


def test_evaluate_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--demo"])
    assert res.exit_code != 0
    assert "recording.jsonl is missing" in res.output
