"""A simulated year of a city's monitoring, written straight into the store, with its ground truth.

Meant for the city health check (城市体检): a year of sensors at hourly resolution, with storms, water leaks, gas
leaks, gas pressure faults, sensor outages and the people handling the alerts, computed in seconds instead of
replayed through the broker. What is written:

- **Quiet hours**: one row per sensor and hour in the hourly rollup (``readings_1h``: count, sum, min, max), as
  many readings as the sensor's interval gives, with the values a quiet hour has (diurnal water pressure and
  flow, base levels, no rain). No raw readings: the minute rollup and the raw table hold only the events.
- **Events** at the sensors' own intervals, as raw readings (through :class:`~twin.store.readings.ReadingStore`,
  which keeps the rollups): storms (rain at the gauges; every drainage level point filling and draining as a
  linear reservoir), gas leaks (methane in an underground space), gas pressure faults. Event windows are whole
  hours, so every hour of a sensor is either quiet or event.
- **Water balance**: the plant's inflow meters and the tank's inflow meter hour by hour from customers' demand,
  leaks (pressure dependent, so larger at night) and the tank filling at night; the customers' billed
  consumption per local month into ``hc_billed_water``.
- **Outages**: sensors silent for hours to days (no rows), and a few silent over the year's last two days.
- **Alerts** from the real threshold detector (:mod:`models.thresholds`) run on the event readings, stored as
  ingest stores them; then people acknowledge, dispatch (grades I–III), resolve, re-check and close them at
  drawn delays (:func:`twin.store.lifecycle.apply_action`), some never acknowledged.

The ground truth (:class:`~simulators.scenario.GroundTruth`) comes from the noise-free model, not from the store:
``summary["indicators"][district][indicator_id]`` is the true value of each health check indicator over the
simulated span, for the city (``""``) and each district.

Only plain-PostgreSQL storage: the quiet hours are written into the hourly rollup table, which TimescaleDB keeps
as a continuous aggregate.

Example:
    >>> with connect(url, schema="demo", autocommit=True) as conn:                     # doctest: +SKIP
    ...     truth = simulate_year(conn, schema="demo", plan=YearPlan(year=2026))
    >>> truth.summary["indicators"][""]["water_leakage_rate"]                        # doctest: +SKIP
    11.8
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from models.healthcheck.indicators import Definitions, load_definitions
from models.thresholds import ThresholdDetector
from simulators.scenario import GroundTruth
from twin.errors import ConfigError
from twin.lifecycle import Action
from twin.readings import Reading
from twin.sensors import Direction, Grade, Network, Quantity, Sensor
from twin.store.alerts import apply_changes
from twin.store.lifecycle import apply_action
from twin.store.readings import ReadingRow, ReadingStore
from twin.store.schema import StorageMode, current_mode
from twin.store.sensors import load_registry

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DEMAND_PATTERN = (
    0.55, 0.50, 0.48, 0.50, 0.58, 0.80, 1.15, 1.35, 1.30, 1.20, 1.15, 1.20,
    1.25, 1.10, 1.00, 1.00, 1.05, 1.20, 1.40, 1.45, 1.30, 1.10, 0.85, 0.65,
)  # fmt: skip
"""Customers' demand by local hour, relative (normalised to a mean of 1 below)."""
LEAK_EXPONENT = 1.18
"""Leak flow ∝ pressure^N1 (FAVAD; 1.18 is the usual figure for mixed pipe materials)."""
STORM_PEAKS_MM_H = (18.0, 25.0, 35.0, 50.0, 70.0, 95.0, 130.0)
STORM_WEIGHTS = (4.0, 4.0, 3.0, 2.0, 1.0, 0.6, 0.3)
WET_MM_H = 0.5
"""Rain above this intensity is rain (as the drain time indicator reads it)."""
OPERATOR = "值班员（模拟）"


