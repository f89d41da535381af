"""Drills: start and stop simulated scenarios from the operations centre (clearly marked as drills)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request
from pydantic import BaseModel, Field

from twin.errors import ConfigError
from twin.store import drills as registry
from viewer.deps import DbDep, DrillRunner, Reader, audit
from viewer.drills import DrillManager

router = APIRouter(prefix="/api/drills", tags=["drills"])


class DrillCreate(BaseModel):
    kind: str = Field(description="rainstorm, leak, gas-leak or scenario")
    speed: str = Field("600", description="simulated seconds per real second, or 'max'")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="e.g. return_period, duration_min; junction/pipe, flow, at_h, hours (gas-leak also "
        "methane_report regular|change, methane_sample_s, methane_change); toml for a scenario file",
    )


def _manager(request: Request) -> DrillManager:
    manager: DrillManager = request.app.state.drills
    return manager


@router.get("", summary="Drills started here, newest first")
def list_drills(request: Request, _who: Reader) -> list[dict[str, Any]]:
    return _manager(request).describe()


@router.get(
    "/registry",
    summary="Every registered drill (from any viewer), newest first: networks, window, alerts it marked",
)
def drill_registry(_who: Reader, db: DbDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    return registry.list_drills(db, limit=limit)


@router.post("", status_code=201, summary="Start a drill")
def start_drill(request: Request, who: DrillRunner, body: Annotated[DrillCreate, Body()]) -> dict[str, Any]:
    try:
        drill = _manager(request).start(body.kind, speed=body.speed, params=body.params, started_by=who.name)
    except ConfigError as exc:
        audit(request, who, "drill_start", "failed", body.kind, reason=str(exc)[:200])
        text = str(exc)
        code = 409 if "not enabled" in text or "running already" in text else 503 if "cannot register" in text else 422
        raise HTTPException(code, text) from exc
    audit(request, who, "drill_start", "ok", body.kind, drill_id=drill.as_dict().get("id"), speed=body.speed)
    return drill.as_dict()


@router.delete("/{drill_id}", summary="Stop a drill")
def stop_drill(request: Request, who: DrillRunner, drill_id: int) -> dict[str, Any]:
    try:
        stopped = _manager(request).stop(drill_id).as_dict()
    except KeyError as exc:
        raise HTTPException(404, f"no drill {drill_id}") from exc
    audit(request, who, "drill_stop", "ok", str(drill_id))
    return stopped
