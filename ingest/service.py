"""The ingest service: MQTT in, validated batches into PostgreSQL, detectors run, alerts out.

Delivery contract: messages are subscribed at QoS 1 in a persistent session and acknowledged only after the
batch that holds them is committed (paho's manual acks). A crash before the commit, or between the commit and the
acks, makes the broker deliver the message again; the write is idempotent on ``(sensor_id, ts)``, so every
reading is stored exactly once.

While the database is away (a connection-class error), ingest spools each batch to disk (:mod:`ingest.spool`): its
readings, dead letters and the alert changes the detectors made of it are appended as one record and synced to disk,
and only then are its messages acknowledged, so ingest keeps consuming. Once the database answers again the spool is
replayed in order, one transaction per chunk, a segment file deleted only after its records are committed; new
batches go behind it (into the spool) until it is empty, so each sensor's readings keep their order. A full spool
stops the acknowledgements: the broker keeps the messages (back-pressure) and ingest says so in its log and health.
Without a spool directory the batch is retried with backoff and nothing is acknowledged, so the broker keeps the
messages (bounded by ``receive_maximum`` in flight to us).

Batches are written with a deferred fold (:class:`~twin.store.readings.ReadingStore` ``defer_fold``): each adds its
aggregates to ``readings_pending``, and a fold thread (:class:`_Folder`, a connection of its own) folds them into
the rollups and ``sensor_latest`` at most every ``fold_interval_s`` (also when idle; the writer thread folds at
start-up, for what a crashed run left, and at a clean stop), in a short transaction of its own. A fold that fails
leaves the rows pending for the next one: it never touches the batches' own path (their commit, acknowledgement or
spooling).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import paho.mqtt.client as mqtt
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.gc_tuning import settle_collector
from ingest.health import HealthServer
from ingest.protocol import Decoded, PayloadDecoder, PayloadLimits, PlainBatch
from ingest.retention import RetentionThread
from ingest.spool import (
    DEFAULT_MAX_BYTES,
    Spool,
    SpooledBatch,
    SpoolError,
    SpoolFullError,
    SpoolRecord,
    decode_batch,
    encode_batch,
)
from models.chain import ChainResult, DetectorChain
from models.streaming import StreamDetector
from models.thresholds import state_from_active
from twin.alerts import AlertChange
from twin.errors import LifelineError, PayloadError
from twin.mqtt import BufferedClient, MqttConfig, Publish, connect, make_client
from twin.readings import Reading, ReadingBatch
from twin.sensors import Sensor
from twin.store.alerts import AppliedChange, active_alerts, apply_changes_marked
from twin.store.db import DictConnection
from twin.store.db import connect as db_connect
from twin.store.dead_letter import DeadLetter, digest_of, store_dead_letters
from twin.store.detector_state import load_states, save_states
from twin.store.readings import ReadingStore
from twin.store.schema import StorageMode, current_mode
from twin.store.sensors import load_registry

log = logging.getLogger(__name__)

INITIAL_DELAY = 0.5
"""Seconds before the first retry of a failed database write."""
DELAY_BACKOFF = 2.0
DELAY_JITTER = 0.1
MAX_DELAY = 10.0
STATE_SAVE_S = 30.0
"""The detectors' learned state is stored with a batch at least this often (seconds), and with every batch that
changes an alert, so the alerts a detector believes active always match the stored ones."""
REPLAY_RETRY_MAX_S = 2.0
"""While spooling, the database is tried again at most this many seconds apart (backoff from INITIAL_DELAY)."""
REPLAY_SLICE_S = 1.0
"""The writer replays the spool for about this long (seconds) between two incoming batches, so ingest keeps
accepting messages (into the spool) while it catches up."""
REPLAY_CHUNK_BYTES = 8 << 20
"""Spool records replayed in one transaction, bytes (at least one record)."""
FOLD_LOCK_TIMEOUT_S = 0.5
"""A fold that waits longer for a lock (a rollup row another writer holds, another worker's fold at start or stop)
gives up and is tried again later, so the writer thread is not held from the batches (a fold takes milliseconds)."""
FOLD_RETRY_MAX_S = 30.0
"""After failed folds, the next is tried with backoff (from ``fold_interval_s``) up to this many seconds apart."""
SPOOL_LOG_S = 10.0
"""While not writing straight to the database, the spool's state is logged this often (a full spool at ERROR)."""
DB_CONNECT_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
"""libpq settings added to the connection string unless it sets them: a database that vanishes without closing
the connection (a cut network) is noticed within ~30 s instead of the operating system's minutes."""

DetectorFactory = Callable[[Mapping[str, Sensor]], StreamDetector]


@dataclass(slots=True)
class IngestStats:
    """Counters since start; read them for health checks and logs."""

    messages: int = 0
    readings_stored: int = 0
    readings_duplicate: int = 0
    dead_letters: int = 0
    alert_events: int = 0
    batches: int = 0
    db_errors: int = 0
    last_commit: datetime | None = None
    database_ok: bool = True
    broker_connected: bool = False
    spool_state: str = "off"
    """``off`` (no spool configured), ``ok`` (writing straight to the database), ``spooling`` (database away,
    batches go to disk), ``replaying`` (database back, catching up; new batches still go to disk) or ``full``
    (the spool is at its bound or cannot be written: nothing is acknowledged, the broker keeps the messages)."""
    spool_bytes: int = 0
    """Bytes of spool files on disk."""
    spool_records: int = 0
    """Spooled batches not yet replayed."""
    spool_oldest: datetime | None = None
    """When the oldest batch not yet replayed was spooled (UTC)."""
    readings_spooled: int = 0
    readings_replayed: int = 0
    pending_folded: int = 0
    """``readings_pending`` rows folded into the rollups and ``sensor_latest`` by this worker."""
    last_fold: datetime | None = None
    """When this worker's last fold committed (UTC): rollups and latest values hold every batch committed before
    it began."""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Message(NamedTuple):
    """A received message, already decoded (in paho's network thread, while the writer waits for the database).

    A named tuple: one is made per message, and a frozen dataclass costs ~1 µs more to make.
    """

    mid: int
    qos: int
    generation: int
    decoded: Decoded
    size: int = 0
    """The payload's bytes (what :meth:`IngestService._admit` counts while the message waits in the queue)."""


@dataclass(slots=True)
class _Batch:
    """Messages gathered for one write: plain batches still to convert, readings decoded one by one, refusals.

    :meth:`close` converts the plain batches together (one numpy pass for the whole batch) into ``readings``.
    """

    messages: list[_Message] = field(default_factory=list)
    plains: list[PlainBatch] = field(default_factory=list)
    rows: list[Reading] = field(default_factory=list)
    rejected: list[DeadLetter] = field(default_factory=list)
    size: int = 0
    readings: ReadingBatch = field(default_factory=ReadingBatch.empty)

    def add(self, msg: _Message) -> None:
        decoded = msg.decoded
        self.messages.append(msg)
        plain = decoded.plain
        if plain is not None:
            self.plains.append(plain)
            self.size += len(plain.values)
            return
        readings = decoded.readings
        self.rows.extend(readings)
        self.size += len(readings)
        self.rejected.extend(decoded.rejected)

    def close(self, decoder: PayloadDecoder) -> None:
        columns, slow = decoder.finish(self.plains)
        for decoded in slow:
            self.rows.extend(decoded.readings)
            self.rejected.extend(decoded.rejected)
        self.plains = []
        self.readings = ReadingBatch.concat([columns, ReadingBatch.from_readings(self.rows)]) if self.rows else columns


class _DbWriter:
    """A database connection of its own, with a thread that stores the batches ingest's writer thread hands it.

    PostgreSQL works on one statement per connection at a time; with two writers, two backends take COPY and the
    rollup fold at once while the writer thread collects and judges the next batch. A writer that meets any
    database error hands its batch back (``IngestService._redo``) and drops its connection: the writer thread
    then stores it in order, or spools it, as any other batch.
    """

    def __init__(self, service: IngestService, index: int) -> None:
        self.service = service
        self.jobs: queue.Queue[tuple[_Batch, ChainResult] | None] = queue.Queue(maxsize=1)
        self.conn: DictConnection | None = None
        self.store: ReadingStore | None = None
        self.thread = threading.Thread(target=self._run, name=f"ingest-db-{index}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the thread once it has stored what it holds, and close the connection."""
        self.jobs.put(None)
        self.thread.join(30)
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()

    def _run(self) -> None:
        svc = self.service
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch, detection = job
            if svc._aside_failed.is_set():
                # Another writer just failed: the database is likely away or stalled; this batch would wait out the
                # same statement timeout. Back to the writer thread at once, which spools if it must.
                svc._redo.put((batch, detection))
                svc._writer_done()
                continue
            try:
                inserted = self._write(batch)
            except psycopg.Error as exc:
                log.warning("database writer: %s; the batch goes back to the writer thread", _first_line(exc))
                if self.conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self.conn.close()
                self.conn = None
                svc._aside_failed.set()
                svc._redo.put((batch, detection))
            except Exception:
                log.exception("database writer failed; the batch goes back to the writer thread")
                svc._aside_failed.set()
                svc._redo.put((batch, detection))
            else:
                svc._written_aside(batch, inserted)
            finally:
                svc._writer_done()

    def _write(self, batch: _Batch) -> int:
        svc = self.service
        if self.conn is None or self.conn.closed or self.conn.broken:
            conn, mode = _writer_connection(svc, self.thread.name)
            self.conn, self.store = conn, ReadingStore(conn, mode=mode, defer_fold=svc._defer_fold)
        assert self.store is not None
        if not batch.rejected:
            return self.store.write_alone(batch.readings)
        with self.conn.transaction():
            inserted = self.store.write(batch.readings)
            store_dead_letters(self.conn, batch.rejected)
        return inserted


class _Folder:
    """A thread with a database connection of its own that folds ``readings_pending`` about every
    ``fold_interval_s`` while batches were written since the last fold.

    On the writer thread a fold (40–50 ms every second at 20,000 readings/s) held up the next batch, and with it
    any alert in that batch. Folds take every committed pending row exactly once whichever connection runs them,
    so this one needs no ordering with the writes; the start-up and stop folds stay on the writer thread.
    """

    def __init__(self, service: IngestService) -> None:
        self.service = service
        self.conn: DictConnection | None = None
        self.store: ReadingStore | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ingest-fold", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the thread (a fold under way ends first) and close the connection."""
        self._stop.set()
        self.thread.join(30)
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()

    def _run(self) -> None:
        svc = self.service
        while not self._stop.wait(min(svc._fold_delay, max(svc.fold_interval_s, 0.05))):
            if not (svc._unfolded and svc._defer_fold) or time.monotonic() < svc._fold_due:
                continue
            try:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.conn, mode = _writer_connection(svc, "ingest-fold")
                    self.store = ReadingStore(self.conn, mode=mode, defer_fold=True)
            except psycopg.Error as exc:
                self.conn = None
                svc._fold_failed(exc)
                continue
            svc._fold_on(self.conn, self.store, wait=False)


def _writer_connection(svc: IngestService, name: str) -> tuple[DictConnection, StorageMode]:
    """A connection of ingest's own (autocommit, named for ``pg_stat_activity``, with its statement timeout)."""
    conn = db_connect(_with_connect_defaults(svc.conninfo), schema=svc.schema, autocommit=True)
    # Named, so an operator (and the fault tests) can tell its backend in pg_stat_activity.
    conn.execute("SELECT set_config('application_name', %s, false)", (f"{name} {svc.mqtt_config.client_id}"[:63],))
    if svc.statement_timeout_s > 0:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)", (f"{round(svc.statement_timeout_s * 1000)}ms",)
        )
    mode = svc._mode or current_mode(conn, schema=svc.schema)
    if mode is None:
        conn.close()
        raise psycopg.OperationalError(f"schema {svc.schema!r} is not migrated")
    return conn, mode


