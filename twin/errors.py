"""The project's typed errors.

Every error the project raises on purpose derives from :class:`LifelineError` and, where it resembles a builtin,
from that builtin too, so callers can catch either.
"""

from __future__ import annotations


class LifelineError(Exception):
    """Base of every error Lifeline Twin raises on purpose."""


class UnknownAssetError(LifelineError, KeyError):
    """An asset (building, node, link, valve, space…) that the twin does not hold."""


class UnknownSensorError(UnknownAssetError):
    """A sensor id that the twin does not hold."""


class PayloadError(LifelineError, ValueError):
    """A message or reading that cannot be accepted; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ModelImportError(LifelineError, ValueError):
    """A model file (SWMM/EPANET ``.inp``, pandapipes JSON, buildings GeoJSON) that cannot be imported.

    The message names the file and, where known, the line and the field.
    """

    def __init__(self, path: str, detail: str, *, line: int | None = None, field: str | None = None) -> None:
        where = path + (f":{line}" if line is not None else "") + (f" field {field!r}" if field else "")
        super().__init__(f"{where}: {detail}")
        self.path = path
        self.line = line
        self.field = field


class SimulationError(LifelineError, RuntimeError):
    """A hydraulic engine (SWMM, EPANET, pandapipes) could not run a model to the end."""


class ConfigError(LifelineError, ValueError):
    """A configuration value or a definition file that cannot be used."""


class SchemaError(LifelineError, RuntimeError):
    """The database schema cannot be brought to the version this code needs."""


class ServiceError(LifelineError, RuntimeError):
    """An embedded or external service could not be started or reached."""


class ForecastError(PayloadError):
    """A rain forecast that cannot be accepted; ``reason`` is a stable code (``bad_value``, ``too_long``…)."""


class ForecastConflictError(ForecastError):
    """A different rain forecast is already stored under the same source and issue time."""

    def __init__(self, detail: str) -> None:
        super().__init__("conflict", detail)
