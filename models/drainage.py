"""Drainage warnings: sustained surcharge, and overflow at a manhole projected from the rising level.

A streaming detector (:mod:`models.streaming`) of kind ``drainage`` on the ``drainage`` network. Each level sensor
(m of water above the node's invert) is bound to a node whose geometry it needs: the *crown* (the top of the
largest pipe leaving the node, capped at the rim) and the *rim* (the node's full depth, where SWMM floods), from
the city's drainage network (:func:`geometry_of`); without a network, the lowest and highest of the sensor's high
alarm limits stand in for them (the demo city sets them so).

Per reading, O(1): a Holt filter gives the level (smoothed over ``level_tau_s``) and its rate (over
``trend_tau_s``, m/s); the projected time to the rim is ``(rim − level) / rate`` while rising.

- **Surcharge**: the filtered level above the crown by ``margin_m`` for ``surcharge_readings`` readings raises
  an alert (cause ``drainage:{sensor_id}``), or earlier when the projected time to the rim is already within
  ``imminent_s``.
- **Grade** by how bad and how soon (``eta_s`` to the rim in ``detail``):
  I when the level is at the rim (overflowing) or the rim is projected within ``severe_s`` (5 min);
  II, *overflow imminent*, within ``imminent_s`` (15 min) or at 85 % of the rim depth;
  III within ``horizon_s`` (30 min) or above half-way from crown to rim; IV surcharged.
  The level thresholds match the demo city's fixed limits, so the grade is never less severe than the threshold
  detector's for the same level; the projection is what it adds. A grade goes up at once and down only after
  ``hold_s`` without calling for it, so a noisy projection does not flap.
- **Cleared** when the level has been under the crown (less ``margin_m``) for ``clear_readings`` readings.

Readings in ``suspect`` (e.g. from :class:`models.sensor_health.SensorHealthDetector`), of quality ``bad``, of other
sensors, or not newer than the sensor's newest are ignored.

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> from twin.readings import Reading
    >>> from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
    >>> limits = tuple(AlarmLimit(g, Direction.HIGH, v) for g, v in zip(Grade, (2.0, 1.7, 1.2, 0.4)))
    >>> dl = Sensor("DL-J1", Network.DRAINAGE, Quantity.LEVEL, "检查井 J1 液位", limits=limits)
    >>> det = DrainageDetector({"DL-J1": dl})
    >>> t0 = datetime(2026, 7, 1, tzinfo=UTC)
    >>> events = []
    >>> for k in range(60):
    ...     ts = t0 + timedelta(minutes=k)
    ...     result = det.evaluate([Reading("DL-J1", ts, 0.1 + 0.05 * k, 0)], now=ts, suspect=set())
    ...     det.commit(result)
    ...     events += [(k, c.event, c.grade) for c in result.changes]
    >>> events[:3]
    [(9, 'raised', 3), (23, 'updated', 2), (34, 'updated', 1)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.streaming import StreamResult, Suspect, of_sensors
from twin.alerts import AlertChange
from twin.model import City
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Direction, Grade, Network, Quantity, Sensor

KIND = "drainage"
STATE_VERSION = 1


def cause_key(sensor_id: str) -> str:
    """Return the cause key of a drainage alert at the node watched by *sensor_id*."""
    return f"{KIND}:{sensor_id}"


@dataclass(frozen=True, slots=True)
class NodeGeometry:
    """Where a node's level matters: the crown of its outgoing pipe and its rim, m above the invert."""

    crown_m: float
    rim_m: float


def geometry_of(city: City | None, sensor: Sensor) -> NodeGeometry:
    """Return the crown and rim of the node *sensor* watches.

    From the city's drainage network when the sensor is bound to one of its nodes: the rim is the node's depth
    (``depth_m``, where SWMM floods it), the crown the largest diameter of the pipes leaving it (entering it, for
    an outfall), at most the rim. Otherwise from the sensor's high alarm limits: the lowest is the crown, the
    highest the rim.
    """
    network = city.networks.get(Network.DRAINAGE) if city is not None else None
    asset = (sensor.asset_id or "").removeprefix(f"{Network.DRAINAGE.value}:")
    if network is not None and asset in network.nodes and network.nodes[asset].depth_m > 0:
        rim = network.nodes[asset].depth_m
        # Weirs, orifices and pumps have no diameter: only conduits have a crown.
        out = [link.diameter_m for link in network.links.values() if link.from_id == asset and link.diameter_m > 0]
        into = [link.diameter_m for link in network.links.values() if link.to_id == asset and link.diameter_m > 0]
        crown = max(out or into or [rim])
        return NodeGeometry(min(crown, rim), rim)
    highs = sorted(lim.threshold for lim in sensor.limits if lim.direction is Direction.HIGH)
    if not highs:
        valid = sensor.valid_max if math.isfinite(sensor.valid_max) else 1.0
        return NodeGeometry(0.5 * valid, valid)
    return NodeGeometry(highs[0], max(highs[-1], highs[0]))


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainageRules:
    """The detector's parameters; see the module docstring.

    Attributes:
        level_tau_s: time constant of the Holt level, s.
        trend_tau_s: time constant of the Holt rate, s.
        margin_m: above the crown by this much counts as surcharged, m.
        surcharge_readings: consecutive surcharged readings that raise an alert.
        clear_readings: consecutive readings under the crown that clear it.
        min_rate_m_min: a rise slower than this is not projected, m/min.
        severe_s, imminent_s, horizon_s: projected times to the rim for grades I, II and III, s.
        imminent_fraction: a level at this share of the rim depth is grade II.
        rim_tolerance_m: a level this close to the rim is at the rim (overflowing), m.
        hold_s: a grade is lowered only after this long without calling for it, s.
    """

    level_tau_s: float = 60.0
    trend_tau_s: float = 180.0
    margin_m: float = 0.02
    surcharge_readings: int = 3
    clear_readings: int = 5
    min_rate_m_min: float = 0.005
    severe_s: float = 5 * 60.0
    imminent_s: float = 15 * 60.0
    horizon_s: float = 30 * 60.0
    imminent_fraction: float = 0.85
    rim_tolerance_m: float = 0.02
    hold_s: float = 10 * 60.0


