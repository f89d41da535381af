"""Minimum night flow on wide tables (``lifeline detect --inp``): the streaming detector, fed row by row.

The offline detector judges each row against the normal period's spread; a leak of a few per cent of demand on a
network run by its tanks and pumps hides in that spread (WNTR's Net6: 1 of 10 leaks). The minimum-night-flow
detector that ingest runs (:mod:`models.night_flow`) sees such leaks in the zone's metered inflow instead. Here it
gets the same readings from the tables: every ``F_<link>`` column on a link between a source (reservoir or tank)
and the rest of the EPANET network is an inflow meter; the normal period's rows are fed first (the detector
learns its quiet hours and baseline there), then the scored table's. A row is flagged while a night-flow alert is
open after it.

Timestamps without a zone are read as local time (``utc_offset_h``, UTC+8 by default), the time the night
windows are in; timestamps with a zone are used as they are. Nothing is judged when the inflow is not metered on
every source link (:attr:`TableNightFlow.unmetered` says why), e.g. BATADAL's C-Town, whose flow columns are the
pumps' and one valve's, not the tanks'.

Example:
    >>> result = night_flow_on_tables(network, normal, frame)  # doctest: +SKIP
    >>> result.flags.sum(), result.unmetered  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.night_flow import NightFlowDetector, NightFlowSettings
from twin.alerts import AlertChange
from twin.model import PipeNetwork
from twin.readings import Reading
from twin.sensors import Network, Quantity, Sensor

FLOW_PREFIX = "F_"


@dataclass(slots=True)
class TableNightFlow:
    """What the night-flow detector made of the scored table.

    Attributes:
        flags: per scored row, whether a night-flow alert was open after it.
        changes: the alert changes during the scored table (raised, updated, cleared), in order.
        unmetered: why nothing was judged (the inflow is not metered), or None.
        meters: the inflow meters' columns.
        windows: the night and reference windows the detector ended with, local hours.
        changes_normal: alert changes while the normal period was fed (a leak there, or a false alarm).
    """

    flags: npt.NDArray[np.bool_]
    changes: list[AlertChange] = field(default_factory=list)
    unmetered: str | None = None
    meters: list[str] = field(default_factory=list)
    windows: tuple[tuple[float, float], tuple[float, float] | None] | None = None
    changes_normal: list[AlertChange] = field(default_factory=list)


def table_sensors(network: PipeNetwork, columns: list[str], *, interval_s: float) -> dict[str, Sensor]:
    """The flow columns (``F_<link>``) whose link is in *network*, as flow sensors sampled every *interval_s*."""
    sensors = {}
    for column in columns:
        if not column.startswith(FLOW_PREFIX):
            continue
        link = column[len(FLOW_PREFIX) :]
        if link in network.links:
            sensors[column] = Sensor(
                column, Network.WATER, Quantity.FLOW, column, asset_id=f"water:{link}", interval_s=interval_s
            )
    return sensors


def utc_times(index: pd.Index, utc_offset_h: float) -> pd.DatetimeIndex:
    """The table's timestamps in UTC: zone-less ones are local time at *utc_offset_h*."""
    times = pd.DatetimeIndex(index)
    if times.tz is None:
        return (times - timedelta(hours=utc_offset_h)).tz_localize("UTC")
    return times.tz_convert("UTC")


def night_flow_on_tables(
    network: PipeNetwork,
    normal: pd.DataFrame,
    frame: pd.DataFrame,
    *,
    utc_offset_h: float = 8.0,
    settings: NightFlowSettings | None = None,
) -> TableNightFlow:
    """Feed the normal period, then *frame*, to a night-flow detector on *network*'s metered inflow.

    Args:
        network: the EPANET network the columns are on.
        normal: the normal period (index timestamps, the convention's columns, flows in L/s); rows at or after
            *frame*'s first timestamp are not fed.
        frame: the table to score, same columns.
        utc_offset_h: local time minus UTC, hours, for timestamps without a zone.
        settings: the detector's settings (default: ingest's, at *utc_offset_h*).

    Returns:
        Per row of *frame*, whether an alert was open; the alerts; or why nothing was judged.
    """
    cfg = settings or NightFlowSettings(utc_offset_h=utc_offset_h)
    frame_times = utc_times(frame.index, cfg.utc_offset_h)
    steps = np.diff(frame_times.asi8) / 1e9
    interval_s = float(np.median(steps)) if len(steps) else 3600.0
    columns = [c for c in frame.columns if c in normal.columns]
    sensors = table_sensors(network, columns, interval_s=interval_s)
    detector = NightFlowDetector(network, sensors, settings=cfg, require_metering=False)
    flags = np.zeros(len(frame), dtype=bool)
    if detector.unmetered is not None:
        return TableNightFlow(flags, unmetered=detector.unmetered)
    meters = sorted(detector.sensors)
    normal_times = utc_times(normal.index, cfg.utc_offset_h)
    before = normal_times < frame_times[0] if len(frame_times) else np.zeros(len(normal), dtype=bool)
    changes_normal = _feed(detector, normal_times[before], normal.loc[before, meters].to_numpy(float), meters)
    changes: list[AlertChange] = []
    values = frame[meters].to_numpy(float)
    for i in range(len(frame_times)):
        changes.extend(_feed(detector, frame_times[i : i + 1], values[i : i + 1], meters))
        flags[i] = detector.active
    return TableNightFlow(flags, changes, None, meters, detector.windows, changes_normal)


def _feed(
    detector: NightFlowDetector, times: pd.DatetimeIndex, values: npt.NDArray[np.float64], meters: list[str]
) -> list[AlertChange]:
    """Feed each row as one batch (missing values left out), committing as ingest does; return the changes."""
    changes: list[AlertChange] = []
    for ts_pd, row in zip(times, values, strict=True):
        ts = ts_pd.to_pydatetime()
        readings = [Reading(sid, ts, float(v), 0) for sid, v in zip(meters, row, strict=True) if np.isfinite(v)]
        result = detector.evaluate(readings, now=ts, suspect=frozenset())
        detector.commit(result)
        changes.extend(result.changes)
    return changes
