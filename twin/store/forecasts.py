"""Rain forecasts in the store: pushed by the meteorological service (气象局), read by the scheduled nowcast.

A forecast is rain intensity (mm/h) over consecutive steps from a start time, issued at ``issued_at`` by
``source``. It is stored at the canonical step of one minute, on whole UTC minutes: each stored minute holds the
time-weighted mean intensity of the input steps that overlap it, over the part of the minute they cover. So a
5-minute or hourly value is repeated for each of its minutes, 30-second values are averaged in pairs, and a step
that does not divide a minute (e.g. 90 s) is split between the minutes it straddles; the rain depth is kept. A
start that is not on a whole minute makes its first minute (and the last, where the forecast ends inside one) the
mean over the part the forecast covers.

A forecast is identified by ``(source, issued_at)``: sending the same one again stores nothing and says so
(:attr:`SavedForecast.created` false); sending a different one under the same identity is refused
(:class:`~twin.errors.ForecastConflictError`).

Example:
    >>> saved = save_forecast(conn, source="气象局", issued_at=t0, start=t0, step_s=300,      # doctest: +SKIP
    ...                       rain_mm_h=[12.0, 30.5, 8.0], sent_by="ops-1")
    >>> latest_forecast(conn, now=t0 + timedelta(minutes=5), max_age=timedelta(hours=3))   # doctest: +SKIP
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import ForecastConflictError, ForecastError

STEP = timedelta(minutes=1)
"""The canonical step of a stored forecast."""
MAX_HORIZON = timedelta(hours=24)
"""A forecast may span at most this long."""
MAX_STEP_S = 3 * 3600
"""The longest input step accepted, seconds."""
MAX_START_OFFSET = timedelta(hours=6)
"""A forecast's start may lie at most this far before or after the time it is received."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the receiving clock ``issued_at`` may be (the sender's clock running fast)."""
MAX_ISSUE_AGE = timedelta(hours=24)
"""A forecast issued longer ago than this before it is received is refused as too old to use."""
MAX_RAIN_MM_H = 2000.0
"""Above the highest rain rates ever recorded over a minute (about 1,900 mm/h): anything more is an error."""
MAX_SOURCE_CHARS = 64
MAX_SENT_BY_CHARS = 128
DEFAULT_MAX_AGE = timedelta(hours=3)
"""How old a forecast may be for the scheduled nowcast to use it, by default."""


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create ``rain_forecasts`` (schema migration 12; a plain table in both storage modes)."""
    conn.execute(
        """
        CREATE TABLE rain_forecasts (
            id            bigserial PRIMARY KEY,
            source        text NOT NULL CHECK (source <> ''),
            issued_at     timestamptz NOT NULL,
            start_at      timestamptz NOT NULL,
            step_s        integer NOT NULL DEFAULT 60 CHECK (step_s = 60),
            sent_step_s   integer NOT NULL CHECK (sent_step_s > 0),
            sent_values   integer NOT NULL CHECK (sent_values > 0),
            rain_mm_h     double precision[] NOT NULL CHECK (cardinality(rain_mm_h) BETWEEN 1 AND 1441),
            end_at        timestamptz NOT NULL,
            received_at   timestamptz NOT NULL DEFAULT now(),
            sent_by       text NOT NULL,
            UNIQUE (source, issued_at)
        )"""
    )
    conn.execute("CREATE INDEX rain_forecasts_issued ON rain_forecasts (issued_at DESC, id DESC)")


@dataclass(frozen=True, slots=True)
class RainForecast:
    """A stored forecast.

    Attributes:
        id: its row id.
        source: who issued it (e.g. ``气象局``); ``issued_at`` when (aware UTC).
        start: the first minute of ``rain_mm_h`` (aware UTC, a whole minute).
        rain_mm_h: mean intensity of each minute from ``start``, mm/h.
        received_at: when it was stored; ``sent_by`` who sent it (token name, or ``cli:<user>``).
        sent_step_s: the step it was sent at, seconds, and ``sent_values`` how many values it had.
    """

    id: int
    source: str
    issued_at: datetime
    start: datetime
    rain_mm_h: tuple[float, ...]
    received_at: datetime
    sent_by: str
    sent_step_s: int
    sent_values: int

    @property
    def end(self) -> datetime:
        """The end of the last minute forecast."""
        return self.start + len(self.rain_mm_h) * STEP

    def age(self, now: datetime) -> timedelta:
        """How long before *now* it was issued."""
        return now - self.issued_at

    def rain_from(self, now: datetime) -> tuple[float, ...]:
        """Return the intensities from the minute holding *now* to the end, mm/h (empty after the end)."""
        k = max(0, math.floor((now - self.start) / STEP))
        return self.rain_mm_h[k:]


@dataclass(frozen=True, slots=True)
class SavedForecast:
    """What :func:`save_forecast` did: the forecast's id, and whether this call stored it (False: it was there)."""

    forecast: RainForecast
    created: bool

    @property
    def id(self) -> int:
        return self.forecast.id


