"""Water supply scenarios: days of a water network's sensor readings, with leaks, bursts, valve and pump events.

A :class:`WaterScenario` runs a water network (:func:`twin.water.read_epanet` or the demo city's
:func:`twin.democity.water.build_water`) in EPANET 2.2 and reports what its sensors would have measured: pressure
at ``WP-`` sensors in kPa, flow at ``WF-`` sensors in L/s (signed, positive from the link's ``from_id`` to its
``to_id``), tank level at ``WL-`` sensors in m, every sensor step (default 1 minute), for 24 h or longer.

How it is computed, and why:

- **Engine.** EPANET 2.2, the engine WNTR's ``EpanetSimulator`` runs, through WNTR's toolkit binding, in one
  extended-period run stepped by hand (``ENrunH``/``ENnextH``) so that inputs can change between hydraulic
  steps. An ``.inp`` file cannot vary emitters or one junction's demand over time, and running segments would
  have to carry the tanks' levels and the pumps' and controls' states across each cut, so the demands and leak
  emitters are set before every solve instead. (WNTR's ``WNTRSimulator`` models timed leaks itself but is about
  100× slower.)
- **Demand.** Each junction's demand follows the network's own patterns and demand multiplier, read as the mean
  of each pattern period and interpolated linearly between period midpoints (EPANET holds a pattern value for the
  whole period, which makes every sensor jump at the top of each hour). On top: a factor per local day (the whole
  network; default σ 5 %) and a factor per junction drawn every hour and interpolated (lognormal, default σ
  10 %), both from the seed, so two days differ. Patterns are in local clock time: the scenario's UTC start plus
  ``utc_offset`` (default China Standard Time, UTC+8) and the model's start clock time and pattern start say
  where in its patterns a run begins; a pattern longer than a day (C-Town's weekly ones) begins its first day on
  the scenario's first local day.
- **Leaks** are EPANET emitters, so a leak's flow follows the pressure (``q = C·p^γ``, γ the model's emitter
  exponent, 0.5 an orifice): a leak loses more at night, when pressure is high, and a burst loses less than its
  nominal size where it drags the pressure down. ``flow_l_s`` is the leak's flow at the event-free pressure
  when it reaches full size; an incipient leak's coefficient grows linearly over ``ramp_h``, an abrupt one
  steps. A leak on a pipe is split between the pipe's end junctions in proportion to how near it is to each
  (EPANET has no node inside a pipe; a new node would change the network); a tank or reservoir end gives its
  share to the other end. An abrupt leak of at least :data:`BURST_MIN_FLOW_L_S` is a ``burst``.
- **Valve and pump events** set the link's status for their span. The model's own simple controls on that link
  (e.g. a pump switched by a tank level) are suspended meanwhile, so an outage stays out; at the end the link
  goes back to its initial status, or, if it has controls, to them. A closed pipe is a closed isolation valve.
- **Time.** EPANET solves every ``hydraulic_step`` (default 5 min), wherever tanks or controls need it, and at
  every event change and one second before it (so a sudden change is a step in the readings, not a ramp).
  Sensor values are interpolated linearly between solves.
- **Noise.** Each reading gets Gaussian noise: σ 0.5 kPa on pressure, 1 % (at least 0.01 L/s) on flow, 5 mm
  on level (:class:`WaterSensorNoise`); deterministic for a seed.
- **Ground truth.** Each event with its kind, location (ids and x/y), times and size; for leaks the flow the
  emitter really lost; and the pressure change it caused at the nearest pressure sensors, from the event-free
  run (and, when there are several events, from a run with that event alone).

Example:
    >>> from twin.democity.layout import build_layout
    >>> from twin.democity.sensors import place_sensors
    >>> from twin.democity.water import build_water
    >>> from twin.model import City
    >>> network, _inp = build_water(build_layout())
    >>> sensors = place_sensors(City("demo", "EPSG:4547", networks={Network.WATER: network}))
    >>> start = datetime(2025, 7, 1, 16, tzinfo=UTC)  # midnight in the demo city
    >>> leak = LeakEvent(junction_id="J0505", flow_l_s=10.0, start=start + timedelta(hours=8))
    >>> scenario = WaterScenario(network, sensors, start=start, events=[leak], seed=1)
    >>> len(list(scenario.steps())), scenario.ground_truth().events[0]["kind"]
    (1440, 'leak')
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import wntr
from wntr.epanet.exceptions import EpanetException
from wntr.epanet.toolkit import ENepanet

from simulators.scenario import GroundTruth, Step, parameters
from simulators.scenario_tools import (
    CHINA_STANDARD_TIME,
    DAY_S,
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
from twin.model import LinkKind, NodeKind, PipeNetwork, asset_ref
from twin.sensors import Network, Quantity, Sensor
from twin.water import SOURCE_FORMAT, load_model

log = logging.getLogger(__name__)

DEFAULT_VARIATION = DemandVariation()

KPA_PER_M = 9.80665
"""kPa per metre of water column."""
BURST_MIN_FLOW_L_S = 20.0
"""An abrupt leak at least this large (L/s) is a burst."""
WEEK_S = 7 * DAY_S

# EPANET 2.2 toolkit codes (epanet2_enums.h).
_EN_BASEDEMAND, _EN_EMITTER, _EN_PRESSURE = 1, 3, 11
_EN_INITSETTING, _EN_FLOW, _EN_STATUS, _EN_SETTING = 5, 8, 11, 12
_EN_HYDSTEP = 1
_EN_CONTROLCOUNT = 5
_EN_UNBALANCED = 1  # warning: the solver did not converge at this time
_ONE = "LIFELINE_ONE"  # the constant pattern every demand junction gets; its demand is set at every solve


# --- events ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LeakEvent:
    """A leak at a junction or on a pipe that grows to ``flow_l_s``.

    Attributes:
        flow_l_s: full size, L/s: the flow at the event-free pressure when the leak reaches full size.
        start: when it begins (aware); before the scenario's start means it is already leaking then.
        junction_id: the junction it is at, or
        link_id: the pipe it is on, ``position`` (0 … 1) of the way from the pipe's ``from_id`` end.
        growth: ``abrupt`` (full size at once) or ``incipient`` (growing linearly over ``ramp_h``).
        ramp_h: hours an incipient leak takes to reach full size.
        end: when it is repaired (aware), or None for never.
    """

    flow_l_s: float
    start: datetime
    junction_id: str | None = None
    link_id: str | None = None
    position: float = 0.5
    growth: Growth = "abrupt"
    ramp_h: float = 0.0
    end: datetime | None = None

    def __post_init__(self) -> None:
        if (self.junction_id is None) == (self.link_id is None):
            raise ConfigError("a leak needs exactly one of junction_id and link_id")
        if not (math.isfinite(self.flow_l_s) and self.flow_l_s > 0):
            raise ConfigError(f"leak flow must be positive, not {self.flow_l_s} L/s")
        if not 0.0 <= self.position <= 1.0:
            raise ConfigError(f"leak position must be within 0 … 1 along the pipe, not {self.position}")
        check_growth(self.growth, self.ramp_h)
        check_span(self.start, self.end)

    @property
    def kind(self) -> str:
        """``burst`` for an abrupt leak of at least :data:`BURST_MIN_FLOW_L_S`, else ``leak``."""
        return "burst" if self.growth == "abrupt" and self.flow_l_s >= BURST_MIN_FLOW_L_S else "leak"

    def as_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready values."""
        return {
            "kind": self.kind,
            "junction_id": self.junction_id,
            "link_id": self.link_id,
            "position": self.position if self.link_id is not None else None,
            "flow_l_s": self.flow_l_s,
            "start": self.start.isoformat(),
            "growth": self.growth,
            "ramp_h": self.ramp_h,
            "end": None if self.end is None else self.end.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ValveEvent:
    """A valve closed (or opened) from ``start`` to ``end``: a control valve, or a pipe's isolation valve.

    Attributes:
        link_id: a valve, or a pipe (closing a pipe closes its isolation valves).
        start: when it is operated (aware).
        end: when it goes back (aware), or None for not within the scenario.
        setting: ``closed`` or ``open`` (a control valve held fully open).
    """

    link_id: str
    start: datetime
    end: datetime | None = None
    setting: Literal["closed", "open"] = "closed"

    def __post_init__(self) -> None:
        if self.setting not in ("closed", "open"):
            raise ConfigError(f"valve setting must be 'closed' or 'open', not {self.setting!r}")
        check_span(self.start, self.end)

    @property
    def kind(self) -> str:
        return "valve_closed" if self.setting == "closed" else "valve_opened"

    def as_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready values."""
        return {
            "kind": self.kind,
            "link_id": self.link_id,
            "setting": self.setting,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PumpEvent:
    """A pump off (a power cut, a trip) or forced on from ``start`` to ``end``, whatever its controls say."""

    pump_id: str
    start: datetime
    end: datetime | None = None
    status: Literal["off", "on"] = "off"

    def __post_init__(self) -> None:
        if self.status not in ("off", "on"):
            raise ConfigError(f"pump status must be 'off' or 'on', not {self.status!r}")
        check_span(self.start, self.end)

    @property
    def kind(self) -> str:
        return "pump_off" if self.status == "off" else "pump_on"

    def as_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready values."""
        return {
            "kind": self.kind,
            "pump_id": self.pump_id,
            "status": self.status,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
        }


WaterEvent = LeakEvent | ValveEvent | PumpEvent


@dataclass(frozen=True, slots=True)
class WaterSensorNoise:
    """Standard deviations of the noise added to each water reading.

    Attributes:
        pressure_kpa: on pressure, kPa.
        flow_fraction: on flow, as a share of the flow.
        flow_min_l_s: on flow, at least this much, L/s.
        level_m: on tank level, m.
    """

    pressure_kpa: float = 0.5
    flow_fraction: float = 0.01
    flow_min_l_s: float = 0.01
    level_m: float = 0.005


# --- helpers shared with the gas scenarios ---------------------------------------------------------------------------


# --- the engine -----------------------------------------------------------------------------------------------------


class _Engine:
    """One EPANET 2.2 project opened on an ``.inp`` file, stepped by hand.

    WNTR's wrapper logs every warning code EPANET returns (once per step: thousands of lines for a day with
    negative pressures), so the calls made at every step go to the library directly; warnings are counted.
    """

    def __init__(self, inp: Path, label: str) -> None:
        self.label = label
        self._en = ENepanet(version=2.2)
        try:
            self._en.ENopen(str(inp), str(inp.with_suffix(".rpt")), "")
        except EpanetException as exc:
            with contextlib.suppress(EpanetException):
                self._en.ENclose()
            raise SimulationError(f"{label}: EPANET cannot open the model: {exc}") from exc
        self._lib = self._en.ENlib
        self._ph = self._en._project
        self._value = ctypes.c_double()
        self._time = ctypes.c_long()
        self._hydraulics_open = False
        self.warnings: dict[int, int] = {}

    def close(self) -> None:
        if self._hydraulics_open:
            self._lib.EN_closeH(self._ph)
        self._en.ENclose()

    def _check(self, code: int, what: str) -> None:
        if code >= 100:
            raise SimulationError(f"{self.label}: EPANET error {code} {what}: {EpanetException(code)}")
        if code:
            self.warnings[code] = self.warnings.get(code, 0) + 1

    def node_index(self, node_id: str) -> int:
        return int(self._en.ENgetnodeindex(node_id))

    def link_index(self, link_id: str) -> int:
        return int(self._en.ENgetlinkindex(link_id))

    def controls(self) -> list[tuple[int, int, int, float, int, float]]:
        """Every simple control: (index, type, link index, setting, node index, level)."""
        out = []
        for k in range(1, int(self._en.ENgetcount(_EN_CONTROLCOUNT)) + 1):
            c = self._en.ENgetcontrol(k)
            out.append((k, int(c["type"]), int(c["linkindex"]), float(c["setting"]), int(c["nodeindex"]), c["level"]))
        return out

    def set_control(self, control: tuple[int, int, int, float, int, float], *, enabled: bool) -> None:
        """Enable *control* as it was, or disable it (EPANET skips a control whose link index is 0)."""
        index, kind, link, setting, node, level = control
        code = self._lib.EN_setcontrol(
            self._ph,
            ctypes.c_int(index),
            ctypes.c_int(kind),
            ctypes.c_int(link if enabled else 0),
            ctypes.c_double(setting),
            ctypes.c_int(node),
            ctypes.c_double(level),
        )
        self._check(code, f"setting control {index}")

    def node_value(self, index: int, code: int) -> float:
        self._check(self._lib.EN_getnodevalue(self._ph, index, code, ctypes.byref(self._value)), "reading a node")
        return self._value.value

    def link_value(self, index: int, code: int) -> float:
        self._check(self._lib.EN_getlinkvalue(self._ph, index, code, ctypes.byref(self._value)), "reading a link")
        return self._value.value

    def set_node(self, index: int, code: int, value: float) -> None:
        code = self._lib.EN_setnodevalue(self._ph, ctypes.c_int(index), ctypes.c_int(code), ctypes.c_double(value))
        self._check(code, "setting a node")

    def set_link(self, index: int, code: int, value: float) -> None:
        code = self._lib.EN_setlinkvalue(self._ph, ctypes.c_int(index), ctypes.c_int(code), ctypes.c_double(value))
        self._check(code, "setting a link")

    def set_hydraulic_step(self, step_s: int) -> None:
        self._check(self._lib.EN_settimeparam(self._ph, ctypes.c_int(_EN_HYDSTEP), ctypes.c_long(step_s)), "step")

    def open_hydraulics(self) -> None:
        self._check(self._lib.EN_openH(self._ph), "opening the hydraulic solver")
        self._hydraulics_open = True
        self._check(self._lib.EN_initH(self._ph, ctypes.c_int(0)), "initialising the hydraulic solver")

    def solve(self) -> int:
        """Solve at the current time; return it, s."""
        self._check(self._lib.EN_runH(self._ph, ctypes.byref(self._time)), "solving")
        return int(self._time.value)

    def advance(self) -> int:
        """Move to the next time EPANET must solve at; return the step, s (0 at the end)."""
        self._check(self._lib.EN_nextH(self._ph, ctypes.byref(self._time)), "stepping")
        return int(self._time.value)


@dataclass(frozen=True, slots=True)
class _LeakPlan:
    """A leak as the engine runs it: emitter coefficient ``coefficient`` (L/s per m^γ) split over junctions."""

    event: LeakEvent
    timing: EventTiming
    nodes: tuple[tuple[str, float], ...]  # (junction id, share)
    x_m: float
    y_m: float
    coefficient: float = 0.0


@dataclass(frozen=True, slots=True)
class _SwitchPlan:
    """A valve or pump event as the engine runs it: the link's status (1 open, 0 closed) for its span."""

    event: ValveEvent | PumpEvent
    timing: EventTiming
    link_id: str
    status: float
    x_m: float
    y_m: float


@dataclass(frozen=True, slots=True)
class _Hydraulics:
    """What one run gave at its solves: times (n,) s; pressures (n, nodes) m; flows (n, links) L/s."""

    times_s: FloatArray
    pressure_m: FloatArray
    flow_l_s: FloatArray
    solves: int
    warnings: dict[int, int]


@dataclass(slots=True)
class _Result:
    values: FloatArray  # (steps, sensors), canonical units, with noise
    truth: GroundTruth


class WaterScenario:
    """Days of a water network's sensor readings, with leaks, bursts, valve and pump events (see the module).

    The hydraulics are computed on the first call of :meth:`steps` or :meth:`ground_truth` and kept; every call
    of :meth:`steps` yields the same steps again.

    Args:
        network: an EPANET water network (``read_epanet``, ``build_water``).
        sensors: sensors by id, or any iterable of sensors; the water network's pressure (any node), flow (any
            link) and level (tanks) sensors report, the others are ignored.
        start: the scenario's start (aware).
        duration: how long, at least one sensor step (24 h by default; days are fine).
        step: the sensor step (whole seconds).
        hydraulic_step: the longest time between EPANET solves (whole seconds).
        events: leaks, valve and pump events.
        seed: the seed of demand variation and sensor noise.
        variation: how demand varies around the patterns.
        noise: sensor noise.
        utc_offset: the city's local time minus UTC (its patterns are in local clock time).
        nearest: how many pressure sensors near each event the ground truth describes.
        name: the scenario's name.

    Raises:
        ConfigError: the network is not an EPANET one, a time is naive, steps are not whole seconds, or an
            event or sensor does not fit the asset it names.
        UnknownAssetError: an event or sensor names an asset the network does not have.
        ModelImportError: EPANET cannot read the network's source.

    Example:
        >>> scenario = WaterScenario(network, sensors, start=datetime(2025, 7, 1, tzinfo=UTC))  # doctest: +SKIP
        >>> run_scenario(scenario, sensors=sensors, prefix="lifeline/v1", out_dir=Path("out"))  # doctest: +SKIP
    """

    def __init__(
        self,
        network: PipeNetwork,
        sensors: Mapping[str, Sensor] | Iterable[Sensor],
        *,
        start: datetime,
        duration: timedelta = timedelta(hours=24),
        step: timedelta = timedelta(minutes=1),
        hydraulic_step: timedelta = timedelta(minutes=5),
        events: Sequence[WaterEvent] = (),
        seed: int = 0,
        variation: DemandVariation = DEFAULT_VARIATION,
        noise: WaterSensorNoise = WaterSensorNoise(),
        utc_offset: timedelta = CHINA_STANDARD_TIME,
        nearest: int = 3,
        name: str = "water-supply",
    ) -> None:
        if network.source_format != SOURCE_FORMAT or not network.source:
            raise ConfigError(f"{network.name}: not an EPANET network (source format {network.source_format!r})")
        if start.utcoffset() is None:
            raise ConfigError(f"scenario start must be timezone-aware: {start.isoformat()}")
        self.step_s = whole_seconds(step, "sensor step")
        self.hydraulic_step_s = whole_seconds(hydraulic_step, "hydraulic step")
        self.duration_s = whole_seconds(duration, "duration")
        if self.duration_s < self.step_s:
            raise ConfigError("the scenario must last at least one sensor step")
        self.name = name
        self.start = start
        self.duration = duration
        self.step = step
        self.network = network
        self.events = tuple(events)
        self.seed = seed
        self.variation = variation
        self.noise = noise
        self.utc_offset = utc_offset
        self.nearest = nearest
        self.sensors = [s for s in sensor_list(sensors) if s.network is Network.WATER]
        self._bind_sensors()
        self._plans = [self._plan(event) for event in self.events]
        self._check_rules(load_model(network.source, label=network.name))
        self._result: _Result | None = None

    # --- set-up ---

    def _bind_sensors(self) -> None:
        """Check every sensor's asset; sort out which node or link each one reads."""
        nodes, links = self.network.nodes, self.network.links
        self._node_of: dict[str, str] = {}
        self._link_of: dict[str, str] = {}
        for sensor in self.sensors:
            asset = asset_of(sensor, Network.WATER)
            if sensor.quantity is Quantity.FLOW:
                if asset not in links:
                    raise UnknownAssetError(asset_ref(Network.WATER, asset))
                self._link_of[sensor.sensor_id] = asset
                continue
            if asset not in nodes:
                raise UnknownAssetError(asset_ref(Network.WATER, asset))
            if sensor.quantity is Quantity.LEVEL and nodes[asset].kind is not NodeKind.TANK:
                raise ConfigError(f"level sensor {sensor.sensor_id} is on {asset}, which is not a tank")
            if sensor.quantity not in (Quantity.PRESSURE, Quantity.LEVEL):
                raise ConfigError(f"water sensor {sensor.sensor_id} measures {sensor.quantity.value}: not simulated")
            self._node_of[sensor.sensor_id] = asset
        self.pressure_sensors = [s for s in self.sensors if s.quantity is Quantity.PRESSURE]

    def _plan(self, event: WaterEvent) -> _LeakPlan | _SwitchPlan:
        """Check *event* against the network and turn it into what the engine runs."""
        nodes, links = self.network.nodes, self.network.links
        if isinstance(event, LeakEvent):
            timing = EventTiming.of(start=event.start, end=event.end, ramp_h=event.ramp_h, origin=self.start)
            self._check_within(event.start, event.end)
            if event.junction_id is not None:
                node = nodes.get(event.junction_id)
                if node is None:
                    raise UnknownAssetError(asset_ref(Network.WATER, event.junction_id))
                if node.kind is not NodeKind.JUNCTION:
                    raise ConfigError(f"leak at {event.junction_id}: a {node.kind.value}, not a junction")
                return _LeakPlan(event, timing, ((node.node_id, 1.0),), node.x_m, node.y_m)
            assert event.link_id is not None  # __post_init__ guarantees one of the two
            link = links.get(event.link_id)
            if link is None:
                raise UnknownAssetError(asset_ref(Network.WATER, event.link_id))
            if link.kind is not LinkKind.PIPE:
                raise ConfigError(f"leak on {event.link_id}: a {link.kind.value}, not a pipe")
            shares = {link.from_id: 1.0 - event.position, link.to_id: event.position}
            junctions = [nid for nid in shares if nodes[nid].kind is NodeKind.JUNCTION]
            if not junctions:
                raise ConfigError(f"leak on {event.link_id}: neither end of the pipe is a junction")
            total = sum(shares[nid] for nid in junctions)
            split = (
                tuple((nid, shares[nid] / total) for nid in junctions if shares[nid] > 0)
                if total > 0
                else ((junctions[0], 1.0),)
            )
            x, y = point_along(self.network, link, event.position)
            return _LeakPlan(event, timing, split, x, y)
        link_id = event.link_id if isinstance(event, ValveEvent) else event.pump_id
        link = links.get(link_id)
        if link is None:
            raise UnknownAssetError(asset_ref(Network.WATER, link_id))
        if isinstance(event, ValveEvent) and link.kind not in (LinkKind.PIPE, LinkKind.VALVE):
            raise ConfigError(f"valve event on {link_id}: a {link.kind.value} (use PumpEvent for pumps)")
        if isinstance(event, PumpEvent) and link.kind is not LinkKind.PUMP:
            raise ConfigError(f"pump event on {link_id}: a {link.kind.value}, not a pump")
        self._check_within(event.start, event.end)
        timing = EventTiming.of(start=event.start, end=event.end, ramp_h=0.0, origin=self.start)
        opened = event.setting == "open" if isinstance(event, ValveEvent) else event.status == "on"
        x, y = point_along(self.network, link, 0.5)
        return _SwitchPlan(event, timing, link_id, 1.0 if opened else 0.0, x, y)

    def _check_within(self, start: datetime, end: datetime | None) -> None:
        if start >= self.start + self.duration:
            raise ConfigError(f"event starts at {start.isoformat()}, after the scenario ends")
        if end is not None and end <= self.start:
            raise ConfigError(f"event ends at {end.isoformat()}, before the scenario starts")

    # --- the Scenario protocol ---

    def steps(self) -> Iterator[Step]:
        """Yield one step per sensor step, each with a reading of every water sensor (sorted by id)."""
        result = self._computed()
        yield from iter_steps(self.start, self.step, [s.sensor_id for s in self.sensors], result.values)

    def ground_truth(self) -> GroundTruth:
        """Return the events, their effects at the nearest pressure sensors, and summary totals."""
        return self._computed().truth

    # --- computing ---

    def _computed(self) -> _Result:
        if self._result is None:
            self._result = self._compute()
        return self._result

    def _compute(self) -> _Result:
        started = time.perf_counter()
        label = self.network.name
        wn = load_model(self.network.source, label=label)  # a fresh model: the run's set-up changes it
        clock_s = local_clock_s(self.start, self.utc_offset)
        demand = _DemandModel(wn, self.variation, self.duration_s, clock_s, np.random.default_rng([self.seed, 1]))
        self._prepare(wn, clock_s, demand)
        initial = {
            p.link_id: (str(wn.get_link(p.link_id).initial_status), str(wn.get_link(p.link_id).link_type))
            for p in self._plans
            if isinstance(p, _SwitchPlan)
        }
        tracked_nodes = sorted(
            {*self._node_of.values(), *(n for p in self._plans if isinstance(p, _LeakPlan) for n, _w in p.nodes)}
        )
        tracked_links = sorted(set(self._link_of.values()))
        exponent = float(wn.options.hydraulic.emitter_exponent)
        at_s = np.arange(self.duration_s // self.step_s, dtype=np.float64) * self.step_s
        with tempfile.TemporaryDirectory(prefix="lifeline-water-scenario-") as tmp:
            inp = Path(tmp) / "scenario.inp"
            try:
                wntr.network.write_inpfile(wn, str(inp), units="LPS")
            except Exception as exc:  # WNTR's writer raises whatever a malformed attribute raises
                raise ModelImportError(label, f"cannot write the model for EPANET: {exc}") from exc

            def run(plans: Sequence[_LeakPlan | _SwitchPlan]) -> _Hydraulics:
                return self._run(inp, label, demand, plans, tracked_nodes, tracked_links, initial)

            baseline = run([])
            base_p = interpolate(baseline.times_s, baseline.pressure_m, at_s)
            plans = [self._calibrated(p, baseline, tracked_nodes, exponent) for p in self._plans]
            full = run(plans) if plans else baseline
            alone = [run([p]) for p in plans] if len(plans) > 1 else [full] * len(plans)
        full_p = interpolate(full.times_s, full.pressure_m, at_s)
        full_q = interpolate(full.times_s, full.flow_l_s, at_s)
        clean = self._sensor_values(full_p, full_q, tracked_nodes, tracked_links)
        values = self._noisy(clean)
        engine_s = time.perf_counter() - started
        truth = self._truth(
            plans=plans,
            base_p=base_p,
            full=full,
            alone=alone,
            clean=clean,
            at_s=at_s,
            tracked_nodes=tracked_nodes,
            tracked_links=tracked_links,
            exponent=exponent,
            demand=demand,
            engine_s=engine_s,
        )
        log.info(
            "%s: %d steps × %d sensors, %d solves, in %.2f s",
            self.name,
            len(at_s),
            len(self.sensors),
            full.solves,
            engine_s,
        )
        return _Result(values, truth)

    def _prepare(self, wn: Any, clock_s: int, demand: _DemandModel) -> None:
        """Set a freshly loaded model up for the stepped run (the demands are set at every solve)."""
        wn.add_pattern(_ONE, [1.0])
        for jid, mean_l_s in zip(demand.junction_ids, demand.mean_l_s, strict=True):
            junction = wn.get_node(jid)
            junction.demand_timeseries_list.clear()
            junction.add_demand(mean_l_s / 1000.0, _ONE)
        wn.options.hydraulic.demand_multiplier = 1.0
        times = wn.options.time
        times.duration = self.duration_s
        times.hydraulic_timestep = self.hydraulic_step_s
        times.report_timestep = self.hydraulic_step_s
        times.report_start = 0
        times.pattern_start = demand.pattern_offset_s
        times.start_clocktime = clock_s
        wn.options.quality.parameter = "NONE"
        wn.options.report.status = "NO"
        wn.options.report.summary = "NO"

    def _check_rules(self, wn: Any) -> None:
        """Check that no valve or pump event's link is driven by a rule-based control (it cannot be suspended).

        Raises:
            ConfigError: an event's link is driven by a rule.
        """
        targets: set[str] = set()
        for _name, control in wn.controls():
            if isinstance(control, wntr.network.controls.Control):
                continue
            for action in control.actions():
                target = action.target()[0]
                targets.add(str(getattr(target, "name", "")))
        for plan in self._plans:
            if isinstance(plan, _SwitchPlan) and plan.link_id in targets:
                raise ConfigError(f"{plan.link_id} is driven by a rule-based control; a scenario cannot override it")

    def _calibrated(
        self, plan: _LeakPlan | _SwitchPlan, baseline: _Hydraulics, tracked: list[str], exponent: float
    ) -> _LeakPlan | _SwitchPlan:
        """Give a leak the emitter coefficient that loses its size at the event-free pressure at full size."""
        if not isinstance(plan, _LeakPlan):
            return plan
        when = np.array([float(min(max(plan.timing.full_s, 0), self.duration_s))])
        pressure = interpolate(baseline.times_s, baseline.pressure_m, when)[0]
        reach = 0.0
        for node_id, share in plan.nodes:
            p = float(pressure[tracked.index(node_id)])
            if p < 1.0:
                log.warning("leak at %s: event-free pressure %.2f m; sized at 1 m", node_id, p)
                p = 1.0
            reach += share * p**exponent
        return _LeakPlan(plan.event, plan.timing, plan.nodes, plan.x_m, plan.y_m, plan.event.flow_l_s / reach)

    def _run(
        self,
        inp: Path,
        label: str,
        demand: _DemandModel,
        plans: Sequence[_LeakPlan | _SwitchPlan],
        tracked_nodes: Sequence[str],
        tracked_links: Sequence[str],
        initial: Mapping[str, tuple[str, str]],
    ) -> _Hydraulics:
        """Run EPANET once over the scenario with *plans*; return the tracked values at every solve.

        *initial* gives each switched link's initial status and WNTR link type, to restore it after its event.
        """
        engine = _Engine(inp, label)
        try:
            node_index = [engine.node_index(n) for n in tracked_nodes]
            link_index = [engine.link_index(k) for k in tracked_links]
            demand_index = [engine.node_index(j) for j in demand.junction_ids]
            leaks = [p for p in plans if isinstance(p, _LeakPlan)]
            switches = [p for p in plans if isinstance(p, _SwitchPlan)]
            emitters: dict[int, float] = {}
            for leak in leaks:
                for node_id, _share in leak.nodes:
                    k = engine.node_index(node_id)
                    emitters.setdefault(k, engine.node_value(k, _EN_EMITTER))
            leak_terms = [
                (engine.node_index(node_id), leak.coefficient * share, leak.timing)
                for leak in leaks
                for node_id, share in leak.nodes
            ]
            controls = engine.controls()
            switch_state = [_SwitchState(plan, engine, controls, initial[plan.link_id]) for plan in switches]
            breaks = sorted({b for p in plans for b in p.timing.breaks() if 0 < b < self.duration_s})
            engine.open_hydraulics()
            times: list[int] = []
            pressures: list[list[float]] = []
            flows: list[list[float]] = []
            upcoming = 0
            t_next = 0
            while True:
                for k, d in zip(demand_index, demand.at(t_next).tolist(), strict=True):
                    engine.set_node(k, _EN_BASEDEMAND, d)
                coefficients = dict(emitters)
                for k, c, timing in leak_terms:
                    coefficients[k] += c * timing.fraction(t_next)
                for k, c in coefficients.items():
                    engine.set_node(k, _EN_EMITTER, c)
                for state in switch_state:
                    state.apply(t_next)
                t = engine.solve()
                times.append(t)
                pressures.append([engine.node_value(k, _EN_PRESSURE) for k in node_index])
                flows.append([engine.link_value(k, _EN_FLOW) for k in link_index])
                while upcoming < len(breaks) and breaks[upcoming] <= t:
                    upcoming += 1
                shortened = upcoming < len(breaks) and breaks[upcoming] - t < self.hydraulic_step_s
                if shortened:
                    engine.set_hydraulic_step(breaks[upcoming] - t)
                step = engine.advance()
                if shortened:
                    engine.set_hydraulic_step(self.hydraulic_step_s)
                if step <= 0:
                    break
                t_next = t + step
        finally:
            engine.close()
        if engine.warnings.get(_EN_UNBALANCED):
            log.warning("%s: EPANET could not balance the network at %d solves", label, engine.warnings[1])
        return _Hydraulics(
            times_s=np.asarray(times, dtype=np.float64),
            pressure_m=np.asarray(pressures, dtype=np.float64).reshape(len(times), len(node_index)),
            flow_l_s=np.asarray(flows, dtype=np.float64).reshape(len(times), len(link_index)),
            solves=len(times),
            warnings=dict(engine.warnings),
        )

    def _sensor_values(
        self, pressure_m: FloatArray, flow_l_s: FloatArray, tracked_nodes: list[str], tracked_links: list[str]
    ) -> FloatArray:
        """Noise-free readings, shape (steps, sensors), in each sensor's canonical unit."""
        columns = []
        for sensor in self.sensors:
            if sensor.quantity is Quantity.FLOW:
                columns.append(flow_l_s[:, tracked_links.index(self._link_of[sensor.sensor_id])])
                continue
            head = pressure_m[:, tracked_nodes.index(self._node_of[sensor.sensor_id])]
            columns.append(head * KPA_PER_M if sensor.quantity is Quantity.PRESSURE else head)
        return np.column_stack(columns) if columns else np.zeros((len(pressure_m), 0))

    def _noisy(self, clean: FloatArray) -> FloatArray:
        """*clean* plus each sensor's noise (deterministic for the seed)."""
        rng = np.random.default_rng([self.seed, 2])
        sigma = np.empty_like(clean)
        for k, sensor in enumerate(self.sensors):
            if sensor.quantity is Quantity.FLOW:
                sigma[:, k] = np.maximum(np.abs(clean[:, k]) * self.noise.flow_fraction, self.noise.flow_min_l_s)
            elif sensor.quantity is Quantity.PRESSURE:
                sigma[:, k] = self.noise.pressure_kpa
            else:
                sigma[:, k] = self.noise.level_m
        noisy: FloatArray = clean + rng.standard_normal(clean.shape) * sigma
        levels = [k for k, s in enumerate(self.sensors) if s.quantity is Quantity.LEVEL]
        noisy[:, levels] = np.maximum(noisy[:, levels], 0.0)
        return noisy

    def _truth(
        self,
        *,
        plans: Sequence[_LeakPlan | _SwitchPlan],
        base_p: FloatArray,
        full: _Hydraulics,
        alone: Sequence[_Hydraulics],
        clean: FloatArray,
        at_s: FloatArray,
        tracked_nodes: list[str],
        tracked_links: list[str],
        exponent: float,
        demand: _DemandModel,
        engine_s: float,
    ) -> GroundTruth:
        pressure_columns = [self.sensors.index(s) for s in self.pressure_sensors]
        pressure_nodes = [tracked_nodes.index(self._node_of[s.sensor_id]) for s in self.pressure_sensors]
        without_kpa = base_p[:, pressure_nodes] * KPA_PER_M
        events: list[dict[str, Any]] = []
        leak_volume_m3 = 0.0
        for plan, run in zip(plans, alone, strict=True):
            with_kpa = interpolate(run.times_s, run.pressure_m, at_s)[:, pressure_nodes] * KPA_PER_M
            record = plan.event.as_dict()
            record |= {"x_m": round(plan.x_m, 2), "y_m": round(plan.y_m, 2)}
            if isinstance(plan, _LeakPlan):
                flow = _leak_flow(plan, full, tracked_nodes, exponent)
                volume = float(np.trapezoid(flow, full.times_s)) / 1000.0 if len(flow) > 1 else 0.0
                leak_volume_m3 += volume
                full_at = min(max(plan.timing.full_s, 0), self.duration_s)
                record |= {
                    "nodes": [{"junction_id": n, "share": round(w, 4)} for n, w in plan.nodes],
                    "full_at": (self.start + timedelta(seconds=plan.timing.full_s)).isoformat(),
                    "emitter_coefficient_l_s_m": round(plan.coefficient, 6),
                    "emitter_exponent": exponent,
                    "flow_at_full_l_s": round(float(np.interp(full_at, full.times_s, flow)), 3),
                    "peak_flow_l_s": round(float(flow.max()), 3) if len(flow) else 0.0,
                    "volume_m3": round(volume, 2),
                }
            record["pressure_change"] = pressure_changes(
                sensors=self.pressure_sensors,
                nearest=nearest_sensors(self.pressure_sensors, plan.x_m, plan.y_m, self.nearest),
                without_kpa=without_kpa,
                with_kpa=with_kpa,
                at_s=at_s,
                timing=plan.timing,
                origin=self.start,
            )
            events.append(record)
        kinds: dict[str, int] = {}
        for plan in plans:
            kinds[plan.event.kind] = kinds.get(plan.event.kind, 0) + 1
        pressures = clean[:, pressure_columns]
        summary = {
            "readings": int(clean.size),
            "sensors": len(self.sensors),
            "steps": len(at_s),
            "events": kinds,
            "leak_volume_m3": round(leak_volume_m3, 2),
            "demand_m3": round(demand.volume_m3(full.times_s), 1),
            "min_pressure_kpa": round(float(pressures.min()), 2) if pressures.size else None,
            "hydraulic_solves": full.solves,
            "unbalanced_solves": full.warnings.get(_EN_UNBALANCED, 0),
            "engine_warnings": {str(k): v for k, v in sorted(full.warnings.items())},
            "compute_s": round(engine_s, 3),
        }
        scenario = dict(
            parameters(
                kind="water_supply",
                name=self.name,
                network=self.network.name,
                start=self.start,
                duration=self.duration,
                step=self.step,
                hydraulic_step=timedelta(seconds=self.hydraulic_step_s),
                seed=self.seed,
                utc_offset=self.utc_offset,
            )
        )
        scenario |= {
            "events": [e.as_dict() for e in self.events],
            "variation": asdict(self.variation),
            "noise": asdict(self.noise),
            "sensors": [s.sensor_id for s in self.sensors],
        }
        return GroundTruth(scenario=scenario, events=events, summary=summary)


class _SwitchState:
    """A valve or pump event during a run: suspends the link's controls and sets its status, then undoes it."""

    def __init__(
        self,
        plan: _SwitchPlan,
        engine: _Engine,
        controls: list[tuple[int, int, int, float, int, float]],
        initial: tuple[str, str],
    ) -> None:
        self.plan = plan
        self.engine = engine
        self.index = engine.link_index(plan.link_id)
        self.controls = [c for c in controls if c[2] == self.index]
        self.initial_status, self.link_type = initial
        self.initial_setting = engine.link_value(self.index, _EN_INITSETTING)
        self.started = False
        self.ended = False

    def apply(self, t_s: int) -> None:
        """Do what the event does at *t_s* (before the solve at *t_s*)."""
        timing = self.plan.timing
        if not self.started and t_s >= timing.start_s:
            self.started = True
            for control in self.controls:
                self.engine.set_control(control, enabled=False)
            self.engine.set_link(self.index, _EN_STATUS, self.plan.status)
        if self.started and not self.ended and timing.end_s is not None and t_s >= timing.end_s:
            self.ended = True
            for control in self.controls:
                self.engine.set_control(control, enabled=True)
            if self.controls:
                return  # the link's own controls decide from here
            if self.link_type == "Valve" and self.initial_status == "Active":
                self.engine.set_link(self.index, _EN_SETTING, self.initial_setting)
            else:
                self.engine.set_link(self.index, _EN_STATUS, 0.0 if self.initial_status == "Closed" else 1.0)


class _DemandModel:
    """Each demand junction's consumer demand over a scenario, L/s: patterns × multiplier × random factors.

    Args:
        wn: the WNTR model (SI units), before its demands are replaced.
        variation: the random factors' sizes.
        duration_s: the scenario's length, s.
        clock_s: the local clock time of the scenario's start, s after midnight.
        rng: the source of the random factors.
    """

    def __init__(
        self, wn: Any, variation: DemandVariation, duration_s: int, clock_s: int, rng: np.random.Generator
    ) -> None:
        times = wn.options.time
        offset = clock_s - int(times.start_clocktime) + int(times.pattern_start)
        self.pattern_offset_s = offset if offset >= 0 else offset + WEEK_S
        self.pattern_step_s = float(times.pattern_timestep)
        default = wn.options.hydraulic.pattern
        names: list[str | None] = [None]
        bases: dict[str, dict[str | None, float]] = {}
        for jid in wn.junction_name_list:
            for d in wn.get_node(jid).demand_timeseries_list:
                pattern = d.pattern_name or (default if default in wn.pattern_name_list else None)
                if d.base_value == 0:
                    continue
                per = bases.setdefault(jid, {})
                per[pattern] = per.get(pattern, 0.0) + float(d.base_value) * 1000.0
                if pattern not in names:
                    names.append(pattern)
        self.junction_ids = sorted(bases)
        self._patterns: list[FloatArray] = [
            np.ones(1) if n is None else np.asarray(wn.get_pattern(n).multipliers, dtype=np.float64) for n in names
        ]
        self._bases = np.zeros((len(self.junction_ids), len(names)))
        for row, jid in enumerate(self.junction_ids):
            for pattern, base in bases[jid].items():
                self._bases[row, names.index(pattern)] = base
        self._bases *= float(wn.options.hydraulic.demand_multiplier)
        self.mean_l_s = [float(v) for v in self._bases @ np.array([p.mean() for p in self._patterns])]
        self._series = VariationSeries(
            variation, count=len(self.junction_ids), duration_s=duration_s, clock_s=clock_s, rng=rng
        )

    def at(self, t_s: float) -> FloatArray:
        """Return every demand junction's demand at *t_s* seconds after the start, L/s, shape (junctions,)."""
        u = t_s + self.pattern_offset_s
        multipliers = np.array([smooth_pattern(p, self.pattern_step_s, u) for p in self._patterns])
        result: FloatArray = (self._bases @ multipliers) * self._series.at(t_s)
        return result

    def volume_m3(self, times_s: FloatArray) -> float:
        """Return the consumers' total demand over *times_s* (trapezoids), m³."""
        if len(times_s) < 2:
            return 0.0
        totals = np.array([float(self.at(float(t)).sum()) for t in times_s])
        return float(np.trapezoid(totals, times_s)) / 1000.0


def _leak_flow(plan: _LeakPlan, run: _Hydraulics, tracked: list[str], exponent: float) -> FloatArray:
    """The flow a leak's emitters lost at each solve of *run*, L/s (none at negative pressure)."""
    fractions = np.array([plan.timing.fraction(float(t)) for t in run.times_s])
    flow = np.zeros(len(run.times_s))
    for node_id, share in plan.nodes:
        p = np.maximum(run.pressure_m[:, tracked.index(node_id)], 0.0)
        flow += plan.coefficient * share * p**exponent
    result: FloatArray = flow * fractions
    return result
