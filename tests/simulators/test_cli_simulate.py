"""`lifeline simulate rainstorm` as a test team runs it: computed without a broker, and published to ingest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from twin.mqtt import MqttConfig
from twin.storms import DEFAULT_FORMULA, FORMULAS

from ..conftest import wait_for


def _lifeline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_rainstorm_without_a_broker_writes_recording_and_ground_truth(tmp_path: Path) -> None:
    args = [
        "simulate",
        "rainstorm",
        "--demo",
        "--no-publish",
        "--return-period",
        "20",
        "--duration",
        "60",
        "--drain",
        "30",
        "--seed",
        "3",
        "--start",
        "2026-06-01T08:00:00+08:00",
    ]
    first = _lifeline(*args, "--output", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    second = _lifeline(*args, "--output", str(tmp_path / "b"))
    assert (tmp_path / "a" / "recording.jsonl").read_bytes() == (tmp_path / "b" / "recording.jsonl").read_bytes()
    truth = orjson.loads((tmp_path / "a" / "ground_truth.json").read_bytes())
    assert truth["scenario"]["kind"] == "rainstorm" and truth["summary"]["messages"] > 0
    assert truth["summary"]["design_rain_mm"] == pytest.approx(FORMULAS[DEFAULT_FORMULA].depth_mm(20, 60))
    assert "computed" in second.stdout
    bad = _lifeline("simulate", "rainstorm", "--demo", "--no-publish", "--formula", "atlantis")
    assert bad.returncode == 2 and "unknown formula" in bad.stderr


@pytest.mark.integration
def test_rainstorm_published_lands_in_the_store(
    start_ingest: Any, broker: MqttConfig, prefix: str, db: Any, tmp_path: Path, pg_url: str, schema: str
) -> None:
    from twin.democity.city import build_demo_city
    from twin.store.sensors import upsert_sensors

    upsert_sensors(db, build_demo_city().sensors.values())
    svc = start_ingest()
    env = {"LIFELINE_MQTT_URL": broker.url, "LIFELINE_TOPIC_PREFIX": prefix}
    result = _lifeline(
        "simulate",
        "rainstorm",
        "--demo",
        "--return-period",
        "50",
        "--duration",
        "30",
        "--drain",
        "10",
        "--speed",
        "max",
        "--output",
        str(tmp_path),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    published = int(result.stdout.split("published ")[1].split()[0])
    wait_for(lambda: svc.stats.messages >= published, timeout=60, what="every published reading processed")
    row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert row["n"] == published and svc.stats.dead_letters == 0
    alerts = db.execute("SELECT count(*) AS n FROM alerts WHERE network IN ('drainage', 'rain')").fetchone()
    assert alerts["n"] > 0  # the storm crosses the rain and level limits


@pytest.mark.integration
def test_ctrl_c_stops_a_published_run_cleanly_and_keeps_what_it_wrote(
    broker: MqttConfig, prefix: str, tmp_path: Path
) -> None:
    import signal
    import time

    base = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    env = {**base, "LIFELINE_MQTT_URL": broker.url, "LIFELINE_TOPIC_PREFIX": prefix}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lifeline",
            "simulate",
            "leak",
            "--demo",
            "--junction",
            "J0505",
            "--hours",
            "24",
            "--speed",
            "60",
            "--output",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    recording = tmp_path / "recording.jsonl"
    deadline = time.monotonic() + 60
    while not (recording.exists() and recording.stat().st_size > 10_000):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start publishing"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "(stopped early)" in out
    truth = orjson.loads((tmp_path / "ground_truth.json").read_bytes())
    assert truth["summary"]["stopped_early"] is True
    lines = recording.read_bytes().splitlines()
    assert 0 < len(lines) == truth["summary"]["messages"] < 141 * 24 * 60
