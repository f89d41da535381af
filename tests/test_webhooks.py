"""Alerts out by webhook: filtered, signed, retried until delivered, resumed after a restart without repeats."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from twin.alerts import AlertChange
from twin.store.alerts import apply_change
from twin.store.db import DictConnection
from viewer.app import create_app
from viewer.webhooks import Webhook, signature

from .conftest import serve, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
SECRET = "webhook-test-secret"


class Receiver:
    """A gateway that fails its first *failures* requests with HTTP 503, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= receiver.failures:
                    self.send_response(503)
                else:
                    receiver.accepted.append((dict(self.headers), body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    yield r
    r.server.shutdown()


def _change(event: str, sensor: str, grade: int, at: datetime) -> AlertChange:
    return AlertChange(
        event=event,
        cause_key=f"threshold:{sensor}:high",
        kind="threshold",
        sensor_id=sensor,
        network="drainage",
        district="吉州区",
        grade=grade,
        ts=at,
        value=1.7,
        threshold=1.6,
        message=f"{sensor} 液位超限",
        message_en=f"{sensor} level high",
    )


def _apply(db: DictConnection, schema: str, change: AlertChange) -> None:
    with db.transaction():
        apply_change(db, change, schema=schema)


def test_delivered_once_in_order_after_retries_and_after_a_restart(
    pg_url: str, schema: str, db: DictConnection, receiver: Receiver
) -> None:
    hook = Webhook(receiver.url, max_grade=2, secret=SECRET, first_retry_s=0.1, max_retry_s=0.5)
    _apply(db, schema, _change("raised", "D-L-006", 1, T0))  # before the first start: history, not sent
    app = create_app(conninfo=pg_url, schema=schema, webhooks=[hook], escalation=None)
    with serve(app):
        wait_for(lambda: db.execute("SELECT 1 FROM webhook_cursor").fetchone(), what="the webhook's cursor", timeout=15)
        _apply(db, schema, _change("raised", "D-L-001", 4, T0))  # grade IV: filtered out
        _apply(db, schema, _change("raised", "D-L-002", 2, T0 + timedelta(seconds=1)))  # sent
        _apply(db, schema, _change("raised", "D-L-002", 1, T0 + timedelta(seconds=2)))  # an update: filtered
        wait_for(lambda: receiver.accepted, what="a delivery", timeout=20)
    assert receiver.attempts == 3  # two refusals, then delivered
    [(headers, body)] = receiver.accepted
    assert headers["X-Lifeline-Signature"] == signature(SECRET, body)
    message = json.loads(body)
    assert (message["event"], message["alert"]["sensor_id"]) == ("raised", "D-L-002")
    assert headers["X-Lifeline-Event-Id"] == str(message["event_id"])

    _apply(db, schema, _change("raised", "D-L-003", 1, T0 + timedelta(seconds=3)))  # while the viewer is down
    with serve(create_app(conninfo=pg_url, schema=schema, webhooks=[hook], escalation=None)):
        wait_for(lambda: len(receiver.accepted) == 2, what="the alert raised while the viewer was down", timeout=20)
    sent = [json.loads(b)["alert"]["sensor_id"] for _h, b in receiver.accepted]
    assert sent == ["D-L-002", "D-L-003"]  # nothing repeated, nothing from before the first start
