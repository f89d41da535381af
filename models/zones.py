"""Multivariate models per network zone: fitted on history from the database, versioned, run on the live stream.

A *zone* is a pipe network's sensors in one district (``water:吉州区``); its pressure, flow and level sensors
together are what one model watches, because a leak or a valve moves several of them at once in ways no single
sensor's baseline sees. :func:`fit_zones` reads each zone's hourly means (the ``readings_1h`` rollup) for a normal
period and fits the offline detector (:mod:`models.offline`, its settings chosen on BATADAL's normal year) per
zone; ``lifeline models fit`` stores the models with a version (:mod:`twin.store.zone_models`), and
:class:`ZoneDetector` runs the newest version of each in ingest: it averages each sensor per hour as readings
arrive, and when an hour is complete scores the zone's last ``window_h`` hours; an alarm (the smoothed score above
the model's threshold for the model's ``min_alarm_h``) raises an alert of kind ``zone_anomaly`` (grade III), which
clears after ``clear_h`` complete hours without alarm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg

from models.offline import (
    OfflineDetector,
    OfflineModelError,
    SensorKind,
    dump_detector,
    fit_detector,
    flags_from_raw,
    load_detector,
    raw_score,
    sensor_shares,
)
from models.streaming import StreamResult, Suspect
from twin.alerts import AlertChange
from twin.readings import QUALITY_BAD, Reading
from twin.sensors import Grade, Network, Quantity, Sensor
from twin.store import zone_models

KIND = "zone_anomaly"
STATE_VERSION = 1
ZONE_NETWORKS = (Network.WATER, Network.GAS)
KINDS: Mapping[Quantity, SensorKind] = {
    Quantity.PRESSURE: SensorKind.PRESSURE,
    Quantity.FLOW: SensorKind.FLOW,
    Quantity.LEVEL: SensorKind.LEVEL,
}
MIN_SENSORS = 3
"""A zone needs at least this many sensors for a multivariate model."""
HOUR_S = 3600.0


def zone_of(sensor: Sensor) -> str | None:
    """The zone a sensor belongs to (``network:district``), or None if zones do not cover it."""
    if sensor.network not in ZONE_NETWORKS or sensor.quantity not in KINDS:
        return None
    return f"{sensor.network.value}:{sensor.district or '全市'}"


def zones(sensors: Mapping[str, Sensor]) -> dict[str, list[Sensor]]:
    """Group the sensors into zones with at least :data:`MIN_SENSORS` each."""
    out: dict[str, list[Sensor]] = {}
    for sensor in sensors.values():
        zone = zone_of(sensor)
        if zone is not None:
            out.setdefault(zone, []).append(sensor)
    return {z: sorted(s, key=lambda x: x.sensor_id) for z, s in out.items() if len(s) >= MIN_SENSORS}


def hourly_frame(
    conn: psycopg.Connection[Any], sensor_ids: Sequence[str], start: datetime, end: datetime
) -> pd.DataFrame:
    """Hourly means of *sensor_ids* from ``readings_1h`` in [start, end), one column per sensor (UTC index)."""
    rows = conn.execute(
        """SELECT sensor_id, bucket, sum_value / n AS value FROM readings_1h
           WHERE sensor_id = ANY(%s) AND bucket >= %s AND bucket < %s AND n > 0""",
        (list(sensor_ids), start, end),
    ).fetchall()
    if not rows:
        return pd.DataFrame(columns=list(sensor_ids), index=pd.DatetimeIndex([], tz=UTC))
    records = [(r["sensor_id"], r["bucket"], r["value"]) if isinstance(r, dict) else tuple(r) for r in rows]
    frame = pd.DataFrame(records, columns=["sensor_id", "bucket", "value"]).pivot_table(
        index="bucket", columns="sensor_id", values="value"
    )
    frame.index = pd.DatetimeIndex(frame.index).tz_convert(UTC)
    return frame.sort_index().reindex(columns=list(sensor_ids))


@dataclass(frozen=True, slots=True)
class ZoneFit:
    """One zone's fitted model, or why it could not be fitted."""

    zone: str
    sensors: tuple[str, ...]
    hours: int
    detector: OfflineDetector | None
    problem: str = ""