@dataclass(frozen=True, slots=True)
class YearPlan:
    """What happens in the simulated year.

    Attributes:
        year: the local calendar year.
        seed: everything random follows from it (same plan and seed, same store and truth).
        days: simulate only the first *days* local days (a shortened year, e.g. for tests); None: the whole year.
        storms: storms over the span, laid in the rainy season (April–September local) when the span has one.
        leaks: water leaks; each runs from its start until it is repaired (days to weeks).
        leak_l_s: (smallest, largest) leak flow at mean pressure, L/s.
        background_leak_l_s: the network's background leakage all year (many small leaks none will find), L/s.
        gas_leaks: methane build-ups in underground spaces.
        gas_pressure_faults: gas pressure sensors falling below their grade IV limit (regulator faults).
        outages: sensors silent for a spell; ``offline_at_end`` more silent over the span's last two days.
        ack_median_min, dispatch_median_min, resolve_median_h: typical delays of the people on duty.
        unacknowledged_share: share of alerts nobody acknowledges.
        level_noise_m, methane_noise_pct_lel, flow_noise_rel: sensor noise.
    """

    year: int
    seed: int = 2026
    days: int | None = None
    storms: int = 14
    leaks: int = 4
    leak_l_s: tuple[float, float] = (8.0, 30.0)
    background_leak_l_s: float = 10.0
    gas_leaks: int = 4
    gas_pressure_faults: int = 3
    outages: int = 8
    offline_at_end: int = 1
    ack_median_min: float = 12.0
    dispatch_median_min: float = 25.0
    resolve_median_h: float = 2.5
    unacknowledged_share: float = 0.03
    level_noise_m: float = 0.01
    methane_noise_pct_lel: float = 0.3
    flow_noise_rel: float = 0.01


@dataclass(frozen=True, slots=True)
class _Window:
    """Raw readings of some sensors over whole hours: ``values[sensor]`` at ``start + k × interval``."""

    kind: str
    start: datetime
    end: datetime
    values: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)


@dataclass(slots=True)
class _Truth:
    """What really happened, gathered as the year is laid out."""

    ponded: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)  # sensor → beyond IV spans
    overflows: list[tuple[str, datetime]] = field(default_factory=list)
    drain_h: list[tuple[str, float]] = field(default_factory=list)  # (sensor, hours) per storm and ponded point
    methane_h: dict[str, float] = field(default_factory=dict)
    gas_pressure_h: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def _limit(sensor: Sensor, grade: Grade) -> float | None:
    return next((lim.threshold for lim in sensor.limits if lim.grade is grade), None)


def _local_bounds(plan: YearPlan, offset: timedelta) -> tuple[datetime, datetime]:
    start = datetime(plan.year, 1, 1, tzinfo=UTC) - offset
    end = datetime(plan.year + 1, 1, 1, tzinfo=UTC) - offset
    if plan.days is not None:
        end = min(end, start + timedelta(days=plan.days))
    return start, end


def _lognormal(rng: random.Random, median: float, sigma: float = 0.6) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


