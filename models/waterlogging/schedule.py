"""Scheduled nowcasts: every few minutes during rain, from the gauges and level sensors stored in the database.

Each cycle reads the rain gauges' readings since the chain started (the mean over the gauges of each minute) and
the latest level at every drainage level sensor bound to a node, runs an ensemble nowcast from the previous
cycle's state (:mod:`models.waterlogging.ensemble`), names the locations by the :class:`WarningRule`, and turns
their water into a risk map and alert changes against the grades of the previous cycle. The chain starts with a
warm-up on the last ``warm_up`` of rain and starts again after ``warm_up`` without rain and without alerts.

Example:
    >>> chain = WarningChain(WarningRule())                                                 # doctest: +SKIP
    >>> with connect(url, schema="lifeline") as conn:                                       # doctest: +SKIP
    ...     seen = read_observations(conn, city.sensors, start=chain.start_for(now), now=now)
    >>> cycle = chain.run(network, model, assets, now=now, observations=seen, executor=pool)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from models.waterlogging.ensemble import (
    DEFAULT_MEMBERS,
    DEFAULT_SIGMA,
    EnsembleNowcast,
    WarningRule,
    ensemble_nowcast,
    forecast_futures,
    observed_futures,
    warned_volumes,
)
from models.waterlogging.ponding import PondingModel
from models.waterlogging.risk import RiskAssets, RiskMap, alert_changes, assess
from twin.alerts import AlertChange
from twin.errors import ConfigError
from twin.model import PipeNetwork
from twin.sensors import Network, Quantity, Sensor

STEP = timedelta(minutes=1)
DEFAULT_WARM_UP = timedelta(hours=3)
LEVEL_WINDOW = timedelta(minutes=5)
"""How old the latest level reading may be to be used, at most."""


@dataclass(frozen=True, slots=True)
class Observations:
    """What the sensors say, from ``start`` to ``now``.

    Attributes:
        start: the first minute (aware UTC).
        rain_mm_h: mean over the gauges of each minute from ``start``, mm/h; 0 where no gauge reported.
        gauges: rain gauges that reported at least once; ``missing_minutes`` minutes without any reading.
        depth_m: latest depth above the invert by node id, m (level sensors bound to a node).
    """

    start: datetime
    rain_mm_h: tuple[float, ...]
    gauges: int
    missing_minutes: int
    depth_m: Mapping[str, float]

    @property
    def depth_mm(self) -> float:
        """Rain depth over the span, mm."""
        return math.fsum(self.rain_mm_h) / 60.0


def read_observations(
    conn: psycopg.Connection[Any],
    sensors: Mapping[str, Sensor],
    *,
    start: datetime,
    now: datetime,
    level_window: timedelta = LEVEL_WINDOW,
) -> Observations:
    """Read the gauges' rain of each minute in ``[start, now)`` and the latest levels before *now*.

    A gauge's reading at ``ts`` is its mean intensity over the minute that ends at ``ts`` (as the simulator and
    the field gauges report).

    Raises:
        ConfigError: no rain gauge (network ``rain``, quantity ``rain_rate``) among *sensors*, naive times, or
            *start* not a whole number of minutes before *now*.
    """
    if start.tzinfo is None or now.tzinfo is None:
        raise ConfigError("observation times must be timezone-aware")
    span = (now - start).total_seconds()
    if span < 0 or span % 60:
        raise ConfigError("the observations must span a whole number of minutes")
    gauges = sorted(
        s.sensor_id for s in sensors.values() if s.network is Network.RAIN and s.quantity is Quantity.RAIN_RATE
    )
    if not gauges:
        raise ConfigError("no rain gauge in the sensor registry: a scheduled nowcast needs the gauges' rain")
    minutes = int(span // 60)
    sums = [0.0] * minutes
    counts = [0] * minutes
    reporting: set[str] = set()
    rows = conn.execute(
        "SELECT sensor_id, ts, value FROM readings WHERE sensor_id = ANY(%s) AND ts > %s AND ts <= %s",
        (gauges, start, now),
    ).fetchall()
    for row in rows:
        sid, ts, value = _row(row, ("sensor_id", "ts", "value"))
        k = math.ceil((ts - start).total_seconds() / 60.0) - 1
        if 0 <= k < minutes and math.isfinite(value) and value >= 0:
            sums[k] += float(value)
            counts[k] += 1
            reporting.add(str(sid))
    rain = tuple(s / c if c else 0.0 for s, c in zip(sums, counts, strict=True))
    nodes = {
        s.sensor_id: (s.asset_id or "").removeprefix(f"{Network.DRAINAGE.value}:")
        for s in sensors.values()
        if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL and s.asset_id
    }
    depth: dict[str, float] = {}
    if nodes:
        latest = conn.execute(
            "SELECT DISTINCT ON (sensor_id) sensor_id, value FROM readings"
            " WHERE sensor_id = ANY(%s) AND ts > %s AND ts <= %s ORDER BY sensor_id, ts DESC",
            (sorted(nodes), now - level_window, now),
        ).fetchall()
        for row in latest:
            sid, value = _row(row, ("sensor_id", "value"))
            if math.isfinite(value):
                depth[nodes[str(sid)]] = float(value)
    return Observations(start.astimezone(UTC), rain, len(reporting), sum(1 for c in counts if c == 0), depth)


def _row(row: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys) if isinstance(row, Mapping) else tuple(row)


@dataclass(frozen=True, slots=True)
class Cycle:
    """What one scheduled nowcast did.

    Attributes:
        ensemble: the ensemble nowcast.
        named: the locations warned of (node ids, most likely first); empty while the first warning waits.
        risk: the risk map of the named locations' water.
        changes: alert changes against the previous cycle.
        restarted: whether this cycle started a new chain (warm-up instead of hot start).
    """

    ensemble: EnsembleNowcast
    named: tuple[str, ...]
    risk: RiskMap
    changes: tuple[AlertChange, ...]
    restarted: bool


@dataclass(slots=True)
class WarningChain:
    """The state carried from one scheduled nowcast to the next: the last ensemble (hot start, water so far),
    whether the event was warned of, and the alert grades active.

    Args:
        rule: when to warn.
        members: rain futures per nowcast; ``sigma`` the forecast's log-normal depth error.
        warm_up: rain the first nowcast of a chain warms up on, and dry time after which a chain starts again.
        horizon: how far each nowcast looks ahead.
    """

    rule: WarningRule
    members: int = DEFAULT_MEMBERS
    sigma: float = DEFAULT_SIGMA
    warm_up: timedelta = DEFAULT_WARM_UP
    horizon: timedelta = timedelta(hours=6)
    previous: EnsembleNowcast | None = None
    chain_start: datetime | None = None
    warned: bool = False
    grades: dict[str, int] = field(default_factory=dict)

    def start_for(self, now: datetime) -> datetime:
        """Return where the observations for a nowcast at *now* must start (the chain's start)."""
        return self.chain_start if self.chain_start is not None else now - self.warm_up

    def run(
        self,
        network: PipeNetwork,
        model: PondingModel,
        assets: RiskAssets,
        *,
        now: datetime,
        observations: Observations,
        forecast_mm_h: Sequence[float] | None = None,
        executor: Executor | None = None,
        district: str = "",
    ) -> Cycle:
        """Run one nowcast at *now* and carry the state on.

        Args:
            network: the drainage network; ``model`` its :class:`~models.waterlogging.ponding.PondingModel`.
            assets: the risk assets.
            now: the nowcast's time (aware, a whole number of minutes after the chain's start).
            observations: from :meth:`start_for` to *now* (:func:`read_observations`).
            forecast_mm_h: rain forecast of each minute from *now*, mm/h; None makes futures from the gauges alone.
            executor: the SWMM pool.
            district: the alerts' district.

        Raises:
            ConfigError: the observations do not start at :meth:`start_for` (*now*), or what the nowcast refuses.
            SimulationError: SWMM stops with an error.
        """
        if observations.start != self.start_for(now).astimezone(UTC):
            raise ConfigError("the observations must start where the chain started")
        recent = observations.rain_mm_h[-int(self.warm_up / STEP) :]
        restarted = self.previous is None
        if self.previous is not None and not any(recent) and not self.grades:
            # A dry spell as long as the warm-up with nothing active: the event is over, the next one starts anew.
            self.previous, self.chain_start, self.warned = None, None, False
            restarted = True
            observations = Observations(
                now - self.warm_up,
                (0.0,) * int(self.warm_up / STEP),
                observations.gauges,
                0,
                observations.depth_m,
            )
        if forecast_mm_h is not None:
            futures = forecast_futures(forecast_mm_h, sigma=self.sigma, members=self.members)
        else:
            futures = observed_futures(observations.rain_mm_h, rain_step=STEP)
        ensemble = ensemble_nowcast(
            network,
            now=now,
            observed_rain_mm_h=observations.rain_mm_h,
            futures=futures,
            horizon=self.horizon,
            observed_depth_m=observations.depth_m,
            previous=self.previous,
            executor=executor,
        )
        named = self.rule.named(ensemble, warned_before=self.warned)
        central = ensemble.central()
        volumes = dict(zip(ensemble.node_ids, warned_volumes(ensemble, named), strict=True))
        order = [central.node_ids.index(n) for n in model.node_ids]
        risk = assess(
            assets,
            model.fill(volumes),
            issued=ensemble.issued,
            source="nowcast",
            node_eta_s=ensemble.eta_s()[order],
            node_duration_s=central.duration_s[order],
        )
        changes, self.grades = alert_changes(risk, self.grades, district=district)
        self.previous = ensemble
        if self.chain_start is None:
            self.chain_start = observations.start
        self.warned = self.warned or bool(named)
        return Cycle(ensemble, named, risk, tuple(changes), restarted)
