"""Lifeline indicators of the city health check (城市体检), computed from the store for a period.

The definitions (name, unit, target, bands, weight, method, source) live in ``definitions.toml``, a table a city
edits; this module reads it and runs each indicator's *method* on the database for a period, per district
(``sensors.district``, ``alerts.district``) and city-wide (district ``""``).

What is measured and what is estimated:

- Counts and durations (waterlogging points, alarms, hours over a limit, response times) are counted from the
  alerts and readings as stored; they are as good as the sensors and detectors behind them.
- The leakage rate from the water balance is an estimate: system input is metered at the plant (hourly means of
  the inflow sensors, less the flow into storage), billed consumption comes from the utility
  (``hc_billed_water``), and the difference holds real losses *and* apparent losses (meter under-registration,
  unbilled use). Missing hours are filled with the period's mean flow.
- The minimum-night-flow rate is a cross-check with two assumed figures from the table: the customers'
  legitimate night use and the night-day factor (hours per day the night leak flow represents).
"""

from __future__ import annotations

import statistics
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin.errors import LifelineError

DEFINITIONS_PATH = Path(__file__).with_name("definitions.toml")
CITY = ""
"""The district name that means the whole city."""
HOUR_S = 3600.0


class DefinitionError(LifelineError, ValueError):
    """The indicator table cannot be used: a missing field, a bad band or an unknown method."""


@dataclass(frozen=True, slots=True)
class Definition:
    """One indicator as the table defines it (see ``definitions.toml`` for the meaning of each field)."""

    id: str
    name_zh: str
    name_en: str
    unit: str
    direction: str
    target: float
    bands: tuple[float, float, float, float]
    weight: float
    method: str
    params: Mapping[str, Any]
    source: str
    scope: str = "district"


@dataclass(frozen=True, slots=True)
class WaterBalanceConfig:
    """Where the water balance finds its system input, and the minimum-night-flow assumptions."""

    inflow_sensors: tuple[str, ...]
    storage_inflow_sensors: tuple[str, ...] = ()
    night_start_h: int = 1
    night_end_h: int = 5
    utc_offset_h: float = 8.0
    legitimate_night_use_l_s: float = 0.0
    night_day_factor_h: float = 20.0


@dataclass(frozen=True, slots=True)
class Definitions:
    """The whole table: indicators in order, district areas (km²), and the water balance's set-up."""

    indicators: tuple[Definition, ...]
    district_area_km2: Mapping[str, float]
    water_balance: WaterBalanceConfig

    def __getitem__(self, indicator_id: str) -> Definition:
        for definition in self.indicators:
            if definition.id == indicator_id:
                return definition
        raise KeyError(indicator_id)

    def __contains__(self, indicator_id: object) -> bool:
        return any(d.id == indicator_id for d in self.indicators)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What an indicator's value rests on: sensor ids, alert ids, and (start, end) periods."""

    sensors: tuple[str, ...] = ()
    alerts: tuple[int, ...] = ()
    periods: tuple[tuple[datetime, datetime], ...] = ()

    def as_json(self) -> dict[str, Any]:
        """Return the evidence as JSON-ready values (times as ISO strings)."""
        return {
            "sensors": list(self.sensors),
            "alerts": list(self.alerts),
            "periods": [[a.isoformat(), b.isoformat()] for a, b in self.periods],
        }


@dataclass(frozen=True, slots=True)
class IndicatorValue:
    """One indicator for one district (``""`` = city) over ``start`` … ``end``; ``value`` None when not measurable."""

    indicator_id: str
    district: str
    start: datetime
    end: datetime
    value: float | None
    evidence: Evidence = Evidence()
    detail: Mapping[str, Any] = field(default_factory=dict)


# --- the table ------------------------------------------------------------------------------------------------------


