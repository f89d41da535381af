"""HTTP and websocket schemas: a family per entity, as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field


class LimitPublic(BaseModel):
    grade: str = Field(description="I (red, most severe) to IV (blue)")
    direction: str = Field(description="high: alarm at or above; low: alarm at or below")
    threshold: float


class SensorPublic(BaseModel):
    sensor_id: str
    network: str
    quantity: str
    unit: str = Field(description="canonical unit of every stored value of this sensor")
    name: str
    asset_id: str | None
    district: str
    x_m: float
    y_m: float
    valid_min: float | None
    valid_max: float | None
    interval_s: float
    limits: list[LimitPublic]
    latest_ts: datetime | None
    latest_value: float | None
    latest_quality: int | None


class SeriesPointPublic(BaseModel):
    ts: datetime = Field(description="reading time, or bucket start when a step is given")
    value: float = Field(description="the reading, or the mean of the bucket")
    min: float
    max: float
    n: int = Field(description="readings in the bucket")


class SeriesPublic(BaseModel):
    sensor_id: str
    unit: str
    source: str = Field(description="readings, readings_1m or readings_1h: the table that answered")
    step_s: float | None
    points: list[SeriesPointPublic]


class AlertPublic(BaseModel):
    id: int
    cause_key: str
    kind: str
    sensor_id: str | None
    network: str
    district: str
    grade: int = Field(ge=1, le=4, description="1 = I (red) … 4 = IV (blue)")
    active: bool
    state: str
    raised_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    value: float | None
    threshold: float | None
    peak_value: float | None
    message: str
    message_en: str
    detail: dict[str, Any] | None = Field(None, description="the detector's evidence: candidates, eta_s, …")
    escalation_level: int = Field(0, description="0: not escalated; n: the n-th contact of the chain was called")
    acknowledged_at: datetime | None = None
    assignee: str | None = Field(None, description="who the work order went to")
    incident_id: int | None = Field(None, description="the incident grouping related alerts")
    drill_id: int | None = Field(None, description="the drill (演练) during which it was raised; None: a real alert")

    @computed_field(description="raised during a drill (演练 DRILL), not by a real event")  # type: ignore[prop-decorator]
    @property
    def drill(self) -> bool:
        return self.drill_id is not None


class AlertEventPublic(BaseModel):
    """One websocket message of type ``alert``: an event and its alert as it now stands."""

    type: str = "alert"
    event_id: int
    event: str = Field(
        description="from the detectors: raised, updated, cleared; from people: acknowledge, dispatch, resolve,"
        " recheck, close, reopen; escalated"
    )
    event_ts: datetime
    event_value: float | None = Field(
        None, description="the reading that made this event (alert.value is the alert's value now, maybe later)"
    )
    event_grade: int | None = Field(None, description="the grade this event set (alert.grade is the current one)")
    actor: str = "system"
    note: str = ""
    event_detail: dict[str, Any] | None = None
    drill: bool = Field(False, description="the alert was raised during a drill (演练 DRILL): not a real event")
    alert: AlertPublic


def alert_event_from_row(row: dict[str, Any]) -> AlertEventPublic:
    """Build the websocket message from a row of :func:`twin.store.alerts.events_after`."""
    alert = AlertPublic.model_validate(row)
    return AlertEventPublic(
        event_id=row["event_id"],
        event=row["event"],
        event_ts=row["event_ts"],
        event_value=row.get("event_value"),
        event_grade=row.get("event_grade"),
        actor=row.get("event_actor") or "system",
        note=row.get("event_note") or "",
        event_detail=row.get("event_detail"),
        drill=alert.drill,
        alert=alert,
    )


class RainForecastCreate(BaseModel):
    """A rain forecast as the meteorological service (气象局) sends it: intensities at a regular step."""

    source: str = Field(description="who issued it, e.g. 气象局; with issued_at, the forecast's identity")
    issued_at: datetime = Field(description="when it was issued, with a UTC offset")
    start: datetime = Field(description="the time of the first value, with a UTC offset")
    step_s: int = Field(60, description="seconds each value holds (1 to 10800); stored resampled to 1 minute")
    values_mm_h: list[float] = Field(description="rain intensity of each step, mm/h, ≥ 0; at most 24 h in all")


class RainForecastPublic(BaseModel):
    """A stored rain forecast, at one-minute steps."""

    id: int
    source: str
    issued_at: datetime
    start: datetime = Field(description="the first minute of values_mm_h (a whole UTC minute)")
    step_s: int = Field(60, description="always 60: forecasts are stored at one-minute steps")
    values_mm_h: list[float] = Field(description="mean rain intensity of each minute from start, mm/h")
    received_at: datetime
    sent_by: str = Field(description="who sent it: the token's name, or cli:<user>")
    sent_step_s: int = Field(description="the step it was sent at, seconds")


class RainForecastStored(RainForecastPublic):
    """The answer to storing a forecast."""

    created: bool = Field(description="true: stored now (201); false: the same forecast was already stored (200)")


class RainForecastCurrent(RainForecastPublic):
    """The forecast the scheduled nowcast would use now."""

    now: datetime
    age_s: float = Field(description="seconds since it was issued")
    values_from_now_mm_h: list[float] = Field(description="intensity of each minute from the one holding now, mm/h")
