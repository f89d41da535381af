"""Feeding a simulated sensor stream to a streaming detector, as ingest does, in the models' tests."""

from __future__ import annotations

from datetime import datetime

from models.streaming import StreamDetector
from models.transfer_data import SensorStream
from twin.alerts import AlertChange
from twin.readings import Reading


def replay(
    detector: StreamDetector, stream: SensorStream, *, since: datetime | None = None, until: datetime | None = None
) -> list[AlertChange]:
    """Feed every sensor step of *stream* in [*since*, *until*) to *detector* as one batch, ``now`` = its time,
    committing each result; return the alert changes."""
    changes: list[AlertChange] = []
    for ts_pd, row in zip(stream.times, stream.values.tolist(), strict=True):
        ts = ts_pd.to_pydatetime()
        if (since is not None and ts < since) or (until is not None and ts >= until):
            continue
        result = detector.evaluate(
            [Reading(sid, ts, value, 0) for sid, value in zip(stream.sensor_ids, row, strict=True)],
            now=ts,
            suspect=frozenset(),
        )
        detector.commit(result)
        changes.extend(result.changes)
    return changes
