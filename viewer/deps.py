"""Dependencies shared by the routers."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, WebSocket
from psycopg_pool import ConnectionPool

from twin.store.audit import record
from viewer.auth import COOKIE, Authenticator, Permission, Principal, bearer
from viewer.hub import AlertHub

log = logging.getLogger(__name__)


def get_pool(request: Request) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
    pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = request.app.state.pool
    return pool


def get_db(request: Request) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with get_pool(request).connection() as conn:
        yield conn


def get_hub(request: Request) -> AlertHub:
    hub: AlertHub = request.app.state.hub
    return hub


DbDep = Annotated[psycopg.Connection[dict[str, Any]], Depends(get_db)]


def get_auth(request: Request | WebSocket) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def token_of(request: Request | WebSocket) -> str | None:
    """The bearer token of a request: the Authorization header, else the page's session cookie."""
    return bearer(request.headers.get("authorization")) or request.cookies.get(COOKIE) or None


def remote_of(request: Request | WebSocket) -> str:
    return request.client.host if request.client else ""


def audit(request: Request, principal: Principal, action: str, outcome: str, target: str = "", **detail: Any) -> None:
    """Append to the audit log (best effort: a failure is logged, the request goes on)."""
    try:
        with get_pool(request).connection() as conn:
            record(
                conn,
                actor=principal.name,
                role=principal.role.value,
                action=action,
                outcome=outcome,
                target=target,
                remote=remote_of(request),
                detail=detail or None,
            )
    except psycopg.Error as exc:
        log.error("audit log write failed (%s %s %s): %s", principal.name, action, outcome, exc)


def require(permission: Permission) -> Callable[[Request], Principal]:
    """A dependency: the caller's principal, if its token is valid, it has *permission* and is within its rate."""

    def dependency(request: Request) -> Principal:
        auth = get_auth(request)
        token = token_of(request)
        principal = auth.identify(token)
        wait = auth.limiter.take(principal.name if principal and auth.required else f"ip:{remote_of(request)}")
        if wait > 0:
            raise HTTPException(
                429, "too many requests; slow down", headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )
        if principal is None:
            raise HTTPException(
                401,
                "sign in: send 'Authorization: Bearer <token>' or POST /api/session",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.may(permission):
            audit(request, principal, f"{request.method} {request.url.path}", "denied", permission=permission.value)
            raise HTTPException(403, f"role {principal.role.value!r} may not do this ({permission.value})")
        request.state.principal = principal
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require(Permission.READ))]
DrillRunner = Annotated[Principal, Depends(require(Permission.DRILLS))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT))]