def fit_zones(
    conn: psycopg.Connection[Any], sensors: Mapping[str, Sensor], *, start: datetime, end: datetime
) -> list[ZoneFit]:
    """Fit one model per zone on the hourly history in [start, end) (a normal period: two weeks at least)."""
    fits = []
    for zone, members in sorted(zones(sensors).items()):
        ids = [s.sensor_id for s in members]
        frame = hourly_frame(conn, ids, start, end)
        kinds = {s.sensor_id: KINDS[s.quantity] for s in members}
        try:
            detector = fit_detector(frame.dropna(axis=1, how="all"), kinds=kinds)
        except OfflineModelError as exc:
            fits.append(ZoneFit(zone, tuple(ids), len(frame), None, str(exc)))
            continue
        fits.append(ZoneFit(zone, tuple(detector.columns), len(frame), detector))
    return fits


@dataclass(slots=True)
class _Zone:
    """One zone's live state: the current hour's sums per sensor and the completed hours' means."""

    detector: OfflineDetector
    version: int
    hour: float = math.nan  # start of the hour being filled, epoch seconds
    sums: dict[str, list[float]] | None = None  # sensor → [sum, count] of the current hour
    rows: list[tuple[float, dict[str, float]]] | None = None  # completed hours, oldest first
    active: bool = False
    quiet: int = 0  # completed hours without alarm while the alert is raised


