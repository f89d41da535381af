"""Alerts: the list over REST and the live stream over a websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from twin.store.alerts import list_alerts
from viewer.deps import DbDep, Reader, get_auth, remote_of, token_of
from viewer.hub import AlertHub
from viewer.schemas import AlertPublic, alert_event_from_row

log = logging.getLogger(__name__)
router = APIRouter(tags=["alerts"])

NETWORKS = ("drainage", "water", "gas", "rain")


@router.get("/api/alerts", response_model=list[AlertPublic], summary="Alerts, newest first")
def get_alerts(
    _who: Reader,
    db: DbDep,
    active: Annotated[bool | None, Query(description="only active (true) or only cleared (false)")] = None,
    network: Annotated[str | None, Query(pattern="^(drainage|water|gas|rain)$")] = None,
    min_grade: Annotated[int | None, Query(ge=1, le=4, description="1 = only grade I; 4 = all")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    return list_alerts(db, active=active, network=network, max_grade=min_grade, limit=limit)


@router.websocket("/ws/alerts")
async def alerts_socket(
    websocket: WebSocket,
    after: Annotated[int | None, Query(ge=0, description="resume: send every event after this id first")] = None,
    network: Annotated[str | None, Query()] = None,
    district: Annotated[str | None, Query()] = None,
    min_grade: Annotated[int, Query(ge=1, le=4, description="1 = only grade I; 4 = all")] = 4,
) -> None:
    """Push alert events as JSON: first ``{"type": "hello", "last_event_id": N}``, then one message per event.

    A client that reconnects with ``?after=<last event id it saw>`` receives what it missed, nothing twice.
    """
    hub: AlertHub = websocket.app.state.hub
    auth = get_auth(websocket)
    principal = auth.identify(token_of(websocket))
    if principal is None or auth.limiter.take(f"ws:{remote_of(websocket)}") > 0:
        # Closing before accepting answers the handshake with HTTP 403.
        await websocket.close(code=1008, reason="sign in first (Authorization: Bearer or the session cookie)")
        return
    await websocket.accept()
    if network is not None and network not in NETWORKS:
        await websocket.close(code=1008, reason=f"network must be one of {', '.join(NETWORKS)}")
        return
    queue = hub.subscribe()
    sent = after if after is not None else hub.last_id
    reader = asyncio.create_task(_drain_incoming(websocket))
    try:
        await websocket.send_json({"type": "hello", "last_event_id": hub.last_id})
        if after is not None:
            while True:
                rows = await asyncio.to_thread(hub.fetch_after, sent)
                for row in rows:
                    sent = await _send(websocket, row, sent, network, district, min_grade)
                if len(rows) < 1000:
                    break
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                getter.cancel()
                return
            item = getter.result()
            if item is None:
                await websocket.close(code=1013, reason="too slow or shutting down; reconnect with ?after=")
                return
            sent = await _send(websocket, item, sent, network, district, min_grade)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        hub.unsubscribe(queue)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError):
                await websocket.close()


async def _send(
    ws: WebSocket, row: dict[str, Any], sent: int, network: str | None, district: str | None, min_grade: int
) -> int:
    event_id = int(row["event_id"])
    if event_id <= sent:
        return sent
    if (
        (network is None or row["network"] == network)
        and (district is None or row["district"] == district)
        and row["grade"] <= min_grade
    ):
        await ws.send_text(alert_event_from_row(row).model_dump_json())
    return event_id


async def _drain_incoming(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a closed connection is noticed."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()
