"""Gas scenarios: days of a gas network's pressure and of methane in the underground spaces near it, with leaks.

A :class:`GasScenario` runs a pandapipes gas network (:func:`twin.gas.read_pandapipes` or the demo city's
:func:`twin.democity.gas.build_gas`) through a day of demand and reports what its sensors would have measured:
gauge pressure at ``GP-`` sensors in kPa, methane at ``GM-`` sensors (in underground spaces) in %LEL, every
sensor step (default 1 minute).

How it is computed, and why:

- **Demand.** Each sink's ``mdot_kg_per_s`` is taken as its mean flow (as the demo city builds its sinks) and its
  ``scaling`` is replaced by an hourly profile with the morning, noon and evening cooking peaks
  (:data:`COOKING_PROFILE`, mean 1, in local clock time, interpolated between hour midpoints), times a factor
  per local day and a factor per sink drawn every hour (:class:`~simulators.water_scenarios.DemandVariation`).
- **Pressure.** A gas network settles in seconds, so each snapshot is a steady-state ``pandapipes.pipeflow``:
  one every ``snapshot_step`` (default 10 min), plus one at every leak change and one a second before it (so a
  sudden leak is a step in the readings); pressures are interpolated linearly to the sensor step. Where no leak
  acts, a snapshot is also the leak-free one the ground truth compares against, so those are solved once.
- **Leaks** are extra sinks of a fixed mass flow (abrupt, or growing linearly over ``ramp_h``): in a regulated
  network the pressure at a hole barely changes, so neither does its flow. A leak on a pipe is split between the
  pipe's end junctions in proportion to how near it is to each.
- **Methane** follows :mod:`simulators.gas_dispersion`: a share of each leak's flow reaches each underground space
  by its plan distance from the leak (:func:`~simulators.gas_dispersion.share_reaching`), and a well-mixed box
  model with the space's ventilation (:data:`AIR_CHANGES_PER_H` by kind) gives its concentration, stepped
  exactly at the sensor step with the inflow at the middle of each step.
- **Noise.** Pressure: Gaussian, σ 0.1 % of the reading + 0.005 kPa. Methane: a background per space (uniform
  0.2 … 1.2 %LEL) plus Gaussian σ 0.3 %LEL, never below 0 (:class:`GasSensorNoise`). Deterministic for a seed.
- **Reporting.** By default every sensor reports once a sensor step. With ``methane_reporting``
  (:class:`MethaneReporting`) the methane detectors report as networked combustible-gas detectors in utility
  tunnels and underground spaces do (GB 50838, CJJ practice): they sample continuously (every ``sample_s``) and,
  besides the regular report, publish a sample at once when it has moved ``change_pct_lel`` from the last value
  published or trips the local alarm (20 %LEL). The regular reports are the same values as without the option;
  the samples between them follow the box model stepped at ``sample_s``, with noise of their own. The ground
  truth's events do not change.
- **Ground truth.** Each leak with its location (ids, x/y), start, size and growth; the pressure drop at the
  nearest pressure sensors (against the leak-free run, and a run with that leak alone when there are several);
  per space the methane came to (peak ≥ 0.5 %LEL, noise-free): its peak and when it first reached 20 %LEL.

Example:
    >>> from datetime import UTC
    >>> from twin.democity.gas import build_gas
    >>> from twin.democity.layout import build_layout
    >>> from twin.democity.sensors import place_sensors
    >>> from twin.model import City
    >>> network, _net, spaces = build_gas(build_layout())
    >>> city = City("demo", "EPSG:4547", networks={Network.GAS: network}, spaces={s.space_id: s for s in spaces})
    >>> start = datetime(2025, 7, 1, 16, tzinfo=UTC)  # midnight in the demo city
    >>> leak = GasLeakEvent(junction_id="L0909", volume_flow_m3_h=10.0, start=start + timedelta(minutes=30))
    >>> scenario = GasScenario(network, spaces, place_sensors(city), start=start, duration=timedelta(hours=2),
    ...                        events=[leak])
    >>> [space["space_id"] for space in scenario.ground_truth().events[0]["spaces"]]
    ['MH193', 'MH194']
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandapipes

from simulators.gas_dispersion import leak_flow_m3_h, share_reaching, step_concentration, to_pct_lel
from simulators.scenario import GroundTruth, SimReading, Step, parameters
from simulators.scenario_tools import (
    CHINA_STANDARD_TIME,
    DemandVariation,
    EventTiming,
    FloatArray,
    Growth,
    VariationSeries,
    asset_of,
    check_growth,
    check_span,
    interpolate,
    iter_steps,
    local_clock_s,
    nearest_sensors,
    point_along,
    pressure_changes,
    sensor_list,
    smooth_pattern,
    whole_seconds,
)
from twin.errors import ConfigError, ModelImportError, SimulationError, UnknownAssetError
from twin.gas import KPA_PER_BAR
from twin.gas import SOURCE_FORMAT as GAS_SOURCE_FORMAT
from twin.model import LinkKind, PipeNetwork, SpaceKind, UndergroundSpace, asset_ref
from twin.sensors import Network, Quantity, Sensor

log = logging.getLogger(__name__)

AMBIENT_DENSITY_KG_M3 = 0.72
"""Natural gas density at ambient conditions, kg/m³ (as :func:`simulators.gas_dispersion.leak_flow_m3_h`)."""
ALARM_PCT_LEL = 20.0
"""The first methane alarm level, %LEL (GB 50838 practice)."""
REPORTED_PCT_LEL = 0.5
"""Spaces whose noise-free methane peaks at least this high (%LEL) are in the ground truth."""

# fmt: off
_HOURLY = (0.25, 0.2, 0.2, 0.2, 0.25, 0.5, 1.3, 1.9, 1.4, 0.9, 1.0, 1.9,
           2.1, 1.1, 0.7, 0.7, 0.9, 1.9, 2.4, 2.0, 1.2, 0.8, 0.6, 0.4)
# fmt: on
COOKING_PROFILE: tuple[float, ...] = tuple(round(m * 24 / sum(_HOURLY), 4) for m in _HOURLY)
"""Hourly multipliers of gas demand from local midnight, mean 1: breakfast (7–8 h), lunch (11–13 h) and the
evening meal (17–20 h, the largest) of a residential area with gas cookers and water heaters."""

AIR_CHANGES_PER_H: Mapping[SpaceKind, float] = {
    SpaceKind.MANHOLE: 0.5,  # a closed cover with vent holes
    SpaceKind.UTILITY_VAULT: 0.5,  # valve wells and regulator vaults
    SpaceKind.UTILITY_TUNNEL: 4.0,  # the gas compartment's forced ventilation at its normal rate
    SpaceKind.BASEMENT: 1.0,
    SpaceKind.UNDERPASS: 6.0,
}
"""Ventilation of each kind of underground space, air changes per hour."""

_VARIATION = DemandVariation()
_MIN_STEADY_VOL = 1e-7  # spaces whose steady methane would stay below this volume fraction are skipped


@dataclass(frozen=True, slots=True, kw_only=True)
class GasLeakEvent:
    """A gas leak at a junction or on a pipe, of a mass flow or an ambient volume flow.

    Attributes:
        start: when it begins (aware); before the scenario's start means it is already leaking then.
        junction_id: the junction it is at, or
        pipe_id: the pipe it is on, ``position`` (0 … 1) of the way from the pipe's ``from_id`` end.
        mass_flow_kg_s: full size, kg/s; or
        volume_flow_m3_h: full size at ambient conditions, m³/h (at :data:`AMBIENT_DENSITY_KG_M3`).
        growth: ``abrupt`` or ``incipient`` (growing linearly over ``ramp_h``).
        ramp_h: hours an incipient leak takes to reach full size.
        end: when it is stopped (aware), or None for never.
    """

    start: datetime
    junction_id: str | None = None
    pipe_id: str | None = None
    position: float = 0.5
    mass_flow_kg_s: float | None = None
    volume_flow_m3_h: float | None = None
    growth: Growth = "abrupt"
    ramp_h: float = 0.0
    end: datetime | None = None

    def __post_init__(self) -> None:
        if (self.junction_id is None) == (self.pipe_id is None):
            raise ConfigError("a gas leak needs exactly one of junction_id and pipe_id")
        if (self.mass_flow_kg_s is None) == (self.volume_flow_m3_h is None):
            raise ConfigError("a gas leak needs exactly one of mass_flow_kg_s and volume_flow_m3_h")
        size = self.mass_flow_kg_s if self.mass_flow_kg_s is not None else self.volume_flow_m3_h
        if size is None or not (math.isfinite(size) and size > 0):
            raise ConfigError(f"gas leak size must be positive, not {size}")
        if not 0.0 <= self.position <= 1.0:
            raise ConfigError(f"leak position must be within 0 … 1 along the pipe, not {self.position}")
        check_growth(self.growth, self.ramp_h)
        check_span(self.start, self.end)

    @property
    def kind(self) -> str:
        return "gas_leak"

    @property
    def kg_s(self) -> float:
        """Full size, kg/s."""
        if self.mass_flow_kg_s is not None:
            return self.mass_flow_kg_s
        assert self.volume_flow_m3_h is not None  # __post_init__ guarantees one of the two
        return self.volume_flow_m3_h * AMBIENT_DENSITY_KG_M3 / 3600.0

    @property
    def m3_h(self) -> float:
        """Full size at ambient conditions, m³/h."""
        return leak_flow_m3_h(self.kg_s, density_kg_m3=AMBIENT_DENSITY_KG_M3)

    def as_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready values."""
        return {
            "kind": self.kind,
            "junction_id": self.junction_id,
            "pipe_id": self.pipe_id,
            "position": self.position if self.pipe_id is not None else None,
            "mass_flow_kg_s": round(self.kg_s, 6),
            "volume_flow_m3_h": round(self.m3_h, 3),
            "start": self.start.isoformat(),
            "growth": self.growth,
            "ramp_h": self.ramp_h,
            "end": None if self.end is None else self.end.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class GasSensorNoise:
    """The noise on gas readings.

    Attributes:
        pressure_fraction: σ of pressure noise as a share of the reading.
        pressure_kpa: σ of pressure noise added to that, kPa.
        methane_pct_lel: σ of methane noise, %LEL.
        background_pct_lel: the range a space's methane background is drawn from (uniformly), %LEL.
    """

    pressure_fraction: float = 0.001
    pressure_kpa: float = 0.005
    methane_pct_lel: float = 0.3
    background_pct_lel: tuple[float, float] = (0.2, 1.2)


@dataclass(frozen=True, slots=True)
class MethaneReporting:
    """Report by exception: how the methane detectors publish besides their regular report (see the module).

    A real detector samples continuously and sends its value periodically, and at once when the value has moved
    or its local alarm trips, so a fast rise is on the wire within seconds, not at the next regular report.

    Attributes:
        sample_s: the detector's sampling period, whole seconds dividing the sensor step.
        change_pct_lel: a sample this far from the last value published is published at once, %LEL; above the
            noise (with σ 0.3 %LEL per sample, 2 %LEL is 4.7 σ of the difference of two samples).
        alarm_pct_lel: a sample reaching this from a last published value below it is published at once, %LEL.
    """

    sample_s: int = 5
    change_pct_lel: float = 2.0
    alarm_pct_lel: float = ALARM_PCT_LEL


@dataclass(frozen=True, slots=True)
class _LeakPlan:
    event: GasLeakEvent
    timing: EventTiming
    nodes: tuple[tuple[str, float], ...]  # (junction id, share)
    x_m: float
    y_m: float


@dataclass(slots=True)
class _Result:
    values: FloatArray  # (steps, sensors), canonical units, with noise
    extra_s: FloatArray  # readings published between steps (report by exception): time from the start, s,
    extra_col: npt.NDArray[np.int64]  # sensor column,
    extra_value: FloatArray  # value; in time order, sensors in column order
    truth: GroundTruth


class GasScenario:
    """A day (or more) of a gas network's pressure and of methane in underground spaces (see the module).

    The snapshots are computed on the first call of :meth:`steps` or :meth:`ground_truth` and kept; every call
    of :meth:`steps` yields the same steps again.

    Args:
        network: a pandapipes gas network (``read_pandapipes``, ``build_gas``).
        spaces: the underground spaces near it (by id, or any iterable).
        sensors: sensors by id, or any iterable; the gas network's pressure sensors (``gas:`` junctions) and
            methane sensors (``space:`` spaces) report, the others are ignored.
        start: the scenario's start (aware).
        duration: how long, at least one sensor step.
        step: the sensor step (whole seconds).
        snapshot_step: the longest time between pipe flow snapshots (whole seconds).
        events: gas leaks.
        seed: the seed of demand variation and sensor noise.
        profile: hourly demand multipliers from local midnight (normalised here to a mean of 1).
        variation: how demand varies around the profile.
        noise: sensor noise.
        air_changes_per_h: ventilation by kind of space, air changes per hour.
        migration_length_m: how far leaked gas travels through the soil (see ``share_reaching``), m.
        capture: the largest share of a leak one space receives.
        utc_offset: the city's local time minus UTC (the profile is in local clock time).
        nearest: how many pressure sensors near each leak the ground truth describes.
        name: the scenario's name.
        methane_reporting: report by exception for the methane sensors, or None for regular reports only.

    Raises:
        ConfigError: the network is not a pandapipes one, a time is naive, steps are not whole seconds, or an
            event or sensor does not fit the asset it names.
        UnknownAssetError: an event or sensor names a junction, pipe or space that does not exist.
        ModelImportError: pandapipes cannot read the network's source.

    Example:
        >>> scenario = GasScenario(network, spaces, sensors, start=datetime(2025, 7, 1, tzinfo=UTC))  # doctest: +SKIP
        >>> run_scenario(scenario, sensors=sensors, prefix="lifeline/v1", out_dir=Path("out"))        # doctest: +SKIP
    """

    def __init__(
        self,
        network: PipeNetwork,
        spaces: Mapping[str, UndergroundSpace] | Iterable[UndergroundSpace],
        sensors: Mapping[str, Sensor] | Iterable[Sensor],
        *,
        start: datetime,
        duration: timedelta = timedelta(hours=24),
        step: timedelta = timedelta(minutes=1),
        snapshot_step: timedelta = timedelta(minutes=10),
        events: Sequence[GasLeakEvent] = (),
        seed: int = 0,
        profile: Sequence[float] = COOKING_PROFILE,
        variation: DemandVariation = _VARIATION,
        noise: GasSensorNoise = GasSensorNoise(),
        air_changes_per_h: Mapping[SpaceKind, float] = AIR_CHANGES_PER_H,
        migration_length_m: float = 8.0,
        capture: float = 0.3,
        utc_offset: timedelta = CHINA_STANDARD_TIME,
        nearest: int = 3,
        name: str = "gas",
        methane_reporting: MethaneReporting | None = None,
    ) -> None:
        if network.source_format != GAS_SOURCE_FORMAT or not network.source:
            raise ConfigError(f"{network.name}: not a pandapipes network (source format {network.source_format!r})")
        if start.utcoffset() is None:
            raise ConfigError(f"scenario start must be timezone-aware: {start.isoformat()}")
        self.step_s = whole_seconds(step, "sensor step")
        self.snapshot_step_s = whole_seconds(snapshot_step, "snapshot step")
        self.duration_s = whole_seconds(duration, "duration")
        if self.duration_s < self.step_s:
            raise ConfigError("the scenario must last at least one sensor step")
        if methane_reporting is not None and (
            methane_reporting.sample_s <= 0 or self.step_s % methane_reporting.sample_s != 0
        ):
            raise ConfigError(
                f"methane sampling period {methane_reporting.sample_s} s must divide the sensor step {self.step_s} s"
            )
        self.methane_reporting = methane_reporting
        if len(profile) == 0 or min(profile) < 0 or sum(profile) <= 0:
            raise ConfigError("the demand profile needs non-negative multipliers with a positive sum")
        self.name = name
        self.start = start
        self.duration = duration
        self.step = step
        self.network = network
        self.spaces = sorted(spaces.values() if isinstance(spaces, Mapping) else spaces, key=lambda s: s.space_id)
        self.events = tuple(events)
        self.seed = seed
        self.profile = np.asarray(profile, dtype=np.float64) / float(np.mean(profile))
        self.variation = variation
        self.noise = noise
        self.air_changes_per_h = dict(air_changes_per_h)
        self.migration_length_m = migration_length_m
        self.capture = capture
        self.utc_offset = utc_offset
        self.nearest = nearest
        self.sensors = [s for s in sensor_list(sensors) if s.network is Network.GAS]
        self._bind_sensors()
        self._plans = [self._plan(event) for event in self.events]
        try:
            self._net = pandapipes.from_json_string(network.source)
        except Exception as exc:  # pandapower's decoder raises many kinds of error
            raise ModelImportError(network.name, f"cannot read the network's pandapipes JSON: {exc}") from exc
        self._result: _Result | None = None

    # --- set-up ---

    def _bind_sensors(self) -> None:
        space_ids = {s.space_id for s in self.spaces}
        self._junction_of: dict[str, str] = {}
        self._space_of: dict[str, str] = {}
        for sensor in self.sensors:
            if sensor.quantity is Quantity.PRESSURE:
                junction = asset_of(sensor, Network.GAS)
                if junction not in self.network.nodes:
                    raise UnknownAssetError(asset_ref(Network.GAS, junction))
                self._junction_of[sensor.sensor_id] = junction
            elif sensor.quantity is Quantity.METHANE:
                space = asset_of(sensor, "space")
                if space not in space_ids:
                    raise UnknownAssetError(f"space:{space}")
                self._space_of[sensor.sensor_id] = space
            else:
                raise ConfigError(f"gas sensor {sensor.sensor_id} measures {sensor.quantity.value}: not simulated")
        self.pressure_sensors = [s for s in self.sensors if s.quantity is Quantity.PRESSURE]

    def _plan(self, event: GasLeakEvent) -> _LeakPlan:
        if event.start >= self.start + self.duration:
            raise ConfigError(f"gas leak starts at {event.start.isoformat()}, after the scenario ends")
        if event.end is not None and event.end <= self.start:
            raise ConfigError(f"gas leak ends at {event.end.isoformat()}, before the scenario starts")
        timing = EventTiming.of(start=event.start, end=event.end, ramp_h=event.ramp_h, origin=self.start)
        nodes = self.network.nodes
        if event.junction_id is not None:
            node = nodes.get(event.junction_id)
            if node is None:
                raise UnknownAssetError(asset_ref(Network.GAS, event.junction_id))
            return _LeakPlan(event, timing, ((node.node_id, 1.0),), node.x_m, node.y_m)
        assert event.pipe_id is not None  # __post_init__ guarantees one of the two
        link = self.network.links.get(event.pipe_id)
        if link is None:
            raise UnknownAssetError(asset_ref(Network.GAS, event.pipe_id))
        if link.kind is not LinkKind.PIPE:
            raise ConfigError(f"gas leak on {event.pipe_id}: a {link.kind.value}, not a pipe")
        shares = ((link.from_id, 1.0 - event.position), (link.to_id, event.position))
        x, y = point_along(self.network, link, event.position)
        return _LeakPlan(event, timing, tuple((n, w) for n, w in shares if w > 0), x, y)

    # --- the Scenario protocol ---

    def steps(self) -> Iterator[Step]:
        """Yield one step per sensor step, each with a reading of every gas sensor (sorted by id)."""
        result = self._computed()
        ids = [s.sensor_id for s in self.sensors]
        if not len(result.extra_s):
            yield from iter_steps(self.start, self.step, ids, result.values)
            return
        # Regular steps, and between them the readings published on change, one step per instant.
        extra_s, extra_col, extra_value = (
            result.extra_s.tolist(),
            result.extra_col.tolist(),
            result.extra_value.tolist(),
        )
        i = 0
        for k, row in enumerate(result.values.tolist()):
            ts = self.start + k * self.step
            yield Step(ts, [SimReading(sid, ts, value) for sid, value in zip(ids, row, strict=True)])
            end = (k + 1) * self.step_s
            while i < len(extra_s) and extra_s[i] < end:
                at = extra_s[i]
                ts = self.start + timedelta(seconds=at)
                readings = []
                while i < len(extra_s) and extra_s[i] == at:
                    readings.append(SimReading(ids[extra_col[i]], ts, extra_value[i]))
                    i += 1
                yield Step(ts, readings)

    def ground_truth(self) -> GroundTruth:
        """Return the leaks, their pressure drops, the methane in the spaces they reached, and totals."""
        return self._computed().truth

    # --- computing ---

    def _computed(self) -> _Result:
        if self._result is None:
            self._result = self._compute()
        return self._result

    def _compute(self) -> _Result:
        started = time.perf_counter()
        at_s = np.arange(self.duration_s // self.step_s, dtype=np.float64) * self.step_s
        clock_s = local_clock_s(self.start, self.utc_offset)
        series = VariationSeries(
            self.variation,
            count=len(self._net.sink),
            duration_s=self.duration_s,
            clock_s=clock_s,
            rng=np.random.default_rng([self.seed, 1]),
        )
        tracked = sorted({*self._junction_of.values(), *(n for p in self._plans for n, _w in p.nodes)})
        flows = _Flows(
            copy.deepcopy(self._net),  # the run adds a sink per leak node
            self.network,
            self._plans,
            tracked,
            profile=self.profile,
            series=series,
            clock_s=clock_s,
        )
        snapshots = self._snapshot_times()
        everyone = range(len(self._plans))
        with_all = flows.solve(snapshots, everyone, [True] * len(snapshots))
        # Snapshots are steady states: where no leak acts, the leak-free pressures are the ones just solved.
        leaking = [any(p.timing.fraction(t) > 0 for p in self._plans) for t in snapshots]
        baseline = with_all.copy()
        if any(leaking):
            baseline[leaking] = flows.solve(snapshots, (), leaking)[leaking]
        alone = []
        for k, plan in enumerate(self._plans):
            if len(self._plans) == 1:
                alone.append(with_all)
                continue
            acting = [plan.timing.fraction(t) > 0 for t in snapshots]
            rows = baseline.copy()
            rows[acting] = flows.solve(snapshots, (k,), acting)[acting]
            alone.append(rows)
        times = np.asarray(snapshots, dtype=np.float64)
        pressure_kpa = interpolate(times, with_all, at_s) * KPA_PER_BAR
        methane = self._methane(at_s, self.step_s)
        clean, values = self._readings(flows, pressure_kpa, methane)
        extra = self._on_change(values)
        compute_s = time.perf_counter() - started
        truth = self._truth(
            flows=flows,
            times=times,
            baseline=baseline,
            alone=alone,
            at_s=at_s,
            methane=methane,
            clean=clean,
            compute_s=compute_s,
            on_change=len(extra[0]),
        )
        log.info(
            "%s: %d steps × %d sensors, %d pipe flows, in %.2f s",
            self.name,
            len(at_s),
            len(self.sensors),
            flows.solves,
            compute_s,
        )
        return _Result(values, *extra, truth)

    def _snapshot_times(self) -> list[int]:
        """The snapshot grid over the scenario, with every leak change and the second before a sudden one."""
        grid = set(range(0, self.duration_s, self.snapshot_step_s)) | {self.duration_s}
        breaks = {b for p in self._plans for b in p.timing.breaks() if 0 < b < self.duration_s}
        return sorted(grid | breaks)

    def _methane(self, at_s: FloatArray, step_s: int) -> FloatArray:
        """Noise-free methane in every space at *at_s* (every *step_s*), %LEL, shape (times, spaces)."""
        out = np.zeros((len(at_s), len(self.spaces)))
        if not self._plans:
            return out
        dt_h = step_s / 3600.0
        middles = at_s + step_s / 2.0
        leak_m3_h = np.array([[p.event.m3_h * p.timing.fraction(float(t)) for p in self._plans] for t in middles])
        for j, space in enumerate(self.spaces):
            shares = np.array([self._share(math.hypot(space.x_m - p.x_m, space.y_m - p.y_m)) for p in self._plans])
            inflow = leak_m3_h @ shares
            ach = self.air_changes_per_h.get(space.kind, 1.0)
            if float(inflow.max()) / (space.volume_m3 * max(ach, 1e-3)) < _MIN_STEADY_VOL:
                continue
            c = 0.0
            for k in range(len(at_s)):
                out[k, j] = to_pct_lel(c)
                c = step_concentration(
                    c, inflow_m3_h=float(inflow[k]), volume_m3=space.volume_m3, air_changes_per_h=ach, dt_h=dt_h
                )
        return out

    def _readings(self, flows: _Flows, pressure_kpa: FloatArray, methane: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Noise-free and noisy readings, each shape (steps, sensors), in each sensor's canonical unit."""
        rng = np.random.default_rng([self.seed, 2])
        low, high = self.noise.background_pct_lel
        background = rng.uniform(low, high, len(self.spaces))
        space_index = {s.space_id: j for j, s in enumerate(self.spaces)}
        clean = np.zeros((len(pressure_kpa), len(self.sensors)))
        values = np.zeros_like(clean)
        shocks = rng.standard_normal(clean.shape)
        for k, sensor in enumerate(self.sensors):
            if sensor.quantity is Quantity.PRESSURE:
                clean[:, k] = pressure_kpa[:, flows.column(self._junction_of[sensor.sensor_id])]
                sigma = np.abs(clean[:, k]) * self.noise.pressure_fraction + self.noise.pressure_kpa
                values[:, k] = clean[:, k] + shocks[:, k] * sigma
            else:
                j = space_index[self._space_of[sensor.sensor_id]]
                clean[:, k] = methane[:, j]
                noisy = methane[:, j] + background[j] + shocks[:, k] * self.noise.methane_pct_lel
                values[:, k] = np.clip(noisy, 0.0, 100.0)
        return clean, values

    def _on_change(self, values: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray]:
        """The methane readings published between regular reports (report by exception), in time order.

        Each methane sensor samples every ``sample_s``: the sample at a sensor step is the regular report (the
        value in *values*); the others are the box model stepped at ``sample_s`` plus the space's background and
        noise of their own, and are published when they moved ``change_pct_lel`` from the last value published
        or reach the alarm level from below it.
        """
        reporting = self.methane_reporting
        empty = np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
        if reporting is None:
            return empty
        per = self.step_s // reporting.sample_s
        steps = len(values)
        at_s = np.arange(steps * per, dtype=np.float64) * reporting.sample_s
        methane = self._methane(at_s, reporting.sample_s)
        rng = np.random.default_rng([self.seed, 2])
        low, high = self.noise.background_pct_lel
        background = rng.uniform(low, high, len(self.spaces))  # as _readings draws it, for the same seed
        noise = np.random.default_rng([self.seed, 3])
        space_index = {s.space_id: j for j, s in enumerate(self.spaces)}
        found: list[tuple[float, int, float]] = []
        change, alarm = reporting.change_pct_lel, reporting.alarm_pct_lel
        for col, sensor in enumerate(self.sensors):
            if sensor.quantity is not Quantity.METHANE:
                continue
            j = space_index[self._space_of[sensor.sensor_id]]
            shocks = noise.standard_normal(len(at_s)) * self.noise.methane_pct_lel
            samples = np.clip(methane[:, j] + background[j] + shocks, 0.0, 100.0).reshape(steps, per)
            samples[:, 0] = values[:, col]
            # Only steps where some sample moves enough from the regular report, or reaches the alarm from below
            # it, can publish anything; the rest are skipped without a loop.
            moved = np.abs(samples - samples[:, :1]).max(axis=1) >= change
            trips = (samples[:, 0] < alarm) & (samples.max(axis=1) >= alarm)
            for k in np.flatnonzero(moved | trips).tolist():
                last = float(samples[k, 0])
                for m in range(1, per):
                    x = float(samples[k, m])
                    if abs(x - last) >= change or last < alarm <= x:
                        found.append((float(at_s[k * per + m]), col, x))
                        last = x
        found.sort()
        if not found:
            return empty
        t, c, v = zip(*found, strict=True)
        return np.asarray(t), np.asarray(c, dtype=np.int64), np.asarray(v)

    def _truth(
        self,
        *,
        flows: _Flows,
        times: FloatArray,
        baseline: FloatArray,
        alone: Sequence[FloatArray],
        at_s: FloatArray,
        methane: FloatArray,
        clean: FloatArray,
        compute_s: float,
        on_change: int = 0,
    ) -> GroundTruth:
        columns = [flows.column(self._junction_of[s.sensor_id]) for s in self.pressure_sensors]
        without_kpa = interpolate(times, baseline, at_s)[:, columns] * KPA_PER_BAR
        watched: dict[str, list[str]] = {}
        for sid, space_id in self._space_of.items():
            watched.setdefault(space_id, []).append(sid)
        reached: dict[int, list[dict[str, Any]]] = {k: [] for k in range(len(self._plans))}
        over_alarm = 0
        for j, space in enumerate(self.spaces):
            peak = float(methane[:, j].max()) if len(methane) else 0.0
            if peak < REPORTED_PCT_LEL:
                continue
            distances = [math.hypot(space.x_m - p.x_m, space.y_m - p.y_m) for p in self._plans]
            inflows = [self._share(d) * p.event.kg_s for d, p in zip(distances, self._plans, strict=True)]
            nearest = int(np.argmax(inflows))
            crossed = np.flatnonzero(methane[:, j] >= ALARM_PCT_LEL)
            over_alarm += int(len(crossed) > 0)
            reached[nearest].append(
                {
                    "space_id": space.space_id,
                    "kind": space.kind.value,
                    "distance_m": round(distances[nearest], 1),
                    "volume_m3": space.volume_m3,
                    "air_changes_per_h": self.air_changes_per_h.get(space.kind, 1.0),
                    "peak_pct_lel": round(peak, 2),
                    "peak_at": self._iso(at_s[int(np.argmax(methane[:, j]))]),
                    "crossed_20_pct_lel_at": self._iso(at_s[int(crossed[0])]) if len(crossed) else None,
                    "sensor_ids": sorted(watched.get(space.space_id, [])),
                }
            )
        events = []
        for k, (plan, rows) in enumerate(zip(self._plans, alone, strict=True)):
            with_kpa = interpolate(times, rows, at_s)[:, columns] * KPA_PER_BAR
            record = plan.event.as_dict()
            record |= {
                "x_m": round(plan.x_m, 2),
                "y_m": round(plan.y_m, 2),
                "nodes": [{"junction_id": n, "share": round(w, 4)} for n, w in plan.nodes],
                "full_at": self._iso(plan.timing.full_s),
                "volume_m3": round(self._leaked_m3(plan), 2),
                "pressure_change": pressure_changes(
                    sensors=self.pressure_sensors,
                    nearest=nearest_sensors(self.pressure_sensors, plan.x_m, plan.y_m, self.nearest),
                    without_kpa=without_kpa,
                    with_kpa=with_kpa,
                    at_s=at_s,
                    timing=plan.timing,
                    origin=self.start,
                ),
                "spaces": sorted(reached[k], key=lambda r: (r["distance_m"], r["space_id"])),
            }
            events.append(record)
        pressure_cols = [k for k, s in enumerate(self.sensors) if s.quantity is Quantity.PRESSURE]
        methane_cols = [k for k, s in enumerate(self.sensors) if s.quantity is Quantity.METHANE]
        summary = {
            "readings": int(clean.size) + on_change,
            "sensors": len(self.sensors),
            "steps": len(at_s),
            "events": {"gas_leak": len(self._plans)} if self._plans else {},
            "leaked_m3": round(sum(self._leaked_m3(p) for p in self._plans), 2),
            "spaces_over_20_pct_lel": over_alarm,
            "peak_methane_pct_lel": round(float(methane.max()), 2) if methane.size else 0.0,
            "peak_sensor_methane_pct_lel": round(float(clean[:, methane_cols].max()), 2) if methane_cols else None,
            "min_pressure_kpa": round(float(clean[:, pressure_cols].min()), 4) if pressure_cols else None,
            "pipe_flows": flows.solves,
            "compute_s": round(compute_s, 3),
        }
        if self.methane_reporting is not None:
            summary["readings_on_change"] = on_change
        scenario = dict(
            parameters(
                kind="gas",
                name=self.name,
                network=self.network.name,
                start=self.start,
                duration=self.duration,
                step=self.step,
                snapshot_step=timedelta(seconds=self.snapshot_step_s),
                seed=self.seed,
                utc_offset=self.utc_offset,
                migration_length_m=self.migration_length_m,
                capture=self.capture,
            )
        )
        scenario |= {
            "events": [e.as_dict() for e in self.events],
            "profile": [round(float(m), 4) for m in self.profile],
            "variation": asdict(self.variation),
            "noise": asdict(self.noise),
            "air_changes_per_h": {k.value: v for k, v in sorted(self.air_changes_per_h.items())},
            "sensors": [s.sensor_id for s in self.sensors],
            "methane_reporting": None if self.methane_reporting is None else asdict(self.methane_reporting),
        }
        return GroundTruth(scenario=scenario, events=events, summary=summary)

    def _leaked_m3(self, plan: _LeakPlan) -> float:
        """The ambient volume *plan* lost within the scenario, m³ (its growth is piecewise linear: exact)."""
        points = sorted({0, self.duration_s, *(b for b in plan.timing.breaks() if 0 < b < self.duration_s)})
        fractions = [plan.timing.fraction(t) for t in points]
        hours = float(np.trapezoid(fractions, points)) / 3600.0
        return plan.event.m3_h * hours

    def _share(self, distance_m: float) -> float:
        """The share of a leak that reaches a space *distance_m* from it."""
        return share_reaching(distance_m, migration_length_m=self.migration_length_m, capture=self.capture)

    def _iso(self, t_s: float) -> str:
        return (self.start + timedelta(seconds=float(t_s))).isoformat()


class _Flows:
    """A scenario's pandapipes net with a sink per leak node; solves snapshots of it.

    Args:
        net: the pandapipes net (changed: a sink is added per leak node).
        network: the gas network the net is.
        plans: the scenario's leaks.
        tracked: the junctions whose pressure is wanted.
        profile: hourly demand multipliers from local midnight, mean 1.
        series: the random demand factors of the net's sinks.
        clock_s: the local clock time of the scenario's start, s after midnight.
    """

    def __init__(
        self,
        net: Any,
        network: PipeNetwork,
        plans: Sequence[_LeakPlan],
        tracked: Sequence[str],
        *,
        profile: FloatArray,
        series: VariationSeries,
        clock_s: int,
    ) -> None:
        self.label = network.name
        self.net = net
        self.plans = list(plans)
        self._mdot = self.net.sink["mdot_kg_per_s"].to_numpy(dtype=np.float64).copy()
        self._leak_rows = [(k, share) for k, plan in enumerate(self.plans) for _node, share in plan.nodes]
        junctions = [_index(network, node) for plan in self.plans for node, _share in plan.nodes]
        if junctions:
            names = [f"lifeline-leak-{k}" for k, _share in self._leak_rows]
            pandapipes.create_sinks(self.net, junctions, mdot_kg_per_s=0.0, name=names)
        self._column = {node_id: c for c, node_id in enumerate(tracked)}
        self._positions = self.net.junction.index.get_indexer([_index(network, n) for n in tracked])
        self._profile = profile
        self._series = series
        self._clock_s = clock_s
        self.solves = 0

    def column(self, node_id: str) -> int:
        """The column of *node_id* in the solved pressures."""
        return self._column[node_id]

    def solve(self, times: Sequence[int], acting: Iterable[int], wanted: Sequence[bool]) -> FloatArray:
        """Solve the snapshots at *times* that are *wanted*, with only the leaks numbered *acting* leaking.

        Returns:
            Gauge pressure at the tracked junctions, bar, shape (times, junctions); rows not wanted are NaN.

        Raises:
            SimulationError: a pipe flow does not converge or pandapipes cannot run the net.
        """
        out = np.full((len(times), len(self._column)), np.nan)
        on = set(acting)
        for row, (t, want) in enumerate(zip(times, wanted, strict=True)):
            if not want:
                continue
            scaling = smooth_pattern(self._profile, 3600.0, float(self._clock_s + t)) * self._series.at(float(t))
            leaks = [
                self.plans[k].event.kg_s * share * self.plans[k].timing.fraction(t) if k in on else 0.0
                for k, share in self._leak_rows
            ]
            self.net.sink["scaling"] = np.concatenate([scaling, np.ones(len(leaks))])
            self.net.sink["mdot_kg_per_s"] = np.concatenate([self._mdot, np.asarray(leaks, dtype=np.float64)])
            try:
                pandapipes.pipeflow(
                    self.net,
                    friction_model="colebrook",
                    max_iter_hyd=50,
                    check_connectivity=self.solves == 0,
                    use_numba=False,
                )
            except pandapipes.pf.pipeflow_setup.PipeflowNotConverged as exc:
                raise SimulationError(f"{self.label}: the pipe flow at {t} s did not converge") from exc
            except Exception as exc:  # pandapipes raises UserWarning, KeyError… for nets it cannot set up
                raise SimulationError(
                    f"{self.label}: pandapipes cannot run the net at {t} s: {type(exc).__name__}: {exc}"
                ) from exc
            if not self.net.converged:
                raise SimulationError(f"{self.label}: the pipe flow at {t} s did not converge")
            self.solves += 1
            out[row] = self.net.res_junction["p_bar"].to_numpy(dtype=np.float64)[self._positions]
        return out


def _index(network: PipeNetwork, node_id: str) -> int:
    """The pandapipes junction index of node *node_id*."""
    return int(network.nodes[node_id].attrs["index"])