@dataclass(slots=True)
class LevelState:
    """What the detector remembers of one level sensor (m, m/s)."""

    last_ts: datetime | None = None
    level: float = math.nan
    rate: float = 0.0
    above: int = 0
    below: int = 0
    grade: int = 0  # 0: no alert
    grade_ts: datetime | None = None  # when the current grade was last called for

    def copy(self) -> LevelState:
        """Return an independent copy."""
        return LevelState(self.last_ts, self.level, self.rate, self.above, self.below, self.grade, self.grade_ts)


class DrainageDetector:
    """Warn of surcharge and imminent overflow at watched drainage nodes (see the module docstring).

    Args:
        sensors: sensors by id; the drainage network's level sensors are judged.
        city: the city, for each node's crown and rim (:func:`geometry_of`); without it the sensors' limits.
        rules: the parameters.
    """

    name = KIND

    def __init__(self, sensors: Mapping[str, Sensor], *, city: City | None = None, rules: DrainageRules | None = None):
        self.rules = rules or DrainageRules()
        self._city = city
        self._state: dict[str, LevelState] = {}
        self.update_sensors(sensors)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        """Use new sensor definitions; the learned state of sensors that remain is kept."""
        self.sensors = {
            sid: s for sid, s in sensors.items() if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL
        }
        self._geometry = {sid: geometry_of(self._city, s) for sid, s in self.sensors.items()}
        self._state = {sid: st for sid, st in self._state.items() if sid in self.sensors}

    def commit(self, result: StreamResult) -> None:
        """Adopt the state of a result whose changes have been stored."""
        self._state = result.state

    def dump_state(self) -> dict[str, Any]:
        """Return the committed state as JSON-ready data."""
        return {
            "version": STATE_VERSION,
            "sensors": {
                sid: {
                    "last_ts": None if st.last_ts is None else st.last_ts.isoformat(),
                    "level": None if math.isnan(st.level) else st.level,
                    "rate": st.rate,
                    "above": st.above,
                    "below": st.below,
                    "grade": st.grade,
                    "grade_ts": None if st.grade_ts is None else st.grade_ts.isoformat(),
                }
                for sid, st in self._state.items()
            },
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore a state returned by :meth:`dump_state`; sensors no longer known are dropped."""
        state: dict[str, LevelState] = {}
        for sid, d in data.get("sensors", {}).items():
            if sid not in self.sensors:
                continue
            level = d.get("level")
            state[sid] = LevelState(
                last_ts=None if d.get("last_ts") is None else datetime.fromisoformat(d["last_ts"]),
                level=math.nan if level is None else float(level),
                rate=float(d.get("rate", 0.0)),
                above=int(d.get("above", 0)),
                below=int(d.get("below", 0)),
                grade=int(d.get("grade", 0)),
                grade_ts=None if d.get("grade_ts") is None else datetime.fromisoformat(d["grade_ts"]),
            )
        self._state = state

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        """Judge a batch of readings received at *now*; change nothing."""
        touched: dict[str, LevelState] = {}
        changes: list[AlertChange] = []
        for reading in sorted(of_sensors(readings, self.sensors), key=lambda r: (r.sensor_id, r.ts)):
            sid = reading.sensor_id
            sensor = self.sensors.get(sid)
            if sensor is None or reading.quality == QUALITY_BAD or (sid, reading.ts) in suspect:
                continue
            if not math.isfinite(reading.value):
                continue
            st = touched.get(sid)
            if st is None:
                old = self._state.get(sid)
                st = touched[sid] = LevelState() if old is None else old.copy()
            change = self._step(sensor, self._geometry[sid], st, reading)
            if change is not None:
                changes.append(change)
        return StreamResult(changes, {**self._state, **touched})

    def _step(self, sensor: Sensor, geo: NodeGeometry, st: LevelState, reading: Reading) -> AlertChange | None:
        r = self.rules
        ts, x = reading.ts, reading.value
        if st.last_ts is not None and ts <= st.last_ts:
            return None
        if st.last_ts is None or math.isnan(st.level):
            st.last_ts, st.level, st.rate = ts, x, 0.0
            return None
        dt = max((ts - st.last_ts).total_seconds(), 1e-3)
        st.last_ts = ts
        alpha = 1.0 - math.exp(-dt / r.level_tau_s)
        beta = 1.0 - math.exp(-dt / r.trend_tau_s)
        predicted = st.level + st.rate * dt
        level = predicted + alpha * (x - predicted)
        st.rate += beta * ((level - st.level) / dt - st.rate)
        st.level = level

        eta = self._eta(geo, st)
        if level > geo.crown_m + r.margin_m:
            st.above, st.below = st.above + 1, 0
        else:
            st.above = 0
            st.below = st.below + 1 if level < geo.crown_m - r.margin_m else 0
        wanted = self._wanted(geo, st, eta)
        if st.grade == 0:
            surcharged = st.above >= r.surcharge_readings
            if not surcharged and not (eta is not None and eta <= r.imminent_s and level > geo.crown_m):
                return None
            st.grade, st.grade_ts = wanted, ts
            return self._change("raised", sensor, geo, st, ts, eta)
        if st.below >= r.clear_readings:
            st.grade, st.grade_ts = 0, None
            return self._change("cleared", sensor, geo, st, ts, eta)
        if wanted <= st.grade:
            raised = wanted < st.grade
            st.grade, st.grade_ts = wanted, ts
            return self._change("updated", sensor, geo, st, ts, eta) if raised else None
        if st.grade_ts is not None and (ts - st.grade_ts).total_seconds() >= r.hold_s:
            st.grade, st.grade_ts = wanted, ts
            return self._change("updated", sensor, geo, st, ts, eta)
        return None

    def _eta(self, geo: NodeGeometry, st: LevelState) -> float | None:
        """Projected seconds until the level reaches the rim, or None when not rising (0 at the rim)."""
        if st.level >= geo.rim_m - self.rules.rim_tolerance_m:
            return 0.0
        if st.rate * 60.0 < self.rules.min_rate_m_min:
            return None
        return (geo.rim_m - st.level) / st.rate

    def _wanted(self, geo: NodeGeometry, st: LevelState, eta: float | None) -> int:
        """The grade the level and its projection call for (IV when merely surcharged)."""
        r = self.rules
        level = st.level
        soon = math.inf if eta is None else eta
        if soon <= r.severe_s:
            return int(Grade.I)
        if soon <= r.imminent_s or level >= r.imminent_fraction * geo.rim_m:
            return int(Grade.II)
        if soon <= r.horizon_s or level >= geo.crown_m + 0.5 * (geo.rim_m - geo.crown_m):
            return int(Grade.III)
        return int(Grade.IV)

    def _change(
        self, event: str, sensor: Sensor, geo: NodeGeometry, st: LevelState, ts: datetime, eta: float | None
    ) -> AlertChange:
        detail: dict[str, Any] = {
            "asset": sensor.asset_id,
            "crown_m": round(geo.crown_m, 3),
            "rim_m": round(geo.rim_m, 3),
            "rate_m_min": round(st.rate * 60.0, 4),
            "overflow_imminent": event != "cleared" and st.grade <= int(Grade.II),
        }
        if eta is not None:
            detail["eta_s"] = round(eta)
        name = sensor.name
        sid = sensor.sensor_id
        if event == "cleared":
            grade = int(Grade.IV)
            zh = f"{name}（{sid}）液位已回落至管顶以下：{st.level:.2f} m"
            en = f"{sid} level back under the pipe crown: {st.level:.2f} m"
        else:
            grade = st.grade
            g = Grade(grade)
            above = st.level - geo.crown_m
            if detail["overflow_imminent"]:
                when_zh = "正在冒溢" if eta == 0 else f"预计 {(eta or 0) / 60:.0f} 分钟后冒溢"
                when_en = "overflowing" if eta == 0 else f"overflow projected in {(eta or 0) / 60:.0f} min"
                zh = f"{g.label_zh}排水预警：{name}（{sid}）即将冒溢，液位 {st.level:.2f} m，{when_zh}"
                en = f"Grade {g.name} drainage warning: {sid} overflow imminent, level {st.level:.2f} m, {when_en}"
            else:
                eta_zh = f"，预计 {eta / 60:.0f} 分钟后到达井口" if eta else ""
                eta_en = f", rim projected in {eta / 60:.0f} min" if eta else ""
                zh = f"{g.label_zh}排水预警：{name}（{sid}）管道满流承压，液位高出管顶 {above:.2f} m{eta_zh}"
                en = f"Grade {g.name} drainage warning: {sid} surcharged, {above:.2f} m above the crown{eta_en}"
        return AlertChange(
            event=event,
            cause_key=cause_key(sid),
            kind=KIND,
            sensor_id=sid,
            network=Network.DRAINAGE.value,
            district=sensor.district,
            grade=grade,
            ts=ts,
            value=round(st.level, 4),
            threshold=geo.rim_m if detail["overflow_imminent"] else geo.crown_m,
            message=zh,
            message_en=en,
            detail=detail,
        )
