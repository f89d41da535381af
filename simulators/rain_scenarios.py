"""The rainstorm scenario: a storm replayed minute by minute through the drainage network's SWMM model.

A rain series (a design storm from :func:`twin.storms.chicago_storm`, or a recorded series from
:func:`twin.storms.read_rain_csv`) drives SWMM step by step through ``pyswmm``: before every step the scenario
sets each rain gauge of the model to that step's intensity (``RainGage.total_precip``, an intensity per hour in
the model's units), and after it reads what the sensors would see:

- drainage level sensors (bound to a node): water depth above the node's invert, m;
- drainage flow sensors (bound to a link): flow in the link, L/s;
- rain gauges (network ``rain``): the mean intensity over the sensor step just ended, mm/h — exactly what SWMM was
  given, the same at every gauge, so the recorded rain adds up to the storm's depth.

Before the run the model's options are forced: ``WET_STEP`` and ``DRY_STEP`` to the step at which the rain is set
(otherwise SWMM samples the rain only at its runoff steps), ``REPORT_STEP`` to the sensor step, the start and end
to cover the rain and the drain time after it, ``IGNORE_RAINFALL``/``IGNORE_ROUTING`` off and one thread (so the
same inputs give the same readings, byte for byte). Every rain gauge is pointed at a placeholder ``TIMESERIES``
(:data:`RAIN_SERIES`, all zeros) whose values the per-step setting overrides. The modified ``.inp`` goes to a
temporary folder.

SWMM runs one simulation per process at a time: the whole run happens at the first call of
:meth:`RainstormScenario.steps` (or :meth:`RainstormScenario.run`), in this process, holding the process-wide
SWMM lock of :mod:`twin.drainage`, and the readings are kept in memory; publishing them afterwards, paced in real
time, holds no lock. A 2-hour storm and 2 hours of drain on the demo city take about two seconds.

The ground truth comes from the noise-free values and SWMM's own statistics: every node that floods (first
flooding, peak flooding rate and its time, flooded volume, maximum depth and its time), the network's low points
(nodes with ``attrs["low_point"]``) flagged, the rain depth SWMM recorded per gauge against the design depth, and
the continuity errors.

Example:
    >>> from datetime import UTC, datetime
    >>> from twin.storms import DEFAULT_FORMULA, FORMULAS
    >>> from twin.democity.city import build_demo_city
    >>> city = build_demo_city()                                                            # doctest: +SKIP
    >>> rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=50, duration_min=120)
    >>> scenario = RainstormScenario(
    ...     city.networks[Network.DRAINAGE], city.sensors, rain=rain, start=datetime(2026, 7, 1, tzinfo=UTC)
    ... )                                                                                   # doctest: +SKIP
    >>> scenario.ground_truth().summary["flooded_low_points"]                               # doctest: +SKIP
    ['LP001', 'LP002', 'LP003', 'LP004', 'LP005', 'LP006', 'LP007', 'LP008']
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pyswmm import RainGages, Simulation, SystemStats
from swmm.toolkit import solver
from swmm.toolkit.shared_enum import LinkResult, NodeProperty, NodeResult, ObjectType, SubcatchProperty

from simulators.scenario import GroundTruth, SimReading, Step, parameters
from simulators.scenario_tools import whole_seconds
from twin.drainage import (
    ACRE_HA,
    FLOW_M3_S,
    FT_M,
    IN_MM,
    INP_TOKEN,
    SECTION_HEADER,
    SOURCE_FORMAT,
    SWMM_LOCK,
    US_FLOW_UNITS,
    open_failed,
    swmm_errors,
)
from twin.errors import ConfigError, LifelineError, SimulationError, UnknownAssetError
from twin.model import PipeNetwork
from twin.sensors import Network, Quantity, Sensor
from twin.storms import StormFormula, chicago_storm

log = logging.getLogger(__name__)

RAIN_SERIES = "LIFELINE-RAIN"
"""Name of the placeholder time series every rain gauge points at; the scenario sets the rain each step."""
DEFAULT_STEP = timedelta(minutes=1)
DEFAULT_DRAIN = timedelta(hours=2)
_SWMM_EPOCH = datetime(1899, 12, 30)  # SWMM's DateTime counts days from here
_ASSET_PREFIX = f"{Network.DRAINAGE.value}:"


def _clock(seconds: int) -> str:
    """SWMM's ``HH:MM:SS`` for a duration in seconds."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True, slots=True)
