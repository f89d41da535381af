"""Alerts as the detectors conclude them, before they are stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What a detector concluded about one cause.

    ``event`` is ``raised`` (a new exceedance), ``updated`` (grade or value changed while active) or ``cleared``.
    ``grade`` is 1 (I, red) to 4 (IV, blue). Values are in the sensor's canonical unit; ``ts`` is the reading's time.
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