class ZoneDetector:
    """Run the zones' models on the live stream (see the module docstring).

    Args:
        sensors: sensors by id.
        models: zone → (version, fitted detector), e.g. from :func:`twin.store.zone_models.latest_models`.
        window_h: hours of history scored at each completed hour.
        clear_h: completed hours without alarm before a raised alert is cleared (the score wavers in an event).
    """

    name = KIND

    def __init__(
        self,
        sensors: Mapping[str, Sensor],
        models: Mapping[str, tuple[int, OfflineDetector]],
        *,
        window_h: int = 24,
        clear_h: int = 3,
    ) -> None:
        self.window_h = window_h
        self.clear_h = clear_h
        self.sensors: Mapping[str, Sensor] = {}
        self._zones = {zone: _Zone(detector, version) for zone, (version, detector) in models.items()}
        self._zone_of: dict[str, str] = {}
        self.update_sensors(sensors)

    def update_sensors(self, sensors: Mapping[str, Sensor]) -> None:
        self.sensors = sensors
        self._zone_of = {}
        for zone, state in self._zones.items():
            for sid in state.detector.columns:
                if sid in sensors:
                    self._zone_of[sid] = zone

    def evaluate(self, readings: Sequence[Reading], *, now: datetime, suspect: Suspect) -> StreamResult:
        state = {z: _copy(s) for z, s in self._zones.items()}
        changes: list[AlertChange] = []
        for r in sorted(readings, key=lambda x: x.ts):
            zone = self._zone_of.get(r.sensor_id)
            if zone is None or r.quality == QUALITY_BAD or (suspect and (r.sensor_id, r.ts) in suspect):
                continue
            if not math.isfinite(r.value):
                continue
            z = state[zone]
            t = r.ts.timestamp()
            hour = t - t % HOUR_S
            if math.isnan(z.hour):
                z.hour, z.sums, z.rows = hour, {}, []
            if hour < z.hour:
                continue  # late for an hour already closed
            if hour > z.hour:
                self._close_hour(zone, z, changes)
                z.hour, z.sums = hour, {}
            assert z.sums is not None
            acc = z.sums.setdefault(r.sensor_id, [0.0, 0.0])
            acc[0] += r.value
            acc[1] += 1.0
        return StreamResult(changes, state)

    def commit(self, result: StreamResult) -> None:
        if isinstance(result.state, dict):
            self._zones = result.state

    def dump_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "zones": {
                zone: {
                    "model_version": z.version,
                    "hour": None if math.isnan(z.hour) else z.hour,
                    "sums": z.sums or {},
                    "rows": z.rows or [],
                    "active": z.active,
                    "quiet": z.quiet,
                }
                for zone, z in self._zones.items()
            },
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        for zone, entry in dict(data.get("zones", {})).items():
            z = self._zones.get(zone)
            if z is None or entry.get("model_version") != z.version:
                continue  # a new model version starts fresh
            z.hour = math.nan if entry.get("hour") is None else float(entry["hour"])
            z.sums = {k: [float(v[0]), float(v[1])] for k, v in dict(entry.get("sums", {})).items()}
            z.rows = [(float(t), {k: float(v) for k, v in row.items()}) for t, row in entry.get("rows", [])]
            z.active = bool(entry.get("active", False))
            z.quiet = int(entry.get("quiet", 0))

    def _close_hour(self, zone: str, z: _Zone, changes: list[AlertChange]) -> None:
        assert z.sums is not None and z.rows is not None
        means = {sid: s / n for sid, (s, n) in z.sums.items() if n > 0}
        if not means:
            return
        z.rows.append((z.hour, means))
        del z.rows[: max(0, len(z.rows) - self.window_h)]
        det = z.detector
        if len(z.rows) < 3:
            return
        index = pd.DatetimeIndex([datetime.fromtimestamp(t, UTC) for t, _ in z.rows])
        frame = pd.DataFrame([row for _, row in z.rows], index=index).reindex(columns=list(det.columns))
        for column in frame.columns[frame.isna().all()]:
            profile = det.profiles[column]
            frame[column] = [float(profile.centre[ts.hour]) for ts in index]
        score, flags = flags_from_raw(det, raw_score(det, frame))
        alarm, value = bool(flags[-1]), float(score[-1])
        at = datetime.fromtimestamp(z.hour + HOUR_S, UTC)
        if alarm:
            z.quiet = 0
            if not z.active:
                z.active = True
                shares = sensor_shares(det, frame).iloc[-1].sort_values(ascending=False)
                top = [(str(sid), float(share)) for sid, share in shares.iloc[:3].items() if share > 0]
                changes.append(self._change(zone, True, at, value, det.threshold, z.version, top))
        elif z.active:
            z.quiet += 1
            if z.quiet >= self.clear_h:
                z.active, z.quiet = False, 0
                changes.append(self._change(zone, False, at, value, det.threshold, z.version))

    def _change(
        self,
        zone: str,
        raising: bool,
        at: datetime,
        score: float,
        threshold: float,
        version: int,
        top: Sequence[tuple[str, float]] = (),
    ) -> AlertChange:
        """Build a raise (with *top*: the sensors carrying most of the score and their shares) or a clear."""
        network, _, district = zone.partition(":")
        net_zh = {"water": "供水", "gas": "燃气"}.get(network, network)
        named = "、".join(f"{sid} {share:.0%}" for sid, share in top)
        if raising:
            zh = f"{district}{net_zh}管网多传感器联合异常（综合评分 {score:.2f}，阈值 {threshold:.2f}"
            zh += f"；主要来自 {named}）" if top else "）"
            en = (
                f"{network} network in {district}: sensors jointly abnormal"
                f" (score {score:.2f}, threshold {threshold:.2f}"
                + (f"; mostly {', '.join(f'{sid} {share:.0%}' for sid, share in top)})" if top else ")")
            )
        else:
            zh, en = f"{district}{net_zh}管网联合异常已解除", f"{network} network in {district}: back to normal"
        return AlertChange(
            event="raised" if raising else "cleared",
            cause_key=f"{KIND}:{zone}",
            kind=KIND,
            sensor_id=None,
            network=network,
            district=district,
            grade=int(Grade.III),
            ts=at,
            value=round(score, 4),
            threshold=round(threshold, 4),
            message=zh,
            message_en=en,
            detail={"zone": zone, "model_version": version}
            | ({"sensors": [{"sensor_id": sid, "share": round(share, 3)} for sid, share in top]} if top else {}),
        )


def _copy(z: _Zone) -> _Zone:
    return _Zone(
        z.detector,
        z.version,
        z.hour,
        None if z.sums is None else {k: list(v) for k, v in z.sums.items()},
        None if z.rows is None else list(z.rows),
        z.active,
        z.quiet,
    )


def default_period(now: datetime, days: int = 28) -> tuple[datetime, datetime]:
    """The last *days* full days before *now* (UTC midnights)."""
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=days), end


def store_fit(conn: psycopg.Connection[Any], fit: ZoneFit, *, start: datetime, end: datetime) -> int:
    """Store a fitted zone model as the zone's next version; return the version."""
    if fit.detector is None:
        raise OfflineModelError(f"zone {fit.zone}: nothing fitted ({fit.problem})")
    return zone_models.save_model(
        conn,
        fit.zone,
        dump_detector(fit.detector),
        sensors=list(fit.detector.columns),
        threshold=fit.detector.threshold,
        period_from=start,
        period_to=end,
        hours=fit.hours,
    )


def load_latest(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, OfflineDetector]]:
    """Each zone's newest stored model, loaded: zone → (version, detector)."""
    return {zone: (v, load_detector(blob)) for zone, (v, blob) in zone_models.latest_models(conn).items()}
