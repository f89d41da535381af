"""Dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from viewer.hub import AlertHub


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