class RainSeries:
    """A rain series: the mean intensity of each step, mm/h, each value holding for ``step``.

    Attributes:
        rain_mm_h: intensity of each step, mm/h (finite, ≥ 0).
        step: how long each value holds (a whole number of seconds).
        start: when the first value starts (aware UTC), for recorded rain; None for a design storm.
        source: how the series was made, JSON-ready (formula and return period, or the recording's span).
    """

    rain_mm_h: tuple[float, ...]
    step: timedelta = DEFAULT_STEP
    start: datetime | None = None
    source: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rain_mm_h:
            raise ConfigError("the rain series is empty")
        if any(not math.isfinite(v) or v < 0 for v in self.rain_mm_h):
            raise ConfigError("rain intensities must be finite numbers ≥ 0 (mm/h)")
        whole_seconds(self.step, "the rain step")
        if self.start is not None and self.start.tzinfo is None:
            raise ConfigError("the rain's start must be timezone-aware")

    @property
    def duration(self) -> timedelta:
        """How long the rain lasts: values × step."""
        return self.step * len(self.rain_mm_h)

    @property
    def depth_mm(self) -> float:
        """Total rain depth, mm: Σ intensity × step."""
        return math.fsum(self.rain_mm_h) * self.step.total_seconds() / 3600.0

    @classmethod
    def design(
        cls,
        formula: StormFormula,
        *,
        return_period_years: float,
        duration_min: float,
        step_min: float = 1.0,
        peak_ratio: float = 0.4,
    ) -> RainSeries:
        """Return the Chicago design storm of *formula* (:func:`twin.storms.chicago_storm`) as a rain series.

        Raises:
            ConfigError: a parameter :func:`~twin.storms.chicago_storm` refuses.

        Example:
            >>> from twin.storms import DEFAULT_FORMULA, FORMULAS
            >>> rain = RainSeries.design(FORMULAS[DEFAULT_FORMULA], return_period_years=50, duration_min=120)
            >>> len(rain.rain_mm_h), round(rain.depth_mm, 1)
            (120, 100.5)
        """
        values = chicago_storm(
            formula,
            return_period_years=return_period_years,
            duration_min=duration_min,
            step_min=step_min,
            peak_ratio=peak_ratio,
        )
        source = {
            "kind": "chicago",
            "formula": formula.city,
            "return_period_years": return_period_years,
            "duration_min": duration_min,
            "step_min": step_min,
            "peak_ratio": peak_ratio,
        }
        return cls(tuple(values), timedelta(minutes=step_min), None, source)

    @classmethod
    def from_records(cls, records: Sequence[tuple[datetime, float]], *, name: str = "") -> RainSeries:
        """Return a recorded series (as :func:`twin.storms.read_rain_csv` reads it) as a rain series.

        Each value holds from its time to the next; the last one for one step.

        Args:
            records: (aware time, intensity in mm/h) pairs at a regular step.
            name: where the records came from (a file name), kept in ``source``.

        Raises:
            ConfigError: fewer than two records, or times not at a regular step of whole seconds.
        """
        if len(records) < 2:
            raise ConfigError("a recorded rain series needs at least two records to know its step")
        step = records[1][0] - records[0][0]
        for (a, _), (b, _) in itertools.pairwise(records):
            if abs((b - a - step).total_seconds()) > 1e-3:
                raise ConfigError(f"recorded rain is not at a regular step: {a.isoformat()} → {b.isoformat()}")
        start = records[0][0].astimezone(UTC)
        source = {"kind": "recorded", "name": name, "first": start.isoformat(), "records": len(records)}
        return cls(tuple(float(v) for _, v in records), step, start, source)


