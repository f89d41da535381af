"""The ingest service: MQTT in, validated batches into PostgreSQL, detectors run, alerts out.

Delivery contract: messages are subscribed at QoS 1 in a persistent session and acknowledged only after the
batch that holds them is committed (paho's manual acks). A crash before the commit, or between the commit and the
acks, makes the broker deliver the message again; the write is idempotent on ``(sensor_id, ts)``, so every
reading is stored exactly once. While the database is down the batch is retried with backoff and nothing is
acknowledged, so the broker keeps the messages (bounded by ``receive_maximum`` in flight to us).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg

from ingest.protocol import Decoded, PayloadDecoder, PayloadLimits
from models.chain import DetectorChain
from models.streaming import StreamDetector
from models.thresholds import state_from_active
from twin.alerts import AlertChange
from twin.errors import LifelineError
from twin.mqtt import MqttConfig, connect, make_client
from twin.sensors import Sensor
from twin.store.alerts import active_alerts, apply_change
from twin.store.db import DictConnection
from twin.store.db import connect as db_connect
from twin.store.dead_letter import store_dead_letters
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

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


@dataclass(slots=True)
class _Batch:
    messages: list[_Message] = field(default_factory=list)
    decoded: Decoded = field(default_factory=Decoded)


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
        flush_interval_s: float = 0.05,
        registry_refresh_s: float = 10.0,
        failpoint: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        detectors: Sequence[DetectorFactory] = (),
        twin_detectors: bool = True,
        state_save_s: float = STATE_SAVE_S,
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.mqtt_config = mqtt_config
        self.prefix = prefix.rstrip("/")
        self.limits = limits or PayloadLimits()
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.registry_refresh_s = registry_refresh_s
        self.failpoint = failpoint
        self.clock = clock
        self.detector_factories = tuple(detectors)
        self.twin_detectors = twin_detectors
        self.state_save_s = state_save_s
        self.stats = IngestStats()
        self._queue: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._generation = 0
        self._conn: DictConnection | None = None
        self._store: ReadingStore | None = None
        self._mode: StorageMode | None = None
        self._decoder: PayloadDecoder | None = None
        self._detector: DetectorChain | None = None
        self._state_saved_at = 0.0
        self._registry_loaded_at = 0.0
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the database (waiting for it), load sensors and detector state, then subscribe."""
        self._connect_db_until_ready()
        client = make_client(self.mqtt_config, persistent=True)
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        connect(client, self.mqtt_config, persistent=True)
        client.loop_start()
        self._worker = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._worker.start()

    @property
    def detectors(self) -> DetectorChain | None:
        """The detectors this service runs (None before it has connected to the database)."""
        return self._detector

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the subscription is in place; return False on timeout."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then disconnect. Messages not yet written stay with the broker."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
            if not self._worker.is_alive():
                self._save_states_safely()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._conn is not None:
            self._conn.close()
        log.info("ingest stopped: %s", self.stats.as_dict())

    def run_forever(self) -> None:
        """Start and block until :meth:`stop` is called from another thread or KeyboardInterrupt."""
        self.start()
        try:
            while not self._stop.wait(30.0):
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
        # Subscribe on every connect: a broker that lost our session must learn the subscription again.
        client.subscribe(self.subscription, qos=1)
        log.info("connected to %s, subscribed to %s", self.mqtt_config.url, self.subscription)
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
        self._queue.put(_Message(topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))

    # -- the writer thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if batch.messages:
                self._write_with_retry(batch)
            elif time.monotonic() - self._registry_loaded_at > self.registry_refresh_s:
                self._refresh_registry_safely()

    def _collect(self) -> _Batch | None:
        """Gather messages until batch_max readings or flush_interval after the first; None once stopping."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            if self._stop.is_set():
                return None
            return _Batch()
        if time.monotonic() - self._registry_loaded_at > self.registry_refresh_s:
            self._refresh_registry_safely()
        batch = _Batch()
        self._add(batch, first)
        deadline = time.monotonic() + self.flush_interval_s
        # The broker sends at most receive_maximum unacknowledged messages: once a batch holds that many, waiting
        # longer brings nothing more, so write it now.
        max_messages = self.mqtt_config.receive_maximum if self.mqtt_config.protocol == "5" else 2**31
        while len(batch.decoded.readings) < self.batch_max and len(batch.messages) < max_messages:
            remaining = deadline - time.monotonic()
            try:
                msg = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            self._add(batch, msg)
        return batch

    def _add(self, batch: _Batch, msg: _Message) -> None:
        assert self._decoder is not None
        decoded = self._decoder.decode(msg.topic, msg.payload)
        batch.messages.append(msg)
        batch.decoded.readings.extend(decoded.readings)
        batch.decoded.rejected.extend(decoded.rejected)

    def _write_with_retry(self, batch: _Batch) -> None:
        delay = INITIAL_DELAY
        while True:
            try:
                changes = self._write(batch)
                break
            except psycopg.Error as exc:
                self.stats.db_errors += 1
                self.stats.database_ok = False
                log.error(
                    "database write failed (%s); %d messages kept unacknowledged, retrying in %.1f s",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    len(batch.messages),
                    delay,
                )
                time.sleep(delay * (1 + random.uniform(-DELAY_JITTER, DELAY_JITTER)))
                delay = min(delay * DELAY_BACKOFF, MAX_DELAY)
                self._reconnect_db()
        if self.failpoint == "crash_after_commit":
            log.critical("failpoint crash_after_commit: exiting before acknowledging %d messages", len(batch.messages))
            os._exit(70)
        self._ack(batch)
        self._publish_alerts(changes)

    def _write(self, batch: _Batch) -> list[tuple[int, AlertChange]]:
        conn, store, detector = self._conn, self._store, self._detector
        if conn is None or store is None or detector is None:
            raise psycopg.OperationalError("no database connection")
        readings = batch.decoded.readings
        detection = detector.evaluate(readings, now=self.clock())
        published: list[tuple[int, AlertChange]] = []
        with conn.transaction():
            inserted = store.write([(r.sensor_id, r.ts, r.value, r.quality) for r in readings])
            store_dead_letters(conn, batch.decoded.rejected)
            for change in detection.changes:
                event_id = apply_change(conn, change, schema=self.schema)
                if event_id is not None:
                    published.append((event_id, change))
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
        stats.dead_letters += len(batch.decoded.rejected)
        stats.alert_events += len(published)
        stats.last_commit = datetime.now(UTC)
        if len(readings) != inserted:
            log.info("batch: %d readings stored, %d duplicates ignored", inserted, len(readings) - inserted)
        for letter in batch.decoded.rejected[:5]:
            log.warning("dead letter from %s: %s (%s)", letter.topic[:120], letter.reason, letter.detail[:200])
        return published

    def _ack(self, batch: _Batch) -> None:
        client = self._client
        assert client is not None
        for msg in batch.messages:
            # A message from an earlier connection is redelivered on this one; acking its old id could
            # acknowledge an unrelated message, so leave it to the redelivery.
            if msg.qos and msg.generation == self._generation:
                client.ack(msg.mid, msg.qos)

    def _publish_alerts(self, changes: list[tuple[int, AlertChange]]) -> None:
        client = self._client
        assert client is not None
        for event_id, change in changes:
            topic = f"{self.prefix}/alerts/{change.network}/{change.sensor_id or change.kind}"
            payload = orjson.dumps(
                {
                    "event_id": event_id,
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
                if self._stop.is_set():
                    raise
                log.error("database not reachable (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                time.sleep(delay)
                delay = min(delay * DELAY_BACKOFF, MAX_DELAY)

    def _open_db(self) -> None:
        conn = db_connect(self.conninfo, schema=self.schema, autocommit=True)
        mode = current_mode(conn, schema=self.schema)
        if mode is None:
            conn.close()
            raise psycopg.OperationalError(f"schema {self.schema!r} is not migrated; run 'lifeline db migrate'")
        self._conn, self._mode = conn, mode
        self._store = ReadingStore(conn, mode=mode)
        self._load_registry()

    def _reconnect_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        try:
            self._open_db()
        except psycopg.Error as exc:
            log.error("database reconnect failed: %s", str(exc).strip()[:200])

    def _load_registry(self) -> None:
        conn = self._conn
        assert conn is not None
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
        from twin.store.assets import load_city

        try:
            city = load_city(conn)
        except (psycopg.Error, LifelineError, ValueError, KeyError) as exc:
            log.warning("twin not loaded (%s): only the per-sensor detectors run", exc)
            return []
        if not city.networks:
            log.info("no twin stored ('lifeline twin import …'): only the per-sensor detectors run")
            return []
        return learned_detectors(city)

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
