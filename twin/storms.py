"""Design storms: the storm-intensity formula of a city, and the Chicago hyetograph (芝加哥雨型) built from it.

Formula (GB 50014 form): q = 167·A1·(1 + C·lg P) / (t + b)^n in L/(s·ha), i.e. i = A1·(1 + C·lg P) / (t + b)^n
in mm/min, with P the return period (years) and t the duration (min).

The Chicago storm (Keifer & Chu, 1957) puts the peak at r·T and makes every window around the peak as intense as
the formula says for that window's length, so the storm's total depth equals the formula's depth for the whole
duration, and every shorter design duration is satisfied inside it.

Coefficients in :data:`FORMULAS` are as compiled in the national table of Chinese cities' storm formulas
(reproduced in 给水排水设计手册 第5册《城镇排水》); cities revise their formulas — check a city's current
official formula before design use. Any city's formula can be given instead (:class:`StormFormula`).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from twin.errors import ConfigError, ModelImportError

Q_PER_I = 166.67
"""L/(s·ha) per mm/min."""


@dataclass(frozen=True, slots=True)
class StormFormula:
    """A storm-intensity formula i = a1·(1 + c·lg P)/(t + b)^n, i in mm/min, t in min.

    ``q_coefficient`` is the published 167·A1 in L/(s·ha); ``a1`` derives from it.
    """

    city: str
    q_coefficient: float
    c: float
    b: float
    n: float
    source: str

    @property
    def a1(self) -> float:
        return self.q_coefficient / Q_PER_I

    def intensity_mm_min(self, return_period_years: float, duration_min: float) -> float:
        """Mean intensity over the most intense *duration_min* of a storm of the given return period, mm/min.

        Raises:
            ConfigError: the return period is below 0.25 years or the duration not positive.
        """
        if return_period_years < 0.25:
            raise ConfigError("return period must be at least 0.25 years")
        if duration_min <= 0:
            raise ConfigError("duration must be positive")
        return float(self.a1 * (1 + self.c * math.log10(return_period_years)) / (duration_min + self.b) ** self.n)

    def depth_mm(self, return_period_years: float, duration_min: float) -> float:
        """Rain depth of the most intense *duration_min*, mm."""
        return self.intensity_mm_min(return_period_years, duration_min) * duration_min


_MANUAL = "给水排水设计手册 第5册《城镇排水》(第三版), 附录: 我国若干城市暴雨强度公式"
FORMULAS: dict[str, StormFormula] = {
    "nanchang": StormFormula("南昌 (Jiangxi)", 1386.0, 0.69, 1.4, 0.64, _MANUAL),
    "beijing": StormFormula("北京", 2001.0, 0.811, 8.0, 0.711, _MANUAL),
    "wuhan": StormFormula("武汉", 983.0, 0.65, 4.0, 0.56, _MANUAL),
    "guangzhou": StormFormula("广州", 2424.17, 0.533, 11.0, 0.668, _MANUAL),
}
DEFAULT_FORMULA = "nanchang"
"""Ji'an's own formula is not in the compiled table; Nanchang, the provincial capital, is the Jiangxi default."""


def chicago_storm(
    formula: StormFormula,
    *,
    return_period_years: float,
    duration_min: float,
    step_min: float = 1.0,
    peak_ratio: float = 0.4,
) -> list[float]:
    """Return the Chicago hyetograph: mean intensity of each step, mm/h, ``duration_min / step_min`` values.

    The depths of the steps add up exactly to ``formula.depth_mm(return_period_years, duration_min)``.

    Raises:
        ConfigError: the peak ratio is not in (0, 1), or the duration is not a whole number of steps.

    Example:
        >>> rain = chicago_storm(FORMULAS["nanchang"], return_period_years=50, duration_min=120)
        >>> len(rain), round(sum(rain) / 60, 1)  # 120 one-minute steps; depth in mm
        (120, 100.5)
    """
    if not 0 < peak_ratio < 1:
        raise ConfigError("peak ratio must be between 0 and 1")
    steps = duration_min / step_min
    if step_min <= 0 or abs(steps - round(steps)) > 1e-9:
        raise ConfigError("duration must be a whole number of steps")
    peak = peak_ratio * duration_min

    def window_depth(w: float) -> float:
        return formula.depth_mm(return_period_years, w) if w > 0 else 0.0

    def cumulative(t: float) -> float:
        """Depth from the storm's start to *t* minutes, mm."""
        if t <= peak:
            return peak_ratio * (window_depth(duration_min) - window_depth((peak - t) / peak_ratio))
        return peak_ratio * window_depth(duration_min) + (1 - peak_ratio) * window_depth((t - peak) / (1 - peak_ratio))

    edges = [k * step_min for k in range(round(steps) + 1)]
    return [(cumulative(b) - cumulative(a)) * 60.0 / step_min for a, b in itertools.pairwise(edges)]


def read_rain_csv(path: Path) -> list[tuple[datetime, float]]:
    """Read a recorded rainfall series: a CSV with columns ``ts`` (ISO 8601 with offset) and ``rain_mm_h``.

    Raises:
        ModelImportError: the file cannot be read, a column is missing, or a row has a bad value (file, line, field).
    """
    out: list[tuple[datetime, float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"ts", "rain_mm_h"} - set(reader.fieldnames or ())
            if missing:
                raise ModelImportError(str(path), f"missing column(s) {sorted(missing)}", line=1)
            for row in reader:
                line = reader.line_num
                try:
                    ts = datetime.fromisoformat(row["ts"])
                except (TypeError, ValueError) as exc:
                    raise ModelImportError(str(path), f"bad time {row['ts']!r}", line=line, field="ts") from exc
                if ts.tzinfo is None:
                    raise ModelImportError(str(path), "time has no UTC offset", line=line, field="ts")
                try:
                    value = float(row["rain_mm_h"])
                except (TypeError, ValueError) as exc:
                    raise ModelImportError(
                        str(path), f"bad value {row['rain_mm_h']!r}", line=line, field="rain_mm_h"
                    ) from exc
                if not math.isfinite(value) or value < 0:
                    raise ModelImportError(str(path), "rain must be a finite number ≥ 0", line=line, field="rain_mm_h")
                out.append((ts.astimezone(UTC), value))
    except OSError as exc:
        raise ModelImportError(str(path), f"cannot read: {exc.strerror}") from exc
    if not out:
        raise ModelImportError(str(path), "no rows")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(out)):
        raise ModelImportError(str(path), "times must increase", field="ts")
    return out


def storm_series(rain_mm_h: list[float], *, start: datetime, step: timedelta) -> list[tuple[datetime, float]]:
    """Stamp a hyetograph with times: each value holds from its time to the next."""
    return [(start + k * step, value) for k, value in enumerate(rain_mm_h)]
