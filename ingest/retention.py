"""Ingest's daily pruning of old raw readings on plain PostgreSQL (:mod:`twin.store.retention`).

A thread with a connection of its own, opened for each run: the first run 10 minutes after start (not in the
start-up's rush), then once a day; a failed run (database away, a statement over ingest's timeout) is tried again
an hour later. Several workers may each run it: the pruner's advisory lock lets one through, the others skip. On a
TimescaleDB schema the thread ends at once: the retention policy does the work there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg

from twin.errors import LifelineError
from twin.store.db import DictConnection
from twin.store.retention import prune_readings
from twin.store.schema import StorageMode

log = logging.getLogger(__name__)

FIRST_RUN_S = 600.0
EVERY_S = 86_400.0
RETRY_S = 3_600.0


class RetentionThread:
    """Prune raw readings older than *keep_days* now and then, until :meth:`close`.

    Args:
        connect: opens a connection to the store (autocommit) and returns it with the schema's storage mode.
        schema: the store's schema.
        keep_days: raw history to keep, days (> 0).
        clock: the current UTC time.
        first_s, every_s, retry_s: when the first run comes after start, the time between runs, and the wait after
            a failed run, seconds (default: :data:`FIRST_RUN_S`, :data:`EVERY_S`, :data:`RETRY_S`).
    """

    def __init__(
        self,
        connect: Callable[[], tuple[DictConnection, StorageMode]],
        *,
        schema: str,
        keep_days: int,
        clock: Callable[[], datetime],
        first_s: float | None = None,
        every_s: float | None = None,
        retry_s: float | None = None,
    ) -> None:
        if keep_days <= 0:
            raise ValueError(f"keep_days must be positive: {keep_days}")
        self._connect = connect
        self.schema = schema
        self.keep = timedelta(days=keep_days)
        self.clock = clock
        self.first_s = FIRST_RUN_S if first_s is None else first_s
        self.every_s = EVERY_S if every_s is None else every_s
        self.retry_s = RETRY_S if retry_s is None else retry_s
        self.runs = 0
        """Runs that completed (deleted something or found nothing to delete)."""
        self.deleted = 0
        """Rows deleted over every run."""
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ingest-retention", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop: a run under way ends after its current slice."""
        self._stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        wait = self.first_s
        while not self._stop.wait(wait):
            wait = self.every_s
            try:
                conn, mode = self._connect()
            except (psycopg.Error, LifelineError) as exc:
                log.warning("raw-reading retention: no database connection (%s); trying again in 1 h", exc)
                wait = self.retry_s
                continue
            try:
                if mode is StorageMode.TIMESCALEDB:
                    log.info("raw-reading retention: TimescaleDB's retention policy applies; nothing for ingest to do")
                    return
                result = prune_readings(conn, schema=self.schema, keep=self.keep, now=self.clock(), stop=self._stop)
                if result.skipped is None and not result.stopped:
                    self.runs += 1
                self.deleted += result.deleted
                if result.skipped:
                    log.info("raw-reading retention: %s", result.skipped)
            except (psycopg.Error, LifelineError) as exc:
                log.warning("raw-reading retention failed (%s); what was deleted stays deleted; again in 1 h", exc)
                wait = self.retry_s
            except Exception:  # a bug must not end the schedule silently: say it, and try again later
                log.exception("raw-reading retention failed unexpectedly; again in 1 h")
                wait = self.retry_s
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
