"""Sensor tables of any EPANET network, simulated, for testing the offline detector on a network it was not tuned on.

The detector's settings were chosen on BATADAL's C-Town (``bench/bench_batadal.py --select``). This module makes
the data to check that they carry over: a normal period and a period with leaks of a network such as WNTR's Net6,
simulated by the project's own water simulator (:class:`simulators.water_scenarios.WaterScenario`, EPANET 2.2), as
wide tables like BATADAL's (a timestamp, then ``P_`` pressure m, ``F_`` flow L/s, ``L_`` tank level m).

Sensors are placed by a fixed rule, not chosen for the result (:func:`place_sensors`):

- pressure at *pressure_count* junctions spread over the network by farthest-point sampling of their coordinates,
  starting from the junction nearest the centroid (each next sensor is the junction farthest from all chosen);
- flow in every link with an end at a reservoir or a tank (what leaves the sources and fills or drains the tanks);
- level in every tank.

Leaks (:func:`plan_leaks`) are placed at random junctions at random, non-overlapping times, sized as fractions of
the network's mean demand, half abrupt and half incipient, each repaired after a fixed time.

Example:
    >>> network = read_epanet(net6_inp())  # doctest: +SKIP
    >>> sensors = place_sensors(network)  # doctest: +SKIP
    >>> month = timedelta(days=30)
    >>> normal, truth = simulate_table(network, sensors, start=START, duration=month, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import wntr

from simulators.scenario import GroundTruth
from simulators.water_scenarios import KPA_PER_M, LeakEvent, WaterScenario
from twin.model import NodeKind, PipeNetwork
from twin.sensors import Network, Quantity, Sensor

LEAK_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.10)
"""Leak sizes as fractions of the network's mean demand, used in turn."""

_PREFIX = {Quantity.PRESSURE: "P_", Quantity.FLOW: "F_", Quantity.LEVEL: "L_"}


def net6_inp() -> Path:
    """Return the path of WNTR's Net6 (3,323 junctions, 32 tanks, 61 pumps), shipped with the ``wntr`` package."""
    return Path(wntr.__file__).parent / "library" / "networks" / "Net6.inp"


def column_name(sensor: Sensor) -> str:
    """Return a sensor's column in the wide table: ``P_``/``F_``/``L_`` and the asset it observes."""
    asset = (sensor.asset_id or sensor.sensor_id).split(":", 1)[-1]
    return _PREFIX[sensor.quantity] + asset


