"""Rain forecasts in a real PostgreSQL: stored once per source and issue time, resampled to minutes, refused when
bad, the newest fresh one read back; and ``lifeline risk forecast put``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lifeline.risk_commands import risk
from lifeline.settings import Settings
from twin.errors import ForecastConflictError, ForecastError, LifelineError
from twin.store.db import DictConnection
from twin.store.forecasts import latest_forecast, resample_to_minutes, save_forecast

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
CST = timezone(timedelta(hours=8))


def _save(db: DictConnection, **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "source": "气象局",
        "issued_at": T0,
        "start": T0,
        "step_s": 300,
        "rain_mm_h": [12.0, 30.0, 6.0],
        "sent_by": "ops-1",
        "received_at": T0 + timedelta(minutes=2),
    }
    return save_forecast(db, **{**args, **overrides})


def _count(db: DictConnection) -> int:
    row = db.execute("SELECT count(*) AS n FROM rain_forecasts").fetchone()
    assert row is not None
    return int(row["n"])


def test_forecast_is_stored_at_minutes_and_read_back_from_now(db: DictConnection) -> None:
    saved = _save(db, issued_at=T0.astimezone(CST), start=T0.astimezone(CST))
    assert saved.created and saved.id > 0
    f = saved.forecast
    assert f.source == "气象局" and f.sent_by == "ops-1" and f.issued_at == T0 and f.start == T0
    assert f.rain_mm_h == (12.0,) * 5 + (30.0,) * 5 + (6.0,) * 5  # each 5-minute value holds for its 5 minutes
    assert f.sent_step_s == 300 and f.sent_values == 3 and f.end == T0 + timedelta(minutes=15)
    row = db.execute("SELECT step_s, received_at, cardinality(rain_mm_h) AS n FROM rain_forecasts").fetchone()
    assert row == {"step_s": 60, "received_at": T0 + timedelta(minutes=2), "n": 15}

    current = latest_forecast(db, T0 + timedelta(minutes=7, seconds=30), timedelta(hours=3))
    assert current is not None and current.forecast == f
    assert current.rain_mm_h == (30.0,) * 3 + (6.0,) * 5  # from the minute holding now (08:07) to the end
    assert current.age == timedelta(minutes=7, seconds=30)


def test_other_steps_are_resampled_keeping_the_depth() -> None:
    # 30 s: pairs averaged.
    assert resample_to_minutes(T0, 30, [10.0, 20.0, 0.0, 60.0]) == (T0, [15.0, 30.0])
    # 90 s: a step straddling two minutes is split between them.
    start, minutes = resample_to_minutes(T0, 90, [60.0, 0.0])
    assert start == T0 and minutes == [60.0, 30.0, 0.0]
    assert math.isclose(sum(minutes) * 60, 60.0 * 90)  # depth × 3600: 1.5 mm either way
    # A start inside a minute: the first minute is the mean over the part covered, aligned to whole UTC minutes.
    start, minutes = resample_to_minutes(T0 + timedelta(seconds=30), 60, [10.0, 20.0])
    assert start == T0 and minutes == [10.0, 15.0, 20.0]
    # An hourly value holds for 60 minutes.
    assert resample_to_minutes(T0, 3600, [4.0]) == (T0, [4.0] * 60)


def test_the_same_forecast_sent_again_is_stored_once(db: DictConnection) -> None:
    first = _save(db)
    again = _save(db, received_at=T0 + timedelta(minutes=9), sent_by="ops-2")
    assert first.created and not again.created
    assert again.id == first.id and again.forecast == first.forecast  # the first one's record is kept
    # The same minutes sent at another step are the same forecast.
    assert not _save(db, step_s=60, rain_mm_h=[12.0] * 5 + [30.0] * 5 + [6.0] * 5).created
    assert _count(db) == 1
    with pytest.raises(ForecastConflictError, match=r"a different forecast from '气象局' issued .* is already stored"):
        _save(db, rain_mm_h=[12.0, 31.0, 6.0])
    assert _count(db) == 1
    assert _save(db, source="雷达外推").created  # another source, same issue time: another forecast
    assert _count(db) == 2


@pytest.mark.parametrize(
    ("overrides", "reason", "message"),
    [
        ({"rain_mm_h": [1.0, -0.5]}, "bad_value", "value 1 is negative (-0.5 mm/h)"),
        ({"rain_mm_h": [float("nan")]}, "bad_value", "value 0 is not a finite number (nan)"),
        ({"rain_mm_h": [2.0, float("inf")]}, "bad_value", "value 1 is not a finite number (inf)"),
        ({"rain_mm_h": [5000.0]}, "bad_value", "value 0 (5000 mm/h) is above 2000 mm/h"),
        ({"rain_mm_h": []}, "empty", "the forecast has no values"),
        ({"start": T0 - timedelta(hours=7)}, "start_out_of_range", "is more than 6 h before the time received"),
        ({"start": T0 + timedelta(hours=8)}, "start_out_of_range", "is more than 6 h after the time received"),
        ({"step_s": 3600, "rain_mm_h": [1.0] * 25}, "too_long", "spans 25 h; at most 24 h is accepted"),
        ({"step_s": 60, "rain_mm_h": [1.0] * 1441}, "too_long", "at most 24 h"),
        ({"issued_at": T0 + timedelta(hours=1)}, "issued_in_future", "is after the time received"),
        ({"issued_at": T0 - timedelta(days=2)}, "issued_too_long_ago", "more than 24 h before the time received"),
        ({"issued_at": datetime(2026, 7, 1, 8, 0)}, "bad_time", "issued_at 2026-07-01T08:00:00 has no UTC offset"),
        ({"step_s": 0}, "bad_step", "step_s must be a whole number of seconds from 1 to 10800"),
        ({"step_s": 4 * 3600, "rain_mm_h": [1.0]}, "bad_step", "from 1 to 10800"),
        ({"source": "  "}, "bad_source", "source must not be empty"),
        ({"source": "nul\x00byte"}, "bad_source", "source must not hold control characters"),
        ({"source": "x" * 65}, "bad_source", "source is longer than 64 characters"),
    ],
)
def test_bad_forecasts_are_refused_saying_why(
    db: DictConnection, overrides: dict[str, Any], reason: str, message: str
) -> None:
    with pytest.raises(ForecastError) as refused:
        _save(db, **overrides)
    assert refused.value.reason == reason
    assert message in refused.value.detail
    assert isinstance(refused.value, LifelineError) and isinstance(refused.value, ValueError)
    assert _count(db) == 0


def test_latest_is_the_newest_fresh_forecast_that_covers_now(db: DictConnection) -> None:
    now = T0 + timedelta(hours=1)
    received = now
    assert latest_forecast(db, now, timedelta(hours=3)) is None  # nothing stored
    old = _save(db, issued_at=T0, start=T0, step_s=3600, rain_mm_h=[5.0, 6.0], received_at=received).forecast
    newer = _save(db, source="雷达外推", issued_at=T0 + timedelta(minutes=30), start=T0 + timedelta(minutes=30),
                  step_s=600, rain_mm_h=[7.0] * 6, received_at=received).forecast  # fmt: skip
    current = latest_forecast(db, now, timedelta(hours=3))
    assert current is not None and current.forecast.id == newer.id and current.rain_mm_h == (7.0,) * 30
    # Issued after now: not yet known at now.
    _save(db, issued_at=now + timedelta(minutes=1), start=now, step_s=60, rain_mm_h=[9.0], received_at=received)
    current = latest_forecast(db, now, timedelta(hours=3))
    assert current is not None and current.forecast.id == newer.id
    # Too old for max_age: the newer one is 30 min old, the older one 60.
    assert latest_forecast(db, now, timedelta(minutes=29)) is None
    # Once the newer one has ended (at 09:30), the older one, still covering now, is used.
    later = T0 + timedelta(minutes=95)
    current = latest_forecast(db, later, timedelta(hours=3))
    assert current is not None and current.forecast.id == old.id and current.rain_mm_h == (6.0,) * 25
    assert latest_forecast(db, T0 + timedelta(hours=2), timedelta(hours=3)) is None  # all have ended
    with pytest.raises(ForecastError, match="has no UTC offset"):
        latest_forecast(db, datetime(2026, 7, 1, 9, 0), timedelta(hours=3))


def _csv(path: Path, start: datetime, step: timedelta, values: list[float]) -> Path:
    rows = [f"{(start + k * step).isoformat()},{v}" for k, v in enumerate(values)]
    path.write_text("ts,rain_mm_h\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_cli_puts_a_forecast_csv_once(pg_url: str, schema: str, db: DictConnection, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    issued = (now - timedelta(minutes=3)).astimezone(CST)
    csv = _csv(tmp_path / "qpf.csv", now, timedelta(minutes=10), [20.0, 40.0, 10.0])
    settings = Settings(database_url=pg_url, db_schema=schema)
    args = ["forecast", "put", str(csv), "--source", "气象局", "--issued-at", issued.isoformat()]
    first = CliRunner().invoke(risk, args, obj=settings)
    assert first.exit_code == 0, first.output
    assert "stored forecast #" in first.output and "30 minutes from" in first.output
    assert "resampled from 3 steps of 600 s" in first.output
    current = latest_forecast(db, now, timedelta(hours=3))
    assert current is not None
    assert current.forecast.source == "气象局" and current.forecast.issued_at == issued
    assert current.rain_mm_h == (20.0,) * 10 + (40.0,) * 10 + (10.0,) * 10
    assert current.forecast.sent_by.startswith("cli")

    again = CliRunner().invoke(risk, args, obj=settings)
    assert again.exit_code == 0 and f"already stored as #{current.forecast.id}: nothing written" in again.output
    assert _count(db) == 1

    # Without --source and --issued-at: the file's name, issued now.
    plain = CliRunner().invoke(risk, ["forecast", "put", str(csv)], obj=settings)
    assert plain.exit_code == 0 and "(qpf.csv, issued" in plain.output
    assert _count(db) == 2

    far = _csv(tmp_path / "old.csv", now - timedelta(hours=12), timedelta(hours=1), [1.0])
    refused = CliRunner().invoke(risk, ["forecast", "put", str(far)], obj=settings)
    assert refused.exit_code == 1 and "is more than 6 h before the time received" in refused.output
    irregular = tmp_path / "irregular.csv"
    irregular.write_text(
        f"ts,rain_mm_h\n{now.isoformat()},1\n{(now + timedelta(minutes=1)).isoformat()},2\n"
        f"{(now + timedelta(minutes=3)).isoformat()},3\n",
        encoding="utf-8",
    )
    uneven = CliRunner().invoke(risk, ["forecast", "put", str(irregular)], obj=settings)
    assert uneven.exit_code == 1 and "regular step" in uneven.output
    naive = CliRunner().invoke(risk, [*args[:3], "--issued-at", "2026-07-01T08:00"], obj=settings)
    assert naive.exit_code == 2 and "UTC offset" in naive.output
    no_db = CliRunner().invoke(risk, ["forecast", "put", str(csv)], obj=Settings(database_url=None))
    assert no_db.exit_code == 2 and "LIFELINE_DATABASE_URL" in no_db.output
    assert _count(db) == 2
