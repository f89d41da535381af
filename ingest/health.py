"""A tiny HTTP health endpoint for ingest: ``GET /health`` returns the service's counters as JSON.

The status is 200 while ingest writes straight to the database and 503 otherwise (database away, spooling to disk,
replaying the spool, spool full), so a load balancer or an orchestrator's probe can act on it; the body says why.
It runs in one daemon thread on the standard library's HTTP server and never touches the database itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

log = logging.getLogger(__name__)

HealthReport = Callable[[], tuple[bool, Mapping[str, Any]]]
"""Returns (healthy, JSON-ready body)."""


class HealthServer:
    """Serve ``GET /health`` (and ``GET /``) from *report* in a background thread.

    Args:
        report: called on every request; returns whether ingest is healthy and the body to send.
        host: address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port`).

    Raises:
        OSError: the address cannot be bound (from :meth:`start`).

    Example:
        >>> server = HealthServer(lambda: (True, {"spool_state": "ok"}), port=0)
        >>> server.start(); server.url.startswith("http://127.0.0.1:")
        True
        >>> server.stop()
    """

    def __init__(self, report: HealthReport, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.report = report
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("health server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/health``."""
        return f"http://{self.host}:{self.port}/health"

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        report = self.report

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/", "/health"):
                    self._send(404, {"error": "not found; try /health"})
                    return
                try:
                    healthy, body = report()
                except Exception as exc:  # a probe must get an answer even if the report fails
                    log.exception("health report failed")
                    self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                self._send(200 if healthy else 503, {"healthy": healthy, **body})

            def _send(self, status: int, body: Mapping[str, Any]) -> None:
                data = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health: " + format, *args)

        server = ThreadingHTTPServer((self.host, self._requested_port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ingest-health", daemon=True)
        self._thread.start()
        log.info("ingest health endpoint at %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
