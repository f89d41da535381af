"""The dashboard: the operations centre's figures in one call."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from twin.store.dashboard import summary
from viewer.deps import DbDep, Reader

router = APIRouter(tags=["dashboard"])


@router.get(
    "/api/dashboard",
    summary="Open alerts by network and grade, awaiting response, sensors online, rainfall, response times",
)
def dashboard(request: Request, _who: Reader, db: DbDep) -> dict[str, Any]:
    return summary(db, now=request.app.state.clock())
