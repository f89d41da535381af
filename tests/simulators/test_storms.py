"""Design storms: the Chicago hyetograph honours the formula at every duration; recorded rain is read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.errors import ConfigError, ModelImportError
from twin.storms import DEFAULT_FORMULA, FORMULAS, chicago_storm, read_rain_csv

NANCHANG = FORMULAS[DEFAULT_FORMULA]


@pytest.mark.parametrize(("period", "duration", "step"), [(50, 120, 1), (2, 60, 5), (100, 180, 1), (1, 90, 2)])
def test_total_depth_equals_the_formula(period: float, duration: float, step: float) -> None:
    rain = chicago_storm(NANCHANG, return_period_years=period, duration_min=duration, step_min=step)
    assert len(rain) == duration / step
    assert sum(rain) * step / 60 == pytest.approx(NANCHANG.depth_mm(period, duration), rel=1e-9)


def test_peak_sits_at_the_ratio_and_every_window_around_it_meets_the_formula() -> None:
    rain = chicago_storm(NANCHANG, return_period_years=20, duration_min=120, peak_ratio=0.4)
    assert rain.index(max(rain)) in (47, 48)
    # the most intense 10 minutes hold the formula's 10-minute depth (within the 1-minute discretisation)
    best10 = max(sum(rain[k : k + 10]) / 60 for k in range(len(rain) - 9))
    assert best10 == pytest.approx(NANCHANG.depth_mm(20, 10), rel=0.03)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError):
        chicago_storm(NANCHANG, return_period_years=50, duration_min=120, peak_ratio=1.0)
    with pytest.raises(ConfigError):
        chicago_storm(NANCHANG, return_period_years=50, duration_min=125, step_min=10)
    with pytest.raises(ConfigError):
        NANCHANG.intensity_mm_min(0.1, 10)


def test_recorded_rain_csv(tmp_path: Path) -> None:
    good = tmp_path / "rain.csv"
    good.write_text("ts,rain_mm_h\n2026-06-01T08:00:00+08:00,0\n2026-06-01T08:05:00+08:00,12.5\n")
    series = read_rain_csv(good)
    assert [v for _t, v in series] == [0.0, 12.5] and series[0][0].utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,rain_mm_h\n2026-06-01T08:00:00+08:00,0\n2026-06-01T08:05:00+08:00,-3\n")
    with pytest.raises(ModelImportError) as err:
        read_rain_csv(bad)
    assert (err.value.line, err.value.field) == (3, "rain_mm_h")
