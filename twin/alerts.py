"""Alerts as the detectors conclude them, before they are stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What a detector concluded about one cause.

    ``event`` is ``raised`` (a new exceedance), ``updated`` (grade or value changed while active) or ``cleared``.
    ``grade`` is 1 (I, red) to 4 (IV, blue). Values are in the sensor's canonical unit; ``ts`` is the reading's time.
    ``detail`` is what the detector adds as evidence, JSON-ready: e.g. ``{"candidates": [{"asset": "water:node:J0505",
    "score": 0.93}, …]}`` for a localised leak, or ``{"eta_s": 840}`` for a predicted crossing.
    """

    event: str
    cause_key: str
    kind: str
    sensor_id: str | None
    network: str
    district: str
    grade: int
    ts: datetime
    value: float | None
    threshold: float | None
    message: str
    message_en: str
    detail: Mapping[str, Any] | None = None
