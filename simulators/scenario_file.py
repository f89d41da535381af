"""Scenario files: one TOML file that combines a storm, water leaks and bursts, gas leaks and sensor faults.

Example (times in hours from ``start``)::

    [scenario]
    name = "汛期综合演练"
    start = "2026-06-01T08:00:00+08:00"
    hours = 6
    seed = 7

    [rainstorm]                 # optional: a design storm through the drainage model
    return_period = 50
    duration_min = 120
    peak_ratio = 0.4
    formula = "nanchang"

    [[water.leak]]              # optional, any number: through the water model
    junction = "J0707"          # or: pipe = "P0123", position = 0.5
    flow_l_s = 10
    at_h = 1.0
    growth = "incipient"        # or "abrupt"
    ramp_h = 2

    [[gas.leak]]                # optional, any number: through the gas model
    junction = "LP3-J0405"      # or: pipe = "..."
    flow_m3_h = 40
    at_h = 2

    [gas.methane_reporting]     # optional: methane detectors also report by exception (default: regular only)
    sample_s = 5                # sampling period, seconds dividing the sensor step (60 s); default 5
    change_pct_lel = 2.0        # a sample this far from the last value published goes at once, %LEL; default 2
    alarm_pct_lel = 20.0        # a sample reaching this from below goes at once, %LEL; default 20

    [[fault]]                   # optional, any number: on any sensor
    kind = "stuck"              # dropout, stuck, spike, drift, noise, clock_skew, duplicate, out_of_order, malformed
    sensor = "WP-J0707"
    from_h = 3
    to_h = 4
    magnitude = 0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from simulators.faults import Fault, FaultKind
from simulators.gas_scenarios import GasLeakEvent, GasScenario, MethaneReporting
from simulators.rain_scenarios import RainSeries, RainstormScenario
from simulators.scenario import CombinedScenario, Scenario
from simulators.water_scenarios import LeakEvent, WaterScenario
from twin.errors import ConfigError
from twin.model import City
from twin.sensors import Network
from twin.storms import DEFAULT_FORMULA, FORMULAS


@dataclass(frozen=True, slots=True)
class ScenarioPlan:
    """What a scenario file asks for, built against a city."""

    name: str
    scenario: Scenario
    faults: list[Fault]
    seed: int


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing {key!r}")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, not {type(value).__name__}")
    return value


def load_plan(path: Path, city: City) -> ScenarioPlan:
    """Read a scenario file and build its scenario against *city*.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is missing or wrong (the message names the
            file and the key), or the city lacks a network the file needs.
    """
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    head = doc.get("scenario", {})
    name = _get(head, "name", str, f"{where} [scenario]", path.stem)
    start_text = _get(head, "start", str, f"{where} [scenario]")
    try:
        start = datetime.fromisoformat(start_text)
    except ValueError as exc:
        raise ConfigError(f"{where} [scenario]: start {start_text!r} is not ISO 8601") from exc
    if start.tzinfo is None:
        raise ConfigError(f"{where} [scenario]: start needs a UTC offset")
    start = start.astimezone(UTC)
    hours = _get(head, "hours", float, f"{where} [scenario]")
    seed = _get(head, "seed", int, f"{where} [scenario]", 0)
    duration = timedelta(hours=hours)
    parts: list[Scenario] = []
    if "rainstorm" in doc:
        storm = doc["rainstorm"]
        at = f"{where} [rainstorm]"
        formula = _get(storm, "formula", str, at, DEFAULT_FORMULA)
        if formula not in FORMULAS:
            raise ConfigError(f"{at}: unknown formula {formula!r}; known: {', '.join(sorted(FORMULAS))}")
        rain = RainSeries.design(
            FORMULAS[formula],
            return_period_years=_get(storm, "return_period", float, at),
            duration_min=_get(storm, "duration_min", float, at, 120.0),
            peak_ratio=_get(storm, "peak_ratio", float, at, 0.4),
        )
        parts.append(
            RainstormScenario(
                _network(city, Network.DRAINAGE, at),
                city.sensors,
                rain=rain,
                start=start,
                drain=max(duration - rain.duration, timedelta(0)),
                seed=seed,
            )
        )
    water = doc.get("water", {})
    if water:
        at = f"{where} [water]"
        leaks = [_water_leak(item, start, f"{at} leak {k + 1}") for k, item in enumerate(water.get("leak", []))]
        parts.append(
            WaterScenario(
                _network(city, Network.WATER, at), city.sensors, start=start, duration=duration, events=leaks, seed=seed
            )
        )
    gas = doc.get("gas", {})
    if gas:
        at = f"{where} [gas]"
        leaks_g = [_gas_leak(item, start, f"{at} leak {k + 1}") for k, item in enumerate(gas.get("leak", []))]
        table = _get(gas, "methane_reporting", dict, at, None)
        reporting = None if table is None else _methane_reporting(table, f"{where} [gas.methane_reporting]")
        parts.append(
            GasScenario(
                _network(city, Network.GAS, at),
                city.spaces,
                city.sensors,
                start=start,
                duration=duration,
                events=leaks_g,
                seed=seed,
                methane_reporting=reporting,
            )
        )
    if not parts:
        raise ConfigError(f"{where}: nothing to simulate: add [rainstorm], [[water.leak]] or [[gas.leak]]")
    faults = [_fault(item, start, f"{where} fault {k + 1}") for k, item in enumerate(doc.get("fault", []))]
    scenario: Scenario = parts[0] if len(parts) == 1 else CombinedScenario(parts, name=name)
    return ScenarioPlan(name, scenario, faults, seed)


def _network(city: City, kind: Network, where: str) -> Any:
    if kind not in city.networks:
        raise ConfigError(f"{where}: the twin has no {kind.value} network")
    return city.networks[kind]


def _water_leak(item: dict[str, Any], start: datetime, at: str) -> LeakEvent:
    return LeakEvent(
        flow_l_s=_get(item, "flow_l_s", float, at),
        start=start + timedelta(hours=_get(item, "at_h", float, at)),
        junction_id=_get(item, "junction", str, at, None),
        link_id=_get(item, "pipe", str, at, None),
        position=_get(item, "position", float, at, 0.5),
        growth=_get(item, "growth", str, at, "abrupt"),
        ramp_h=_get(item, "ramp_h", float, at, 0.0),
    )


def _gas_leak(item: dict[str, Any], start: datetime, at: str) -> GasLeakEvent:
    return GasLeakEvent(
        start=start + timedelta(hours=_get(item, "at_h", float, at)),
        junction_id=_get(item, "junction", str, at, None),
        pipe_id=_get(item, "pipe", str, at, None),
        position=_get(item, "position", float, at, 0.5),
        volume_flow_m3_h=_get(item, "flow_m3_h", float, at),
        growth=_get(item, "growth", str, at, "abrupt"),
        ramp_h=_get(item, "ramp_h", float, at, 0.0),
    )


def _methane_reporting(table: dict[str, Any], at: str) -> MethaneReporting:
    default = MethaneReporting()
    reporting = MethaneReporting(
        sample_s=_get(table, "sample_s", int, at, default.sample_s),
        change_pct_lel=_get(table, "change_pct_lel", float, at, default.change_pct_lel),
        alarm_pct_lel=_get(table, "alarm_pct_lel", float, at, default.alarm_pct_lel),
    )
    for key in ("sample_s", "change_pct_lel", "alarm_pct_lel"):
        if getattr(reporting, key) <= 0:
            raise ConfigError(f"{at}: {key!r} must be positive, not {getattr(reporting, key)}")
    return reporting


def _fault(item: dict[str, Any], start: datetime, at: str) -> Fault:
    kind = _get(item, "kind", str, at)
    try:
        fault_kind = FaultKind(kind)
    except ValueError as exc:
        raise ConfigError(f"{at}: unknown fault kind {kind!r}; known: {', '.join(k.value for k in FaultKind)}") from exc
    return Fault(
        fault_kind,
        _get(item, "sensor", str, at),
        start + timedelta(hours=_get(item, "from_h", float, at)),
        start + timedelta(hours=_get(item, "to_h", float, at)),
        _get(item, "magnitude", float, at, 0.0),
    )
