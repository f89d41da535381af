"""Indicators computed from the store on simulated periods whose true values are known."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from models.healthcheck.indicators import (
    DefinitionError,
    compute_all,
    compute_indicator,
    load_definitions,
)
from simulators.water_scenarios import LeakEvent, WaterScenario
from twin.democity.layout import build_layout
from twin.democity.sensors import place_sensors
from twin.democity.water import build_water
from twin.model import City
from twin.sensors import Network
from twin.store.db import DictConnection
from twin.store.readings import ReadingStore
from twin.store.schema import current_mode
from twin.store.sensors import upsert_sensors

pytestmark = pytest.mark.integration

DEFS = load_definitions()
START = datetime(2026, 3, 1, 16, tzinfo=UTC)  # local midnight, UTC+8
DAY = timedelta(days=1)


@pytest.fixture
def hc(db: DictConnection, schema: str) -> Iterator[DictConnection]:
    # the health check tables come with the migrations (migration 7)
    yield db


def _store(db: DictConnection, schema: str) -> ReadingStore:
    mode = current_mode(db, schema=schema)
    assert mode is not None
    return ReadingStore(db, mode=mode)


def _water_day(db: DictConnection, schema: str, leak_l_s: float, start: datetime) -> dict[str, float]:
    """Simulate a day of the demo city's water network with a leak, store its readings; return the truth."""
    layout = build_layout()
    network, _inp = build_water(layout)
    city = City(name="demo", crs="EPSG:4547", terrain=layout.terrain, networks={Network.WATER: network})
    sensors = place_sensors(city)
    upsert_sensors(db, sensors.values())
    events = [LeakEvent(junction_id="J0505", flow_l_s=leak_l_s, start=start - timedelta(hours=1))] if leak_l_s else []
    scenario = WaterScenario(network, sensors, start=start, events=events, seed=7)
    keep = {"WF-PU1", "WF-PU2", "WF-PTANK", "WL-TANK"}
    rows = [(r.sensor_id, r.ts, r.value, 0) for step in scenario.steps() for r in step.readings if r.sensor_id in keep]
    with db.transaction():
        _store(db, schema).write(rows)
    summary = scenario.ground_truth().summary
    peak = scenario.ground_truth().events[0]["peak_flow_l_s"] if events else 0.0
    return {"leak_m3": summary["leak_volume_m3"], "demand_m3": summary["demand_m3"], "peak_leak_l_s": peak}


def test_leakage_rate_from_the_water_balance_matches_the_simulated_leak(hc: DictConnection, schema: str) -> None:
    truth = _water_day(hc, schema, leak_l_s=25.0, start=START)
    # The customers' meters bill exactly what they drew: the simulator's demand volume.
    hc.execute(
        "INSERT INTO hc_billed_water (period_start, period_end, billed_m3) VALUES (%s, %s, %s)",
        (START, START + DAY, truth["demand_m3"]),
    )
    true_rate = 100.0 * truth["leak_m3"] / (truth["leak_m3"] + truth["demand_m3"])
    got = compute_indicator(hc, DEFS["water_leakage_rate"], definitions=DEFS, start=START, end=START + DAY)
    assert got.value is not None
    # Tolerance: 0.3 percentage points (1 % sensor noise on the flows, hourly means, tank filling in the day).
    assert got.value == pytest.approx(true_rate, abs=0.3)
    assert true_rate > 9.0  # the scenario misses the national target, so the test sees a red value
    assert got.detail["hours_with_data"] == 24
    assert set(got.evidence.sensors) == {"WF-PU1", "WF-PU2", "WF-PTANK"}
    district = compute_indicator(
        hc, DEFS["water_leakage_rate"], definitions=DEFS, start=START, end=START + DAY, district="吉州区"
    )
    assert district.value is None and "city-wide" in district.detail["reason"]


def test_minimum_night_flow_estimates_the_leak_within_a_quarter(hc: DictConnection, schema: str) -> None:
    quiet = _water_day(hc, schema, leak_l_s=0.0, start=START)
    assert quiet["leak_m3"] == 0.0
    night = compute_indicator(hc, DEFS["water_leakage_mnf"], definitions=DEFS, start=START, end=START + DAY)
    legit = night.detail["minimum_night_flow_l_s"]  # a leak-free night: every litre is customers' use
    leaky_start = START + 7 * DAY
    truth = _water_day(hc, schema, leak_l_s=25.0, start=leaky_start)
    defs = replace(DEFS, water_balance=replace(DEFS.water_balance, legitimate_night_use_l_s=legit))
    got = compute_indicator(hc, defs["water_leakage_mnf"], definitions=defs, start=leaky_start, end=leaky_start + DAY)
    assert got.detail["night_leak_l_s"] == pytest.approx(truth["peak_leak_l_s"], rel=0.15)
    true_rate = 100.0 * truth["leak_m3"] / (truth["leak_m3"] + truth["demand_m3"])
    # An estimate with an assumed night-day factor: within a quarter of the true rate.
    assert got.value == pytest.approx(true_rate, rel=0.25)