def resample_to_minutes(start: datetime, step_s: int, rain_mm_h: Sequence[float]) -> tuple[datetime, list[float]]:
    """Resample intensities at *step_s* from *start* to whole UTC minutes, keeping the rain depth.

    Each minute gets the time-weighted mean of the input steps overlapping it, over the part of the minute they
    cover (see the module docstring).

    Args:
        start: aware time of the first value.
        step_s: seconds each value holds, ≥ 1.
        rain_mm_h: intensities, mm/h.

    Returns:
        The first whole minute (UTC) and the intensity of each minute from it, mm/h.
    """
    t0 = start.astimezone(UTC)
    first = t0.replace(second=0, microsecond=0)
    offset = (t0 - first).total_seconds()  # seconds into the first minute
    total = offset + step_s * len(rain_mm_h)
    minutes = math.ceil(total / 60.0 - 1e-9)
    depth = [0.0] * minutes  # intensity × seconds covered, per minute
    covered = [0.0] * minutes
    for k, value in enumerate(rain_mm_h):
        a = offset + k * step_s
        b = a + step_s
        m = int(a // 60)
        while m < minutes and m * 60.0 < b:
            overlap = min(b, (m + 1) * 60.0) - max(a, m * 60.0)
            if overlap > 0:
                depth[m] += value * overlap
                covered[m] += overlap
            m += 1
    return first, [d / c if c > 0 else 0.0 for d, c in zip(depth, covered, strict=True)]


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ForecastError("bad_time", f"{name} must be a date and time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ForecastError("bad_time", f"{name} {value.isoformat()} has no UTC offset")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ForecastError("bad_time", f"{name} {value.isoformat()} is out of range") from exc


def _check_text(value: str, name: str, limit: int) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ForecastError("bad_source", f"{name} must not be empty")
    if len(text) > limit:
        raise ForecastError("bad_source", f"{name} is longer than {limit} characters")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise ForecastError("bad_source", f"{name} must not hold control characters")
    return text


def check_forecast(
    *,
    source: str,
    issued_at: datetime,
    start: datetime,
    step_s: int,
    rain_mm_h: Sequence[float],
    received_at: datetime,
) -> tuple[str, datetime, datetime, list[float]]:
    """Check a forecast as received and return its source, ``issued_at`` (UTC) and its minutes (start, values).

    Raises:
        ForecastError: with ``reason`` ``bad_source``, ``bad_time``, ``bad_step``, ``empty``, ``bad_value``,
            ``too_long``, ``issued_in_future``, ``issued_too_long_ago`` or ``start_out_of_range`` and a message
            saying what is wrong.
    """
    source = _check_text(source, "source", MAX_SOURCE_CHARS)
    issued = _utc(issued_at, "issued_at")
    first = _utc(start, "start")
    received = _utc(received_at, "received_at")
    if isinstance(step_s, bool) or not isinstance(step_s, int) or not 1 <= step_s <= MAX_STEP_S:
        raise ForecastError("bad_step", f"step_s must be a whole number of seconds from 1 to {MAX_STEP_S}")
    if len(rain_mm_h) == 0:
        raise ForecastError("empty", "the forecast has no values")
    if len(rain_mm_h) * step_s > MAX_HORIZON.total_seconds():
        raise ForecastError(
            "too_long",
            f"the forecast spans {len(rain_mm_h) * step_s / 3600:g} h; at most "
            f"{MAX_HORIZON.total_seconds() / 3600:g} h is accepted",
        )
    values: list[float] = []
    for k, raw in enumerate(rain_mm_h):
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ForecastError("bad_value", f"value {k} ({raw!r}) is not a number") from exc
        if not math.isfinite(value):
            raise ForecastError("bad_value", f"value {k} is not a finite number ({value})")
        if value < 0:
            raise ForecastError("bad_value", f"value {k} is negative ({value:g} mm/h)")
        if value > MAX_RAIN_MM_H:
            raise ForecastError("bad_value", f"value {k} ({value:g} mm/h) is above {MAX_RAIN_MM_H:g} mm/h")
        values.append(value)
    if issued > received + MAX_CLOCK_SKEW:
        raise ForecastError(
            "issued_in_future",
            f"issued_at {issued.isoformat()} is after the time received ({received.isoformat()}); check the clock",
        )
    if issued < received - MAX_ISSUE_AGE:
        raise ForecastError(
            "issued_too_long_ago",
            f"issued_at {issued.isoformat()} is more than {MAX_ISSUE_AGE.total_seconds() / 3600:g} h before the "
            f"time received ({received.isoformat()})",
        )
    if abs(first - received) > MAX_START_OFFSET:
        raise ForecastError(
            "start_out_of_range",
            f"start {first.isoformat()} is more than {MAX_START_OFFSET.total_seconds() / 3600:g} h "
            f"{'before' if first < received else 'after'} the time received ({received.isoformat()})",
        )
    minute, minutes = resample_to_minutes(first, step_s, values)
    return source, issued, minute, minutes


_COLUMNS = "id, source, issued_at, start_at, rain_mm_h, received_at, sent_by, sent_step_s, sent_values"


def _forecast(row: dict[str, Any]) -> RainForecast:
    return RainForecast(
        id=int(row["id"]),
        source=str(row["source"]),
        issued_at=row["issued_at"].astimezone(UTC),
        start=row["start_at"].astimezone(UTC),
        rain_mm_h=tuple(float(v) for v in row["rain_mm_h"]),
        received_at=row["received_at"].astimezone(UTC),
        sent_by=str(row["sent_by"]),
        sent_step_s=int(row["sent_step_s"]),
        sent_values=int(row["sent_values"]),
    )


def save_forecast(
    conn: psycopg.Connection[Any],
    *,
    source: str,
    issued_at: datetime,
    start: datetime,
    step_s: int,
    rain_mm_h: Sequence[float],
    sent_by: str,
    received_at: datetime | None = None,
) -> SavedForecast:
    """Check a forecast, resample it to minutes and store it, once per ``(source, issued_at)``.

    Args:
        conn: a connection to the store (autocommit or in a transaction the caller commits).
        source: who issued it, 1–64 characters (e.g. ``气象局``).
        issued_at: when it was issued (aware).
        start: the time of the first value (aware).
        step_s: seconds each value holds (1 s to 3 h); resampled to one minute.
        rain_mm_h: intensity of each step, mm/h, finite and ≥ 0; at most 24 h in all.
        sent_by: who sent it (the API token's name, ``cli:<user>``).
        received_at: the receiving clock (aware); defaults to now. Times are checked against it.

    Returns:
        The stored forecast and whether this call stored it: ``created`` False when the same forecast (same source,
        issue time, start and minutes) was already stored, in which case nothing is written.

    Raises:
        ForecastError: bad input (see :func:`check_forecast`); nothing is stored.
        ForecastConflictError: a different forecast is stored under the same source and issue time.
    """
    received = received_at if received_at is not None else datetime.now(UTC)
    who = _check_text(sent_by, "sent_by", MAX_SENT_BY_CHARS)
    name, issued, first, minutes = check_forecast(
        source=source, issued_at=issued_at, start=start, step_s=step_s, rain_mm_h=rain_mm_h, received_at=received
    )
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"""INSERT INTO rain_forecasts
                (source, issued_at, start_at, sent_step_s, sent_values, rain_mm_h, end_at, received_at, sent_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (source, issued_at) DO NOTHING
            RETURNING {_COLUMNS}""",  # noqa: S608 -- a constant column list
        (name, issued, first, step_s, len(rain_mm_h), minutes, first + len(minutes) * STEP, received, who),
    )
    row = cur.fetchone()
    if row is not None:
        return SavedForecast(_forecast(row), created=True)
    cur.execute(
        f"SELECT {_COLUMNS} FROM rain_forecasts WHERE source = %s AND issued_at = %s",  # noqa: S608
        (name, issued),
    )
    row = cur.fetchone()
    if row is None:  # deleted in between: not expected, but never report a forecast that is not there
        raise ForecastConflictError(f"forecast {name!r} issued {issued.isoformat()} vanished while being stored")
    stored = _forecast(row)
    if stored.start != first or stored.rain_mm_h != tuple(minutes):
        raise ForecastConflictError(
            f"a different forecast from {name!r} issued {issued.isoformat()} is already stored (#{stored.id}); "
            "a corrected forecast needs its own issue time"
        )
    return SavedForecast(stored, created=False)


@dataclass(frozen=True, slots=True)
class CurrentForecast:
    """The forecast in use at ``now``: the stored ``forecast`` and its ``rain_mm_h`` from the minute holding now."""

    forecast: RainForecast
    now: datetime
    rain_mm_h: tuple[float, ...]

    @property
    def age(self) -> timedelta:
        """How long before ``now`` the forecast was issued."""
        return self.forecast.age(self.now)


def latest_forecast(
    conn: psycopg.Connection[Any], now: datetime, max_age: timedelta = DEFAULT_MAX_AGE
) -> CurrentForecast | None:
    """Return the newest forecast issued at or before *now*, at most *max_age* before it, whose span holds *now*.

    "Newest" is the latest ``issued_at`` (then the latest stored); a forecast that has ended, or starts after
    *now*, is passed over for an older one that covers *now*.

    Args:
        conn: a connection to the store.
        now: the time the forecast is wanted for (aware).
        max_age: how long before *now* it may have been issued.

    Returns:
        The forecast and its intensities from the minute holding *now* to its end (mm/h), or None when no stored
        forecast is fresh enough and covers *now*.

    Raises:
        ForecastError: *now* is naive or *max_age* negative.
    """
    at = _utc(now, "now")
    if max_age < timedelta(0):
        raise ForecastError("bad_time", "max_age must not be negative")
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        f"""SELECT {_COLUMNS} FROM rain_forecasts
            WHERE issued_at <= %(now)s AND issued_at >= %(oldest)s AND start_at <= %(now)s AND end_at > %(now)s
            ORDER BY issued_at DESC, id DESC LIMIT 1""",  # noqa: S608 -- a constant column list
        {"now": at, "oldest": at - max_age},
    )
    row = cur.fetchone()
    if row is None:
        return None
    forecast = _forecast(row)
    return CurrentForecast(forecast, at, forecast.rain_from(at))