def place_sensors(network: PipeNetwork, *, pressure_count: int = 25) -> list[Sensor]:
    """Place pressure, flow and level sensors on an EPANET network by the module's fixed rule.

    Args:
        network: a water network (:func:`twin.water.read_epanet`).
        pressure_count: how many junctions get a pressure sensor.

    Returns:
        Sensors with ids ``WP-``/``WF-``/``WL-`` and the asset id, pressures first (in placement order).
    """
    nodes = network.nodes
    junctions = sorted((n for n in nodes.values() if n.kind is NodeKind.JUNCTION), key=lambda n: n.node_id)
    xy = np.array([[n.x_m, n.y_m] for n in junctions])
    centroid = xy.mean(axis=0)
    chosen = [int(np.argmin(((xy - centroid) ** 2).sum(axis=1)))]
    distance = ((xy - xy[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < min(pressure_count, len(junctions)):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, ((xy - xy[nxt]) ** 2).sum(axis=1))
    sensors = []
    for k in chosen:
        node = junctions[k]
        sensors.append(
            Sensor(
                f"WP-{node.node_id}",
                Network.WATER,
                Quantity.PRESSURE,
                node.node_id,
                asset_id=f"water:{node.node_id}",
                x_m=node.x_m,
                y_m=node.y_m,
            )
        )
    storage = {n.node_id for n in nodes.values() if n.kind in (NodeKind.TANK, NodeKind.RESERVOIR)}
    for link in sorted(network.links.values(), key=lambda k: k.link_id):
        if link.from_id in storage or link.to_id in storage:
            sensors.append(
                Sensor(
                    f"WF-{link.link_id}", Network.WATER, Quantity.FLOW, link.link_id, asset_id=f"water:{link.link_id}"
                )
            )
    for node in sorted(nodes.values(), key=lambda n: n.node_id):
        if node.kind is NodeKind.TANK:
            sensors.append(
                Sensor(
                    f"WL-{node.node_id}",
                    Network.WATER,
                    Quantity.LEVEL,
                    node.node_id,
                    asset_id=f"water:{node.node_id}",
                    x_m=node.x_m,
                    y_m=node.y_m,
                )
            )
    return sensors


def plan_leaks(
    network: PipeNetwork,
    *,
    start: datetime,
    duration: timedelta,
    count: int,
    mean_demand_l_s: float,
    seed: int,
    leak_h: float = 24.0,
    gap_h: float = 24.0,
    ramp_h: float = 6.0,
    fractions: Sequence[float] = LEAK_FRACTIONS,
) -> list[LeakEvent]:
    """Return *count* leaks at random junctions, one after another, each repaired after *leak_h*.

    Args:
        network: the water network.
        start, duration: the period (aware start); the first leak starts at least *gap_h* after *start*.
        count: how many leaks; sizes go through *fractions* in turn, growth alternates abrupt and incipient.
        mean_demand_l_s: the network's mean demand, L/s (sizes are fractions of it).
        seed: seed of places and times.
        leak_h: how long each leak lasts until repaired, hours.
        gap_h: least time between a repair and the next leak, and before the first, hours.
        ramp_h: hours an incipient leak takes to reach full size.
        fractions: leak sizes as fractions of *mean_demand_l_s*.

    Raises:
        ValueError: the leaks and gaps do not fit in *duration*.
    """
    rng = np.random.default_rng(seed)
    hours = duration.total_seconds() / 3600.0
    slack = hours - count * (leak_h + gap_h)
    if slack < 0:
        raise ValueError(f"{count} leaks of {leak_h} h with {gap_h} h gaps do not fit in {hours:.0f} h")
    junctions = sorted(n.node_id for n in network.nodes.values() if n.kind is NodeKind.JUNCTION)
    places = rng.choice(junctions, size=count, replace=False)
    extra = np.diff(np.concatenate(([0.0], np.sort(rng.uniform(0.0, slack, size=count)))))
    leaks = []
    cursor = 0.0
    for k in range(count):
        begin = cursor + gap_h + math.floor(float(extra[k]))
        cursor = begin + leak_h
        incipient = k % 2 == 1
        leaks.append(
            LeakEvent(
                junction_id=str(places[k]),
                flow_l_s=round(fractions[k % len(fractions)] * mean_demand_l_s, 2),
                start=start + timedelta(hours=begin),
                end=start + timedelta(hours=cursor),
                growth="incipient" if incipient else "abrupt",
                ramp_h=ramp_h if incipient else 0.0,
            )
        )
    return leaks


def simulate_table(
    network: PipeNetwork,
    sensors: Sequence[Sensor],
    *,
    start: datetime,
    duration: timedelta,
    seed: int,
    events: Sequence[LeakEvent] = (),
    step: timedelta = timedelta(hours=1),
    warmup: timedelta = timedelta(days=1),
) -> tuple[pd.DataFrame, GroundTruth]:
    """Simulate the sensors over a period and return the wide table and the simulator's ground truth.

    The run starts *warmup* before *start* and the rows before *start* are dropped: every run begins from the
    model's initial tank levels and pump states, and a period that follows another should not begin with the
    jump back to them.

    Returns:
        DataFrame (index = aware UTC timestamps every *step*, columns = :func:`column_name` of each sensor; pressure
        in m, flow in L/s, level in m) and the :class:`~simulators.scenario.GroundTruth` (its summary's
        ``demand_m3`` gives the mean demand).
    """
    scenario = WaterScenario(
        network, sensors, start=start - warmup, duration=duration + warmup, step=step, events=events, seed=seed
    )
    by_id = {s.sensor_id: s for s in sensors}
    rows = []
    stamps = []
    for simulated in scenario.steps():
        stamps.append(simulated.ts)
        rows.append({r.sensor_id: r.value for r in simulated.readings})
    frame = pd.DataFrame(rows, index=pd.DatetimeIndex(stamps, name="timestamp"))
    for sid in frame.columns:
        if by_id[sid].quantity is Quantity.PRESSURE:
            frame[sid] = frame[sid] / KPA_PER_M
    frame.columns = [column_name(by_id[sid]) for sid in frame.columns]
    return frame.loc[frame.index >= start], scenario.ground_truth()


@dataclass(frozen=True, slots=True)
class SensorStream:
    """Every sensor's readings over a period, one row per sensor step (:func:`simulate_stream`).

    Attributes:
        times: aware UTC time of each row.
        sensor_ids: the sensor of each column.
        values: readings in each sensor's canonical unit (pressure kPa, flow L/s, level m), shape (rows, sensors).
    """

    times: pd.DatetimeIndex
    sensor_ids: tuple[str, ...]
    values: npt.NDArray[np.float64]


def simulate_stream(
    network: PipeNetwork,
    sensors: Sequence[Sensor],
    *,
    start: datetime,
    duration: timedelta,
    seed: int,
    events: Sequence[LeakEvent] = (),
    step: timedelta = timedelta(minutes=1),
    warmup: timedelta = timedelta(days=1),
) -> tuple[SensorStream, GroundTruth]:
    """Simulate the sensors over a period as a streaming detector would receive them (canonical units, kPa).

    The same run as :func:`simulate_table` (a *warmup* before *start* whose rows are dropped, the same demand
    variation and noise for a seed) at the sensor step *step*, kept as readings rather than a table of metres.
    """
    scenario = WaterScenario(
        network, sensors, start=start - warmup, duration=duration + warmup, step=step, events=events, seed=seed
    )
    stamps: list[datetime] = []
    rows: list[list[float]] = []
    ids: tuple[str, ...] = ()
    for simulated in scenario.steps():
        if simulated.ts < start:
            continue
        if not ids:
            ids = tuple(r.sensor_id for r in simulated.readings)
        stamps.append(simulated.ts)
        rows.append([r.value for r in simulated.readings])
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(ids))
    return SensorStream(pd.DatetimeIndex(stamps), ids, values), scenario.ground_truth()


def mean_demand_l_s(truth: GroundTruth) -> float:
    """Return a run's mean demand, L/s, from its ground truth (``demand_m3`` over the whole run, warm-up included)."""
    return float(truth.summary["demand_m3"]) * 1000.0 / float(truth.scenario["duration"])


def leak_labels(index: pd.DatetimeIndex, leaks: Sequence[LeakEvent]) -> npt.NDArray[np.int64]:
    """Return 1 where a leak is under way (from its start to its repair), shape (len(index),)."""
    labels = np.zeros(len(index), dtype=np.int64)
    for leak in leaks:
        end = leak.end or index[-1].to_pydatetime() + timedelta(seconds=1)
        labels[(index >= pd.Timestamp(leak.start)) & (index < pd.Timestamp(end))] = 1
    return labels


@dataclass(frozen=True, slots=True)
class LeakOutcome:
    """How the detector did on one leak: its size, whether it was flagged within the window, and when."""

    junction_id: str
    flow_l_s: float
    growth: str
    detected: bool
    delay_h: float | None


def leak_outcomes(
    index: pd.DatetimeIndex, flags: npt.ArrayLike, leaks: Sequence[LeakEvent], *, within_h: float = 24.0
) -> list[LeakOutcome]:
    """Return, for each leak, whether a flag fell inside it within *within_h* hours of its start, and the delay."""
    flagged = np.asarray(flags).astype(bool)
    outcomes = []
    for leak in leaks:
        start = pd.Timestamp(leak.start)
        stop = min(start + pd.Timedelta(hours=within_h), pd.Timestamp(leak.end) if leak.end else index[-1])
        inside = np.flatnonzero(flagged & (index >= start) & (index < stop))
        delay = (index[inside[0]] - start).total_seconds() / 3600.0 if inside.size else None
        outcomes.append(LeakOutcome(leak.junction_id or "", leak.flow_l_s, leak.growth, inside.size > 0, delay))
    return outcomes


def write_wide_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a wide table as CSV: ``timestamp`` (ISO 8601, UTC) then one column per sensor, 4 decimals."""
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "timestamp"
    out.round(4).to_csv(path)


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    """How far a daily water-balance residual sets leaks apart from the normal period (:func:`balance_check`).

    Attributes:
        peak_ratio: per leak, the residual's peak from the leak's start to 24 h after its end (the features'
            length), over the largest value in the normal period (above 1: a threshold at the normal maximum would
            flag it).
        quiet_above: share of the scored period's hours away from every leak (from its start to 24 h after its
            end) where the residual is above the normal maximum.
    """

    peak_ratio: tuple[float, ...]
    quiet_above: float


def balance_check(
    normal: pd.DataFrame, period: pd.DataFrame, leaks: Sequence[LeakEvent], *, modes: int = 1
) -> BalanceCheck:
    """Score a network-independent daily water balance on *period* against *normal*, leak by leak.

    The features are the 24-hour mean of every ``F_`` column (L/s) and the 24-hour change of every ``L_`` column
    (m), each standardised by its mean and standard deviation over the normal period; the *modes* strongest daily
    directions of the normal period (one sample a day: a wetter day moves every flow alike) are projected off; the
    residual is the root mean square of what is left.

    Args:
        normal: hourly wide table of the normal period (index = timestamps).
        period: hourly wide table of the period with leaks, same columns, following *normal*.
        leaks: the leaks of *period*, each with ``start`` and ``end``.
        modes: how many daily common directions to project off.
    """

    def features(frame: pd.DataFrame) -> pd.DataFrame:
        flows = [c for c in frame.columns if str(c).startswith("F_")]
        levels = [c for c in frame.columns if str(c).startswith("L_")]
        return pd.concat([frame[flows].rolling(24, min_periods=24).mean(), frame[levels].diff(24)], axis=1)

    base = features(normal).dropna()
    joined = features(pd.concat([normal.iloc[-24:], period]))
    later = joined[joined.index >= period.index[0]].fillna(0.0)
    mean, std = base.mean(), base.std().replace(0.0, np.nan)
    zn = ((base - mean) / std).fillna(0.0).to_numpy(dtype=np.float64)
    zl = ((later - mean) / std).fillna(0.0).to_numpy(dtype=np.float64)
    if modes > 0:
        _u, _s, vt = np.linalg.svd(zn[::24], full_matrices=False)
        basis = vt[:modes].T
        zn = zn - zn @ basis @ basis.T
        zl = zl - zl @ basis @ basis.T
    normal_max = float(np.sqrt((zn**2).mean(axis=1)).max())
    residual = pd.Series(np.sqrt((zl**2).mean(axis=1)), index=later.index)
    near = np.zeros(len(residual), dtype=bool)
    ratios = []
    for leak in leaks:
        begin = pd.Timestamp(leak.start)
        finish = pd.Timestamp(leak.end) if leak.end is not None else residual.index[-1]
        inside = (residual.index > begin) & (residual.index <= finish + pd.Timedelta(hours=24))
        near |= inside
        ratios.append(float(residual[inside].max()) / normal_max if inside.any() else 0.0)
    quiet = residual[~near]
    return BalanceCheck(tuple(ratios), float((quiet > normal_max).mean()) if len(quiet) else 0.0)
