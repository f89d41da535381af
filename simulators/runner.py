"""Run a scenario: inject faults, write the recording and the ground truth, publish paced by a speed factor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from simulators.faults import Fault, WireMessage, inject
from simulators.publisher import Publisher
from simulators.recording import RecordingWriter, play
from simulators.scenario import Scenario
from twin.sensors import Sensor

log = logging.getLogger(__name__)

RECORDING = "recording.jsonl"
GROUND_TRUTH = "ground_truth.json"


@dataclass(frozen=True, slots=True)
class RunResult:
    """Where a run wrote its files and what it did."""

    recording: Path
    ground_truth: Path
    messages: int
    wall_s: float


def run_scenario(
    scenario: Scenario,
    *,
    sensors: Mapping[str, Sensor],
    prefix: str,
    out_dir: Path,
    faults: Sequence[Fault] = (),
    seed: int = 0,
    publisher: Publisher | None = None,
    speed: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[WireMessage], None] | None = None,
) -> RunResult:
    """Compute *scenario*, write ``recording.jsonl`` and ``ground_truth.json`` in *out_dir*, and publish.

    Args:
        scenario: the computed scenario.
        sensors: the sensors that may report (by id); readings of others are skipped.
        prefix: the MQTT topic prefix.
        out_dir: where the recording and the ground truth go (created if needed).
        faults: sensor faults to inject.
        seed: seed of the fault injection's randomness.
        publisher: a connected publisher; None computes and writes only (``--no-publish``).
        speed: simulated seconds per real second (60 = an hour a minute); None = as fast as possible.
        stop: set it to stop early (Ctrl-C); what was done so far is written.
        progress: called with each message.
    """
    started = time.perf_counter()
    messages = inject(scenario.steps(), sensors=sensors, prefix=prefix, faults=faults, seed=seed)
    with RecordingWriter(out_dir / RECORDING) as recording:

        def handle(message: WireMessage) -> None:
            recording.write(message)
            if progress is not None:
                progress(message)

        count = play(messages, publisher=publisher, speed=speed, stop=stop, on_message=handle)
    truth = scenario.ground_truth()
    truth.faults = [f.as_dict() for f in faults]
    truth.summary["messages"] = count
    truth.summary["stopped_early"] = bool(stop is not None and stop.is_set())
    path = out_dir / GROUND_TRUTH
    path.write_bytes(orjson.dumps(asdict(truth), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
    wall = time.perf_counter() - started
    log.info("scenario %s: %d messages in %.1f s → %s", scenario.name, count, wall, out_dir)
    return RunResult(out_dir / RECORDING, path, count, wall)