class _Year:
    """Lays out one year and writes it; see :func:`simulate_year`."""

    def __init__(self, conn: psycopg.Connection[Any], plan: YearPlan, definitions: Definitions) -> None:
        self.conn = conn
        self.plan = plan
        self.defs = definitions
        self.rng = random.Random(plan.seed)
        self.np = np.random.default_rng(plan.seed)
        self.offset = timedelta(hours=definitions.water_balance.utc_offset_h)
        self.start, self.end = _local_bounds(plan, self.offset)
        self.hours = int((self.end - self.start) / HOUR)
        self.sensors = dict(load_registry(conn).items())
        if not self.sensors:
            raise ConfigError("no sensors in the store: load the demo city (--demo-city) or import a twin first")
        self.truth = _Truth()
        self.windows: list[_Window] = []
        self.busy: dict[str, set[int]] = {}  # sensor → hours covered by raw event readings
        self.silent: dict[str, set[int]] = {}  # sensor → hours of outage

    # --- events ---------------------------------------------------------------------------------------------

    def _of(self, network: Network, quantity: Quantity) -> list[Sensor]:
        return sorted(
            (s for s in self.sensors.values() if s.network is network and s.quantity is quantity),
            key=lambda s: s.sensor_id,
        )

    def _free_hour(self, span_h: int, season: tuple[int, int] | None = None, spacing_h: int = 48) -> int | None:
        """A start hour whose window (with *spacing_h* around it) meets no other event window."""
        taken = [(int((w.start - self.start) / HOUR), int((w.end - self.start) / HOUR)) for w in self.windows]
        for _attempt in range(200):
            h = self.rng.randrange(0, max(self.hours - span_h, 1))
            month = (self.start + h * HOUR + self.offset).month
            if season and self.hours > 24 * 200 and not season[0] <= month <= season[1]:
                continue
            if all(h + span_h + spacing_h <= a or h >= b + spacing_h for a, b in taken) and h + span_h <= self.hours:
                return h
        return None

    def _mark(self, window: _Window) -> None:
        first = int((window.start - self.start) / HOUR)
        last = int((window.end - self.start) / HOUR)
        for sid in window.values:
            self.busy.setdefault(sid, set()).update(range(first, last))
        self.windows.append(window)

    def lay_storms(self) -> None:
        gauges = self._of(Network.RAIN, Quantity.RAIN_RATE)
        levels = [s for s in self._of(Network.DRAINAGE, Quantity.LEVEL) if _limit(s, Grade.IV) is not None]
        if not gauges or not levels:
            log.warning("no rain gauges or level points with limits: no storms")
            return
        # Each point's response: the (smoothed) rain at which it reaches its grade IV limit (its pipe runs full),
        # mm/h, which sets its rise per mm/h of rain; and how fast it drains (the reservoir's time constant, min).
        base = {s.sensor_id: 0.3 * float(_limit(s, Grade.IV) or 1.0) for s in levels}
        gain = {
            s.sensor_id: (float(_limit(s, Grade.IV) or 1.0) - base[s.sensor_id]) / _lognormal(self.rng, 45.0, 0.6)
            for s in levels
        }
        tau = {s.sensor_id: self.rng.uniform(30.0, 120.0) for s in levels}
        limit_iv = {s.sensor_id: float(_limit(s, Grade.IV) or math.inf) for s in levels}
        horizon_h = 24  # computed; the window is cut to whole hours once every point has drained (at least 10)
        for k in range(self.plan.storms):
            h0 = self._free_hour(horizon_h, season=(4, 9))
            if h0 is None:
                break
            w_start = self.start + h0 * HOUR
            minutes = horizon_h * 60
            times = [w_start + m * MINUTE for m in range(minutes)]
            onset = self.rng.randrange(30, 120)
            duration = self.rng.randrange(60, 241)
            # Mostly moderate rain, now and then a heavy storm (peak intensities, mm/h, with their weights).
            peak = self.rng.choices(STORM_PEAKS_MM_H, STORM_WEIGHTS)[0] * self.rng.uniform(0.8, 1.2)
            rain = np.zeros(minutes)
            for m in range(duration):
                x = (m + 0.5) / duration
                rain[onset + m] = peak * (x / 0.4 if x < 0.4 else (1 - x) / 0.6)
            wet = np.nonzero(rain > WET_MM_H)[0]
            rain_end = times[int(wet[-1])] if len(wet) else times[onset]
            levels_m: dict[str, npt.NDArray[np.float64]] = {}
            for s in levels:
                sid = s.sensor_id
                level = np.empty(minutes)
                h = base[sid]
                cap = float(s.valid_max) if s.valid_max is not None else 5.0
                full = float(_limit(s, Grade.IV) or cap) - base[sid]  # the pipe runs full at the grade IV level
                for m in range(minutes):
                    # Outflow grows with the level up to the pipe's capacity; above it the water ponds and drains
                    # at that capacity, so a point that ponded takes its time after the rain.
                    h += (gain[sid] * rain[m] - min(h - base[sid], full)) / tau[sid]
                    level[m] = min(h, cap)
                levels_m[sid] = level
            beyond_until = [
                int(np.nonzero(v > limit_iv[sid])[0][-1]) for sid, v in levels_m.items() if (v > limit_iv[sid]).any()
            ]
            window_h = min(max(10, max(beyond_until, default=0) // 60 + 2), horizon_h)
            minutes = window_h * 60
            times = times[:minutes]
            window = _Window("storm", w_start, w_start + window_h * HOUR)
            ponded: list[str] = []
            for g in gauges:
                window.values[g.sensor_id] = np.round(rain[:minutes] * self.rng.uniform(0.92, 1.08), 2)
            for s in levels:
                sid = s.sensor_id
                level = levels_m[sid][:minutes]
                window.values[sid] = level
                beyond = level > limit_iv[sid]
                if beyond.any():  # a waterlogging point, surcharged: the detector alerts on any reading beyond
                    ponded.append(sid)
                    idx = np.nonzero(beyond)[0]
                    self.truth.ponded.setdefault(sid, []).append((times[int(idx[0])], times[int(idx[-1])]))
                if beyond.sum() >= 5:  # ponded 5 minutes or more: counted by the drain time, as the indicator reads it
                    back = times[int(idx[-1]) + 1] if idx[-1] + 1 < minutes else window.end
                    self.truth.drain_h.append((sid, max((back - rain_end).total_seconds(), 0.0) / 3600.0))
                top = _limit(s, Grade.I)
                if top is not None and (level > top).any():
                    self.truth.overflows.append((sid, times[int(np.argmax(level > top))]))
            self._mark(window)
            self.truth.events.append(
                {
                    "kind": "storm",
                    "start": times[onset].isoformat(),
                    "rain_end": rain_end.isoformat(),
                    "peak_mm_h": round(peak, 1),
                    "depth_mm": round(float(rain.sum()) / 60.0, 1),
                    "window_h": window_h,
                    "ponded": sorted(ponded),
                    "index": k,
                }
            )

    def lay_gas(self) -> None:
        methane = self._of(Network.GAS, Quantity.METHANE)
        pressure = [s for s in self._of(Network.GAS, Quantity.PRESSURE) if _limit(s, Grade.IV) is not None]
        for k in range(self.plan.gas_leaks if methane else 0):
            s = self.rng.choice(methane)
            hold_min = self.rng.randrange(20, 300)
            window_h = math.ceil((hold_min + 20 + 40 + 60) / 60)
            h0 = self._free_hour(window_h, spacing_h=6)
            if h0 is None:
                break
            step_s = int(s.interval_s)
            n = window_h * 3600 // step_s
            t_min = np.arange(n) * step_s / 60.0
            peak = self.rng.uniform(25.0, 65.0)
            rise0 = 20.0
            shape = np.interp(t_min, [0, rise0, rise0 + 20, rise0 + 20 + hold_min, rise0 + 60 + hold_min, 1e9],
                              [1.0, 1.0, peak, peak, 1.0, 1.0])  # fmt: skip
            w = _Window("gas_leak", self.start + h0 * HOUR, self.start + (h0 + window_h) * HOUR, {s.sensor_id: shape})
            limit = float(_limit(s, Grade.IV) or 20.0)
            hours = float((shape > limit).sum()) * step_s / 3600.0
            self.truth.methane_h[s.sensor_id] = self.truth.methane_h.get(s.sensor_id, 0.0) + hours
            self._mark(w)
            self.truth.events.append(
                {"kind": "gas_leak", "sensor_id": s.sensor_id, "start": w.start.isoformat(), "peak_pct_lel": round(
                    peak, 1), "hours_over_limit": round(hours, 4), "index": k}
            )  # fmt: skip
        for k in range(self.plan.gas_pressure_faults if pressure else 0):
            s = self.rng.choice(pressure)
            limit = float(_limit(s, Grade.IV) or 0.0)
            base = 1.3 * limit
            drop_min = self.rng.randrange(30, 180)
            window_h = math.ceil((drop_min + 30 + 60) / 60)
            h0 = self._free_hour(window_h, spacing_h=6)
            if h0 is None:
                break
            step_s = int(s.interval_s)
            n = window_h * 3600 // step_s
            t_min = np.arange(n) * step_s / 60.0
            low = 0.85 * limit
            shape = np.interp(t_min, [0, 15, 25, 25 + drop_min, 35 + drop_min, 1e9],
                              [base, base, low, low, base, base])  # fmt: skip
            w = _Window(
                "gas_pressure", self.start + h0 * HOUR, self.start + (h0 + window_h) * HOUR, {s.sensor_id: shape}
            )
            hours = float((shape < limit).sum()) * step_s / 3600.0
            self.truth.gas_pressure_h[s.sensor_id] = self.truth.gas_pressure_h.get(s.sensor_id, 0.0) + hours
            self._mark(w)
            self.truth.events.append(
                {"kind": "gas_pressure_fault", "sensor_id": s.sensor_id, "start": w.start.isoformat(),
                 "hours_below_limit": round(hours, 4), "index": k}
            )  # fmt: skip

    def lay_outages(self) -> None:
        candidates = sorted(
            sid
            for sid, s in self.sensors.items()
            if s.network is not Network.RAIN
            and sid not in (*self.defs.water_balance.inflow_sensors, *self.defs.water_balance.storage_inflow_sensors)
        )
        if not candidates:
            return
        for _k in range(self.plan.outages):
            sid = self.rng.choice(candidates)
            length = self.rng.choice((6, 12, 30, 72, 240))
            h0 = self.rng.randrange(0, max(self.hours - length - 48, 1))
            hours = set(range(h0, min(h0 + length, self.hours - 48)))
            hours -= self.busy.get(sid, set())
            self.silent.setdefault(sid, set()).update(hours)
            self.truth.events.append(
                {"kind": "outage", "sensor_id": sid, "start": (self.start + h0 * HOUR).isoformat(), "hours": len(hours)}
            )
        for sid in self.rng.sample(candidates, min(self.plan.offline_at_end, len(candidates))):
            last = set(range(self.hours - 48, self.hours)) - self.busy.get(sid, set())
            self.silent.setdefault(sid, set()).update(last)
            self.truth.events.append({"kind": "offline_at_end", "sensor_id": sid, "hours": len(last)})

    # --- water ----------------------------------------------------------------------------------------------

    def water_series(self) -> tuple[dict[str, npt.NDArray[np.float64]], list[tuple[datetime, datetime, float]]]:
        """Hourly means of the plant meters, L/s, and the billed volume per local month (start, end, m³)."""
        wb = self.defs.water_balance
        present = [s for s in (*wb.inflow_sensors, *wb.storage_inflow_sensors) if s in self.sensors]
        if not wb.inflow_sensors or len(present) < len(wb.inflow_sensors) + len(wb.storage_inflow_sensors):
            log.warning("water balance meters %s not all in the store: no water balance", list(wb.inflow_sensors))
            return {}, []
        pattern = np.asarray(DEMAND_PATTERN) / float(np.mean(DEMAND_PATTERN))
        night = [pattern[h] for h in range(wb.night_start_h, wb.night_end_h)]
        mean_demand = wb.legitimate_night_use_l_s / min(night)  # the night use the table assumes
        local_h = np.array([(self.start + k * HOUR + self.offset).hour for k in range(self.hours)])
        day = np.arange(self.hours) // 24
        season = 1.0 + 0.08 * np.sin(2 * np.pi * (day - 100) / 365.0)  # more in summer
        demand = mean_demand * pattern[local_h] * season
        pressure = 1.0 - 0.12 * (pattern[local_h] - 1.0)  # relative; highest when demand is lowest
        leak = self.plan.background_leak_l_s * pressure**LEAK_EXPONENT
        lo, hi = self.plan.leak_l_s
        for k in range(self.plan.leaks):
            flow = self.rng.uniform(lo, hi)
            h0 = self.rng.randrange(0, self.hours)
            length = self.rng.randrange(24 * 5, 24 * 60)
            leak[h0 : h0 + length] += flow * pressure[h0 : h0 + length] ** LEAK_EXPONENT
            self.truth.events.append(
                {"kind": "leak", "start": (self.start + h0 * HOUR).isoformat(), "flow_l_s": round(flow, 2),
                 "repaired": (self.start + min(h0 + length, self.hours) * HOUR).isoformat(), "index": k}
            )  # fmt: skip
        tank = 25.0 * np.sin(2 * np.pi * (local_h - 21) / 24.0) * -1.0  # fills at night, feeds the day peaks
        inflow = demand + leak + tank
        noise = self.plan.flow_noise_rel
        series: dict[str, npt.NDArray[np.float64]] = {}
        share = 1.0 / len(wb.inflow_sensors)
        for sid in wb.inflow_sensors:
            series[sid] = inflow * share * (1.0 + self.np.normal(0.0, noise, self.hours))
        for sid in wb.storage_inflow_sensors:
            series[sid] = tank + self.np.normal(0.0, noise * 5.0, self.hours)
        bills: list[tuple[datetime, datetime, float]] = []
        first = self.start
        while first < self.end:
            local = first + self.offset
            nxt_local = datetime(local.year + (local.month == 12), local.month % 12 + 1, 1, tzinfo=UTC)
            last = min(nxt_local - self.offset, self.end)
            a, b = int((first - self.start) / HOUR), int((last - self.start) / HOUR)
            bills.append((first, last, float(demand[a:b].sum()) * 3.6))
            first = last
        input_m3 = float((demand + leak).sum()) * 3.6
        self.water_truth = {
            "system_input_m3": input_m3,
            "billed_m3": float(demand.sum()) * 3.6,
            "leak_m3": float(leak.sum()) * 3.6,
            "leakage_rate_pct": 100.0 * float(leak.sum()) / float((demand + leak).sum()),
            "mean_demand_l_s": float(demand.mean()),
        }
        return series, bills

    # --- writing --------------------------------------------------------------------------------------------

    def quiet_value(self, s: Sensor, local_h: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Hourly means of a quiet hour for *s*."""
        pattern = np.asarray(DEMAND_PATTERN) / float(np.mean(DEMAND_PATTERN))
        iv = _limit(s, Grade.IV)
        low = any(lim.direction is Direction.LOW for lim in s.limits)
        noise = self.np.normal(0.0, 0.005, len(local_h))
        if s.quantity is Quantity.RAIN_RATE:
            return np.zeros(len(local_h))
        if s.quantity is Quantity.METHANE:
            return np.clip(1.0 + self.np.normal(0.0, 0.2, len(local_h)), 0.0, None)
        if s.quantity is Quantity.LEVEL and not low:
            return 0.3 * float(iv or 1.0) * (1.0 + noise)
        if s.quantity is Quantity.PRESSURE and iv is not None and low:
            return 1.3 * iv * (1.0 - 0.05 * (pattern[local_h] - 1.0)) * (1.0 + noise)
        if s.quantity is Quantity.FLOW:
            return 20.0 * pattern[local_h] * (1.0 + noise)
        if iv is not None and low:
            return 1.3 * iv * (1.0 + noise)
        return 1.0 + noise

    def write(self) -> dict[str, Any]:
        """Write quiet hours, event readings, billed water; return counts of what was written."""
        started = time.perf_counter()
        water, bills = self.water_series()
        local_h = np.array([(self.start + k * HOUR + self.offset).hour for k in range(self.hours)], dtype=np.int64)
        written: dict[str, int] = {}
        expected: dict[str, float] = {}
        span_s = (self.end - self.start).total_seconds()
        rollup_rows = 0
        cur = self.conn.cursor()
        with self.conn.transaction():
            with cur.copy(
                "COPY readings_1h (sensor_id, bucket, n, sum_value, min_value, max_value) FROM STDIN"
            ) as copy:
                for sid in sorted(self.sensors):
                    s = self.sensors[sid]
                    per_hour = max(round(3600.0 / s.interval_s), 1)
                    expected[sid] = span_s / s.interval_s
                    means = water.get(sid)
                    if means is None:
                        means = self.quiet_value(s, local_h)
                    spread = np.abs(means) * 0.02 + 0.001
                    skip = self.busy.get(sid, set()) | self.silent.get(sid, set())
                    count = 0
                    for k in range(self.hours):
                        if k in skip:
                            continue
                        m = float(means[k])
                        copy.write_row(
                            (sid, self.start + k * HOUR, per_hour, m * per_hour, m - float(spread[k]),
                             m + float(spread[k]))
                        )  # fmt: skip
                        count += per_hour
                    written[sid] = count
                    rollup_rows += self.hours - len(skip & set(range(self.hours)))
            store = ReadingStore(self.conn, mode=StorageMode.POSTGRESQL)
            raw = 0
            for w in self.windows:
                rows: list[ReadingRow] = []
                for sid, values in w.values.items():
                    s = self.sensors[sid]
                    step = timedelta(seconds=s.interval_s)
                    noisy = self._noisy(s, values)
                    rows.extend((sid, w.start + i * step, float(v), 0) for i, v in enumerate(noisy))
                    written[sid] = written.get(sid, 0) + len(values)
                raw += store.write(rows)
            for first, last, m3 in bills:
                cur.execute(
                    "INSERT INTO hc_billed_water (district, period_start, period_end, billed_m3, source)"
                    " VALUES ('', %s, %s, %s, 'simulated year: customers'' meters')",
                    (first, last, m3),
                )
            cur.execute(
                """INSERT INTO sensor_latest (sensor_id, ts, value, quality, received_at)
                   SELECT DISTINCT ON (h.sensor_id) h.sensor_id, h.bucket + interval '1 hour' - make_interval(
                          secs => s.interval_s), h.sum_value / h.n, 0, now()
                   FROM readings_1h h JOIN sensors s USING (sensor_id)
                   WHERE h.bucket >= %s AND h.bucket < %s ORDER BY h.sensor_id, h.bucket DESC
                   ON CONFLICT (sensor_id) DO UPDATE SET ts = excluded.ts, value = excluded.value
                   WHERE excluded.ts > sensor_latest.ts""",
                (self.start, self.end),
            )
        self.written, self.expected = written, expected
        log.info(
            "year %d: %d hourly rows, %d raw readings, %d billing periods in %.1f s",
            self.plan.year,
            rollup_rows,
            raw,
            len(bills),
            time.perf_counter() - started,
        )
        return {"hourly_rows": rollup_rows, "raw_readings": raw, "billing_periods": len(bills)}

    def _noisy(self, s: Sensor, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if s.quantity is Quantity.LEVEL:
            return np.clip(values + self.np.normal(0.0, self.plan.level_noise_m, len(values)), 0.0, None)
        if s.quantity is Quantity.METHANE:
            return np.clip(values + self.np.normal(0.0, self.plan.methane_noise_pct_lel, len(values)), 0.0, None)
        if s.quantity is Quantity.PRESSURE:
            return values * (1.0 + self.np.normal(0.0, 0.003, len(values)))
        return values

    # --- alerts and the people handling them -----------------------------------------------------------------

    def detect_and_handle(self, schema: str) -> dict[str, dict[str, Any]]:
        """Run the threshold detector over the event readings, store its alerts, and act on them as people do."""
        detector = ThresholdDetector(self.sensors)
        changes = []
        for w in sorted(self.windows, key=lambda w: w.start):
            readings: list[Reading] = []
            for sid in w.values:
                stored = self.conn.execute(
                    "SELECT ts, value FROM readings WHERE sensor_id = %s AND ts >= %s AND ts < %s ORDER BY ts",
                    (sid, w.start, w.end),
                ).fetchall()
                readings.extend(Reading(sid, _col(r, 0), float(_col(r, 1)), 0) for r in stored)
            detection = detector.evaluate(readings)
            detector.commit(detection)
            changes.extend(detection.changes)
        changes.sort(key=lambda c: c.ts)
        with self.conn.transaction():
            apply_changes(self.conn, changes, schema=schema)
        alerts = self.conn.execute(
            """SELECT a.id, least(a.grade, (SELECT min(e.grade) FROM alert_events e WHERE e.alert_id = a.id)),
                      a.raised_at, a.cleared_at, a.district
               FROM alerts a WHERE a.raised_at >= %s AND a.raised_at < %s ORDER BY a.id""",
            (self.start, self.end),
        ).fetchall()
        handled: dict[str, dict[str, Any]] = {}
        for row in alerts:
            alert_id, grade, raised = int(_col(row, 0)), int(_col(row, 1)), _col(row, 2)
            cleared = _col(row, 3) or raised
            times: dict[str, datetime | None] = {"acknowledge": None, "dispatch": None, "resolve": None}
            plan: list[tuple[datetime, Action, dict[str, str]]] = []
            if self.rng.random() >= self.plan.unacknowledged_share:
                ack = raised + timedelta(minutes=_lognormal(self.rng, self.plan.ack_median_min))
                plan.append((ack, Action.ACKNOWLEDGE, {}))
                times["acknowledge"] = ack
                after = ack
                if grade <= 3:
                    dispatch = ack + timedelta(minutes=_lognormal(self.rng, self.plan.dispatch_median_min * 0.6))
                    plan.append((dispatch, Action.DISPATCH, {"assignee": "抢修一队", "task": "现场核查处置"}))
                    times["dispatch"] = dispatch
                    after = dispatch
                resolve = max(after, cleared) + timedelta(hours=_lognormal(self.rng, self.plan.resolve_median_h * 0.5))
                plan.append((resolve, Action.RESOLVE, {}))
                plan.append((resolve + timedelta(hours=1), Action.RECHECK, {}))
                plan.append((resolve + timedelta(hours=2), Action.CLOSE, {}))
                times["resolve"] = resolve
            for when, action, detail in plan:
                if when >= self.end:
                    break
                apply_action(self.conn, alert_id, action, actor=OPERATOR, detail=detail, now=when, schema=schema)
            handled[str(alert_id)] = {"grade": grade, "raised_at": raised, "district": _col(row, 4), **times}
        self.handled = handled
        return handled

    # --- truth ----------------------------------------------------------------------------------------------

    def indicators_truth(self) -> dict[str, dict[str, float | None]]:
        districts = sorted({s.district for s in self.sensors.values() if s.district})
        areas = self.defs.district_area_km2
        out: dict[str, dict[str, float | None]] = {}
        for d in ["", *districts]:

            def mine(sid: str, d: str = d) -> bool:
                return d == "" or self.sensors[sid].district == d

            points = sorted(sid for sid in self.truth.ponded if mine(sid))
            area = sum(areas.values()) if d == "" else areas.get(d)
            levels = [
                s.sensor_id
                for s in self._of(Network.DRAINAGE, Quantity.LEVEL)
                if _limit(s, Grade.IV) is not None and mine(s.sensor_id)
            ]
            drains = [h for sid, h in self.truth.drain_h if mine(sid)]
            storms = any(e["kind"] == "storm" for e in self.truth.events)
            sensors = [sid for sid in self.sensors if mine(sid)]
            got = sum(min(self.written.get(sid, 0), self.expected[sid]) for sid in sensors)
            want = sum(self.expected[sid] for sid in sensors)
            last_day = set(range(self.hours - 24, self.hours))
            online = [sid for sid in sensors if not last_day <= self.silent.get(sid, set())]
            truth: dict[str, float | None] = {
                "waterlogging_points": float(len(points)),
                "waterlogging_density": len(points) / area if area else None,
                "gas_leak_alarms": float(
                    sum(
                        1
                        for e in self.truth.events
                        if e["kind"] == "gas_leak" and e["hours_over_limit"] > 0 and mine(e["sensor_id"])
                    )
                ),
                "methane_exceedance_hours": sum(h for sid, h in self.truth.methane_h.items() if mine(sid)),
                "gas_pressure_out_of_range_hours": sum(h for sid, h in self.truth.gas_pressure_h.items() if mine(sid)),
                "drainage_surcharge_share": 100.0 * len(points) / len(levels) if levels else None,
                "drainage_overflow_events": float(sum(1 for sid, _t in self.truth.overflows if mine(sid))),
                # No point ponded in the rain: nothing waited to drain (the indicator says 0 too); no rain: no value.
                "drainage_drain_time_hours": statistics.median(drains) if drains else (0.0 if storms else None),
                "data_completeness": 100.0 * got / want if want else None,
                "sensors_online": 100.0 * len(online) / len(sensors) if sensors else None,
            }
            for stage, key, unit_s, max_grade in (
                ("acknowledge", "alert_acknowledge_minutes", 60.0, 4),
                ("dispatch", "alert_dispatch_minutes", 60.0, 3),
                ("resolve", "alert_resolve_hours", 3600.0, 4),
            ):
                waits = []
                for a in self.handled.values():
                    if (d and a["district"] != d) or a["grade"] > max_grade:
                        continue
                    reached = a[stage]
                    until = reached if reached is not None and reached < self.end else self.end
                    waits.append((until - a["raised_at"]).total_seconds() / unit_s)
                truth[key] = statistics.median(waits) if waits else None
            if d == "" and hasattr(self, "water_truth"):
                truth["water_leakage_rate"] = self.water_truth["leakage_rate_pct"]
                # The minimum-night-flow method estimates the same true rate (a cross-check with assumed figures).
                truth["water_leakage_mnf"] = self.water_truth["leakage_rate_pct"]
            out[d] = truth
        return out


def _col(row: Any, k: int) -> Any:
    return list(row.values())[k] if isinstance(row, dict) else row[k]


def simulate_year(
    conn: psycopg.Connection[Any],
    *,
    schema: str,
    plan: YearPlan,
    definitions: Definitions | None = None,
) -> GroundTruth:
    """Lay out and write *plan*'s year for the sensors in the store; return its ground truth.

    Args:
        conn: an autocommit connection to the store's *schema* (plain PostgreSQL mode, migrated).
        schema: the store's schema (alert events are announced on its channel).
        plan: what happens in the year.
        definitions: the health check table (the water balance's meters, the districts' areas); default: the
            shipped one.

    Raises:
        ConfigError: the schema is in TimescaleDB mode, or there are no sensors.
    """
    if current_mode(conn, schema=schema) is not StorageMode.POSTGRESQL:
        raise ConfigError(
            f"schema {schema!r} is not in plain-PostgreSQL mode: the simulated year writes the hourly rollup table"
        )
    started = time.perf_counter()
    year = _Year(conn, plan, definitions or load_definitions())
    year.lay_storms()
    year.lay_gas()
    year.lay_outages()
    counts = year.write()
    handled = year.detect_and_handle(schema)
    summary: dict[str, Any] = {
        "start": year.start.isoformat(),
        "end": year.end.isoformat(),
        "sensors": len(year.sensors),
        **counts,
        "alerts": len(handled),
        "indicators": year.indicators_truth(),
        "water": getattr(year, "water_truth", None),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    scenario = {"kind": "year", **{k: v for k, v in asdict(plan).items()}}
    return GroundTruth(scenario=scenario, events=year.truth.events, summary=summary)


def plan_years(years: Iterable[int], *, seed: int, days: int | None = None) -> list[YearPlan]:
    """Plans for consecutive years: each later year with fewer, smaller leaks and quicker people than the one before.

    The health check's year-over-year comparison then shows a city acting on its last check.
    """
    ordered = sorted(set(years))
    plans = []
    for k, year in enumerate(ordered):
        better = len(ordered) - 1 - k  # 0 for the last year
        plans.append(
            YearPlan(
                year=year,
                seed=seed + year,
                days=days,
                leaks=4 + 2 * better,
                leak_l_s=(8.0, 30.0 + 10.0 * better),
                background_leak_l_s=10.0 + 6.0 * better,
                ack_median_min=12.0 * (1.6**better),
                dispatch_median_min=25.0 * (1.5**better),
                resolve_median_h=2.5 * (1.5**better),
                outages=8 + 4 * better,
            )
        )
    return plans
