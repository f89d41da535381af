"""The alert hub: listens for alert events in PostgreSQL and fans them out to websocket clients.

Ingest announces each stored alert event with ``NOTIFY`` (channel per schema, payload = event id). The hub reads
every event after the last one it broadcast, in id order, so a notification lost while the hub was reconnecting
is caught up on the next one (and on reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from twin.store.alerts import events_after, last_event_id
from twin.store.db import alerts_channel

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 2000
"""Events a slow websocket client may fall behind before it is disconnected (it can resume by id)."""


class AlertHub:
    """Fan alert events out to subscribers (asyncio queues), in event-id order."""

    def __init__(self, *, conninfo: str, schema: str, pool: ConnectionPool[psycopg.Connection[dict[str, Any]]]):
        self.conninfo = conninfo
        self.schema = schema
        self.pool = pool
        self.last_id = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(q)

    def fetch_after(self, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Read events after *after_id* from the store (blocking; call in a thread)."""
        with self.pool.connection() as conn:
            return events_after(conn, after_id=after_id, limit=limit)

    async def start(self) -> None:
        def newest() -> int:
            with self.pool.connection() as conn:
                return last_event_id(conn)

        self.last_id = await asyncio.to_thread(newest)
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for q in list(self._subscribers):
            _offer(q, None)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(alerts_channel(self.schema))))
                    self.listening.set()
                    delay = 0.5
                    await self._catch_up()
                    async for _notify in conn.notifies():
                        await self._catch_up()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                log.warning("alert hub lost the database (%s); reconnecting in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _catch_up(self) -> None:
        while True:
            rows = await asyncio.to_thread(self.fetch_after, self.last_id)
            for row in rows:
                self.last_id = max(self.last_id, int(row["event_id"]))
                for q in list(self._subscribers):
                    if not _offer(q, row):
                        self._subscribers.discard(q)
            if len(rows) < 1000:
                return


def _offer(q: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any] | None) -> bool:
    try:
        q.put_nowait(item)
        return True
    except asyncio.QueueFull:
        # Tell the consumer to close; it can resume from its last id.
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)
        return False
