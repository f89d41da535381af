"""A sensor reading as the twin knows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

QUALITY_CODES: Mapping[str, int] = {"good": 0, "uncertain": 1, "bad": 2}
QUALITY_BAD = 2


@dataclass(frozen=True, slots=True)
class Reading:
    """One accepted reading: value in the sensor's canonical unit, ``ts`` timezone-aware UTC.

    ``quality``: 0 good, 1 uncertain, 2 bad (also set when the value is outside the sensor's valid range).
    """

    sensor_id: str
    ts: datetime
    value: float
    quality: int
    seq: int | None = None
