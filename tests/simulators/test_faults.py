"""Fault injection and the scenario runner: every fault kind appears with its label; runs repeat exactly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from ingest.protocol import PayloadDecoder
from simulators.faults import Fault, FaultKind, inject
from simulators.recording import read_recording
from simulators.runner import run_scenario
from simulators.scenario import GroundTruth, SimReading, Step
from twin.demo import demo_sensors
from twin.errors import ConfigError
from twin.sensors import SensorRegistry

T0 = datetime(2026, 7, 1, tzinfo=UTC)
SENSORS = SensorRegistry(demo_sensors())


class Flat:
    """A steady hour: every sensor reports 1.0 (canonical unit) each minute."""

    name = "flat"
    start = T0
    duration = timedelta(hours=1)
    step = timedelta(minutes=1)

    def steps(self) -> Iterator[Step]:
        for k in range(60):
            ts = T0 + k * self.step
            yield Step(ts, [SimReading(sid, ts, 1.0) for sid in ("D-L-001", "W-P-001", "G-M-001", "R-001")])

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(scenario={"kind": "flat"}, summary={"steps": 60})


def _faults() -> list[Fault]:
    w = lambda a, b: (T0 + timedelta(minutes=a), T0 + timedelta(minutes=b))  # noqa: E731
    return [
        Fault(FaultKind.DROPOUT, "D-L-001", *w(5, 10)),
        Fault(FaultKind.STUCK, "W-P-001", *w(5, 15)),
        Fault(FaultKind.SPIKE, "G-M-001", *w(20, 21), magnitude=60.0),
        Fault(FaultKind.DRIFT, "R-001", *w(30, 50), magnitude=12.0),
        Fault(FaultKind.NOISE, "W-P-001", *w(30, 40), magnitude=5.0),
        Fault(FaultKind.CLOCK_SKEW, "D-L-001", *w(40, 45), magnitude=900.0),
        Fault(FaultKind.DUPLICATE, "G-M-001", *w(40, 42)),
        Fault(FaultKind.OUT_OF_ORDER, "D-L-001", *w(50, 52), magnitude=180.0),
        Fault(FaultKind.MALFORMED, "R-001", *w(55, 58)),
    ]


def test_every_fault_kind_appears_with_its_label() -> None:
    messages = list(inject(Flat().steps(), sensors=SENSORS, prefix="lifeline/v1", faults=_faults(), seed=1))
    labels = {m.label for m in messages if m.label}
    assert {k.value for k in FaultKind} - {"dropout"} <= labels
    per_sensor = {sid: [m for m in messages if m.sensor_id == sid] for sid in ("D-L-001", "W-P-001", "G-M-001")}
    assert len(per_sensor["D-L-001"]) == 55  # five minutes dropped out
    assert len(per_sensor["G-M-001"]) == 62  # two minutes sent twice
    spike = [orjson.loads(m.payload)["value"] for m in per_sensor["G-M-001"] if m.label == "spike"]
    assert spike == [61.0]
    late = [m for m in per_sensor["D-L-001"] if m.label == "out_of_order"]
    position = [m.label for m in per_sensor["D-L-001"]].index("out_of_order")
    assert orjson.loads(per_sensor["D-L-001"][position - 1].payload)["ts"] > orjson.loads(late[0].payload)["ts"]
    skewed = [orjson.loads(m.payload)["ts"] for m in per_sensor["D-L-001"] if m.label == "clock_skew"]
    assert skewed[0] == (T0 + timedelta(minutes=40, seconds=900)).isoformat(timespec="milliseconds")
    # The ingest decoder refuses every malformed payload.
    decoder = PayloadDecoder(sensors=SENSORS, clock=lambda: T0 + timedelta(hours=1))
    for m in messages:
        if m.label == "malformed":
            assert decoder.decode(m.topic, m.payload).rejected


def test_same_seed_gives_a_byte_identical_recording(tmp_path: Path) -> None:
    a = run_scenario(Flat(), sensors=SENSORS, prefix="p", out_dir=tmp_path / "a", faults=_faults(), seed=5)
    b = run_scenario(Flat(), sensors=SENSORS, prefix="p", out_dir=tmp_path / "b", faults=_faults(), seed=5)
    assert a.recording.read_bytes() == b.recording.read_bytes()
    assert a.ground_truth.read_bytes() == b.ground_truth.read_bytes()
    truth = orjson.loads(a.ground_truth.read_bytes())
    assert truth["summary"]["messages"] == a.messages == len(list(read_recording(a.recording)))
    assert [f["kind"] for f in truth["faults"]] == [f.kind.value for f in _faults()]
    c = run_scenario(Flat(), sensors=SENSORS, prefix="p", out_dir=tmp_path / "c", faults=_faults(), seed=6)
    assert c.recording.read_bytes() != a.recording.read_bytes()  # the noise differs


def test_fault_on_unknown_sensor_is_refused() -> None:
    with pytest.raises(ConfigError):
        list(
            inject(
                Flat().steps(),
                sensors=SENSORS,
                prefix="p",
                faults=[Fault(FaultKind.SPIKE, "NOPE", T0, T0 + timedelta(minutes=1))],
            )
        )
