"""``lifeline risk nowcast --every``: scheduled nowcasts from the readings in a real PostgreSQL, alerts stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from lifeline.risk_commands import risk
from lifeline.settings import Settings
from models.waterlogging.schedule import read_observations
from twin.democity.city import build_demo_city
from twin.errors import ConfigError
from twin.sensors import Network, Quantity
from twin.store.db import DictConnection
from twin.storms import DEFAULT_FORMULA, FORMULAS, chicago_storm

pytestmark = pytest.mark.integration


def _gauges_and_levels() -> tuple[list[str], dict[str, str]]:
    city = build_demo_city()
    gauges = [s.sensor_id for s in city.sensors.values() if s.network is Network.RAIN]
    levels = {
        s.sensor_id: (s.asset_id or "").removeprefix("drainage:")
        for s in city.sensors.values()
        if s.network is Network.DRAINAGE and s.quantity is Quantity.LEVEL
    }
    return gauges, levels


def test_observations_average_the_gauges_per_minute_and_take_the_latest_levels(db: DictConnection) -> None:
    gauges, levels = _gauges_and_levels()
    now = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    start = now - timedelta(minutes=5)
    level_sensor, node = next(iter(levels.items()))
    with db.cursor() as cur:
        for k in range(1, 6):  # readings at the end of each minute
            if k != 3:  # no gauge reports the third minute
                cur.execute(
                    "INSERT INTO readings (ts, sensor_id, value) VALUES (%s, %s, %s)",
                    (start + timedelta(minutes=k), gauges[0], 10.0 * k),
                )
        cur.execute(
            "INSERT INTO readings (ts, sensor_id, value) VALUES (%s, %s, %s)",
            (start + timedelta(minutes=5), gauges[1], 30.0),
        )
        cur.execute(
            "INSERT INTO readings (ts, sensor_id, value) VALUES (%s, %s, %s)",
            (now - timedelta(minutes=2), level_sensor, 0.4),
        )
        cur.execute(
            "INSERT INTO readings (ts, sensor_id, value) VALUES (%s, %s, %s)",
            (now - timedelta(minutes=1), level_sensor, 0.7),
        )
    seen = read_observations(db, build_demo_city().sensors, start=start, now=now)
    assert seen.rain_mm_h == (10.0, 20.0, 0.0, 40.0, 40.0)  # minute 5: (50 + 30) / 2
    assert seen.gauges == 2 and seen.missing_minutes == 1
    assert seen.depth_m == {node: 0.7}
    with pytest.raises(ConfigError, match="rain gauge"):
        read_observations(db, {}, start=start, now=now)


def test_scheduled_nowcast_stores_risk_maps_and_raises_alerts(pg_url: str, schema: str, db: DictConnection) -> None:
    gauges, _levels = _gauges_and_levels()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    storm = chicago_storm(FORMULAS[DEFAULT_FORMULA], return_period_years=100, duration_min=60, peak_ratio=0.5)
    with db.cursor() as cur:
        for k, value in enumerate(storm):  # a 100-year hour of rain that has just ended, at every gauge
            for gauge in gauges:
                cur.execute(
                    "INSERT INTO readings (ts, sensor_id, value) VALUES (%s, %s, %s)",
                    (now - timedelta(minutes=len(storm) - k - 1), gauge, value),
                )
    settings = Settings(database_url=pg_url, db_schema=schema)
    args = ["nowcast", "--demo", "--every", "10", "--cycles", "2", "--warm-up", "60", "--horizon", "1"]
    result = CliRunner().invoke(risk, args, obj=settings)
    assert result.exit_code == 0, result.output
    assert "cycle 1 at" in result.output and "cycle 2 at" in result.output and "failed" not in result.output
    assert f"({len(gauges)} gauges" in result.output
    maps = db.execute("SELECT count(*) AS n FROM risk_maps").fetchone()
    assert maps is not None and maps["n"] == 2
    alerts = db.execute("SELECT cause_key, grade FROM alerts WHERE kind = 'waterlogging' AND active").fetchall()
    assert alerts, result.output  # the gauges alone (no forecast) name where it floods
    assert all(1 <= a["grade"] <= 4 for a in alerts)