@dataclass(frozen=True, slots=True)
class NodeFlood:
    """A node where water left the network (or would have ponded) during the scenario.

    Attributes:
        node_id: the node.
        low_point: the low point the node serves (``attrs["low_point"]``), or None.
        first_flood: end of the first step (the step at which the rain is set) during which the node flooded.
        peak_rate_m3_s: largest flooding rate, m³/s; ``peak_ts`` when it happened.
        volume_m3: flooded volume over the whole scenario, m³.
        max_depth_m: largest water depth above the invert, m; ``max_depth_ts`` when it happened.
        full_depth_m: the node's depth, invert to rim, m.
    """

    node_id: str
    low_point: str | None
    first_flood: datetime
    peak_rate_m3_s: float
    peak_ts: datetime
    volume_m3: float
    max_depth_m: float
    max_depth_ts: datetime
    full_depth_m: float

    def as_event(self) -> dict[str, Any]:
        """Return the flood as a ground-truth event (``kind`` ``flood``), JSON-ready."""
        return {
            "kind": "flood",
            "node_id": self.node_id,
            "low_point": self.low_point,
            "start": self.first_flood.isoformat(),
            "peak_ts": self.peak_ts.isoformat(),
            "peak_rate_m3_s": round(self.peak_rate_m3_s, 6),
            "volume_m3": round(self.volume_m3, 6),
            "max_depth_m": round(self.max_depth_m, 6),
            "max_depth_ts": self.max_depth_ts.isoformat(),
            "full_depth_m": round(self.full_depth_m, 6),
        }


@dataclass(frozen=True, slots=True)
class RainstormRun:
    """What one SWMM run of a rainstorm scenario produced, noise-free.

    Attributes:
        times: end of each sensor step, aware UTC, shape (steps,).
        sensor_ids: the sensors that report, shape (sensors,), sorted.
        values: readings, canonical units (m, L/s, mm/h), shape (steps, sensors); no sensor noise.
        floods: by node id, every node that flooded.
        max_depth_m: by node id, the largest water depth above the invert, m.
        rain_mm: by rain gauge, the rain depth SWMM recorded on the subcatchments it rains on, mm.
        rain_area_mean_mm: the rain depth over the whole catchment area, from SWMM's runoff continuity, mm.
        runoff_continuity_error_pct, flow_routing_continuity_error_pct: SWMM's continuity errors, percent.
        wall_s: time the SWMM run took, seconds.
    """

    times: tuple[datetime, ...]
    sensor_ids: tuple[str, ...]
    values: npt.NDArray[np.float64]
    floods: Mapping[str, NodeFlood]
    max_depth_m: Mapping[str, float]
    rain_mm: Mapping[str, float]
    rain_area_mean_mm: float
    runoff_continuity_error_pct: float
    flow_routing_continuity_error_pct: float
    wall_s: float


@dataclass(frozen=True, slots=True)
class _Probe:
    """Where one sensor's value comes from: ``kind`` is ``depth`` (node), ``flow`` (link) or ``rain``."""

    sensor_id: str
    kind: str
    asset: str = ""


def _probes(network: PipeNetwork, sensors: Mapping[str, Sensor]) -> list[_Probe]:
    """The sensors this scenario can drive, sorted by id; others (water, gas…) are left out."""
    out: list[_Probe] = []
    for sensor_id in sorted(sensors):
        sensor = sensors[sensor_id]
        if sensor.network is Network.RAIN and sensor.quantity is Quantity.RAIN_RATE:
            out.append(_Probe(sensor_id, "rain"))
            continue
        if sensor.network is not Network.DRAINAGE or sensor.quantity not in (Quantity.LEVEL, Quantity.FLOW):
            continue
        asset = sensor.asset_id or ""
        if not asset.startswith(_ASSET_PREFIX):
            raise ConfigError(f"drainage sensor {sensor_id!r} is not bound to a drainage asset ({asset or 'none'})")
        asset = asset.removeprefix(_ASSET_PREFIX)
        if sensor.quantity is Quantity.LEVEL:
            if asset not in network.nodes:
                raise UnknownAssetError(f"sensor {sensor_id!r}: no node {asset!r} in {network.name}")
            out.append(_Probe(sensor_id, "depth", asset))
        else:
            if asset not in network.links:
                raise UnknownAssetError(f"sensor {sensor_id!r}: no link {asset!r} in {network.name}")
            out.append(_Probe(sensor_id, "flow", asset))
    return out


