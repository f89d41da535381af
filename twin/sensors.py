"""Sensors, the quantities they measure, their units and their alarm limits.

A sensor is bound to an asset of the twin and carries the limits that grade a warning I–IV
(I = red, most severe; IV = blue). Readings are stored in the quantity's canonical unit.
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.errors import ConfigError, UnknownSensorError


class Network(enum.StrEnum):
    """The lifeline a sensor belongs to; also the third level of its MQTT topic."""

    DRAINAGE = "drainage"
    WATER = "water"
    GAS = "gas"
    RAIN = "rain"


class Quantity(enum.StrEnum):
    """What a sensor measures. The canonical unit of each is in :data:`CANONICAL_UNIT`."""

    LEVEL = "level"
    FLOW = "flow"
    RAIN_RATE = "rain_rate"
    PRESSURE = "pressure"
    METHANE = "methane"


class Grade(enum.IntEnum):
    """Warning grade: I is the most severe (red), IV the least (blue)."""

    I = 1  # noqa: E741 - the grades' own names
    II = 2
    III = 3
    IV = 4

    @property
    def colour(self) -> str:
        return _GRADE_COLOUR[self]

    @property
    def label_zh(self) -> str:
        return _GRADE_LABEL_ZH[self]


_GRADE_COLOUR = {Grade.I: "red", Grade.II: "orange", Grade.III: "yellow", Grade.IV: "blue"}
_GRADE_LABEL_ZH = {Grade.I: "Ⅰ级（红色）", Grade.II: "Ⅱ级（橙色）", Grade.III: "Ⅲ级（黄色）", Grade.IV: "Ⅳ级（蓝色）"}


class Direction(enum.StrEnum):
    """Whether a limit is crossed going up (``high``) or going down (``low``)."""

    HIGH = "high"
    LOW = "low"


CANONICAL_UNIT: Mapping[Quantity, str] = {
    Quantity.LEVEL: "m",
    Quantity.FLOW: "L/s",
    Quantity.RAIN_RATE: "mm/h",
    Quantity.PRESSURE: "kPa",
    Quantity.METHANE: "%LEL",
}

# Accepted units per quantity: factor to the canonical unit. Keys are normalised by `_unit_key`.
# Methane: the lower explosive limit is 5 %vol = 50,000 ppm, so 1 %LEL = 500 ppm and 1 %vol = 20 %LEL.
_UNIT_FACTORS: Mapping[Quantity, Mapping[str, float]] = {
    Quantity.LEVEL: {"m": 1.0, "cm": 0.01, "mm": 0.001},
    Quantity.FLOW: {"l/s": 1.0, "m3/s": 1000.0, "m³/s": 1000.0, "m3/h": 1 / 3.6, "m³/h": 1 / 3.6, "l/min": 1 / 60},
    Quantity.RAIN_RATE: {"mm/h": 1.0, "mm/min": 60.0},
    Quantity.PRESSURE: {"kpa": 1.0, "mpa": 1000.0, "bar": 100.0, "pa": 0.001, "mh2o": 9.80665},
    Quantity.METHANE: {"%lel": 1.0, "ppm": 1 / 500, "%vol": 20.0},
}


def _unit_key(unit: str) -> str:
    return unit.strip().replace(" ", "").lower()


def accepted_units(quantity: Quantity) -> list[str]:
    """List the unit spellings a payload may use for *quantity* (case and spaces do not matter)."""
    return sorted(_UNIT_FACTORS[quantity])


def unit_factor(quantity: Quantity, unit: str) -> float | None:
    """Return the factor that converts *unit* to the canonical unit of *quantity*, or None if not accepted."""
    return _UNIT_FACTORS[quantity].get(_unit_key(unit))


def is_known_unit(unit: str) -> bool:
    """Tell whether *unit* is accepted for any quantity."""
    key = _unit_key(unit)
    return any(key in factors for factors in _UNIT_FACTORS.values())


@dataclass(frozen=True, slots=True)
class AlarmLimit:
    """One limit: crossing *threshold* (canonical unit) in *direction* raises a warning of *grade*."""

    grade: Grade
    direction: Direction
    threshold: float


@dataclass(frozen=True, slots=True)
class Sensor:
    """A sensor of the twin.

    Attributes:
        sensor_id: unique id, also the last level of its MQTT topic.
        network: the lifeline it watches.
        quantity: what it measures; readings are stored in ``CANONICAL_UNIT[quantity]``.
        name: human-readable name (Chinese first).
        asset_id: the twin asset it observes (a manhole, pipe, junction, underground space…), if bound.
        district: administrative district, for filtering.
        x_m, y_m: install position in the twin's projected CRS, metres.
        valid_min, valid_max: physically plausible range in the canonical unit; readings outside it are stored
            with quality ``bad`` and never raise a lifeline warning.
        interval_s: nominal sampling interval, seconds.
        limits: alarm limits, any number per direction.
    """

    sensor_id: str
    network: Network
    quantity: Quantity
    name: str
    asset_id: str | None = None
    district: str = ""
    x_m: float = 0.0
    y_m: float = 0.0
    valid_min: float = -math.inf
    valid_max: float = math.inf
    interval_s: float = 60.0
    limits: tuple[AlarmLimit, ...] = field(default=())

    @property
    def unit(self) -> str:
        return CANONICAL_UNIT[self.quantity]

    def grade_of(self, value: float) -> tuple[Grade, AlarmLimit] | None:
        """Return the most severe grade whose limit *value* crosses, with that limit, or None.

        Example:
            >>> limits = (AlarmLimit(Grade.IV, Direction.HIGH, 1.0), AlarmLimit(Grade.II, Direction.HIGH, 2.0))
            >>> s = Sensor("L1", Network.DRAINAGE, Quantity.LEVEL, "井1", limits=limits)
            >>> s.grade_of(1.5)[0].name
            'IV'
        """
        worst: tuple[Grade, AlarmLimit] | None = None
        for limit in self.limits:
            crossed = value >= limit.threshold if limit.direction is Direction.HIGH else value <= limit.threshold
            if crossed and (worst is None or limit.grade < worst[0]):
                worst = (limit.grade, limit)
        return worst

    def to_record(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the sensor (limits as a list of dicts)."""
        return {
            "sensor_id": self.sensor_id,
            "network": self.network.value,
            "quantity": self.quantity.value,
            "unit": self.unit,
            "name": self.name,
            "asset_id": self.asset_id,
            "district": self.district,
            "x_m": self.x_m,
            "y_m": self.y_m,
            "valid_min": None if math.isinf(self.valid_min) else self.valid_min,
            "valid_max": None if math.isinf(self.valid_max) else self.valid_max,
            "interval_s": self.interval_s,
            "limits": [
                {"grade": lim.grade.name, "direction": lim.direction.value, "threshold": lim.threshold}
                for lim in self.limits
            ],
        }