def load_definitions(path: Path | None = None) -> Definitions:
    """Read the indicator table from *path* (default: the ``definitions.toml`` beside this module).

    Raises:
        DefinitionError: the file is not valid TOML, or an indicator lacks a field or has bad bands, direction
            or method.

    Example:
        >>> defs = load_definitions()
        >>> defs["water_leakage_rate"].target
        9.0
    """
    source = path or DEFINITIONS_PATH
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError(f"{source}: {exc}") from exc
    indicators = tuple(_definition(item, source) for item in raw.get("indicator", []))
    ids = [d.id for d in indicators]
    if len(set(ids)) != len(ids):
        raise DefinitionError(f"{source}: indicator ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    areas = {str(name): float(info["area_km2"]) for name, info in raw.get("districts", {}).items()}
    wb = raw.get("water_balance", {})
    try:
        balance = WaterBalanceConfig(
            inflow_sensors=tuple(wb.get("inflow_sensors", ())),
            storage_inflow_sensors=tuple(wb.get("storage_inflow_sensors", ())),
            night_start_h=int(wb.get("night_start_h", 1)),
            night_end_h=int(wb.get("night_end_h", 5)),
            utc_offset_h=float(wb.get("utc_offset_h", 8.0)),
            legitimate_night_use_l_s=float(wb.get("legitimate_night_use_l_s", 0.0)),
            night_day_factor_h=float(wb.get("night_day_factor_h", 20.0)),
        )
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{source}: [water_balance]: {exc}") from exc
    return Definitions(indicators, areas, balance)


def _definition(item: Mapping[str, Any], source: Path) -> Definition:
    label = f"{source}: indicator {item.get('id', '?')!r}"
    try:
        bands = tuple(float(b) for b in item["bands"])
        definition = Definition(
            id=str(item["id"]),
            name_zh=str(item["name_zh"]),
            name_en=str(item["name_en"]),
            unit=str(item["unit"]),
            direction=str(item["direction"]),
            target=float(item["target"]),
            bands=bands,  # type: ignore[arg-type]  # length checked below
            weight=float(item["weight"]),
            method=str(item["method"]),
            params=dict(item.get("params", {})),
            source=str(item["source"]),
            scope=str(item.get("scope", "district")),
        )
    except KeyError as exc:
        raise DefinitionError(f"{label}: missing field {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{label}: {exc}") from exc
    if len(bands) != 4:
        raise DefinitionError(f"{label}: bands needs four edges, got {len(bands)}")
    ordered = sorted(bands) if definition.direction == "lower" else sorted(bands, reverse=True)
    if definition.direction not in ("lower", "higher") or list(bands) != ordered:
        raise DefinitionError(f"{label}: direction must be lower or higher, with bands ordered from good to bad")
    if definition.method not in METHODS:
        raise DefinitionError(f"{label}: unknown method {definition.method!r} (known: {sorted(METHODS)})")
    if definition.scope not in ("district", "city"):
        raise DefinitionError(f"{label}: scope must be district or city")
    return definition


# --- computing ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ask:
    """One computation's inputs, passed to every method."""

    conn: psycopg.Connection[Any]
    definition: Definition
    definitions: Definitions
    start: datetime
    end: datetime
    district: str
    shared: dict[Any, list[dict[str, Any]]] | None = None
    """City-wide rows kept for the district scopes of the same computation (:func:`compute_all`), or None."""

    @property
    def params(self) -> Mapping[str, Any]:
        return self.definition.params

    def rows(self, *query: LiteralString, **args: Any) -> list[dict[str, Any]]:
        return self._rows(self.district, *query, **args)

    def district_rows(self, *query: LiteralString, **args: Any) -> list[dict[str, Any]]:
        """Rows of a query that filters on ``%(district)s`` and returns a ``district`` column.

        Within :func:`compute_all` the city-wide rows are fetched once and each district keeps its own (in the
        same order); the heavy per-sensor queries over a year of hourly rollups were otherwise read again for every
        district, twice the work of the city alone.
        """
        if self.shared is None:
            return self.rows(*query, **args)
        key = (query, self.start, self.end, tuple(sorted((k, repr(v)) for k, v in args.items())))
        rows = self.shared.get(key)
        if rows is None:
            rows = self.shared[key] = self._rows(CITY, *query, **args)
        return rows if self.district == CITY else [r for r in rows if r["district"] == self.district]

    def _rows(self, district: str, *query: LiteralString, **args: Any) -> list[dict[str, Any]]:
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(_query(*query), {"start": self.start, "end": self.end, "district": district, **args})
        return cur.fetchall()

    def value(self, value: float | None, evidence: Evidence = Evidence(), **detail: Any) -> IndicatorValue:
        return IndicatorValue(self.definition.id, self.district, self.start, self.end, value, evidence, detail)


def compute_indicator(
    conn: psycopg.Connection[Any],
    definition: Definition,
    *,
    definitions: Definitions,
    start: datetime,
    end: datetime,
    district: str = CITY,
    shared: dict[Any, list[dict[str, Any]]] | None = None,
) -> IndicatorValue:
    """Compute *definition* over ``start`` … ``end`` (aware, end excluded) for *district* (``""``: the city).

    A city-scope indicator asked for a district returns a value of None with ``detail["reason"]``. *shared*: a
    dict kept across the scopes of one computation, so the per-sensor methods read the city once (see
    :func:`compute_all`).
    """
    if start.utcoffset() is None or end.utcoffset() is None or end <= start:
        raise ValueError("start and end must be aware, with end after start")
    ask = _Ask(conn, definition, definitions, start, end, district, shared)
    if definition.scope == "city" and district != CITY:
        return ask.value(None, reason="measured city-wide only (no district metering)")
    return METHODS[definition.method](ask)


def compute_all(
    conn: psycopg.Connection[Any],
    definitions: Definitions,
    *,
    start: datetime,
    end: datetime,
    districts: Sequence[str] | None = None,
) -> list[IndicatorValue]:
    """Compute every indicator for every district (default: the districts of the sensors table) and the city."""
    if districts is None:
        cur = conn.cursor(row_factory=dict_row)
        cur.execute("SELECT DISTINCT district FROM sensors WHERE district <> '' ORDER BY district")
        districts = [str(r["district"]) for r in cur.fetchall()]
    out: list[IndicatorValue] = []
    shared: dict[Any, list[dict[str, Any]]] = {}
    for district in [CITY, *districts]:
        for definition in definitions.indicators:
            out.append(
                compute_indicator(
                    conn, definition, definitions=definitions, start=start, end=end, district=district, shared=shared
                )
            )
    return out


_IN_DISTRICT_A = "(%(district)s = '' OR a.district = %(district)s)"
_IN_DISTRICT_S = "(%(district)s = '' OR s.district = %(district)s)"


def _query(*parts: LiteralString) -> sql.Composed:
    """Join constant query fragments (the district filter is shared by most queries)."""
    return sql.SQL("").join(sql.SQL(p) for p in parts)


def _alert_sensors(ask: _Ask) -> IndicatorValue:
    """Distinct places (sensors, else causes) with an alert of the given kinds and grade raised in the period."""
    rows = ask.rows(
        """SELECT a.id, coalesce(a.sensor_id, a.cause_key) AS place, a.raised_at,
                  coalesce(a.cleared_at, %(end)s) AS until
           FROM alerts a LEFT JOIN sensors s USING (sensor_id)
           WHERE a.network = %(network)s AND a.kind = ANY(%(kinds)s) AND a.grade <= %(max_grade)s
             AND (a.sensor_id IS NULL OR s.quantity = %(quantity)s)
             AND a.raised_at >= %(start)s AND a.raised_at < %(end)s AND """,
        _IN_DISTRICT_A,
        " ORDER BY a.raised_at, a.id",
        network=ask.params["network"],
        kinds=list(ask.params["kinds"]),
        max_grade=int(ask.params.get("max_grade", 4)),
        quantity=ask.params.get("quantity", "level"),
    )
    places = sorted({str(r["place"]) for r in rows})
    evidence = Evidence(
        sensors=tuple(places),
        alerts=tuple(int(r["id"]) for r in rows),
        periods=tuple((r["raised_at"], min(r["until"], ask.end)) for r in rows),
    )
    if not ask.params.get("per_km2"):
        return ask.value(float(len(places)), evidence, points=len(places))
    areas = ask.definitions.district_area_km2
    area = sum(areas.values()) if ask.district == CITY else areas.get(ask.district)
    if not area:
        return ask.value(None, evidence, reason=f"no area for district {ask.district!r} in the table")
    return ask.value(len(places) / area, evidence, points=len(places), area_km2=area)


def _alert_count(ask: _Ask) -> IndicatorValue:
    """Alarms raised in the period on the network's sensors of the given quantities.

    An alert raised on a sensor within ``merge_gap_s`` (default 600 s) of that sensor's previous alert clearing
    continues that alarm (a reading flapping at the limit as it falls is one alarm, not two).
    """
    rows = ask.rows(
        """SELECT a.id, a.sensor_id, a.raised_at, coalesce(a.cleared_at, %(end)s) AS until
           FROM alerts a JOIN sensors s USING (sensor_id)
           WHERE a.network = %(network)s AND s.quantity = ANY(%(quantities)s)
             AND a.raised_at >= %(start)s AND a.raised_at < %(end)s AND """,
        _IN_DISTRICT_A,
        " ORDER BY a.raised_at, a.id",
        network=ask.params["network"],
        quantities=list(ask.params["quantities"]),
    )
    gap = timedelta(seconds=float(ask.params.get("merge_gap_s", 600.0)))
    last_until: dict[str, datetime] = {}
    alarms = 0
    for r in rows:
        sensor = str(r["sensor_id"])
        before = last_until.get(sensor)
        if before is None or r["raised_at"] - before > gap:
            alarms += 1
        last_until[sensor] = max(r["until"], before) if before is not None else r["until"]
    evidence = Evidence(
        sensors=tuple(sorted({str(r["sensor_id"]) for r in rows})),
        alerts=tuple(int(r["id"]) for r in rows),
        periods=tuple((r["raised_at"], min(r["until"], ask.end)) for r in rows),
    )
    return ask.value(float(alarms), evidence, alarms=alarms, alerts=len(rows))


_LIMITS = """
    WITH lim AS (
        SELECT s.sensor_id, s.district, s.interval_s, l->>'direction' AS direction,
               (l->>'threshold')::float8 AS threshold
        FROM sensors s, jsonb_array_elements(s.limits) l
        WHERE s.network = %(network)s AND s.quantity = %(quantity)s AND l->>'grade' = %(grade)s
          AND (%(district)s = '' OR s.district = %(district)s))
"""


def _limit_hours(ask: _Ask) -> IndicatorValue:
    """Hours beyond each sensor's limit of the given grade.

    A reading beyond the limit counts until the sensor's next reading (or the period's end), at most
    ``max_gap_s`` (default 300 s), so that a sensor falling silent while over the limit is not counted for ever.
    """
    rows = ask.rows(
        _LIMITS,
        """, r AS (
                SELECT lim.sensor_id, lim.direction, lim.threshold, r.ts, r.value,
                       least(extract(epoch FROM coalesce(lead(r.ts) OVER w, %(end)s) - r.ts), %(max_gap_s)s) AS held_s
                FROM lim JOIN readings r ON r.sensor_id = lim.sensor_id AND r.ts >= %(start)s AND r.ts < %(end)s
                WINDOW w AS (PARTITION BY r.sensor_id ORDER BY r.ts))
             SELECT sensor_id, sum(held_s) AS held_s, min(ts) AS first, max(ts) AS last FROM r
             WHERE (direction = 'high' AND value > threshold) OR (direction = 'low' AND value < threshold)
             GROUP BY sensor_id ORDER BY sensor_id""",
        network=ask.params["network"],
        quantity=ask.params["quantity"],
        grade=ask.params.get("grade", "IV"),
        max_gap_s=float(ask.params.get("max_gap_s", 300.0)),
    )
    hours = {str(r["sensor_id"]): float(r["held_s"]) / HOUR_S for r in rows}
    evidence = Evidence(
        sensors=tuple(hours),
        periods=tuple((r["first"], r["last"]) for r in rows),
    )
    return ask.value(sum(hours.values()), evidence, hours_by_sensor={k: round(v, 3) for k, v in hours.items()})


def _surcharge_share(ask: _Ask) -> IndicatorValue:
    """Per cent of monitored points (with a limit and readings) whose hourly peak passed the limit of the grade."""
    rows = ask.district_rows(
        _LIMITS,
        """SELECT lim.sensor_id, lim.district, lim.direction, lim.threshold, max(h.max_value) AS peak,
                    min(h.min_value) AS low, min(h.bucket) FILTER (WHERE h.max_value > lim.threshold) AS first
             FROM lim JOIN readings_1h h ON h.sensor_id = lim.sensor_id
                  AND h.bucket >= %(start)s AND h.bucket < %(end)s
             GROUP BY lim.sensor_id, lim.district, lim.direction, lim.threshold ORDER BY lim.sensor_id""",
        network=ask.params["network"],
        quantity=ask.params["quantity"],
        grade=ask.params.get("grade", "IV"),
    )
    if not rows:
        return ask.value(None, reason="no monitored points with readings in the period")
    over = [r for r in rows if r["peak"] > r["threshold"]]
    evidence = Evidence(
        sensors=tuple(str(r["sensor_id"]) for r in over),
        periods=tuple((r["first"], r["first"] + timedelta(hours=1)) for r in over),
    )
    return ask.value(100.0 * len(over) / len(rows), evidence, surcharged=len(over), monitored=len(rows))


def _completeness(ask: _Ask) -> IndicatorValue:
    """Per cent of the readings expected from each sensor's interval that are stored (from the hourly rollup)."""
    rows = ask.district_rows(
        """SELECT s.sensor_id, s.district, s.network, s.interval_s, coalesce(sum(h.n), 0) AS got
           FROM sensors s LEFT JOIN readings_1h h ON h.sensor_id = s.sensor_id
                AND h.bucket >= %(start)s AND h.bucket < %(end)s
           WHERE """,
        _IN_DISTRICT_S,
        " GROUP BY s.sensor_id, s.district, s.network, s.interval_s ORDER BY s.sensor_id",
    )
    if not rows:
        return ask.value(None, reason="no sensors")
    span_s = (ask.end - ask.start).total_seconds()
    by_network: dict[str, list[float]] = {}
    poor: list[str] = []
    for r in rows:
        expected = span_s / float(r["interval_s"])
        got = min(float(r["got"]), expected)
        tally = by_network.setdefault(str(r["network"]), [0.0, 0.0])
        tally[0] += got
        tally[1] += expected
        if got < 0.9 * expected:
            poor.append(str(r["sensor_id"]))
    got_all = sum(t[0] for t in by_network.values())
    expected_all = sum(t[1] for t in by_network.values())
    per_network = {net: round(100.0 * t[0] / t[1], 2) for net, t in sorted(by_network.items())}
    evidence = Evidence(sensors=tuple(poor), periods=((ask.start, ask.end),))
    return ask.value(100.0 * got_all / expected_all, evidence, per_network=per_network, sensors=len(rows))


def _sensors_online(ask: _Ask) -> IndicatorValue:
    """Per cent of sensors with a reading in the last ``window_h`` hours of the period."""
    since = max(ask.start, ask.end - timedelta(hours=float(ask.params.get("window_h", 24))))
    rows = ask.rows(
        """SELECT s.sensor_id, s.network, EXISTS (
               SELECT 1 FROM readings_1h h WHERE h.sensor_id = s.sensor_id
                 AND h.bucket >= %(since)s AND h.bucket < %(end)s) AS online
           FROM sensors s WHERE """,
        _IN_DISTRICT_S,
        " ORDER BY s.sensor_id",
        since=since,
    )
    if not rows:
        return ask.value(None, reason="no sensors")
    offline = [str(r["sensor_id"]) for r in rows if not r["online"]]
    per_network: dict[str, float] = {}
    for net in sorted({str(r["network"]) for r in rows}):
        mine = [r for r in rows if r["network"] == net]
        per_network[net] = round(100.0 * sum(1 for r in mine if r["online"]) / len(mine), 2)
    evidence = Evidence(sensors=tuple(offline), periods=((since, ask.end),))
    share = 100.0 * (len(rows) - len(offline)) / len(rows)
    return ask.value(share, evidence, per_network=per_network, offline=len(offline), sensors=len(rows))


def _response_time(ask: _Ask) -> IndicatorValue:
    """Median time from raising to the stage (acknowledge, dispatch, resolve) of alerts raised in the period.

    An alert that never reached the stage counts with the time up to the period's end (it took at least that).
    ``max_grade`` (default 4) keeps the alerts that reached that grade or worse at any time (their events hold
    the grades they passed through): only grades I–III need a work order, so the dispatch time is measured on
    those.
    """
    stage = str(ask.params.get("stage", "acknowledge"))
    reached: LiteralString = (
        "a.acknowledged_at"
        if stage == "acknowledge"
        else "(SELECT min(e.ts) FROM alert_events e WHERE e.alert_id = a.id AND e.event = %(stage)s)"
    )
    rows = ask.rows(
        "SELECT a.id, a.sensor_id, a.raised_at, ",
        reached,
        """ AS reached
            FROM alerts a WHERE a.raised_at >= %(start)s AND a.raised_at < %(end)s
              AND least(a.grade, (SELECT min(g.grade) FROM alert_events g WHERE g.alert_id = a.id)) <= %(max_grade)s
              AND """,
        _IN_DISTRICT_A,
        " ORDER BY a.raised_at, a.id",
        stage=stage,
        max_grade=int(ask.params.get("max_grade", 4)),
    )
    if not rows:
        return ask.value(None, reason="no alerts raised in the period")
    unit_s = float(ask.params.get("unit_s", 60))
    waits = []
    pending = []
    for r in rows:
        until = r["reached"] if r["reached"] is not None and r["reached"] < ask.end else ask.end
        if r["reached"] is None or r["reached"] >= ask.end:
            pending.append(int(r["id"]))
        waits.append(max((until - r["raised_at"]).total_seconds(), 0.0) / unit_s)
    slow = sorted(
        (r for r, w in zip(rows, waits, strict=True) if w > ask.definition.target), key=lambda r: r["raised_at"]
    )
    evidence = Evidence(
        sensors=tuple(sorted({str(r["sensor_id"]) for r in slow if r["sensor_id"]})),
        alerts=tuple(int(r["id"]) for r in slow),
        periods=tuple((r["raised_at"], r["reached"] or ask.end) for r in slow),
    )
    return ask.value(
        statistics.median(waits),
        evidence,
        alerts=len(rows),
        not_reached=pending,
        p90=round(statistics.quantiles(waits, n=10)[-1], 3) if len(waits) > 1 else round(waits[0], 3),
    )


def _level_events(ask: _Ask) -> IndicatorValue:
    """Overflow events: runs of readings beyond each sensor's limit of the grade (default I, the overflow level).

    Readings beyond the limit less than ``min_gap_s`` apart (default 3600 s) belong to one event, so a level
    bobbing at the limit is one overflow, not dozens.
    """
    rows = ask.district_rows(
        _LIMITS,
        """SELECT lim.sensor_id, lim.district, r.ts FROM lim JOIN readings r ON r.sensor_id = lim.sensor_id
                  AND r.ts >= %(start)s AND r.ts < %(end)s
             WHERE (lim.direction = 'high' AND r.value > lim.threshold)
                OR (lim.direction = 'low' AND r.value < lim.threshold)
             ORDER BY lim.sensor_id, r.ts""",
        network=ask.params["network"],
        quantity=ask.params["quantity"],
        grade=ask.params.get("grade", "I"),
    )
    gap = timedelta(seconds=float(ask.params.get("min_gap_s", HOUR_S)))
    events: list[tuple[str, datetime, datetime]] = []
    for r in rows:
        sensor, ts = str(r["sensor_id"]), r["ts"]
        if events and events[-1][0] == sensor and ts - events[-1][2] < gap:
            events[-1] = (sensor, events[-1][1], ts)
        else:
            events.append((sensor, ts, ts))
    evidence = Evidence(
        sensors=tuple(sorted({e[0] for e in events})),
        periods=tuple(sorted((a, b) for _s, a, b in events)),
    )
    by_sensor: dict[str, int] = {}
    for sensor, _a, _b in events:
        by_sensor[sensor] = by_sensor.get(sensor, 0) + 1
    return ask.value(float(len(events)), evidence, events_by_sensor=by_sensor)


def _rain_episodes(ask: _Ask) -> list[tuple[datetime, datetime]]:
    """Rain episodes seen by the district's rain gauges (all gauges if it has none): (first, last wet reading).

    A reading is wet above ``rain_mm_h`` (default 0.5 mm/h); a dry spell of ``dry_gap_s`` (default 2 h) ends an
    episode.
    """
    rows = ask.rows(
        """WITH g AS (
               SELECT s.sensor_id FROM sensors s WHERE s.network = 'rain' AND s.quantity = 'rain_rate'
                 AND (%(district)s = '' OR s.district = %(district)s OR NOT EXISTS (
                     SELECT 1 FROM sensors x WHERE x.network = 'rain' AND x.district = %(district)s)))
           SELECT DISTINCT r.ts FROM g JOIN readings r ON r.sensor_id = g.sensor_id
             AND r.ts >= %(start)s AND r.ts < %(end)s AND r.value > %(wet)s
           ORDER BY r.ts""",
        wet=float(ask.params.get("rain_mm_h", 0.5)),
    )
    gap = timedelta(seconds=float(ask.params.get("dry_gap_s", 2 * HOUR_S)))
    episodes: list[tuple[datetime, datetime]] = []
    for r in rows:
        if episodes and r["ts"] - episodes[-1][1] < gap:
            episodes[-1] = (episodes[-1][0], r["ts"])
        else:
            episodes.append((r["ts"], r["ts"]))
    return episodes


def _drain_time(ask: _Ask) -> IndicatorValue:
    """Median hours from the end of each rain to each ponded level point falling back below its limit.

    For every rain episode, every level point that ponded — beyond its limit of the grade (default IV) for at least
    ``min_beyond_s`` (default 300 s) of readings between the episode's start and the next episode's start, so a
    level brushing the limit in sensor noise does not count — counts once: from the rain's last wet reading to the
    first reading back within the limit after its last reading beyond it (0 when it was back before the rain
    ended). A point still beyond the limit when the next rain (or the period) begins counts up to then.
    """
    episodes = _rain_episodes(ask)
    if not episodes:
        return ask.value(None, reason="no rain in the period")
    waits: list[float] = []
    sensors: set[str] = set()
    periods: list[tuple[datetime, datetime]] = []
    pending = 0
    for k, (first, rain_end) in enumerate(episodes):
        until = episodes[k + 1][0] if k + 1 < len(episodes) else ask.end
        rows = ask.rows(
            _LIMITS,
            """, w AS (
                    SELECT lim.sensor_id, lim.interval_s, r.ts,
                           (lim.direction = 'high' AND r.value > lim.threshold)
                           OR (lim.direction = 'low' AND r.value < lim.threshold) AS beyond
                    FROM lim JOIN readings r ON r.sensor_id = lim.sensor_id AND r.ts >= %(first)s
                         AND r.ts < %(until)s),
                 p AS (SELECT sensor_id, max(ts) FILTER (WHERE beyond) AS last_beyond FROM w GROUP BY sensor_id
                       HAVING sum(interval_s) FILTER (WHERE beyond) >= %(min_beyond_s)s)
                 SELECT p.sensor_id, p.last_beyond,
                        min(w.ts) FILTER (WHERE NOT w.beyond AND w.ts > p.last_beyond) AS back
                 FROM p JOIN w USING (sensor_id) GROUP BY p.sensor_id, p.last_beyond ORDER BY p.sensor_id""",
            network=ask.params.get("network", "drainage"),
            quantity=ask.params.get("quantity", "level"),
            grade=ask.params.get("grade", "IV"),
            first=first,
            until=until,
            min_beyond_s=float(ask.params.get("min_beyond_s", 300.0)),
        )
        for r in rows:
            back = r["back"]
            if back is None:
                back = until
                pending += 1
            wait_s = (back - rain_end).total_seconds() if r["last_beyond"] >= rain_end else 0.0
            waits.append(max(wait_s, 0.0) / HOUR_S)
            sensors.add(str(r["sensor_id"]))
            periods.append((rain_end, max(back, rain_end)))
    evidence = Evidence(sensors=tuple(sorted(sensors)), periods=tuple(periods))
    if not waits:
        return ask.value(0.0, evidence, rain_episodes=len(episodes), ponded=0)
    return ask.value(
        statistics.median(waits),
        evidence,
        rain_episodes=len(episodes),
        ponded=len(waits),
        max_h=round(max(waits), 3),
        not_drained=pending,
    )


_PIPE_KINDS = ("conduit", "pipe")


def _coverage(ask: _Ask) -> IndicatorValue:
    """Sensors per km of pipe: the networks' monitoring sensors over the pipe length of the twin's current layers.

    Pipes are the links of kind conduit or pipe (pumps, orifices, regulators are not pipe length). City-wide:
    the twin's links carry no district.
    """
    networks = list(ask.params.get("networks", ["drainage", "water", "gas"]))
    rows = ask.rows(
        """WITH cur AS (SELECT DISTINCT ON (layer) model_id, layer FROM twin_models
                        WHERE layer = ANY(%(networks)s) ORDER BY layer, version DESC)
           SELECT cur.layer AS network, sum(l.length_m) / 1000.0 AS km,
                  (SELECT count(*) FROM sensors s WHERE s.network = cur.layer) AS sensors
           FROM cur JOIN twin_links l ON l.model_id = cur.model_id AND l.kind = ANY(%(kinds)s)
           GROUP BY cur.layer ORDER BY cur.layer""",
        networks=networks,
        kinds=list(_PIPE_KINDS),
    )
    if not rows:
        return ask.value(None, reason="no pipe network in the twin (import one with lifeline twin import)")
    km = sum(float(r["km"]) for r in rows)
    count = sum(int(r["sensors"]) for r in rows)
    per_network = {str(r["network"]): round(int(r["sensors"]) / float(r["km"]), 3) for r in rows if r["km"]}
    km_by_network = {str(r["network"]): round(float(r["km"]), 3) for r in rows}
    return ask.value(count / km, Evidence(), per_network=per_network, pipe_km=km_by_network, sensors=count)


def _hourly_input(ask: _Ask) -> tuple[dict[datetime, float], list[str]]:
    """System input per hour, L/s (hours where every inflow and storage sensor reported), and missing sensors."""
    wb = ask.definitions.water_balance
    ids = [*wb.inflow_sensors, *wb.storage_inflow_sensors]
    rows = ask.rows(
        """SELECT sensor_id, bucket, sum_value / n AS mean FROM readings_1h
           WHERE sensor_id = ANY(%(ids)s) AND bucket >= %(start)s AND bucket < %(end)s AND n > 0""",
        ids=ids,
    )
    by_hour: dict[datetime, dict[str, float]] = {}
    for r in rows:
        by_hour.setdefault(r["bucket"], {})[str(r["sensor_id"])] = float(r["mean"])
    seen = {str(r["sensor_id"]) for r in rows}
    series = {
        hour: sum(v[s] for s in wb.inflow_sensors) - sum(v[s] for s in wb.storage_inflow_sensors)
        for hour, v in sorted(by_hour.items())
        if all(s in v for s in ids)
    }
    return series, [s for s in ids if s not in seen]


def _water_balance(ask: _Ask) -> IndicatorValue:
    """Leakage rate, %: (system input − billed consumption) / system input, city-wide.

    The balance covers the billing periods (``hc_billed_water``) within the period: for each, the system input is
    the mean of its hours with readings times its length (missing hours are filled with that mean).
    """
    wb = ask.definitions.water_balance
    series, missing = _hourly_input(ask)
    evidence = Evidence(sensors=(*wb.inflow_sensors, *wb.storage_inflow_sensors), periods=((ask.start, ask.end),))
    if not series:
        return ask.value(None, evidence, reason="no system input readings", missing_sensors=missing)
    bills = ask.rows(
        """SELECT period_start, period_end, billed_m3 FROM hc_billed_water
           WHERE district = %(district)s AND period_start < %(end)s AND period_end > %(start)s
           ORDER BY period_start"""
    )
    input_m3 = billed_m3 = 0.0
    used: list[tuple[datetime, datetime]] = []
    hours_with_data = 0
    for bill in bills:
        lo, hi = max(bill["period_start"], ask.start), min(bill["period_end"], ask.end)
        flows = [q for hour, q in series.items() if lo <= hour < hi]
        if not flows:
            continue
        span_s = (hi - lo).total_seconds()
        input_m3 += statistics.fmean(flows) * span_s / 1000.0
        billed_m3 += float(bill["billed_m3"]) * (hi - lo) / (bill["period_end"] - bill["period_start"])
        used.append((lo, hi))
        hours_with_data += len(flows)
    if not used:
        return ask.value(None, evidence, reason="no billed consumption with metered input (hc_billed_water)")
    evidence = Evidence(sensors=evidence.sensors, periods=tuple(used))
    return ask.value(
        100.0 * (input_m3 - billed_m3) / input_m3,
        evidence,
        system_input_m3=round(input_m3, 1),
        billed_m3=round(billed_m3, 1),
        loss_m3=round(input_m3 - billed_m3, 1),
        hours_with_data=hours_with_data,
        hours_balanced=round(sum((hi - lo).total_seconds() for lo, hi in used) / HOUR_S, 2),
    )


def _minimum_night_flow(ask: _Ask) -> IndicatorValue:
    """Leakage rate, % of system input, from the minimum night flow (a cross-check of the water balance)."""
    wb = ask.definitions.water_balance
    series, missing = _hourly_input(ask)
    evidence = Evidence(sensors=(*wb.inflow_sensors, *wb.storage_inflow_sensors))
    if not series:
        return ask.value(None, evidence, reason="no system input readings", missing_sensors=missing)
    offset = timedelta(hours=wb.utc_offset_h)
    nights: dict[Any, tuple[float, datetime]] = {}
    for hour, flow in series.items():
        local = hour + offset
        if wb.night_start_h <= local.hour < wb.night_end_h:
            best = nights.get(local.date())
            if best is None or flow < best[0]:
                nights[local.date()] = (flow, hour)
    if not nights:
        return ask.value(None, evidence, reason="no night hours with readings")
    mnf = statistics.fmean(f for f, _h in nights.values())
    leak_l_s = max(mnf - wb.legitimate_night_use_l_s, 0.0)
    mean_input = statistics.fmean(series.values())
    rate = 100.0 * leak_l_s * wb.night_day_factor_h / (mean_input * 24.0)
    evidence = Evidence(
        sensors=evidence.sensors, periods=tuple((h, h + timedelta(hours=1)) for _f, h in nights.values())
    )
    return ask.value(
        rate,
        evidence,
        minimum_night_flow_l_s=round(mnf, 3),
        night_leak_l_s=round(leak_l_s, 3),
        mean_input_l_s=round(mean_input, 3),
        nights=len(nights),
    )


METHODS: dict[str, Callable[[_Ask], IndicatorValue]] = {
    "alert_sensors": _alert_sensors,
    "alert_count": _alert_count,
    "limit_hours": _limit_hours,
    "surcharge_share": _surcharge_share,
    "completeness": _completeness,
    "sensors_online": _sensors_online,
    "response_time": _response_time,
    "level_events": _level_events,
    "drain_time": _drain_time,
    "coverage": _coverage,
    "water_balance": _water_balance,
    "minimum_night_flow": _minimum_night_flow,
}
"""Indicator methods by the name the table's ``method`` field gives."""