class RainstormScenario:
    """A rainstorm on a drainage network, computed by SWMM step by step (implements :class:`Scenario`).

    Readings come at the end of every sensor step, from ``start + step`` to ``start + duration``: every
    drainage level, drainage flow and rain gauge sensor of *sensors* reports each step (other sensors are left
    out, and so is each sensor's own ``interval_s``). The optional noise is Gaussian, seeded by *seed*, and
    added on the way out of :meth:`steps` only: levels stay ≥ 0, and rain gauges report without noise.

    Args:
        network: the drainage network; its ``source`` is the SWMM ``.inp`` text it was made from.
        sensors: by id; drainage sensors must be bound (``asset_id`` ``drainage:<node or link id>``) to this
            network.
        rain: the storm; every rain gauge of the model gets it.
        start: when the rain starts (aware; kept in UTC); None takes ``rain.start``.
        step: sensor step, a whole number of seconds.
        drain: how long to keep simulating after the rain stops, so the network drains.
        routing_step_s: SWMM's routing step, seconds; None keeps the model's (5 s in the demo city).
        level_noise_m: standard deviation of the noise on levels, m.
        flow_noise_l_s: standard deviation of the noise on flows, L/s.
        seed: seed of the noise.

    Raises:
        ConfigError: the network is not a SWMM drainage model, no start is known, the rain plus the drain time is
            not a whole number of steps, a noise is negative, or a drainage sensor is not bound to an asset.
        UnknownAssetError: a drainage sensor names a node or link that is not in *network*.
    """

    def __init__(
        self,
        network: PipeNetwork,
        sensors: Mapping[str, Sensor],
        *,
        rain: RainSeries,
        start: datetime | None = None,
        step: timedelta = DEFAULT_STEP,
        drain: timedelta = DEFAULT_DRAIN,
        routing_step_s: float | None = None,
        level_noise_m: float = 0.0,
        flow_noise_l_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if network.kind is not Network.DRAINAGE or network.source_format != SOURCE_FORMAT or not network.source:
            raise ConfigError(f"{network.name}: a rainstorm needs a drainage network made from a SWMM .inp")
        begin = start if start is not None else rain.start
        if begin is None:
            raise ConfigError("the rainstorm needs a start time (the rain series has none)")
        if begin.tzinfo is None:
            raise ConfigError("the rainstorm's start must be timezone-aware")
        if drain < timedelta(0):
            raise ConfigError("the drain time must not be negative")
        if level_noise_m < 0 or flow_noise_l_s < 0:
            raise ConfigError("noise must not be negative")
        if routing_step_s is not None and not 0 < routing_step_s <= 60:
            raise ConfigError("the routing step must be more than 0 and at most 60 s")
        self.name = "rainstorm"
        self.network = network
        self.rain = rain
        self.start = begin.astimezone(UTC)
        self.step = step
        self.duration = rain.duration + drain
        self.drain = drain
        self.routing_step_s = routing_step_s
        self.level_noise_m = level_noise_m
        self.flow_noise_l_s = flow_noise_l_s
        self.seed = seed
        step_s = whole_seconds(step, "the sensor step")
        total_s = whole_seconds(self.duration, "the rain plus the drain time")
        if total_s % step_s:
            raise ConfigError(f"the rain plus the drain time ({total_s} s) is not a whole number of {step_s} s steps")
        rain_step_s = whole_seconds(rain.step, "the rain step")
        self._stride_s = math.gcd(step_s, rain_step_s)
        self._probes = _probes(network, sensors)
        self._run: RainstormRun | None = None

    @property
    def inp(self) -> str:
        """The ``.inp`` text SWMM runs: the network's source with the scenario's options and rain gauges."""
        return scenario_inp(
            self.network.source,
            start=self.start,
            end=self.start + self.duration + timedelta(seconds=self._stride_s),
            rain_step=timedelta(seconds=self._stride_s),
            report_step=self.step,
            routing_step_s=self.routing_step_s,
        )

    def run(self) -> RainstormRun:
        """Run SWMM through the storm and the drain time (once; later calls return the same run).

        Raises:
            SimulationError: SWMM rejects the model or stops with an error.
        """
        if self._run is None:
            self._run = self._simulate()
        return self._run

    def steps(self) -> Iterator[Step]:
        """Yield one step per sensor step, readings in sensor-id order, noise added as configured."""
        run = self.run()
        rng = random.Random(self.seed)
        kinds = [p.kind for p in self._probes]
        for row, ts in enumerate(run.times):
            readings: list[SimReading] = []
            for col, sensor_id in enumerate(run.sensor_ids):
                value = float(run.values[row, col])
                if kinds[col] == "depth" and self.level_noise_m > 0:
                    value = max(0.0, value + rng.gauss(0.0, self.level_noise_m))
                elif kinds[col] == "flow" and self.flow_noise_l_s > 0:
                    value += rng.gauss(0.0, self.flow_noise_l_s)
                readings.append(SimReading(sensor_id, ts, value))
            yield Step(ts, readings)

    def ground_truth(self) -> GroundTruth:
        """Return what SWMM says happened: the floods, the low points, the rain recorded, continuity."""
        run = self.run()
        low_points: dict[str, dict[str, Any]] = {}
        for node in sorted(self.network.nodes.values(), key=lambda n: str(n.attrs.get("low_point", ""))):
            point = node.attrs.get("low_point")
            if not point:
                continue
            flood = run.floods.get(node.node_id)
            low_points[str(point)] = {
                "node_id": node.node_id,
                "flooded": flood is not None,
                "first_flood": flood.first_flood.isoformat() if flood else None,
                "volume_m3": round(flood.volume_m3, 6) if flood else 0.0,
                "max_depth_m": round(run.max_depth_m.get(node.node_id, 0.0), 6),
                "full_depth_m": node.depth_m,
            }
        floods = sorted(run.floods.values(), key=lambda f: (f.first_flood, f.node_id))
        readings = len(run.times) * len(run.sensor_ids)
        scenario = dict(
            parameters(
                kind=self.name,
                network=self.network.name,
                start=self.start,
                duration=self.duration,
                step=self.step,
                rain_step=self.rain.step,
                drain=self.drain,
                routing_step_s=self.routing_step_s,
                level_noise_m=self.level_noise_m,
                flow_noise_l_s=self.flow_noise_l_s,
                seed=self.seed,
            )
        )
        scenario["rain_mm_h"] = list(self.rain.rain_mm_h)
        scenario["storm"] = dict(self.rain.source)
        summary: dict[str, Any] = {
            "design_rain_mm": self.rain.depth_mm,
            "rain_mm": dict(sorted(run.rain_mm.items())),
            "rain_area_mean_mm": run.rain_area_mean_mm,
            "flooded_nodes": len(floods),
            "flood_volume_m3": round(math.fsum(f.volume_m3 for f in floods), 6),
            "low_points": low_points,
            "flooded_low_points": sorted(p for p, v in low_points.items() if v["flooded"]),
            "runoff_continuity_error_pct": run.runoff_continuity_error_pct,
            "flow_routing_continuity_error_pct": run.flow_routing_continuity_error_pct,
            "steps": len(run.times),
            "sensors": len(run.sensor_ids),
            "readings": readings,
        }
        return GroundTruth(scenario=scenario, events=[f.as_event() for f in floods], summary=summary)

    def _simulate(self) -> RainstormRun:
        stride_s = self._stride_s
        strides = round(self.duration.total_seconds()) // stride_s
        per_step = round(self.step.total_seconds()) // stride_s
        rain_per = round(self.rain.step.total_seconds()) // stride_s
        rain = np.zeros(strides)
        given = np.repeat(np.asarray(self.rain.rain_mm_h, dtype=float), rain_per)
        rain[: len(given)] = given
        text = self.inp
        gauge_of = _subcatchment_gauges(text)
        started = time.perf_counter()
        with SWMM_LOCK, tempfile.TemporaryDirectory(prefix="rainstorm-") as tmp:
            path = Path(tmp) / "rainstorm.inp"
            path.write_text(text, encoding="utf-8")
            report = Path(tmp) / "rainstorm.rpt"
            try:
                sim = Simulation(str(path), str(report), str(Path(tmp) / "rainstorm.out"))
            except Exception as exc:  # pyswmm raises a bare Exception for SWMM's input errors
                rejected = open_failed(f"{self.network.name} (rainstorm)", report, exc)
                raise SimulationError(str(rejected)) from exc
            try:
                record = _drive(sim, self, self._probes, rain, strides, stride_s, per_step, gauge_of)
            except LifelineError:
                raise
            except Exception as exc:  # SWMM reports run-time errors as a bare Exception
                detail = "; ".join(message for message, _line in swmm_errors(report)) or str(exc).strip()
                raise SimulationError(f"{self.network.name} (rainstorm): SWMM stopped: {detail}") from exc
        wall = time.perf_counter() - started
        run = RainstormRun(
            times=tuple(self.start + (k + 1) * self.step for k in range(strides // per_step)),
            sensor_ids=tuple(p.sensor_id for p in self._probes),
            values=record.values,
            floods=record.floods,
            max_depth_m=record.max_depth_m,
            rain_mm=record.rain_mm,
            rain_area_mean_mm=record.rain_area_mean_mm,
            runoff_continuity_error_pct=record.errors[0],
            flow_routing_continuity_error_pct=record.errors[1],
            wall_s=wall,
        )
        log.info(
            "rainstorm on %s: %d steps × %d sensors, %.1f mm of rain, %d nodes flooded, SWMM %.1f s",
            self.network.name,
            len(run.times),
            len(run.sensor_ids),
            self.rain.depth_mm,
            len(run.floods),
            wall,
        )
        return run


@dataclass(frozen=True, slots=True)
class _Units:
    """Factors from a model's units to SI: length → m, volume → m³, area → ha, rain depth → mm, flow → m³/s."""

    length_m: float
    volume_m3: float
    area_ha: float
    rain_mm: float
    flow_m3_s: float

    @classmethod
    def of(cls, flow_units: str) -> _Units:
        units = flow_units.upper()
        if units in US_FLOW_UNITS:
            return cls(FT_M, FT_M**3, ACRE_HA, IN_MM, FLOW_M3_S[units])
        return cls(1.0, 1.0, 1.0, 1.0, FLOW_M3_S.get(units, 1.0))


@dataclass(slots=True)
class _Record:
    values: npt.NDArray[np.float64]
    floods: dict[str, NodeFlood] = field(default_factory=dict)
    max_depth_m: dict[str, float] = field(default_factory=dict)
    rain_mm: dict[str, float] = field(default_factory=dict)
    rain_area_mean_mm: float = 0.0
    errors: tuple[float, float] = (math.nan, math.nan)


def _drive(
    sim: Any,
    scenario: RainstormScenario,
    probes: Sequence[_Probe],
    rain_mm_h: npt.NDArray[np.float64],
    strides: int,
    stride_s: int,
    per_step: int,
    gauge_of: Mapping[str, str],
) -> _Record:
    """Run the opened simulation *sim* stride by stride, setting the rain and reading the probes.

    Nodes, links and subcatchments are read through ``swmm.toolkit.solver`` by index: ``pyswmm``'s ``Node``
    checks its id against the list of every id, which makes reading each node of a network quadratic.

    Args:
        probes: where each column of the readings comes from.
        rain_mm_h: the rain of each stride, mm/h, shape (strides,).
        strides: how many strides of *stride_s* seconds to run.
        per_step: strides per sensor step.
        gauge_of: subcatchment id → the rain gauge that rains on it.
    """
    record = _Record(values=np.zeros((strides // per_step, len(probes))))
    errors: dict[str, float] = {}
    with sim:  # leaving ends the run and closes the engine, also after an error
        units = _Units.of(str(sim.flow_units))
        sim.step_advance(stride_s)
        gauges = list(RainGages(sim))
        if not gauges:
            raise ConfigError(f"{scenario.network.name}: the SWMM model has no rain gauge")
        system = SystemStats(sim)
        node_ids = [solver.project_get_id(ObjectType.NODE, i) for i in range(solver.project_get_count(ObjectType.NODE))]
        depth_cols = [
            (col, solver.project_get_index(ObjectType.NODE, p.asset))
            for col, p in enumerate(probes)
            if p.kind == "depth"
        ]
        flow_cols = [
            (col, solver.project_get_index(ObjectType.LINK, p.asset))
            for col, p in enumerate(probes)
            if p.kind == "flow"
        ]
        rain_cols = [col for col, p in enumerate(probes) if p.kind == "rain"]
        done = 0

        def set_rain() -> None:
            # Runs after SWMM has started (which resets the gauges) and before each stride.
            value = float(rain_mm_h[done]) / units.rain_mm if done < strides else 0.0
            for gauge in gauges:
                gauge.total_precip = value

        sim.add_before_step(set_rain)
        sim.add_after_end(lambda: errors.update(runoff=sim.runoff_error, routing=sim.flow_routing_error))
        first_flood: dict[str, datetime] = {}
        flooded_so_far = 0.0
        for _ in sim:
            done += 1
            flooded = float(system.routing_stats["flooding"])
            if flooded > flooded_so_far:  # some node flooded during this stride: find the new ones
                flooded_so_far = flooded
                now = scenario.start + timedelta(seconds=done * stride_s)
                for i, node_id in enumerate(node_ids):
                    if node_id not in first_flood and solver.node_get_stats(i).volFlooded > 0.0:
                        first_flood[node_id] = now
            if done % per_step == 0:
                row = done // per_step - 1
                for col, i in depth_cols:
                    record.values[row, col] = solver.node_get_result(i, NodeResult.DEPTH) * units.length_m
                for col, i in flow_cols:
                    record.values[row, col] = solver.link_get_result(i, LinkResult.FLOW) * units.flow_m3_s * 1000.0
                mean_rain = float(np.mean(rain_mm_h[done - per_step : done]))
                for col in rain_cols:
                    record.values[row, col] = mean_rain
            if done == strides:
                break
        if done < strides:
            raise SimulationError(f"{scenario.network.name} (rainstorm): SWMM ended after {done} of {strides} steps")
        _collect(scenario, record, node_ids, first_flood, gauge_of, units)
        record.rain_area_mean_mm = float(system.runoff_stats["rainfall"]) * units.rain_mm
    record.errors = (float(errors.get("runoff", math.nan)), float(errors.get("routing", math.nan)))
    return record


def _collect(
    scenario: RainstormScenario,
    record: _Record,
    node_ids: Sequence[str],
    first_flood: Mapping[str, datetime],
    gauge_of: Mapping[str, str],
    units: _Units,
) -> None:
    """Copy SWMM's node and subcatchment statistics into *record*, in SI units, before the engine frees them."""
    swmm_start = scenario.start.replace(tzinfo=None, microsecond=0)
    start_days = (swmm_start - _SWMM_EPOCH) / timedelta(days=1)

    def when(days: float) -> datetime:
        return scenario.start + timedelta(seconds=round((days - start_days) * 86400.0))

    network = scenario.network
    for i, node_id in enumerate(node_ids):
        stats = solver.node_get_stats(i)
        record.max_depth_m[node_id] = float(stats.maxDepth) * units.length_m
        flooded = float(stats.volFlooded) * units.volume_m3
        if flooded <= 0.0:
            continue
        twin_node = network.nodes.get(node_id)
        point = twin_node.attrs.get("low_point") if twin_node is not None else None
        full_depth = solver.node_get_parameter(i, NodeProperty.FULL_DEPTH) * units.length_m
        record.floods[node_id] = NodeFlood(
            node_id=node_id,
            low_point=str(point) if point else None,
            first_flood=first_flood.get(node_id, when(float(stats.maxOverflowDate))),
            peak_rate_m3_s=float(stats.maxOverflow) * units.flow_m3_s,
            peak_ts=when(float(stats.maxOverflowDate)),
            volume_m3=flooded,
            max_depth_m=float(stats.maxDepth) * units.length_m,
            max_depth_ts=when(float(stats.maxDepthDate)),
            full_depth_m=float(full_depth),
        )
    depth_area: dict[str, float] = {}
    area: dict[str, float] = {}
    for i in range(solver.project_get_count(ObjectType.SUBCATCH)):
        gauge = gauge_of.get(solver.project_get_id(ObjectType.SUBCATCH, i))
        if gauge is None:
            continue
        sub_area = solver.subcatch_get_parameter(i, SubcatchProperty.AREA) * units.area_ha
        depth_area[gauge] = depth_area.get(gauge, 0.0) + solver.subcatch_get_stats(i).precip * sub_area
        area[gauge] = area.get(gauge, 0.0) + sub_area
    record.rain_mm = {g: depth_area[g] * units.rain_mm / area[g] for g in sorted(area) if area[g] > 0}


# --------------------------------------------------------------------------------------------------------------
# The .inp the scenario runs


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """Split ``.inp`` text into (upper-case section name, lines including the header); "" before the first."""
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = SECTION_HEADER.match(line)
        if match:
            blocks.append((match.group(1).strip().upper(), [line]))
        else:
            blocks[-1][1].append(line)
    return blocks


def _data(line: str) -> list[str]:
    """The tokens of a data line (comments dropped); [] for blank and comment lines."""
    return list(INP_TOKEN.findall(line.split(";", 1)[0]))


def _subcatchment_gauges(text: str) -> dict[str, str]:
    """Subcatchment id → the rain gauge that rains on it, from the ``[SUBCATCHMENTS]`` section."""
    out: dict[str, str] = {}
    for name, lines in _sections(text):
        if name == "SUBCATCHMENTS":
            for line in lines[1:]:
                tokens = _data(line)
                if len(tokens) >= 2:
                    out[tokens[0]] = tokens[1]
    return out


def scenario_inp(
    source: str,
    *,
    start: datetime,
    end: datetime,
    rain_step: timedelta,
    report_step: timedelta,
    routing_step_s: float | None = None,
) -> str:
    """Return *source* (SWMM ``.inp`` text) set up to have its rain set step by step through the API.

    Forces ``START``/``REPORT_START``/``END`` dates and times (*start*, *end* in UTC), ``WET_STEP`` and
    ``DRY_STEP`` to *rain_step*, ``REPORT_STEP`` to *report_step*, ``ROUTING_STEP`` (when given),
    ``IGNORE_RAINFALL NO``, ``IGNORE_ROUTING NO`` and ``THREADS 1``; points every rain gauge at the placeholder
    series :data:`RAIN_SERIES` (format ``INTENSITY``, recording interval *rain_step*). Everything else is kept
    line for line.

    Raises:
        ConfigError: the model has no ``[RAINGAGES]``, a series named :data:`RAIN_SERIES` already exists, or a
            time is not timezone-aware.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ConfigError("scenario times must be timezone-aware")
    first = start.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    last = end.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    rain_s = whole_seconds(rain_step, "the rain step")
    options: dict[str, str] = {
        "START_DATE": first.strftime("%m/%d/%Y"),
        "START_TIME": first.strftime("%H:%M:%S"),
        "REPORT_START_DATE": first.strftime("%m/%d/%Y"),
        "REPORT_START_TIME": first.strftime("%H:%M:%S"),
        "END_DATE": last.strftime("%m/%d/%Y"),
        "END_TIME": last.strftime("%H:%M:%S"),
        "WET_STEP": _clock(rain_s),
        "DRY_STEP": _clock(rain_s),
        "REPORT_STEP": _clock(whole_seconds(report_step, "the report step")),
        "IGNORE_RAINFALL": "NO",
        "IGNORE_ROUTING": "NO",
        "THREADS": "1",
    }
    if routing_step_s is not None:
        options["ROUTING_STEP"] = f"{routing_step_s:g}"
    blocks = _sections(source)
    names = [name for name, _lines in blocks]
    if "RAINGAGES" not in names:
        raise ConfigError("the SWMM model has no [RAINGAGES] section: nothing to rain on")
    series = [f"{RAIN_SERIES} 00:00:00 0", f"{RAIN_SERIES} {_clock(rain_s)} 0"]
    if "OPTIONS" not in names:
        blocks.insert(1, ("OPTIONS", ["[OPTIONS]"]))
    if "TIMESERIES" not in names:
        blocks.append(("TIMESERIES", ["[TIMESERIES]"]))
    out: list[str] = []
    for name, lines in blocks:
        if name == "OPTIONS":
            kept = [lines[0]]
            for line in lines[1:]:
                tokens = _data(line)
                if not tokens or tokens[0].upper() not in options:
                    kept.append(line)
            kept[1:1] = [f"{key:<20} {value}" for key, value in options.items()]
            out += kept
        elif name == "RAINGAGES":
            out.append(lines[0])
            for line in lines[1:]:
                tokens = _data(line)
                if len(tokens) < 2:
                    out.append(line)
                    continue
                snow_catch = tokens[3] if len(tokens) > 3 else "1.0"
                out.append(f"{tokens[0]} INTENSITY {_clock(rain_s)} {snow_catch} TIMESERIES {RAIN_SERIES}")
        elif name == "TIMESERIES":
            if any(_data(line)[:1] == [RAIN_SERIES] for line in lines[1:]):
                raise ConfigError(f"the SWMM model already has a time series named {RAIN_SERIES}")
            out += [lines[0], *series, *lines[1:]]
        else:
            out += lines
    return "\n".join(out) + "\n"
