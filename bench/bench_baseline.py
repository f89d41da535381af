"""Baseline detector speed: the compiled detector against the numpy reference, µs a reading.

Two batch shapes:

* ``5000``: batches of 5,000 readings, 50 consecutive readings of each of 100 pressure sensors (1-minute sensors
  received 50 minutes at a time, or 1-second sensors received live), one day of data;
* ``singles``: batches of 1,500 single readings, one of each of 1,500 sensors, of which the detector judges the
  1,000 pressures and flows (the 500 levels it skips), one hour at one batch a minute.

Every sensor starts with warm bins (a learned state is loaded before timing), so every reading is judged; a few
sensors depart from their normal level for a while, so alerts are raised and cleared. Readings are built as
columns (:class:`~twin.readings.ReadingBatch`, as ingest hands them) before timing, with their sensor groups worked
out (in ingest the store and the threshold detector have already done so). The time is the process's CPU time
(steadier than wall time on shared cores) of ``evaluate`` and ``commit`` of every batch with a fresh detector; the
compiled code is loaded before timing.

    python bench/bench_baseline.py            # median of 3 runs
    python bench/bench_baseline.py --runs 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np

from models.baseline import BaselineDetector
from models.baseline_kernel import compile_kernels
from models.baseline_reference import ReferenceBaselineDetector
from twin.readings import ReadingBatch, ts_to_us
from twin.sensors import Network, Quantity, Sensor

START = datetime(2026, 6, 1, tzinfo=UTC)
LEVEL = 300.0
NOISE = 0.8


def make_sensors(judged: int, skipped: int = 0) -> dict[str, Sensor]:
    """Return *judged* water pressures and flows and *skipped* sewer levels (which the detector does not judge)."""
    sensors: dict[str, Sensor] = {}
    for i in range(judged):
        quantity = Quantity.FLOW if i % 4 == 3 else Quantity.PRESSURE
        sid = f"W{i:05d}"
        sensors[sid] = Sensor(sid, Network.WATER, quantity, sid, valid_min=0.0, valid_max=1000.0)
    for i in range(skipped):
        sid = f"L{i:05d}"
        sensors[sid] = Sensor(sid, Network.DRAINAGE, Quantity.LEVEL, sid, valid_min=0.0, valid_max=8.0)
    return sensors


def warm_state(sensors: dict[str, Sensor]) -> dict[str, Any]:
    """Return a learned state (every bin warm around the normal level) in the format of ``dump_state``."""
    entry = {
        "loc": [LEVEL] * 48,
        "spread": [NOISE / 1.4826] * 48,
        "count": [1000] * 48,
        "score": 0.0,
        "run": 0,
        "active": False,
        "since": None,
        "last_ts": START.timestamp() - 60.0,
    }
    return {"version": 1, "sensors": {sid: entry for sid in sensors}}


def make_batches(sensors: dict[str, Sensor], minutes: int, per_batch: int, seed: int = 1) -> list[ReadingBatch]:
    """Return batches of *per_batch* consecutive 1-minute readings of every sensor, sensor by sensor.

    One sensor in 20 drops by 100 (50 σ, the σ floor being 2) for two hours from a sensor-dependent minute.
    """
    rng = np.random.default_rng(seed)
    ids = list(sensors)
    n = len(ids)
    values = LEVEL + rng.normal(0.0, NOISE, (n, minutes))
    for k in range(0, n, 20):
        start = (7 * k) % max(minutes - 1, 1)
        values[k, start : start + 120] -= 100.0
    stamps = np.array([ts_to_us(START + timedelta(minutes=m)) for m in range(minutes)], dtype=np.int64)
    batches: list[ReadingBatch] = []
    for first in range(0, minutes, per_batch):
        span = range(first, min(first + per_batch, minutes))
        batch = ReadingBatch(
            [sid for sid in ids for _ in span],
            np.tile(stamps[first : span.stop], n),
            np.ascontiguousarray(values[:, first : span.stop]).ravel(),
            np.zeros(n * len(span), dtype=np.int16),
        )
        batch.groups()
        batches.append(batch)
    return batches


def time_detector(make: Callable[[], BaselineDetector], batches: list[ReadingBatch], runs: int) -> tuple[float, int]:
    """Return the median CPU seconds of *runs* runs of every batch through a fresh detector, and the changes."""
    seconds: list[float] = []
    changes = 0
    for _ in range(runs):
        det = make()
        changes = 0
        began = time.process_time()
        for batch in batches:
            result = det.evaluate(batch, now=START, suspect=frozenset())
            det.commit(result)
            changes += len(result.changes)
        seconds.append(time.process_time() - began)
    return statistics.median(seconds), changes


def fresh(kind: type[BaselineDetector], sensors: dict[str, Sensor], state: dict[str, Any]) -> BaselineDetector:
    """Return a new detector of *kind* with *state* loaded."""
    det = kind(sensors)
    det.load_state(state)
    return det


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"compile (or load from the cache): {compile_kernels():.2f} s")
    shapes = {
        "5000": (make_sensors(100), 1440, 50),
        "singles": (make_sensors(1000, 500), 60, 1),
    }
    print(f"{'shape':<8} {'readings':>9} {'batches':>7} {'reference µs':>12} {'kernel µs':>9} {'ratio':>6} changes")
    for name, (sensors, minutes, per_batch) in shapes.items():
        batches = make_batches(sensors, minutes, per_batch)
        readings = sum(len(b) for b in batches)
        state = warm_state({sid: s for sid, s in sensors.items() if s.quantity != Quantity.LEVEL})

        ref_s, ref_changes = time_detector(
            partial(fresh, ReferenceBaselineDetector, sensors, state), batches, args.runs
        )
        ker_s, ker_changes = time_detector(partial(fresh, BaselineDetector, sensors, state), batches, args.runs)
        assert ref_changes == ker_changes
        ref_us, ker_us = 1e6 * ref_s / readings, 1e6 * ker_s / readings
        ratio = ref_us / ker_us if ker_us else math.inf
        print(f"{name:<8} {readings:>9,} {len(batches):>7} {ref_us:>12.3f} {ker_us:>9.3f} {ratio:>5.1f}× {ker_changes}")


if __name__ == "__main__":
    main()