def _alert(
    db: DictConnection,
    *,
    sensor_id: str,
    network: str,
    district: str,
    raised_at: datetime,
    kind: str = "threshold",
    grade: int = 4,
    acknowledged_after: timedelta | None = None,
    resolved_after: timedelta | None = None,
) -> int:
    row = db.execute(
        """INSERT INTO alerts (cause_key, kind, sensor_id, network, district, grade, active, state, raised_at,
                               updated_at, cleared_at, message, message_en, acknowledged_at)
           VALUES (%s, %s, %s, %s, %s, %s, false, 'closed', %s, %s, %s, '', '', %s) RETURNING id""",
        (
            f"{kind}:{sensor_id}:{raised_at.isoformat()}",
            kind,
            sensor_id,
            network,
            district,
            grade,
            raised_at,
            raised_at,
            raised_at + timedelta(hours=1),
            raised_at + acknowledged_after if acknowledged_after is not None else None,
        ),
    ).fetchone()
    assert row is not None
    if resolved_after is not None:
        db.execute(
            "INSERT INTO alert_events (alert_id, event, ts, grade) VALUES (%s, 'resolve', %s, %s)",
            (row["id"], raised_at + resolved_after, grade),
        )
    return int(row["id"])


def test_alert_indicators_count_points_alarms_and_response_times(hc: DictConnection) -> None:
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    end = t0 + timedelta(days=30)
    # Waterlogging: D-L-001 twice (one point), D-L-003 once, in 吉州区; D-L-005 in 青原区; one before the period.
    _alert(
        hc,
        sensor_id="D-L-001",
        network="drainage",
        district="吉州区",
        raised_at=t0 + timedelta(days=1),
        acknowledged_after=timedelta(minutes=10),
        resolved_after=timedelta(hours=2),
    )
    _alert(
        hc,
        sensor_id="D-L-001",
        network="drainage",
        district="吉州区",
        raised_at=t0 + timedelta(days=5),
        acknowledged_after=timedelta(minutes=20),
        resolved_after=timedelta(hours=3),
    )
    _alert(
        hc,
        sensor_id="D-L-003",
        network="drainage",
        district="吉州区",
        raised_at=t0 + timedelta(days=6),
        acknowledged_after=timedelta(minutes=40),
    )
    _alert(
        hc,
        sensor_id="D-L-005",
        network="drainage",
        district="青原区",
        raised_at=t0 + timedelta(days=7),
        acknowledged_after=timedelta(minutes=5),
        resolved_after=timedelta(hours=1),
    )
    _alert(hc, sensor_id="D-L-002", network="drainage", district="吉州区", raised_at=t0 - timedelta(days=1))
    _alert(
        hc,
        sensor_id="G-M-003",
        network="gas",
        district="青原区",
        raised_at=t0 + timedelta(days=9),
        acknowledged_after=timedelta(minutes=30),
        resolved_after=timedelta(hours=5),
    )

    def value(indicator: str, district: str = "") -> float | None:
        return compute_indicator(hc, DEFS[indicator], definitions=DEFS, start=t0, end=end, district=district).value

    assert value("waterlogging_points") == 3
    assert value("waterlogging_points", "吉州区") == 2
    assert value("waterlogging_points", "青原区") == 1
    assert value("waterlogging_density", "吉州区") == pytest.approx(2 / 1.18)
    assert value("waterlogging_density") == pytest.approx(3 / 2.36)
    assert value("gas_leak_alarms") == 1 and value("gas_leak_alarms", "吉州区") == 0
    # Acknowledge: 5, 10, 20, 30, 40 min → median 20. 吉州区: 10, 20, 40 → 20.
    assert value("alert_acknowledge_minutes") == pytest.approx(20.0)
    # Resolve: 1, 2, 3, 5 h and one never resolved (counts to the period's end, ~23 days) → median 3 h.
    assert value("alert_resolve_hours") == pytest.approx(3.0)
    slow = compute_indicator(hc, DEFS["alert_resolve_hours"], definitions=DEFS, start=t0, end=end)
    assert len(slow.detail["not_reached"]) == 1 and len(slow.evidence.alerts) == 2  # 5 h and never: over 4 h
    assert value("alert_acknowledge_minutes", "nowhere") is None


