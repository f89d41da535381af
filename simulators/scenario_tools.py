"""Shared pieces of the engine scenarios: event timing and growth, demand variation, interpolation, sensor
selection and the nearest-sensor effects written into ground truth. Used by the water and gas scenarios."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from simulators.scenario import SimReading, Step
from twin.errors import ConfigError
from twin.model import Link, PipeNetwork
from twin.sensors import Network, Sensor

BoolArray = npt.NDArray[np.bool_]
DAY_S = 86_400

FloatArray = npt.NDArray[np.float64]


Growth = Literal["abrupt", "incipient"]


CHINA_STANDARD_TIME = timedelta(hours=8)


def check_growth(growth: str, ramp_h: float) -> None:
    """Check an event's growth and ramp.

    Raises:
        ConfigError: an unknown growth, an incipient event without a positive ramp, or an abrupt one with a ramp.
    """
    if growth not in ("abrupt", "incipient"):
        raise ConfigError(f"growth must be 'abrupt' or 'incipient', not {growth!r}")
    if not (math.isfinite(ramp_h) and ramp_h >= 0):
        raise ConfigError(f"ramp must be a non-negative number of hours, not {ramp_h}")
    if growth == "incipient" and ramp_h <= 0:
        raise ConfigError("an incipient event needs a ramp (ramp_h > 0)")
    if growth == "abrupt" and ramp_h > 0:
        raise ConfigError("an abrupt event has no ramp (ramp_h must be 0)")


def check_span(start: datetime, end: datetime | None) -> None:
    """Check that an event's times are aware and that it ends after it starts.

    Raises:
        ConfigError: a naive time, or an end not after the start.
    """
    for ts in (start, end):
        if ts is not None and ts.utcoffset() is None:
            raise ConfigError(f"event times must be timezone-aware: {ts.isoformat()}")
    if end is not None and end <= start:
        raise ConfigError(f"event ends ({end.isoformat()}) before it starts ({start.isoformat()})")


@dataclass(frozen=True, slots=True)
class EventTiming:
    """When an event acts, in whole seconds from the scenario's start.

    ``fraction`` of its full size is 0 before ``start_s``, grows linearly to 1 at ``full_s`` (the same for an
    abrupt event) and is 0 again from ``end_s`` on.
    """

    start_s: int
    full_s: int
    end_s: int | None

    @classmethod
    def of(cls, *, start: datetime, end: datetime | None, ramp_h: float, origin: datetime) -> EventTiming:
        """Return the timing of an event that starts at *start* and ends at *end*, relative to *origin*."""
        start_s = round((start - origin).total_seconds())
        end_s = None if end is None else round((end - origin).total_seconds())
        return cls(start_s, start_s + round(ramp_h * 3600.0), end_s)

    @property
    def abrupt(self) -> bool:
        return self.full_s == self.start_s

    def fraction(self, t_s: float) -> float:
        """Return the share of its full size the event has at *t_s* (0 … 1)."""
        if self.end_s is not None and t_s >= self.end_s:
            return 0.0
        if t_s >= self.full_s:
            return 1.0
        if self.abrupt or t_s <= self.start_s:
            return 0.0
        return (t_s - self.start_s) / (self.full_s - self.start_s)

    def breaks(self) -> list[int]:
        """Return the times the engine must solve at: each change, and one second before a sudden one."""
        out = [self.start_s - 1, self.start_s] if self.abrupt else [self.start_s, self.full_s]
        if self.end_s is not None:
            out += [self.end_s - 1, self.end_s]
        return out

    def active(self, t_s: FloatArray) -> BoolArray:
        """Tell, for each of *t_s*, whether the event is acting (started and not ended)."""
        on = t_s >= self.start_s
        return on if self.end_s is None else on & (t_s < self.end_s)

    def full(self, t_s: FloatArray) -> BoolArray:
        """Tell, for each of *t_s*, whether the event is at full size."""
        on = t_s >= self.full_s
        return on if self.end_s is None else on & (t_s < self.end_s)


@dataclass(frozen=True, slots=True)
class DemandVariation:
    """How demand varies around its daily pattern, so that no two days are alike.

    Attributes:
        day_sigma: standard deviation of the factor of each local day, applied to the whole network.
        element_sigma: standard deviation of each consumer's own factor (lognormal, mean 1).
        element_period_h: hours between draws of a consumer's factor; interpolated linearly between draws.
    """

    day_sigma: float = 0.05
    element_sigma: float = 0.10
    element_period_h: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.day_sigma < 0.3 and 0 <= self.element_sigma < 1.0 and self.element_period_h > 0):
            raise ConfigError(f"demand variation out of range: {self}")


class VariationSeries:
    """Random demand factors of *count* consumers over a scenario: the local day's factor × each one's own.

    Args:
        variation: the standard deviations and period.
        count: how many consumers.
        duration_s: the scenario's length, s.
        clock_s: the local clock time of the scenario's start, s after midnight (days change at local midnight).
        rng: the source of randomness (the draws are made here, in a fixed order).
    """

    def __init__(
        self, variation: DemandVariation, *, count: int, duration_s: float, clock_s: float, rng: np.random.Generator
    ) -> None:
        days = int((clock_s + duration_s) // DAY_S) + 1
        sigma = variation.day_sigma
        self._day = np.clip(rng.normal(1.0, sigma, days), 1.0 - 3.0 * sigma, 1.0 + 3.0 * sigma)
        self._period_s = variation.element_period_h * 3600.0
        knots = math.ceil(duration_s / self._period_s) + 2
        s = variation.element_sigma
        self._knots: FloatArray = np.exp(rng.normal(-0.5 * s * s, s, (knots, count)))
        self._clock_s = clock_s

    def at(self, t_s: float) -> FloatArray:
        """Return every consumer's factor at *t_s* seconds after the start, shape (count,)."""
        day = self._day[min(max(int((self._clock_s + t_s) // DAY_S), 0), len(self._day) - 1)]
        u = max(t_s, 0.0) / self._period_s
        k = min(int(u), len(self._knots) - 2)
        w = min(u - k, 1.0)
        result: FloatArray = day * (self._knots[k] * (1.0 - w) + self._knots[k + 1] * w)
        return result


def smooth_pattern(multipliers: FloatArray, step_s: float, t_s: float) -> float:
    """Return a repeating pattern's value at pattern time *t_s*, each period's value at its midpoint.

    Args:
        multipliers: the pattern's values, one per period.
        step_s: a period's length, s.
        t_s: the time into the pattern, s (the pattern repeats).
    """
    x = t_s / step_s - 0.5
    k = math.floor(x)
    w = x - k
    n = len(multipliers)
    return float(multipliers[k % n] * (1.0 - w) + multipliers[(k + 1) % n] * w)


def local_clock_s(start: datetime, utc_offset: timedelta) -> int:
    """Return the local clock time of *start* (aware), in whole seconds after local midnight."""
    if start.utcoffset() is None:
        raise ConfigError(f"scenario start must be timezone-aware: {start.isoformat()}")
    clock = start.astimezone(UTC) + utc_offset
    return clock.hour * 3600 + clock.minute * 60 + clock.second


def interpolate(times_s: FloatArray, values: FloatArray, at_s: FloatArray) -> FloatArray:
    """Interpolate snapshot rows linearly to other times (held constant beyond the first and last).

    Args:
        times_s: snapshot times, strictly increasing, shape (n,).
        values: snapshot values, shape (n, columns).
        at_s: the times wanted, shape (m,).

    Returns:
        Values at *at_s*, shape (m, columns).
    """
    if len(times_s) == 1:
        return np.repeat(values[:1], len(at_s), axis=0)
    i = np.clip(np.searchsorted(times_s, at_s, side="right") - 1, 0, len(times_s) - 2)
    t0, t1 = times_s[i], times_s[i + 1]
    w = np.clip((at_s - t0) / (t1 - t0), 0.0, 1.0)[:, None]
    result: FloatArray = values[i] * (1.0 - w) + values[i + 1] * w
    return result


def point_along(network: PipeNetwork, link: Link, position: float) -> tuple[float, float]:
    """Return the plan point *position* (0 … 1) of the way along *link* from its ``from_id`` end, metres."""
    points = network.polyline(link)
    lengths = [math.dist(a, b) for a, b in itertools.pairwise(points)]
    total = sum(lengths)
    if total <= 0:
        return points[0]
    goal = position * total
    for (a, b), length in zip(itertools.pairwise(points), lengths, strict=True):
        if goal <= length and length > 0:
            t = goal / length
            return a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        goal -= length
    return points[-1]


def asset_of(sensor: Sensor, network: Network | str) -> str:
    """Return the id (without its ``{network}:`` prefix) of the asset *sensor* observes.

    Raises:
        ConfigError: the sensor is not bound, or bound to an asset of another network.
    """
    prefix = f"{network.value if isinstance(network, Network) else network}:"
    if sensor.asset_id is None or not sensor.asset_id.startswith(prefix):
        raise ConfigError(f"sensor {sensor.sensor_id} is not bound to a {prefix} asset (asset {sensor.asset_id!r})")
    return sensor.asset_id[len(prefix) :]


def sensor_list(sensors: Mapping[str, Sensor] | Iterable[Sensor]) -> list[Sensor]:
    """Return *sensors* (a mapping by id, or any iterable of sensors) as a list sorted by id."""
    values = sensors.values() if isinstance(sensors, Mapping) else sensors
    return sorted(values, key=lambda s: s.sensor_id)


def nearest_sensors(sensors: Sequence[Sensor], x_m: float, y_m: float, count: int) -> list[tuple[int, float]]:
    """Return (position in *sensors*, distance m) of the *count* sensors nearest to (x, y), nearest first."""
    ranked = sorted((math.hypot(s.x_m - x_m, s.y_m - y_m), s.sensor_id, k) for k, s in enumerate(sensors))
    return [(k, d) for d, _sid, k in ranked[:count]]


def pressure_changes(
    *,
    sensors: Sequence[Sensor],
    nearest: Sequence[tuple[int, float]],
    without_kpa: FloatArray,
    with_kpa: FloatArray,
    at_s: FloatArray,
    timing: EventTiming,
    origin: datetime,
) -> list[dict[str, Any]]:
    """Describe how an event changed the pressure at its nearest sensors (noise-free values).

    Args:
        sensors: the pressure sensors, in the column order of the arrays.
        nearest: (column, distance m) of the sensors to describe.
        without_kpa, with_kpa: pressure without and with the event, kPa, shape (times, sensors).
        at_s: the times of the rows, s after *origin*.
        timing: the event's timing.
        origin: the scenario's start.

    Returns:
        Per sensor: ``max_drop_kpa``, the largest change while the event acts (positive for a fall, negative
        for a rise), and when (``max_drop_at``); ``mean_drop_kpa``, the mean fall while the event is at full
        size (None if it never is within the scenario).
    """
    active, full = timing.active(at_s), timing.full(at_s)
    out: list[dict[str, Any]] = []
    for column, distance in nearest:
        drop = without_kpa[:, column] - with_kpa[:, column]
        record: dict[str, Any] = {
            "sensor_id": sensors[column].sensor_id,
            "asset_id": sensors[column].asset_id,
            "distance_m": round(distance, 1),
            "max_drop_kpa": None,
            "max_drop_at": None,
            "mean_drop_kpa": None,
        }
        if active.any():
            k = int(np.flatnonzero(active)[np.argmax(np.abs(drop[active]))])
            record["max_drop_kpa"] = round(float(drop[k]), 3)
            record["max_drop_at"] = (origin + timedelta(seconds=float(at_s[k]))).isoformat()
        if full.any():
            record["mean_drop_kpa"] = round(float(drop[full].mean()), 3)
        out.append(record)
    return out


def iter_steps(start: datetime, step: timedelta, sensor_ids: Sequence[str], values: FloatArray) -> Iterator[Step]:
    """Yield one :class:`Step` per row of *values* (shape (steps, sensors)), the k-th at ``start + k·step``."""
    for k, row in enumerate(values.tolist()):
        ts = start + k * step
        yield Step(ts, [SimReading(sid, ts, value) for sid, value in zip(sensor_ids, row, strict=True)])


def whole_seconds(span: timedelta, what: str) -> int:
    """Return *span* in whole seconds.

    Raises:
        ConfigError: *span* is not a positive whole number of seconds (*what* names it in the message).
    """
    seconds = span.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"{what} must be a positive whole number of seconds, not {seconds}")
    return int(seconds)