class IngestService:
    """Consume sensor messages from MQTT into the store.

    Args:
        conninfo: PostgreSQL connection string.
        schema: the store's schema (already migrated).
        mqtt_config: broker and session settings.
        prefix: topic prefix; the service subscribes to ``{prefix}/#`` (minus ``{prefix}/alerts/#``).
        limits: payload limits.
        batch_max: readings per write at most.
        flush_interval_s: how long a partial batch may wait for more messages, seconds.
        registry_refresh_s: how often the sensor list is re-read from the store, seconds.
        failpoint: ``"crash_after_commit"`` ends the process right after a commit, before the acks (fault tests).
        clock: current UTC time (tests move it).
        detectors: factories of the learned detectors that run after sensor health, thresholds and the per-sensor
            baseline (see :class:`models.chain.DetectorChain`).
        twin_detectors: also run the network detectors the stored twin supports (:mod:`models.registry`).
        state_save_s: how often the detectors' learned state is stored at least, seconds.
        spool_dir: where to spool batches while the database is away (one directory per worker, locked); None:
            no spool, a failed batch is retried and nothing is acknowledged meanwhile.
        spool_max_bytes: bound of the spool on disk, bytes; when reached, messages stay with the broker.
        health_port: serve ``GET /health`` on this port (0: any free one, see :attr:`health_url`); None: no endpoint.
        health_host: address of the health endpoint.
        statement_timeout_s: longest a database statement may take, seconds (0: no limit). A database that is up
            but too slow to answer (locks, overload) then counts as away: batches are spooled and acknowledged, so
            the broker's queue for this worker does not fill up and drop messages.
        db_writers: extra database connections that write batches while the next one is collected and judged,
            so several PostgreSQL backends work at once (0: the writer thread writes every batch itself). Only
            batches that change no alert go this way, and only while the database is up and the spool empty; the
            others wait for them and are written in order as before (see :meth:`_handle`).
        fold_interval_s: batches' aggregates are folded into the rollups and ``sensor_latest`` at most this often,
            seconds, so those are up to about this long behind the readings; 0: each batch folds its own as it is
            written (costs ~3 row upserts per reading with small batches of single readings).
        batch_idle_s: a batch is also closed when no message came for this long, seconds: a lone message (an alarm
            on a quiet stream) is written after this, not after ``flush_interval_s``; a steady stream still fills
            its batches. 0: only ``flush_interval_s`` and ``batch_max`` close a batch.
        live_batch_messages: a batch of at least this many messages is also closed when nothing more is waiting
            (ingest keeps up): at 40,000 messages/s a 25 ms window holds ~1,000 messages, and closing at 500 halves
            the wait at ~1.3 ms of CPU a batch; a backlog still fills batches to ``batch_max``. 0: never early.
        raw_retention_days: on plain PostgreSQL, delete raw readings older than this many days once a day, the
            rollups kept (:mod:`ingest.retention`; TimescaleDB's own policy does it there); 0: keep everything.
        queue_max_bytes: payload bytes decoded ahead of the writer at most; beyond, the network thread waits (the
            broker keeps the rest). 16 MiB: ~5,000 messages of 50 readings, or 200,000 single readings.
        settle_gc: once started, freeze what start-up made out of the garbage collector's walks and make its young
            collections rare (:mod:`ingest.gc_tuning`: 45 % of the CPU at 20,000 messages/s before). For the
            ingest process (``lifeline ingest``, the demo); off by default, as it acts on the whole process.

    Example:
        >>> svc = IngestService(conninfo="postgresql://127.0.0.1/test", schema="lifeline",   # doctest: +SKIP
        ...                     mqtt_config=MqttConfig())
        >>> svc.start(); svc.wait_ready(10); ...; svc.stop()                                   # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        conninfo: str,
        schema: str,
        mqtt_config: MqttConfig,
        prefix: str = "lifeline/v1",
        limits: PayloadLimits | None = None,
        batch_max: int = 5000,
        flush_interval_s: float = 0.025,
        registry_refresh_s: float = 10.0,
        failpoint: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        detectors: Sequence[DetectorFactory] = (),
        twin_detectors: bool = True,
        state_save_s: float = STATE_SAVE_S,
        spool_dir: Path | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
        statement_timeout_s: float = 30.0,
        db_writers: int = 2,
        fold_interval_s: float = 1.0,
        batch_idle_s: float = 0.005,
        live_batch_messages: int = 500,
        settle_gc: bool = False,
        queue_max_bytes: int = 16 * 2**20,
        raw_retention_days: int = 800,
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.mqtt_config = mqtt_config
        self.prefix = prefix.rstrip("/")
        self.limits = limits or PayloadLimits()
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.batch_idle_s = batch_idle_s
        self.live_batch_messages = live_batch_messages
        self.queue_max_bytes = queue_max_bytes
        self.settle_gc = settle_gc
        self.raw_retention_days = raw_retention_days
        self._retention: RetentionThread | None = None
        self.registry_refresh_s = registry_refresh_s
        self.failpoint = failpoint
        self.clock = clock
        self.detector_factories = tuple(detectors)
        self.twin_detectors = twin_detectors
        self.state_save_s = state_save_s
        self.stats = IngestStats()
        self.db_writers = db_writers
        self.fold_interval_s = fold_interval_s
        self._defer_fold = False
        """Whether batches are written with a deferred fold (set on connecting: the schema must have the table)."""
        self._unfolded = False
        """Set when a batch was written since the last fold began (by any thread), so an idle worker folds once."""
        self._fold_due = 0.0
        """When the next fold may run (monotonic seconds)."""
        self._fold_delay = fold_interval_s
        self._fold_logged_at = 0.0
        self._folder: _Folder | None = None
        self._writers: list[_DbWriter] = []
        self._next_writer = 0
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._redo: queue.SimpleQueue[tuple[_Batch, ChainResult]] = queue.SimpleQueue()
        self._aside_failed = threading.Event()
        """Set when a database writer failed: the writers hand back what they hold without trying, until the writer
        thread has stored (or spooled) what came back."""
        self._stats_lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[_Message]] = queue.SimpleQueue()
        self._room = threading.Condition()
        self._queued_bytes = self._queued_peak = 0
        self._carry: list[_Message] = []
        """Messages taken from the queue that did not fit in the last batch (the queue holds lists)."""
        self._stop = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._subscribed = threading.Event()
        """Set once the broker has acknowledged the subscription (SUBACK), not when it is sent: a QoS 1 message that
        reaches the broker before the SUBSCRIBE matches nothing and is dropped (MQTT 5 acknowledges it to its
        publisher as "no matching subscribers")."""
        self._subscribe_mid: int | None = None
        self._generation = 0
        self._conn: DictConnection | None = None
        self._store: ReadingStore | None = None
        self._mode: StorageMode | None = None
        self._decoder: PayloadDecoder | None = None
        self._detector: DetectorChain | None = None
        self._state_saved_at = 0.0
        self._registry_loaded_at = 0.0
        self._registry_digest: str | None = None
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self._spool: Spool | None = None
        self._replay_after = 0.0
        self._replay_delay = INITIAL_DELAY
        self._spool_logged_at = 0.0
        self._unpublished: list[tuple[AppliedChange, AlertChange]] = []
        self._replay_started = 0.0
        self._retry_logged_at = 0.0
        self._replay_readings_at_start = 0
        self.health_port = health_port
        self.health_host = health_host
        self.statement_timeout_s = statement_timeout_s
        self._health: HealthServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool, connect to the database (waiting for it), replay what a previous run spooled, load
        sensors and detector state, then subscribe.

        Raises:
            SpoolError: the spool directory cannot be used (e.g. another process holds it).
            OSError: the health endpoint's address cannot be bound.
        """
        if self.spool_dir is not None:
            self._spool = Spool(self.spool_dir, max_bytes=self.spool_max_bytes)
            self.stats.spool_state = "ok"
            self._update_spool_stats()
            log.info("spool at %s (bound %d bytes)", self.spool_dir, self.spool_max_bytes)
        if self.health_port is not None:
            self._health = HealthServer(self.health, host=self.health_host, port=self.health_port)
            self._health.start()
        self._connect_db_until_ready()
        client = make_client(self.mqtt_config, persistent=True)
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if isinstance(client, BufferedClient):
            client.on_publishes = self._on_publishes
        self._client = client
        connect(client, self.mqtt_config, persistent=True)
        client.loop_start()
        self._writers = [_DbWriter(self, k) for k in range(self.db_writers)]
        self._folder = _Folder(self) if self.fold_interval_s > 0 else None
        if self.raw_retention_days > 0 and self._mode is not StorageMode.TIMESCALEDB:
            self._retention = RetentionThread(
                lambda: _writer_connection(self, "ingest-retention"),
                schema=self.schema,
                keep_days=self.raw_retention_days,
                clock=self.clock,
            )
        self._worker = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._worker.start()
        if self.settle_gc:
            settle_collector()

    @property
    def detectors(self) -> DetectorChain | None:
        """The detectors this service runs (None before it has connected to the database)."""
        return self._detector

    @property
    def health_url(self) -> str | None:
        """URL of the health endpoint, if one was asked for and started."""
        return self._health.url if self._health is not None else None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Return (healthy, counters): healthy while batches go straight into the database."""
        stats = self.stats
        healthy = stats.database_ok and stats.spool_state in ("ok", "off")
        return healthy, stats.as_dict()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged the subscription (messages published from then on reach
        ingest); return False on timeout."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then disconnect. Messages not yet written stay with the broker.

        A second call (a signal handler and :meth:`run_forever` both stop) does nothing.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._retention is not None:
            self._retention.close()
        if self._worker is not None:
            self._worker.join(timeout)
            if not self._worker.is_alive():
                # The writers have stored what they held: what is pending goes into the rollups now, not at the
                # next start.
                self._fold_safely(wait=True)
                self._save_states_safely()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._conn is not None:
            self._conn.close()
        if self._spool is not None and not (self._worker is not None and self._worker.is_alive()):
            self._spool.close()
        if self._health is not None:
            self._health.stop()
        log.info("ingest stopped: %s", self.stats.as_dict())

    def run_forever(self) -> None:
        """Start and block until :meth:`stop` is called from another thread or KeyboardInterrupt."""
        self.start()
        try:
            # Short waits: a SIGTERM the kernel gave another thread (a process resumed after SIGSTOP) is only handled
            # when the main thread runs again, which a 30 s wait put off past a supervisor's stop timeout.
            logged = time.monotonic()
            while not self._stop.wait(1.0):
                if time.monotonic() - logged >= 30.0:
                    logged = time.monotonic()
                    log.info("ingest: %s", self.stats.as_dict())
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- MQTT callbacks (paho's network thread) ---------------------------------------------------------------

    @property
    def subscription(self) -> str:
        topic = f"{self.prefix}/#"
        group = self.mqtt_config.shared_group
        return f"$share/{group}/{topic}" if group else topic

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.mqtt_config.url, reason)
            return
        self._generation += 1
        self.stats.broker_connected = True
        # Subscribe on every connect: a broker that lost our session must learn the subscription again. Ready (and
        # "subscribed to" in the log, which the fault tests wait for) only on the SUBACK: the SUBSCRIBE is merely
        # queued here, and what is published before the broker has it goes to nobody.
        _rc, self._subscribe_mid = client.subscribe(self.subscription, qos=1)
        log.info("connected to %s, subscribing to %s", self.mqtt_config.url, self.subscription)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, reasons: Any, _p: object = None) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            log.error("broker %s refused the subscription to %s: %s", self.mqtt_config.url, self.subscription, refused)
            return
        log.info("subscribed to %s", self.subscription)
        self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        self.stats.broker_connected = False
        if not self._stop.is_set():
            log.warning("disconnected from %s (%s); reconnecting", self.mqtt_config.url, reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg._topic.decode("utf-8", "replace")
        if topic.startswith(self.prefix + "/alerts/"):
            # Our own output (and other workers'): not sensor data.
            if msg.qos:
                self._client.ack(msg.mid, msg.qos)  # type: ignore[union-attr]
            return
        decoder = self._decoder
        assert decoder is not None  # made before the client connects
        payload = msg.payload
        decoded = decoder.decode(topic, bytes(payload), defer=True)
        self._admit(len(payload))
        self._queue.put([_Message(msg.mid, msg.qos, self._generation, decoded, len(payload))])

    def _on_publishes(self, publishes: list[Publish]) -> None:
        """The messages of one socket read, cut out by :class:`~twin.mqtt.BufferedClient`: decoded, queued as one."""
        own = self.prefix + "/alerts/"
        decode = self._decoder.decode  # type: ignore[union-attr]  # made before the client connects
        generation = self._generation
        out: list[_Message] = []
        for topic_bytes, payload, mid, qos in publishes:
            topic = topic_bytes.decode("utf-8", "replace")
            if topic.startswith(own):
                if qos:
                    self._client.ack(mid, qos)  # type: ignore[union-attr]
                continue
            out.append(_Message(mid, qos, generation, decode(topic, payload, defer=True), len(payload)))
        if out:
            self._admit(sum(m.size for m in out))
            self._queue.put(out)

    def _admit(self, size: int) -> None:
        """Count *size* payload bytes into the queue, first waiting (in paho's network thread) while it holds more
        than ``queue_max_bytes``.

        The broker keeps at most ``receive_maximum`` messages unacknowledged, but draining a backlog of 50-reading
        messages the queue still grew to ~1,300 reads (~100,000 messages, 580 MB decoded). While the network thread
        waits it reads nothing more: the socket and then the broker hold the rest, and the acknowledgements of what
        is written go out as soon as it reads again.
        """
        with self._room:
            while self._queued_bytes > self.queue_max_bytes and not self._stop.is_set():
                self._room.wait(0.1)
            self._queued_bytes += size
            self._queued_peak = max(self._queued_peak, self._queued_bytes)

    def _taken(self, size: int) -> None:
        """The writer took messages of *size* payload bytes out of the queue."""
        if size:
            with self._room:
                self._queued_bytes -= size
                self._room.notify_all()

    # -- the writer thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        if self._unpublished:
            self._publish_alerts([])
        while True:
            if not self._redo.empty():
                self._wait_for_writers()
            if self._spool is not None and not self._spool.empty:
                self._replay_when_due()
                self._log_spool_now_and_then()
            batch = self._collect()
            if batch is None:
                self._wait_for_writers()
                for writer in self._writers:
                    writer.close()
                if self._folder is not None:
                    self._folder.close()
                return
            if batch.messages:
                self._handle(batch)
            elif self._writing_direct() and time.monotonic() - self._registry_loaded_at > self.registry_refresh_s:
                self._refresh_registry_safely()
            if self._folder is None and self._unfolded and time.monotonic() >= self._fold_due:
                self._fold_safely(wait=False)

    def _writing_direct(self) -> bool:
        return self.stats.database_ok and (self._spool is None or self._spool.empty)

    def _collect(self) -> _Batch | None:
        """Gather messages until batch_max readings, flush_interval after the first, batch_idle_s without a
        message, or live_batch_messages with nothing more waiting; None once stopping."""
        pending = self._carry
        if not pending:
            try:
                pending = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return None
                return _Batch()
        if self._writing_direct() and time.monotonic() - self._registry_loaded_at > self.registry_refresh_s:
            self._refresh_registry_safely()
        batch = _Batch()
        deadline = time.monotonic() + self.flush_interval_s
        # The broker sends at most receive_maximum unacknowledged messages (MQTT 5; with MQTT 3.1.1 the broker's
        # max_inflight_messages, which should be set to the same). A batch takes at most half of them, so the
        # broker goes on sending (and the network thread decoding) while this batch is written.
        max_messages = max(1, self.mqtt_config.receive_maximum // 2)
        while True:
            taken = taken_bytes = 0
            for msg in pending:
                if batch.messages and (batch.size >= self.batch_max or len(batch.messages) >= max_messages):
                    break
                batch.add(msg)
                taken += 1
                taken_bytes += msg.size
            self._taken(taken_bytes)
            if taken < len(pending):
                self._carry = pending[taken:]
                break
            self._carry = []
            if batch.size >= self.batch_max or len(batch.messages) >= max_messages:
                break
            if 0 < self.live_batch_messages <= len(batch.messages) and self._queue.empty():
                break  # keeping up: write what there is rather than wait out the window
            remaining = deadline - time.monotonic()
            if self.batch_idle_s > 0:
                remaining = min(remaining, self.batch_idle_s)
            try:
                pending = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
        decoder = self._decoder
        assert decoder is not None
        batch.close(decoder)
        return batch

    def _handle(self, batch: _Batch) -> None:
        """Store *batch* (in the database, or in the spool while the database is away or the spool holds
        anything), then acknowledge it; keep trying, without acknowledging, until one of them takes it."""
        detector = self._detector
        assert detector is not None
        # The detectors change nothing until commit, so one evaluation serves every attempt.
        detection = detector.evaluate(batch.readings, now=self.clock())
        if self._may_write_aside(detection):
            # Nothing here changes an alert: the detectors adopt their state now (the batch is stored or spooled
            # before ingest stops: a writer that fails hands it back), and a database writer stores it while the
            # next batch is collected and judged.
            detector.commit(detection)
            self._write_aside(batch, detection)
            return
        # In order: what the database writers hold is stored first, and what they handed back.
        self._wait_for_writers()
        self._store_in_order(batch, detection, committed=False)

    def _store_in_order(self, batch: _Batch, detection: ChainResult, *, committed: bool) -> None:
        """Store *batch* on this thread's connection (or spool it), retrying until one takes it; then ack it.

        ``committed``: the detectors adopted *detection* already (a batch a database writer handed back).
        """
        delay = INITIAL_DELAY
        while True:
            if self._spool is None or self._spool.empty:
                try:
                    if self._conn is None or self._conn.closed or self._conn.broken:
                        self._drop_connection()
                        self._open_db()
                    changes = self._write(batch, detection, committed=committed)
                except psycopg.Error as exc:
                    connection_lost = _is_connection_error(exc, self._conn)
                    spooling = self._spool is not None and connection_lost
                    self._note_db_error(
                        exc, batch, "spooling them to disk" if spooling else f"retrying in {delay:.1f} s"
                    )
                    if spooling:
                        self._drop_connection()
                    else:
                        if self._stop.is_set():
                            log.error("stopping: %d messages left unacknowledged with the broker", len(batch.messages))
                            return
                        time.sleep(delay * (1 + random.uniform(-DELAY_JITTER, DELAY_JITTER)))
                        delay = min(delay * DELAY_BACKOFF, MAX_DELAY)
                        self._drop_connection()
                        continue
                else:
                    if self.failpoint == "crash_after_commit":
                        log.critical(
                            "failpoint crash_after_commit: exiting before acknowledging %d messages",
                            len(batch.messages),
                        )
                        os._exit(70)
                    self._ack(batch)
                    self._publish_alerts(changes)
                    return
            if self._spool_batch(batch, detection, committed=committed):
                return
            # The spool cannot take it: hold the batch unacknowledged (the broker keeps the rest) until the
            # database comes back and the spool drains.
            if self._stop.is_set():
                log.error("stopping: %d messages left unacknowledged with the broker", len(batch.messages))
                return
            time.sleep(delay * (1 + random.uniform(-DELAY_JITTER, DELAY_JITTER)))
            delay = min(delay * DELAY_BACKOFF, REPLAY_RETRY_MAX_S)
            if self._spool is not None and not self._spool.empty:
                self._replay_when_due()

    # -- database writers -----------------------------------------------------------------------------------

    def _may_write_aside(self, detection: ChainResult) -> bool:
        """Whether a database writer may store this batch: one is configured, the database is up and the spool
        empty, the batch changes no alert, the detectors' state is not due to be stored, nothing was handed back."""
        return (
            bool(self._writers)
            and not detection.changes
            and self.failpoint is None
            and self._writing_direct()
            and time.monotonic() - self._state_saved_at <= self.state_save_s
            and self._redo.empty()
            and not self._aside_failed.is_set()
        )

    def _write_aside(self, batch: _Batch, detection: ChainResult) -> None:
        writer = self._writers[self._next_writer % len(self._writers)]
        self._next_writer += 1
        with self._in_flight_changed:
            self._in_flight += 1
        writer.jobs.put((batch, detection))  # blocks while that writer holds one waiting already

    def _wait_for_writers(self) -> None:
        """Wait until the database writers have stored what they hold; store what they handed back, in order."""
        with self._in_flight_changed:
            while self._in_flight:
                self._in_flight_changed.wait(0.5)
        while not self._redo.empty():
            batch, detection = self._redo.get()
            self._store_in_order(batch, detection, committed=True)
        self._aside_failed.clear()

    def _written_aside(self, batch: _Batch, inserted: int) -> None:
        """Account for a batch a database writer stored, and acknowledge it."""
        if inserted and self._defer_fold:
            self._unfolded = True
        self._ack(batch)
        with self._stats_lock:
            stats = self.stats
            stats.database_ok = True
            stats.batches += 1
            stats.messages += len(batch.messages)
            stats.readings_stored += inserted
            stats.readings_duplicate += len(batch.readings) - inserted
            stats.dead_letters += len(batch.rejected)
            stats.last_commit = datetime.now(UTC)
        if len(batch.readings) != inserted:
            log.info("batch: %d readings stored, %d duplicates ignored", inserted, len(batch.readings) - inserted)
        for letter in batch.rejected[:5]:
            log.warning("dead letter from %s: %s (%s)", letter.topic[:120], letter.reason, letter.detail[:200])

    def _writer_done(self) -> None:
        with self._in_flight_changed:
            self._in_flight -= 1
            self._in_flight_changed.notify_all()

    def _note_db_error(self, exc: psycopg.Error, batch: _Batch, action: str) -> None:
        self.stats.db_errors += 1
        self.stats.database_ok = False
        log.error(
            "database write failed (%s); %d messages kept unacknowledged, %s",
            _first_line(exc),
            len(batch.messages),
            action,
        )

    def _write(
        self, batch: _Batch, detection: ChainResult, *, committed: bool
    ) -> list[tuple[AppliedChange, AlertChange]]:
        conn, store, detector = self._conn, self._store, self._detector
        if conn is None or store is None or detector is None:
            raise psycopg.OperationalError("no database connection")
        readings = batch.readings
        published: list[tuple[AppliedChange, AlertChange]] = []
        with conn.transaction():
            inserted = store.write(readings)
            store_dead_letters(conn, batch.rejected)
            events = apply_changes_marked(conn, detection.changes, schema=self.schema)
            published.extend(
                (applied, change)
                for applied, change in zip(events, detection.changes, strict=True)
                if applied is not None
            )
        self._unfolded = self._unfolded or (inserted > 0 and store.defer_fold)
        if not committed:
            detector.commit(detection)
        if time.monotonic() - self._state_saved_at > self.state_save_s:
            self._save_states_safely()
            self._state_saved_at = time.monotonic()
        elif detection.changes:
            # The detectors that changed an alert store their state now, so what they believe active matches
            # the alerts table (a crash in between leaves them one batch behind: a re-raised alert updates the
            # stored one, a stale clear changes nothing).
            self._save_states_safely(detection.changed)
        stats = self.stats
        stats.database_ok = True
        stats.batches += 1
        stats.messages += len(batch.messages)
        stats.readings_stored += inserted
        stats.readings_duplicate += len(readings) - inserted
        stats.dead_letters += len(batch.rejected)
        stats.alert_events += len(published)
        stats.last_commit = datetime.now(UTC)
        if len(readings) != inserted:
            log.info("batch: %d readings stored, %d duplicates ignored", inserted, len(readings) - inserted)
        for letter in batch.rejected[:5]:
            log.warning("dead letter from %s: %s (%s)", letter.topic[:120], letter.reason, letter.detail[:200])
        return published

    # -- the spool ------------------------------------------------------------------------------------------

    def _spool_batch(self, batch: _Batch, detection: ChainResult, *, committed: bool) -> bool:
        """Append *batch* and its alert changes to the spool, durably, then acknowledge it; False if it did not fit."""
        spool, detector = self._spool, self._detector
        assert spool is not None and detector is not None
        record = encode_batch(SpooledBatch(batch.readings, batch.rejected, detection.changes))
        try:
            spool.append(record)
        except SpoolError as exc:
            first = self.stats.spool_state != "full"
            self.stats.spool_state = "full"
            self._update_spool_stats()
            if first or time.monotonic() - self._spool_logged_at > SPOOL_LOG_S:
                self._spool_logged_at = time.monotonic()
                log.error(
                    "SPOOL FULL: %s; %d messages (and what follows) stay unacknowledged with the broker until the"
                    " database takes the spool (%d batches, %d bytes, oldest %s)",
                    exc if isinstance(exc, SpoolFullError) else f"cannot write the spool: {exc}",
                    len(batch.messages),
                    self.stats.spool_records,
                    self.stats.spool_bytes,
                    _iso(self.stats.spool_oldest),
                )
            return False
        # The batch is durable: the detectors adopt what they concluded, as after a commit.
        if not committed:
            detector.commit(detection)
        stats = self.stats
        if stats.spool_state in ("ok", "full"):
            log.warning(
                "database unavailable: spooling batches to %s (bound %d bytes); they are replayed when it returns",
                spool.directory,
                spool.max_bytes,
            )
        stats.spool_state = "replaying" if stats.database_ok else "spooling"
        stats.messages += len(batch.messages)
        stats.readings_spooled += len(batch.readings)
        self._update_spool_stats()
        if self.failpoint == "crash_after_spool":
            log.critical("failpoint crash_after_spool: exiting before acknowledging %d messages", len(batch.messages))
            os._exit(71)
        self._ack(batch)
        return True

    def _replay_when_due(self) -> None:
        """Try the database (with backoff) and, if it answers, replay the spool for about REPLAY_SLICE_S."""
        if time.monotonic() < self._replay_after:
            return
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop_connection()
                self._open_db()
            self._replay(budget_s=REPLAY_SLICE_S)
        except psycopg.Error as exc:
            self.stats.db_errors += 1
            self.stats.database_ok = False
            if self.stats.spool_state == "replaying":
                self.stats.spool_state = "spooling"
            self._drop_connection()
            self._replay_after = time.monotonic() + self._replay_delay * (1 + random.uniform(0, DELAY_JITTER))
            if time.monotonic() - self._retry_logged_at > SPOOL_LOG_S:
                self._retry_logged_at = time.monotonic()
                log.warning(
                    "database still unavailable (%s); trying every %.0f s", _first_line(exc), REPLAY_RETRY_MAX_S
                )
            self._replay_delay = min(self._replay_delay * DELAY_BACKOFF, REPLAY_RETRY_MAX_S)
            return
        self._replay_delay = INITIAL_DELAY

    def _replay(self, *, budget_s: float) -> None:
        """Replay spooled batches in order, one transaction per chunk, for about *budget_s* seconds or until empty.

        Raises:
            psycopg.Error: the database failed; what was committed before stays replayed.
        """
        spool = self._spool
        assert spool is not None
        stats = self.stats
        started = time.monotonic()
        logged = started
        if stats.spool_state != "replaying":
            status = spool.status()
            log.warning(
                "database available: replaying the spool (%d batches, %d bytes, oldest %s)",
                status.records,
                status.bytes,
                _iso(status.oldest),
            )
            self._replay_started = started
            self._replay_readings_at_start = stats.readings_replayed
        stats.spool_state = "replaying"
        while not spool.empty:
            records = spool.pending(max_bytes=REPLAY_CHUNK_BYTES)
            published = self._replay_records(records)
            spool.mark_replayed(records)
            stats.database_ok = True
            stats.last_commit = datetime.now(UTC)
            self._update_spool_stats()
            self._publish_alerts(published)
            now = time.monotonic()
            if now - logged > SPOOL_LOG_S:
                logged = now
                log.info(
                    "replaying the spool: %d batches (%d bytes) left, oldest %s",
                    stats.spool_records,
                    stats.spool_bytes,
                    _iso(stats.spool_oldest),
                )
            if now - started > budget_s:
                return
        seconds = time.monotonic() - self._replay_started
        log.warning(
            "spool replayed: %d readings in %.1f s; writing straight to the database again",
            stats.readings_replayed - self._replay_readings_at_start,
            seconds,
        )
        stats.spool_state = "ok"
        self._save_states_safely()
        self._state_saved_at = time.monotonic()

    def _replay_records(self, records: Sequence[SpoolRecord]) -> list[tuple[AppliedChange, AlertChange]]:
        """Write the batches of *records* in one transaction; return the alert events made."""
        conn, store = self._conn, self._store
        if conn is None or store is None:
            raise psycopg.OperationalError("no database connection")
        readings: list[Reading] = []
        letters: list[DeadLetter] = []
        changes: list[AlertChange] = []
        for record in records:
            try:
                batch = decode_batch(record.payload)
            except PayloadError as exc:
                # Its checksum held, so the bytes are what was written: keep them where people look.
                log.error(
                    "spool record %d:%d cannot be read (%s): stored as a dead letter", record.segment, record.index, exc
                )
                letters.append(_spool_dead_letter(record, exc, self.limits.dead_letter_max_raw_bytes))
                continue
            readings.extend(batch.readings)
            letters.extend(batch.dead_letters)
            changes.extend(batch.changes)
        published: list[tuple[AppliedChange, AlertChange]] = []
        repeated = 0
        with conn.transaction():
            inserted = store.write([(r.sensor_id, r.ts, r.value, r.quality) for r in readings])
            store_dead_letters(conn, letters)
            fresh = []
            for change in changes:
                if _already_stored(conn, change):
                    repeated += 1
                else:
                    fresh.append(change)
            events = apply_changes_marked(conn, fresh, schema=self.schema)
            published.extend(
                (applied, change) for applied, change in zip(events, fresh, strict=True) if applied is not None
            )
        self._unfolded = self._unfolded or (inserted > 0 and store.defer_fold)
        stats = self.stats
        stats.batches += len(records)
        stats.readings_stored += inserted
        stats.readings_duplicate += len(readings) - inserted
        stats.readings_replayed += len(readings)
        stats.dead_letters += len(letters)
        stats.alert_events += len(published)
        if len(readings) != inserted or repeated:
            log.info(
                "spool replay: %d readings stored, %d duplicates ignored, %d alert changes already stored",
                inserted,
                len(readings) - inserted,
                repeated,
            )
        return published

    def _update_spool_stats(self) -> None:
        if self._spool is None:
            return
        status = self._spool.status()
        self.stats.spool_bytes = status.bytes
        self.stats.spool_records = status.records
        self.stats.spool_oldest = status.oldest

    def _log_spool_now_and_then(self) -> None:
        if time.monotonic() - self._spool_logged_at < SPOOL_LOG_S:
            return
        self._spool_logged_at = time.monotonic()
        stats = self.stats
        log.warning(
            "spool state %s: %d batches, %d bytes (bound %d), oldest %s",
            stats.spool_state,
            stats.spool_records,
            stats.spool_bytes,
            self.spool_max_bytes,
            _iso(stats.spool_oldest),
        )

    def _ack(self, batch: _Batch) -> None:
        client = self._client
        assert client is not None
        generation = self._generation
        # A message from an earlier connection is redelivered on this one; acking its old id could acknowledge an
        # unrelated message, so leave it to the redelivery.
        mids = [msg.mid for msg in batch.messages if msg.qos == 1 and msg.generation == generation]
        if isinstance(client, BufferedClient):
            client.ack_many(mids)
        else:
            for mid in mids:
                client.ack(mid, 1)

    def _publish_alerts(self, changes: list[tuple[AppliedChange, AlertChange]]) -> None:
        client = self._client
        if client is None:
            # Replayed at start, before the MQTT client exists: published once it does.
            self._unpublished.extend(changes)
            return
        if self._unpublished:
            changes = [*self._unpublished, *changes]
            self._unpublished = []
        for applied, change in changes:
            topic = f"{self.prefix}/alerts/{change.network}/{change.sensor_id or change.kind}"
            payload = orjson.dumps(
                {
                    "event_id": applied.event_id,
                    "drill_id": applied.drill_id,
                    "drill": applied.drill_id is not None,
                    "event": change.event,
                    "cause_key": change.cause_key,
                    "kind": change.kind,
                    "sensor_id": change.sensor_id,
                    "network": change.network,
                    "district": change.district,
                    "grade": change.grade,
                    "ts": change.ts.isoformat(),
                    "value": change.value,
                    "threshold": change.threshold,
                    "message": change.message,
                    "message_en": change.message_en,
                }
            )
            client.publish(topic, payload, qos=1)

    # -- database connection ----------------------------------------------------------------------------------

    def _connect_db_until_ready(self) -> None:
        delay = INITIAL_DELAY
        while True:
            try:
                self._open_db()
                return
            except psycopg.OperationalError as exc:
                self._drop_connection()
                if self._stop.is_set():
                    raise
                log.error("database not reachable (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                time.sleep(delay)
                delay = min(delay * DELAY_BACKOFF, MAX_DELAY)

    def _open_db(self) -> None:
        conn = db_connect(_with_connect_defaults(self.conninfo), schema=self.schema, autocommit=True)
        if self.statement_timeout_s > 0:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (f"{round(self.statement_timeout_s * 1000)}ms",)
            )
        mode = current_mode(conn, schema=self.schema)
        if mode is None:
            conn.close()
            raise psycopg.OperationalError(f"schema {self.schema!r} is not migrated; run 'lifeline db migrate'")
        self._conn, self._mode = conn, mode
        self._defer_fold = self.fold_interval_s > 0 and _has_pending_table(conn)
        self._store = ReadingStore(conn, mode=mode, defer_fold=self._defer_fold)
        if self._detector is None and self._spool is not None and not self._spool.empty:
            # What a previous run spooled goes in first: the detectors rebuild their state from the stored alerts.
            log.warning("replaying the spool left by a previous run before consuming")
            self._replay(budget_s=math.inf)
        # What a run that crashed between a commit and its fold left pending (and what was just replayed): the
        # detectors start from sensor_latest.
        self._fold_safely(wait=True)
        self._load_registry()

    def _fold_safely(self, *, wait: bool) -> None:
        """Fold what is pending on this thread's connection (see :meth:`_fold_on`)."""
        self._fold_on(self._conn, self._store, wait=wait)

    def _fold_on(self, conn: DictConnection | None, store: ReadingStore | None, *, wait: bool) -> None:
        """Fold what is pending on *conn*; a failure is logged and the next fold catches up.

        ``wait``: wait for another worker's fold to end (start and stop); otherwise skip when one is running
        (the next fold, within ``fold_interval_s``, takes what it left).
        """
        if not self._defer_fold or conn is None or store is None or conn.closed or conn.broken:
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return  # not between transactions (cannot happen on the writer thread; be safe on others)
        self._unfolded = False
        started = time.monotonic()
        try:
            folded = store.fold_pending(wait=wait, lock_timeout_s=FOLD_LOCK_TIMEOUT_S)
        except psycopg.Error as exc:
            self._fold_failed(exc)
            return
        self._fold_delay = self.fold_interval_s
        self._fold_due = time.monotonic() + self.fold_interval_s
        if folded is None:
            self._unfolded = True  # another worker was folding: ours may have begun after it, so try again later
            return
        self.stats.pending_folded += folded
        self.stats.last_fold = datetime.now(UTC)
        if time.monotonic() - started > 1.0:
            log.info("fold of %d pending rows took %.1f s", folded, time.monotonic() - started)

    def _fold_failed(self, exc: psycopg.Error) -> None:
        """A fold was rolled back (or could not connect): the rows stay pending. Tried again with backoff, so a
        fold that keeps waiting out its lock timeout takes little time."""
        self._unfolded = True
        self._fold_delay = min(max(self._fold_delay * DELAY_BACKOFF, self.fold_interval_s), FOLD_RETRY_MAX_S)
        self._fold_due = time.monotonic() + self._fold_delay
        if time.monotonic() - self._fold_logged_at > SPOOL_LOG_S:
            self._fold_logged_at = time.monotonic()
            log.warning(
                "could not fold the pending aggregates (tried again in %.1f s): %s",
                self._fold_delay,
                _first_line(exc),
            )

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _load_registry(self) -> None:
        conn = self._conn
        assert conn is not None
        row = conn.execute(
            "SELECT md5(string_agg(s::text, ',' ORDER BY sensor_id)) AS digest FROM sensors s"
        ).fetchone()
        digest = row["digest"] if row else None
        if self._detector is not None and self._decoder is not None and digest == self._registry_digest:
            # Unchanged since the last read: building the registry and the detectors' constants again costs
            # more than the query that tells.
            self._registry_loaded_at = time.monotonic()
            return
        self._registry_digest = digest
        registry = load_registry(conn)
        if self._detector is None:
            rows = conn.execute("SELECT sensor_id, ts FROM sensor_latest").fetchall()
            state = state_from_active(active_alerts(conn), {r["sensor_id"]: r["ts"] for r in rows})
            extra = [*self.detector_factories, *(self._twin_factories(conn) if self.twin_detectors else [])]
            chain = DetectorChain.default(registry, threshold_state=state, extra=extra)
            prefix = self._state_prefix()
            stored = {k[len(prefix) :]: v for k, v in load_states(conn).items() if k.startswith(prefix)}
            restored = chain.load_states(stored)
            log.info(
                "detectors: %s; learned state restored for: %s",
                ", ".join(d.name for d in chain.detectors),
                ", ".join(restored) or "none (they learn from the data)",
            )
            self._detector = chain
            self._state_saved_at = time.monotonic()
        else:
            self._detector.update_sensors(registry)
        if self._decoder is None:
            self._decoder = PayloadDecoder(sensors=registry, prefix=self.prefix, limits=self.limits, clock=self.clock)
        else:
            self._decoder.sensors = registry
        self._registry_loaded_at = time.monotonic()
        log.debug("loaded %d sensors", len(registry))

    def _twin_factories(self, conn: DictConnection) -> list[DetectorFactory]:
        """The network detectors for the stored twin; none (with a warning) if it cannot be loaded."""
        from models.registry import learned_detectors
        from models.zones import ZoneDetector, load_latest
        from twin.store.assets import load_city

        try:
            city = load_city(conn)
        except (psycopg.Error, LifelineError, ValueError, KeyError) as exc:
            log.warning("twin not loaded (%s): only the per-sensor detectors run", exc)
            return []
        factories = learned_detectors(city) if city.networks else []
        if not city.networks:
            log.info("no twin stored ('lifeline twin import …'): no network detectors")
        try:
            zone_models = load_latest(conn)
        except (psycopg.Error, LifelineError, ValueError) as exc:
            log.warning("zone models not loaded (%s): they do not run", exc)
            zone_models = {}
        if zone_models:
            log.info("zone models: %s", ", ".join(f"{z} v{v}" for z, (v, _d) in sorted(zone_models.items())))
            factories.append(lambda sensors: ZoneDetector(sensors, zone_models))
        return factories

    def _state_prefix(self) -> str:
        """Stored detector states are per worker: with a shared subscription each worker sees part of the stream."""
        return f"{self.mqtt_config.client_id}/"

    def _state_keys(self, states: Mapping[str, Any]) -> dict[str, Any]:
        prefix = self._state_prefix()
        return {prefix + name: state for name, state in states.items()}

    def _save_states_safely(self, names: Sequence[str] | None = None) -> None:
        """Store the detectors' state (of *names*, or all); a failure is logged, the next save catches up."""
        if self._conn is None or self._detector is None:
            return
        try:
            with self._conn.transaction():
                save_states(self._conn, self._state_keys(self._detector.dump_states(names)))
        except psycopg.Error as exc:
            log.warning("could not store the detectors' state: %s", exc)

    def _refresh_registry_safely(self) -> None:
        try:
            self._load_registry()
        except (psycopg.Error, AssertionError) as exc:
            self._registry_loaded_at = time.monotonic()
            log.warning("could not refresh the sensor list: %s", exc)


def _is_connection_error(exc: psycopg.Error, conn: DictConnection | None) -> bool:
    """True for errors that mean the database cannot be reached or used now (worth spooling), not a bad batch."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return conn is None or conn.closed or conn.broken


def _already_stored(conn: DictConnection, change: AlertChange) -> bool:
    """True if *change* is already in ``alert_events`` (a replay of a batch whose commit did happen)."""
    events = ["raised", "updated"] if change.event == "raised" else [change.event]
    row = conn.execute(
        """SELECT 1 FROM alert_events e JOIN alerts a ON a.id = e.alert_id
           WHERE a.cause_key = %s AND e.ts = %s AND e.event = ANY(%s)
             AND (%s OR e.grade = %s) AND e.value IS NOT DISTINCT FROM %s LIMIT 1""",
        (change.cause_key, change.ts, events, change.event == "cleared", change.grade, change.value),
    ).fetchone()
    return row is not None


def _spool_dead_letter(record: SpoolRecord, exc: Exception, max_raw: int) -> DeadLetter:
    topic = f"spool/{record.segment}/{record.index}"
    return DeadLetter(
        topic=topic,
        raw=record.payload[:max_raw],
        raw_size=len(record.payload),
        digest=digest_of(topic, record.payload),
        item_index=-1,
        reason="spool_record",
        detail=str(exc)[:500],
    )


def _has_pending_table(conn: DictConnection) -> bool:
    """Whether the schema has ``readings_pending`` (migration 10); without it batches fold as they are written."""
    row = conn.execute("SELECT to_regclass('readings_pending') IS NOT NULL AS ok").fetchone()
    if not (row and row["ok"]):
        log.warning("schema has no readings_pending table ('lifeline db migrate'): batches fold as they are written")
        return False
    return True


def _with_connect_defaults(conninfo: str) -> str:
    """Return *conninfo* with :data:`DB_CONNECT_DEFAULTS` added where it does not set them."""
    given = conninfo_to_dict(conninfo)
    extra = {k: v for k, v in DB_CONNECT_DEFAULTS.items() if k not in given}
    return make_conninfo(conninfo, **extra) if extra else conninfo


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _iso(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts is not None else "-"
