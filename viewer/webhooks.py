"""Alerts out by webhook, for SMS and messaging gateways: in order, retried until delivered, never twice on purpose.

Each configured URL gets the alert events that pass its filter (event kinds, worst grade) as JSON POSTs, one at a
time in event order. The body is the websocket message (:class:`viewer.schemas.AlertEventPublic`); headers:
``X-Lifeline-Event-Id`` (for the receiver to drop a repeat), ``X-Lifeline-Drill: <drill id>`` for an alert
raised during a drill (the body says ``"drill": true`` too) and, when a secret is set,
``X-Lifeline-Signature: sha256=<HMAC-SHA256 of the body>``.

Delivery: a 2xx answer delivers; anything else (or no answer within ``timeout_s``) is retried with exponential
backoff from ``first_retry_s`` to ``max_retry_s``, for ever — an event is never skipped, so a gateway that is down
for an hour gets the hour's alerts when it returns (each retry is logged). The position (last delivered event id)
is kept per URL in ``webhook_cursor``, so a restart resumes where it stopped; a URL seen for the first time starts
at the newest event, not at the beginning of history. Only one viewer process sends for a URL: it holds a
PostgreSQL advisory lock on it (others wait), so several replicas do not send twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from twin.store.alerts import events_after, last_event_id
from twin.store.db import connect_kwargs
from viewer.schemas import alert_event_from_row

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver.

    Attributes:
        url: where to POST.
        events: event kinds to send (``raised``, ``updated``, ``cleared``, ``escalated``, ``acknowledge``, …).
        max_grade: send alerts of this grade or worse (1 = only I; 4 = all).
        secret: HMAC key for the signature header; None: unsigned.
    """

    url: str
    events: frozenset[str] = frozenset({"raised", "escalated"})
    max_grade: int = 2
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    first_retry_s: float = 1.0
    max_retry_s: float = 300.0

    @property
    def name(self) -> str:
        """The cursor's key: a digest of the URL (so credentials in a URL are not stored)."""
        return "webhook:" + hashlib.sha256(self.url.encode()).hexdigest()[:32]

    def wants(self, row: dict[str, Any]) -> bool:
        return row["event"] in self.events and int(row["grade"]) <= self.max_grade


def signature(secret: str, body: bytes) -> str:
    """The ``X-Lifeline-Signature`` value for *body*."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Deliver alert events to one webhook (see the module docstring). Run :meth:`run` as a task."""

    def __init__(self, hook: Webhook, *, conninfo: str, schema: str, wake: asyncio.Event) -> None:
        self.hook = hook
        self.conninfo = conninfo
        self.schema = schema
        self.wake = wake
        self.delivered = 0
        self.attempts = 0

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, **connect_kwargs(self.schema)
                ) as lock_conn:
                    while not await self._try_lock(lock_conn):
                        await asyncio.sleep(30)  # another viewer sends for this URL
                    delay = 1.0
                    await self._deliver_forever()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("webhook %s: database unavailable (%s); retrying in %.0f s", self._where(), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _try_lock(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.hook.name,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _deliver_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.hook.timeout_s) as client:
            cursor = await asyncio.to_thread(self._load_cursor)
            while True:
                rows = await asyncio.to_thread(self._fetch, cursor)
                for row in rows:
                    if self.hook.wants(row):
                        await self._send(client, row)
                    cursor = int(row["event_id"])
                    await asyncio.to_thread(self._save_cursor, cursor)
                if len(rows) < 200:
                    self.wake.clear()
                    with _suppress_timeout():
                        await asyncio.wait_for(self.wake.wait(), timeout=5.0)

    async def _send(self, client: httpx.AsyncClient, row: dict[str, Any]) -> None:
        body = alert_event_from_row(row).model_dump_json().encode()
        headers = {"Content-Type": "application/json", "X-Lifeline-Event-Id": str(row["event_id"])}
        if row.get("drill_id") is not None:
            headers["X-Lifeline-Drill"] = str(row["drill_id"])  # a gateway can route drill alerts apart
        if self.hook.secret:
            headers["X-Lifeline-Signature"] = signature(self.hook.secret, body)
        wait = self.hook.first_retry_s
        while True:
            self.attempts += 1
            try:
                res = await client.post(self.hook.url, content=body, headers=headers)
                if 200 <= res.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {res.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.error(
                "webhook %s: event %s not delivered (%s); retrying in %.0f s",
                self._where(),
                row["event_id"],
                problem,
                wait,
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.hook.max_retry_s)

    def _where(self) -> str:
        url = httpx.URL(self.hook.url)
        return f"{url.scheme}://{url.host}{url.path}"  # no credentials or query in logs

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row, **connect_kwargs(self.schema))

    def _load_cursor(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT last_event_id FROM webhook_cursor WHERE name = %s", (self.hook.name,)).fetchone()
            if row is not None:
                return int(row["last_event_id"])
            newest = last_event_id(conn)
            conn.execute(
                "INSERT INTO webhook_cursor (name, last_event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (self.hook.name, newest),
            )
            return newest

    def _save_cursor(self, event_id: int) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE webhook_cursor SET last_event_id = %s, updated_at = now() WHERE name = %s",
                (event_id, self.hook.name),
            )

    def _fetch(self, after: int) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return events_after(conn, after_id=after, limit=200)


class _suppress_timeout:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, *_: object) -> bool:
        return et is TimeoutError


def parse_hooks(urls: Sequence[str], *, events: Sequence[str], max_grade: int, secret: str | None) -> list[Webhook]:
    """Build the webhooks from settings (every URL shares the filter and the secret)."""
    hooks = []
    for url in urls:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"webhook URL {parsed.scheme}://{parsed.host}… must be http(s)://host/…")
        hooks.append(Webhook(url, frozenset(events), max_grade, secret))
    return hooks
