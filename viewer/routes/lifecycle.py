"""Acting on alerts (叫应, 派单, 处置, 复查, 关闭), their history, and incidents."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from twin.lifecycle import ROLES_FOR, Action, TransitionError
from twin.store.lifecycle import UnknownAlertError, apply_action, history, incident
from viewer.auth import Permission, Principal
from viewer.deps import DbDep, Reader, audit, require

router = APIRouter(tags=["alerts"])

Actor = Annotated[Principal, Depends(require(Permission.ACT_ON_ALERTS))]


class ActionIn(BaseModel):
    action: Action
    note: str = Field("", max_length=2000, description="what was seen or done")
    assignee: str | None = Field(None, max_length=200, description="dispatch: who goes (team or person)")
    task: str | None = Field(None, max_length=2000, description="dispatch: what to do")


@router.post("/api/alerts/{alert_id}/actions", summary="Act on an alert: acknowledge, dispatch, resolve, recheck, …")
def act(request: Request, who: Actor, db: DbDep, alert_id: int, body: Annotated[ActionIn, Body()]) -> dict[str, Any]:
    if who.role.value not in ROLES_FOR[body.action]:
        audit(request, who, f"alert_{body.action.value}", "denied", str(alert_id))
        allowed = ", ".join(sorted(ROLES_FOR[body.action]))
        raise HTTPException(403, f"role {who.role.value!r} may not {body.action.value} (only: {allowed})")
    detail = {k: v for k, v in (("assignee", body.assignee), ("task", body.task)) if v}
    clock = request.app.state.clock
    try:
        result = apply_action(
            db,
            alert_id,
            body.action,
            actor=who.name,
            note=body.note,
            detail=detail,
            now=clock(),
            schema=request.app.state.schema,
        )
    except UnknownAlertError as exc:
        raise HTTPException(404, str(exc)) from exc
    except TransitionError as exc:
        audit(request, who, f"alert_{body.action.value}", "refused", str(alert_id), reason=str(exc))
        raise HTTPException(409 if "cannot" in str(exc) else 422, str(exc)) from exc
    audit(request, who, f"alert_{body.action.value}", "ok", str(alert_id), state=result["state"])
    return result


@router.get("/api/alerts/{alert_id}/history", summary="Every event of an alert, who and when (JSON or CSV)")
def alert_history(
    _who: Reader, db: DbDep, alert_id: int, format: Annotated[Literal["json", "csv"], Query()] = "json"
) -> Response:
    try:
        rows = history(db, alert_id)
    except UnknownAlertError as exc:
        raise HTTPException(404, str(exc)) from exc
    if format == "json":
        return Response(orjson.dumps(rows), media_type="application/json")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["event_id", "event", "ts", "grade", "value", "actor", "note", "detail", "drill"])
    for r in rows:
        detail = orjson.dumps(r["detail"]).decode() if r["detail"] is not None else ""
        drill = f"演练 DRILL {r['drill_id']}" if r["drill_id"] is not None else ""
        ts = r["ts"].isoformat()
        writer.writerow([r["event_id"], r["event"], ts, r["grade"], r["value"], r["actor"], r["note"], detail, drill])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        out.getvalue().encode("utf-8-sig"),  # with a BOM, so spreadsheet programs read the Chinese right
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="alert-{alert_id}-history-{stamp}.csv"'},
    )


@router.get("/api/incidents/{incident_id}", summary="An incident: related alerts grouped together")
def get_incident(_who: Reader, db: DbDep, incident_id: int) -> dict[str, Any]:
    found = incident(db, incident_id)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id}")
    return found