def sensor_from_record(record: Mapping[str, Any], *, source: str = "<record>") -> Sensor:
    """Build a :class:`Sensor` from a dict as written by :meth:`Sensor.to_record` or a sensors file.

    Raises:
        ConfigError: a field is missing or has a value that cannot be used; the message names *source* and the field.
    """
    sid = record.get("sensor_id", "?")
    where = f"{source}: sensor {sid!r}"
    try:
        quantity = Quantity(record["quantity"])
        network = Network(record["network"])
        limits = tuple(
            AlarmLimit(Grade[str(lim["grade"])], Direction(lim["direction"]), float(lim["threshold"]))
            for lim in record.get("limits", ())
        )
        unit = record.get("unit")
        if unit is not None and unit_factor(quantity, str(unit)) != 1.0:
            raise ConfigError(f"{where}: field 'unit': {unit!r} is not the canonical unit {CANONICAL_UNIT[quantity]!r}")
        vmin = record.get("valid_min")
        vmax = record.get("valid_max")
        return Sensor(
            sensor_id=str(record["sensor_id"]),
            network=network,
            quantity=quantity,
            name=str(record.get("name", record["sensor_id"])),
            asset_id=record.get("asset_id"),
            district=str(record.get("district", "")),
            x_m=float(record.get("x_m", 0.0)),
            y_m=float(record.get("y_m", 0.0)),
            valid_min=-math.inf if vmin is None else float(vmin),
            valid_max=math.inf if vmax is None else float(vmax),
            interval_s=float(record.get("interval_s", 60.0)),
            limits=limits,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing or unknown value for field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from exc


def load_sensors_file(path: Path) -> list[Sensor]:
    """Read sensors from a TOML file with one ``[[sensor]]`` table per sensor.

    Raises:
        ConfigError: the file cannot be read or parsed, or a sensor in it is invalid; the message names the file.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    records = data.get("sensor")
    if not isinstance(records, list):
        raise ConfigError(f"{path}: expected one or more [[sensor]] tables")
    return [sensor_from_record(rec, source=str(path)) for rec in records]


class SensorRegistry(Mapping[str, Sensor]):
    """Sensors by id; a read-only mapping (``"W-P-001" in registry``, ``registry["W-P-001"]``).

    Unknown ids raise :class:`UnknownSensorError`, which is also a ``KeyError``.
    """

    __slots__ = ("_by_id",)

    def __init__(self, sensors: Iterable[Sensor] = ()) -> None:
        self._by_id: dict[str, Sensor] = {s.sensor_id: s for s in sensors}

    def __getitem__(self, sensor_id: str) -> Sensor:
        try:
            return self._by_id[sensor_id]
        except KeyError as exc:
            raise UnknownSensorError(sensor_id) from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, sensor_id: object) -> bool:
        return sensor_id in self._by_id

    def get(self, sensor_id: str, default: Sensor | None = None) -> Sensor | None:  # type: ignore[override]
        """Return the sensor, or *default* for an unknown id (a plain dict lookup: ingest asks once a message)."""
        return self._by_id.get(sensor_id, default)
