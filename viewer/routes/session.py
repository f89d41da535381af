"""Signing in and out of the page, and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from twin.store.audit import entries
from viewer.auth import COOKIE, Principal, Role
from viewer.deps import Auditor, DbDep, audit, get_auth, remote_of, token_of

router = APIRouter(tags=["session"])


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=512, description="the token 'lifeline tokens create' printed")


@router.get("/api/session", summary="Who the caller is (401 if not signed in)")
def whoami(request: Request) -> dict[str, Any]:
    auth = get_auth(request)
    principal = auth.identify(token_of(request))
    if principal is None:
        raise HTTPException(401, "not signed in", headers={"WWW-Authenticate": "Bearer"})
    return {"name": principal.name, "role": principal.role.value, "auth_required": auth.required}


@router.post("/api/session", status_code=204, summary="Sign in: check a token and keep it in an HttpOnly cookie")
def sign_in(request: Request, response: Response, body: Annotated[SignIn, Body()]) -> None:
    auth = get_auth(request)
    if auth.limiter.take(f"sign-in:{remote_of(request)}") > 0:
        raise HTTPException(429, "too many sign-in attempts; wait a little", headers={"Retry-After": "5"})
    principal = auth.identify(body.token)
    if principal is None:
        audit(request, Principal("unknown", Role.VIEWER), "sign_in", "failed")
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    audit(request, principal, "sign_in", "ok")
    response.set_cookie(
        COOKIE,
        body.token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
        path="/",
    )


@router.delete("/api/session", status_code=204, summary="Sign out")
def sign_out(request: Request, response: Response) -> None:
    principal = get_auth(request).identify(token_of(request))
    if principal is not None:
        audit(request, principal, "sign_out", "ok")
    response.delete_cookie(COOKIE, path="/")


@router.get("/api/audit", summary="The audit log, newest first (admin)")
def audit_log(
    _who: Auditor,
    db: DbDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    return entries(db, limit=limit, actor=actor)
