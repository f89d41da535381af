"""The FastAPI application: REST API, websockets and the static operations page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from twin.lifecycle import EscalationPolicy
from twin.store.db import connect_kwargs
from twin.store.drills import in_drill_mode
from twin.store.lifecycle import escalate_due
from viewer.auth import Authenticator, Permission
from viewer.deps import require
from viewer.drills import DrillManager
from viewer.hub import AlertHub

if TYPE_CHECKING:
    from viewer.whatif import WhatIf
from viewer.routes import alerts, dashboard, drills, healthcheck, lifecycle, risk, scene, sensors, session, twin
from viewer.webhooks import Webhook, WebhookSender

log = logging.getLogger(__name__)
DEFAULT_ESCALATION = EscalationPolicy()
STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    *,
    conninfo: str,
    schema: str,
    drill: bool = False,
    scene_dir: Path | None = None,
    drill_env: dict[str, str] | None = None,
    drill_demo_city: bool = False,
    auth: Authenticator | None = None,
    cors_origins: Sequence[str] = (),
    escalation: EscalationPolicy | None = DEFAULT_ESCALATION,
    escalation_interval_s: float = 10.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    webhooks: Sequence[Webhook] = (),
    whatif: WhatIf | None = None,
) -> FastAPI:
    """Build the viewer for the store at *conninfo* / *schema*.

    Nothing connects until the app starts (its lifespan opens the pool and the alert hub).

    Args:
        conninfo: PostgreSQL connection string.
        schema: the store's schema.
        drill: mark everything the page shows as a drill (演练), e.g. in the demo.
        drill_env: environment for drill commands (broker and database settings); None: drills disabled.
        drill_demo_city: run drills on the built-in demo city instead of the stored twin.
        scene_dir: folder written by :func:`twin.scene.export_scene`; None: no 3D scene (its API answers 404).
        auth: who may do what (:mod:`viewer.auth`); None: everyone is an anonymous admin (the demo, tests of
            other features; ``lifeline serve`` requires tokens unless told otherwise).
        cors_origins: origins other than the viewer's own that may call the API from a browser (none by default).
        escalation: when unacknowledged alerts escalate and to whom (:mod:`twin.lifecycle`); None: never.
        escalation_interval_s: how often the escalation check runs, seconds.
        clock: the current time, aware UTC (tests move it).
        webhooks: receivers of alert events (:mod:`viewer.webhooks`).
        whatif: a loaded surrogate for instant what-if risk maps (:mod:`viewer.whatif`); None: ``/api/risk/whatif``
            answers 404 and the 3D page hides its what-if panel.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={**connect_kwargs(schema), "autocommit": True, "row_factory": dict_row},
            name="viewer",
        )
        pool.open(wait=True, timeout=30.0)
        hub = AlertHub(conninfo=conninfo, schema=schema, pool=pool)
        await hub.start()
        app.state.pool = pool
        app.state.hub = hub
        tasks = [asyncio.create_task(_escalate_forever(pool))] if escalation is not None else []
        if webhooks:
            wake = asyncio.Event()
            senders = [WebhookSender(h, conninfo=conninfo, schema=schema, wake=wake) for h in webhooks]
            app.state.webhook_senders = senders
            tasks += [asyncio.create_task(sender.run()) for sender in senders]
            tasks.append(asyncio.create_task(_wake_on_events(hub, wake)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.drills.close()
            await hub.stop()
            pool.close()

    async def _wake_on_events(hub: AlertHub, wake: asyncio.Event) -> None:
        while True:
            queue = hub.subscribe()
            try:
                while await queue.get() is not None:
                    wake.set()
            finally:
                hub.unsubscribe(queue)

    async def _escalate_forever(pool: ConnectionPool[Any]) -> None:
        assert escalation is not None

        def once() -> int:
            with pool.connection() as conn:
                return len(escalate_due(conn, escalation, now=clock(), schema=schema))

        while True:
            try:
                escalated = await asyncio.to_thread(once)
                if escalated:
                    log.warning("%d unacknowledged alert(s) escalated", escalated)
            except Exception:  # the loop must survive a database outage
                log.exception("escalation check failed; trying again in %.0f s", escalation_interval_s)
            await asyncio.sleep(escalation_interval_s)

    app = FastAPI(
        title="Lifeline Twin",
        summary="城市生命线数字孪生与物联监测 · City lifeline digital twin and IoT monitor",
        version="0.1.0",
        lifespan=lifespan,
    )
    reader = [Depends(require(Permission.READ))]
    app.include_router(sensors.router, dependencies=reader)
    app.include_router(alerts.router)  # the REST route and the websocket check the caller themselves
    app.include_router(twin.router, dependencies=reader)
    app.include_router(scene.router)
    app.include_router(drills.router)
    app.include_router(session.router)
    app.include_router(lifecycle.router)
    app.include_router(dashboard.router)
    app.include_router(risk.router)
    app.include_router(healthcheck.router)
    app.state.auth = auth or Authenticator.open()
    app.state.clock = clock
    app.state.schema = schema
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=True,
        )
    app.state.drills = DrillManager(env=drill_env, demo_city=drill_demo_city, conninfo=conninfo, schema=schema)
    app.state.scene_dir = scene_dir
    app.state.whatif = whatif
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(psycopg.DataError)
    async def bad_data(_request: Request, exc: psycopg.DataError) -> JSONResponse:
        # A value PostgreSQL cannot hold (a NUL character in a text parameter, a number out of range): the
        # request is at fault, not the server.
        log.info("request refused by the database as invalid data: %s", str(exc).splitlines()[0][:200])
        return JSONResponse({"detail": "a parameter holds a value that cannot be used (e.g. a NUL character)"}, 422)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/info", tags=["meta"], summary="What this server is and whether it is a drill")
    def info() -> dict[str, Any]:
        manager: DrillManager = app.state.drills
        pool: ConnectionPool[Any] = app.state.pool
        with pool.connection() as conn:
            drill_networks = in_drill_mode(conn)  # drills of any viewer sharing the store
        return {
            "name": "Lifeline Twin",
            "version": "0.1.0",
            "schema": schema,
            "drill": drill or manager.running() or bool(drill_networks),
            "drill_networks": drill_networks,
            "drills_enabled": manager.enabled,
            "auth_required": app.state.auth.required,
            "whatif": app.state.whatif is not None,
        }

    @app.get("/healthz", tags=["meta"], summary="Liveness and database reachability")
    def healthz() -> JSONResponse:
        pool: ConnectionPool[Any] = app.state.pool
        hub: AlertHub = app.state.hub
        try:
            with pool.connection(timeout=2.0) as conn:
                conn.execute("SELECT 1")
            db_ok = True
        except Exception:
            db_ok = False
        body = {"database": db_ok, "alert_listener": hub.listening.is_set(), "last_event_id": hub.last_id}
        return JSONResponse(body, status_code=200 if db_ok else 503)

    return app