def test_reading_indicators_count_hours_surcharge_completeness_and_online(hc: DictConnection, schema: str) -> None:
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    end = t0 + DAY
    minutes = [t0 + timedelta(minutes=k) for k in range(24 * 60)]
    rows: list[tuple[str, datetime, float, int]] = []
    # G-M-001 (limit IV 20 %LEL): 90 minutes at 30 %LEL, else 2 → 1.5 h, though it reports less often than set.
    # G-P-001 (low limit 2.6): 30 min at 2.5.
    rows += [("G-M-001", ts, 30.0 if 600 <= k < 690 else 2.0, 0) for k, ts in enumerate(minutes)]
    rows += [("G-P-001", ts, 2.5 if 60 <= k < 90 else 3.0, 0) for k, ts in enumerate(minutes)]
    # D-L-001 (limit IV 0.8 m) passes it; D-L-002 stays low; both report every minute. D-L-003 only the first half.
    rows += [("D-L-001", ts, 1.0 if 300 <= k < 360 else 0.2, 0) for k, ts in enumerate(minutes)]
    rows += [("D-L-002", ts, 0.1, 0) for ts in minutes]
    rows += [("D-L-003", ts, 0.1, 0) for ts in minutes[: 12 * 60]]
    with hc.transaction():
        _store(hc, schema).write(rows)
    total = hc.execute("SELECT count(*) AS n, sum(86400 / interval_s) AS expected FROM sensors").fetchone()
    assert total is not None

    def get(indicator: str, district: str = "") -> object:
        return compute_indicator(hc, DEFS[indicator], definitions=DEFS, start=t0, end=end, district=district)

    methane = get("methane_exceedance_hours")
    assert methane.value == pytest.approx(1.5)  # type: ignore[attr-defined]
    assert methane.evidence.sensors == ("G-M-001",)  # type: ignore[attr-defined]
    assert get("gas_pressure_out_of_range_hours").value == pytest.approx(0.5)  # type: ignore[attr-defined]
    surcharge = get("drainage_surcharge_share")
    assert surcharge.value == pytest.approx(100.0 / 3)  # type: ignore[attr-defined]
    assert surcharge.evidence.sensors == ("D-L-001",)  # type: ignore[attr-defined]
    n = int(total["n"])
    # G-M-001 reports every minute but is set to every 30 s: half its readings are missing.
    expected = (4 * 1440 + 720) / float(total["expected"]) * 100.0
    completeness = get("data_completeness")
    assert completeness.value == pytest.approx(expected)  # type: ignore[attr-defined]
    assert get("sensors_online").value == pytest.approx(100.0 * 5 / n)  # type: ignore[attr-defined]
    last_6_h = replace(DEFS["sensors_online"], params={"window_h": 6})
    online = compute_indicator(hc, last_6_h, definitions=DEFS, start=t0, end=end)
    assert online.value == pytest.approx(100.0 * 4 / n)
    assert "D-L-003" in online.evidence.sensors
    assert online.detail["per_network"]["gas"] == pytest.approx(100.0 * 2 / 6, abs=0.01)
    everything = compute_all(hc, DEFS, start=t0, end=end)
    assert {v.district for v in everything} == {"", "吉州区", "青原区"}
    assert len(everything) == 3 * len(DEFS.indicators)


def test_a_bad_table_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = (Path(__file__).parents[3] / "models/healthcheck/definitions.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("bands = [9, 10, 12, 15]", "bands = [15, 12, 10, 9]", 1), encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"water_leakage_rate.*ordered"):
        load_definitions(bad)
    bad.write_text(text.replace('method = "water_balance"', 'method = "guess"'), encoding="utf-8")
    with pytest.raises(DefinitionError, match="unknown method 'guess'"):
        load_definitions(bad)


def test_a_city_edits_a_target_in_the_table_not_the_code(tmp_path: Path) -> None:
    text = (Path(__file__).parents[3] / "models/healthcheck/definitions.toml").read_text(encoding="utf-8")
    edited = tmp_path / "city.toml"
    edited.write_text(text.replace("target = 9\n", "target = 8\n", 1), encoding="utf-8")
    assert load_definitions(edited)["water_leakage_rate"].target == 8.0
    assert DEFS["water_leakage_rate"].target == 9.0
