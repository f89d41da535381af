"""``lifeline risk nowcast --every``: scheduled nowcasts from the readings in a real PostgreSQL, alerts stored."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifeline.risk_commands import risk
from lifeline.settings import Settings
from models.waterlogging.schedule import read_observations
from twin.democity.city import build_demo_city
from twin.errors import ConfigError
from twin.sensors import Network, Quantity
from twin.store.db import DictConnection
from twin.store.forecasts import save_forecast
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


def test_scheduled_nowcast_uses_the_newest_fresh_stored_forecast_else_the_gauges(
    pg_url: str, schema: str, db: DictConnection, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    settings = Settings(database_url=pg_url, db_schema=schema)
    args = ["nowcast", "--demo", "--every", "10", "--cycles", "1", "--warm-up", "60", "--horizon", "1"]
    # No gauge has rained. A stale forecast (issued 4 h ago, still covering now) of heavy rain is not used.
    save_forecast(
        db, source="气象局", issued_at=now - timedelta(hours=4), start=now - timedelta(hours=4), step_s=3600,
        rain_mm_h=[100.0] * 6, sent_by="test",
    )  # fmt: skip
    stale = CliRunner().invoke(risk, args, obj=settings)
    assert stale.exit_code == 0, stale.output
    assert "cycle 1 at" in stale.output and "failed" not in stale.output
    assert "no fresh forecast: gauges alone (none issued in the last 180 min covers now)" in stale.output
    assert "named 0, graded 0; alerts 0 (none)" in stale.output

    # A fresh forecast of a 100-year hour starting now: the cycle names it and warns from it.
    storm = chicago_storm(FORMULAS[DEFAULT_FORMULA], return_period_years=100, duration_min=60, peak_ratio=0.5)
    issued = now - timedelta(minutes=10)
    fresh = save_forecast(
        db, source="气象局", issued_at=issued, start=now, step_s=300,
        rain_mm_h=[sum(storm[k : k + 5]) / 5 for k in range(0, 60, 5)], sent_by="test",
    )  # fmt: skip
    used = CliRunner().invoke(risk, args, obj=settings)
    assert used.exit_code == 0, used.output
    line = re.search(r"cycle 1 at .*", used.output)
    assert line is not None, used.output
    assert re.search(
        rf"forecast #{fresh.id} 气象局 issued {issued:%Y-%m-%d %H:%M}Z, 1[01] min old, (59|60) min ahead; rain 0\.0 mm",
        line.group(0),
    ), line.group(0)
    assert "alerts 0 (none)" not in line.group(0)
    alerts = db.execute("SELECT count(*) AS n FROM alerts WHERE kind = 'waterlogging' AND active").fetchone()
    assert alerts is not None and alerts["n"] > 0, used.output

    # Too old for --forecast-max-age: the gauges alone again. This run starts from the alerts the last one left
    # active and, with nothing named now, clears them (a new run used to leave them active for ever).
    raised = {r["cause_key"] for r in db.execute("SELECT cause_key FROM alerts WHERE kind = 'waterlogging' AND active")}
    shorter = CliRunner().invoke(risk, [*args, "--forecast-max-age", "5"], obj=settings)
    assert shorter.exit_code == 0, shorter.output
    assert "no fresh forecast: gauges alone (none issued in the last 5 min covers now)" in shorter.output
    assert f"{len(raised)} waterlogging alert(s) active from before" in shorter.output
    assert all(f"cleared {cause}" in shorter.output for cause in raised), shorter.output
    left = db.execute("SELECT count(*) AS n FROM alerts WHERE kind = 'waterlogging' AND active").fetchone()
    assert left is not None and left["n"] == 0

    # --forecast-csv still wins over the stored forecast: no rain in it, so nothing is named.
    csv = tmp_path / "dry.csv"
    csv.write_text(
        "ts,rain_mm_h\n" + "".join(f"{(now + timedelta(minutes=k)).isoformat()},0\n" for k in range(90)),
        encoding="utf-8",
    )
    from_csv = CliRunner().invoke(risk, [*args, "--forecast-csv", str(csv)], obj=settings)
    assert from_csv.exit_code == 0, from_csv.output
    assert "cycle 1 at" in from_csv.output and ": forecast dry.csv; rain 0.0 mm" in from_csv.output
    assert "named 0, graded 0" in from_csv.output and "气象局" not in from_csv.output


def test_a_forecast_csv_at_any_regular_step_is_read_per_minute_and_a_bad_one_fails_only_its_cycle(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    from lifeline.risk_commands import _csv_forecast
    from twin.errors import ConfigError

    now = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)

    def write(name: str, rows: list[tuple[datetime, float]]) -> Path:
        path = tmp_path / name
        path.write_text("ts,rain_mm_h\n" + "".join(f"{ts.isoformat()},{v}\n" for ts, v in rows), encoding="utf-8")
        return path

    five = write("five.csv", [(now - timedelta(minutes=10) + timedelta(minutes=5 * k), 12.0 * k) for k in range(4)])
    assert _csv_forecast(five, now) == [24.0] * 5 + [36.0] * 5  # from now: the 3rd and 4th 5-minute values
    later = write("later.csv", [(now + timedelta(minutes=3 + k), 6.0) for k in range(2)])
    assert _csv_forecast(later, now) == [0.0, 0.0, 0.0, 6.0, 6.0]  # no rain before it starts
    ragged = write("ragged.csv", [(now, 1.0), (now + timedelta(minutes=1), 1.0), (now + timedelta(minutes=5), 1.0)])
    with pytest.raises(ConfigError, match="one regular step"):
        _csv_forecast(ragged, now)

    # In the loop, a bad file fails its cycle, said so, and the next cycle is tried (the loop used to stop).
    settings = Settings(database_url=pg_url, db_schema=schema)
    args = ["nowcast", "--demo", "--every", "10", "--cycles", "2", "--warm-up", "60", "--horizon", "1"]
    result = CliRunner().invoke(risk, [*args, "--forecast-csv", str(ragged)], obj=settings)
    assert result.exit_code == 0, result.output
    assert "cycle 1 at" in result.output and "cycle 2 at" in result.output
    assert result.output.count("failed: ragged.csv: the forecast's rows must be at one regular step") == 2
