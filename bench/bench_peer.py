"""Lifeline Twin's ingest and a Node-RED peer side by side: same stream, same broker, same database, one run.

For each mode (1 reading per message, 50 readings per message) a separate publisher process sends the same stream
(QoS 1, --rate messages/s or as fast as it can, for --seconds; PUBLISH packets framed and written in bulk by
``simulators/raw_publisher.py``, or through paho with --publisher paho) through a private Mosquitto to (a)
`lifeline ingest` (its own process, detectors on, its own schema) and then (b) Node-RED 4.1 running the tuned peer
flow of ``../shared/peers/node-red`` (mqtt in → join 1,000 or 0.2 s → one INSERT … unnest per batch, pg.Pool of 4)
into a table of its own schema. Each system gets its own topic prefix, so nothing queued for one reaches the other.

Measured per run: readings published and stored (nothing may be lost), readings/s landed (first publish → count of
stored rows reaches the count published), lag p50/p99 (at random intervals averaging --probe-interval s the publisher
sends a probe message whose readings carry the publish time as ``ts``; a poller in this process, polling at random
intervals averaging --poll-interval, sees the row appear: lag = first seen − ts), CPU seconds of the consumer process
and of the PostgreSQL backends serving it, and the consumer's peak RSS and peak anonymous memory (``RssAnon``: RSS
without the files it maps; sampled). Prints a table and the ratios Lifeline/peer.

Probes and polls are spaced at random (uniform 0.5–1.5 × the mean): at fixed intervals they lock to a consumer's
batch period and sample one phase of it. The peer closes a batch every 1,000 messages, at 20,000 msg/s every 50 ms,
the default probe interval: until 2026-11-26 09:30 UTC its probes kept landing near the end of its batches, and its
lag p50 read 15–25 ms where its batches alone make a reading wait 25 ms on average.

    bench/peer/install.sh                       # once: Node-RED 4.1.8 and pg into bench/peer/node_modules
    python bench/bench_peer.py --seconds 20     # 20,000 msg/s of single readings, 6,000 msg/s of 50
    python bench/bench_peer.py --seconds 20 --modes 1 --rate 40000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]
from bench_ingest import _sensors as load_sensors
from psycopg import sql

from lifeline.embedded import EmbeddedServer, free_port, start_broker
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from simulators.raw_publisher import RawPublisher
from twin.sensors import Network, Quantity, Sensor
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PEER_DIR = Path(__file__).resolve().parent / "peer"
PROBES = tuple(f"P{i:04d}" for i in range(50))
"""Probe sensors: a probe message carries one reading (1 per message) or one of each (50 per message), ts = now."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one system stores the stream: its schema, table and time column, and how to start it."""

    name: str
    schema: str
    table: str
    ts_column: str
    start: Callable[[], subprocess.Popen[bytes]]


@dataclass(slots=True)
class Result:
    """One system's figures for one mode."""

    published: int = 0
    messages: int = 0
    stored: int = 0
    publish_s: float = 0.0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_anon_mb: float = 0.0
    lags_ms: list[float] = field(default_factory=list)
    broker_notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.published - self.stored

    @property
    def readings_per_s(self) -> float:
        return self.stored / self.elapsed_s if self.elapsed_s else 0.0

    def lag_ms(self, q: float) -> float:
        if len(self.lags_ms) < 2:
            return self.lags_ms[0] if self.lags_ms else float("nan")
        return statistics.quantiles(self.lags_ms, n=100, method="inclusive")[int(q) - 1]


def _probe_body(per_message: int, *, peer_shape: bool) -> bytes:
    ts = datetime.now(UTC)
    if per_message == 1:
        return orjson.dumps({"sensor": PROBES[0], "ts": ts, "value": 300.0, "unit": "kPa"}, option=orjson.OPT_UTC_Z)
    readings = [{"sensor": p, "ts": ts, "value": 300.0} for p in PROBES[:per_message]]
    return _batch(readings, peer_shape=peer_shape)


def _batch(readings: list[dict[str, Any]], *, peer_shape: bool) -> bytes:
    # The same readings in each system's batch shape: the peer's function takes an array of {sensor, ts, value};
    # Lifeline's decoder takes {"unit", "readings": [...]}. Both are sent ISO 8601 times with a Z.
    doc: object = readings if peer_shape else {"unit": "kPa", "readings": readings}
    return orjson.dumps(doc, option=orjson.OPT_UTC_Z)


def _iso_z(us: int) -> str:
    """An epoch time in µs as ISO 8601 with microseconds and a Z, as orjson writes a UTC datetime."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _publish(
    url: str,
    prefix: str,
    *,
    peer_shape: bool,
    sensors: int,
    per_message: int,
    seconds: float,
    rate: float,
    probe_interval_s: float,
    out: mp.Queue,  # type: ignore[type-arg]
    limit: int = 0,
    publisher: str = "raw",
) -> None:
    if publisher == "paho":
        _publish_paho(
            url, prefix, peer_shape=peer_shape, sensors=sensors, per_message=per_message, seconds=seconds,
            rate=rate, probe_interval_s=probe_interval_s, out=out, limit=limit,
        )  # fmt: skip
        return
    config = mqtt_config_from_url(url)
    # Each sensor's readings are 10 ms apart and start a minute ago, so they stay in the recent past as a city's
    # sensors would be (until 2026-11-26 00:30 they started a day ago: every sensor then looked like a clock
    # running late, and Lifeline's sensor-health detector raised a maintenance alert for each of the 1,000).
    # The payloads are those of the paho publisher (the same JSON, times always with microseconds), built from
    # string pieces: a round of every sensor shares its times.
    start_us = int((time.time() - 60.0) * 1e6)
    sids = [f"B{i:05d}" for i in range(sensors)]
    topics = [f"{prefix}/water/{sid}".encode() for sid in sids]
    probe_topic = f"{prefix}/water/{PROBES[0]}".encode()
    chunk = max(1, 20_000 // per_message)
    sent = messages = k = 0
    stamps: list[str] = []
    stamps_round = -1
    with RawPublisher.from_config(config, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}") as pub:
        t0 = time.perf_counter()
        next_probe = t0
        spacing = random.Random(per_message)  # the same probe times for every consumer of a run
        while (now := time.perf_counter()) - t0 < seconds and (not limit or messages < limit):
            due = int((now - t0) * rate) + 1 if rate > 0 else messages + chunk
            n = min(due - messages, chunk, limit - messages if limit else chunk)
            if n <= 0:
                pub.poll(0.0005)
                continue
            batch: list[tuple[bytes, bytes]] = []
            if now >= next_probe and not limit:
                next_probe += probe_interval_s * spacing.uniform(0.5, 1.5)
                batch.append((probe_topic, _probe_body(per_message, peer_shape=peer_shape)))
            while len(batch) < n:
                i, rnd = k % sensors, k // sensors
                if rnd != stamps_round:
                    base = start_us + 10_000 * rnd * per_message
                    stamps = [_iso_z(base + 10_000 * j) for j in range(per_message)]
                    stamps_round = rnd
                if per_message == 1:
                    body = f'{{"sensor":"{sids[i]}","ts":"{stamps[0]}","value":{300.0 + k % 7},"unit":"kPa"}}'
                else:
                    items = ",".join(
                        f'{{"sensor":"{sids[i]}","ts":"{stamps[j]}","value":{300.0 + j % 7}}}'
                        for j in range(per_message)
                    )
                    body = f"[{items}]" if peer_shape else f'{{"unit":"kPa","readings":[{items}]}}'
                batch.append((topics[i], body.encode()))
                k += 1
            pub.publish_many(batch)
            sent += per_message * len(batch)
            messages += len(batch)
        pub.flush(300.0)
        out.put((sent, messages, time.perf_counter() - t0))


def _publish_paho(
    url: str,
    prefix: str,
    *,
    peer_shape: bool,
    sensors: int,
    per_message: int,
    seconds: float,
    rate: float,
    probe_interval_s: float,
    out: mp.Queue,  # type: ignore[type-arg]
    limit: int = 0,
) -> None:
    """The stream through paho (``--publisher paho``): ~9,000 messages/s at most here."""
    config = mqtt_config_from_url(url)
    start = datetime.now(UTC) - timedelta(minutes=1)
    step = timedelta(milliseconds=10)
    sent = messages = k = 0
    with Publisher(config, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}") as pub:
        t0 = time.perf_counter()
        next_probe = t0
        spacing = random.Random(per_message)  # the same probe times for every consumer of a run
        while (now := time.perf_counter()) - t0 < seconds and (not limit or messages < limit):
            if rate > 0 and messages >= (now - t0) * rate:
                time.sleep(0.001)
                continue
            if now >= next_probe and not limit:
                next_probe += probe_interval_s * spacing.uniform(0.5, 1.5)
                pub.publish(f"{prefix}/water/{PROBES[0]}", _probe_body(per_message, peer_shape=peer_shape))
            else:
                sid = f"B{k % sensors:05d}"
                ts0 = start + step * ((k // sensors) * per_message)
                if per_message == 1:
                    body = orjson.dumps(
                        {"sensor": sid, "ts": ts0, "value": 300.0 + k % 7, "unit": "kPa"}, option=orjson.OPT_UTC_Z
                    )
                else:
                    readings = [
                        {"sensor": sid, "ts": ts0 + step * j, "value": 300.0 + j % 7} for j in range(per_message)
                    ]
                    body = _batch(readings, peer_shape=peer_shape)
                pub.publish(f"{prefix}/water/{sid}", body)
                k += 1
            sent += per_message
            messages += 1
        pub.flush(300.0)
        out.put((sent, messages, time.perf_counter() - t0))


def _anon_bytes(pid: int) -> int:
    """A process's anonymous resident memory (``RssAnon``: its heap and stacks, not the files it maps, such as
    its executable and libraries, which the system shares between processes and can drop and read back)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """CPU and peak RSS of a consumer process tree and of the PostgreSQL backends its connections talk to."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.peak_anon = 0
        self._cpu0 = self._tree_cpu()
        self._backends: dict[int, tuple[float, float]] = {}

    def _tree(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def _tree_cpu(self) -> float:
        total = 0.0
        for p in self._tree():
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def sample(self, conn: Any) -> None:
        rss = anon = 0
        ports: list[int] = []
        for p in self._tree():
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                rss += p.memory_info().rss
                anon += _anon_bytes(p.pid)
                ports += [c.laddr.port for c in p.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432]
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_anon = max(self.peak_anon, anon)
        if not ports:
            return
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND client_addr = '127.0.0.1'", [ports]
        ).fetchall()
        for row in rows:
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = psutil.Process(int(row["pid"])).cpu_times()
                cpu = t.user + t.system
                first = self._backends.get(int(row["pid"]), (cpu, cpu))[0]
                self._backends[int(row["pid"])] = (first, cpu)

    def cpu_s(self) -> float:
        return self._tree_cpu() - self._cpu0

    def db_cpu_s(self) -> float:
        return sum(last - first for first, last in self._backends.values())


def _wait_visible(conn: Any, target: Target, timeout_s: float) -> datetime:
    query = sql.SQL("SELECT max({}) AS ts FROM {}.{} WHERE sensor_id = %s").format(
        sql.Identifier(target.ts_column), sql.Identifier(target.schema), sql.Identifier(target.table)
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(query, [PROBES[0]]).fetchone()
        if row and row["ts"] is not None:
            return row["ts"]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise TimeoutError(f"{target.name} stored nothing within {timeout_s:.0f} s")


def _count(conn: Any, target: Target) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}.{}").format(sql.Identifier(target.schema), sql.Identifier(target.table))
    ).fetchone()
    return int(row["n"]) if row else 0


def run_once(broker: EmbeddedServer, target: Target, args: argparse.Namespace, per_message: int) -> Result:
    """Start *target*'s consumer, send it one stream, wait until everything is stored; return the figures."""
    broker_url = broker.url
    log_offset = broker.log_path.stat().st_size
    prefix = f"bench/{target.schema}/lifeline/v1"
    consumer = target.start()
    result = Result()
    try:
        with connect(PG_URL, schema=target.schema, autocommit=True) as conn:
            with Publisher(mqtt_config_from_url(broker_url), client_id=f"bench-warm-{uuid.uuid4().hex[:6]}") as pub:
                for _ in range(int(args.start_timeout)):
                    pub.publish(
                        f"{prefix}/water/{PROBES[0]}", _probe_body(per_message, peer_shape=target.name == "node-red")
                    )
                    try:
                        last_ts = _wait_visible(conn, target, 1.0)
                        break
                    except TimeoutError:
                        if consumer.poll() is not None:
                            raise RuntimeError(f"{target.name} exited with {consumer.returncode}") from None
                else:
                    raise TimeoutError(f"{target.name} stored nothing within {args.start_timeout:.0f} s")
            time.sleep(0.5)
            baseline = _count(conn, target)
            if args.drain:
                _drain(conn, consumer, target, args, per_message, baseline, result)
                return result
            sampler = Sampler(consumer.pid)
            poll_spacing = random.Random(7)
            probe_query = sql.SQL("SELECT {0} AS ts FROM {1}.{2} WHERE sensor_id = %s AND {0} > %s ORDER BY 1").format(
                sql.Identifier(target.ts_column), sql.Identifier(target.schema), sql.Identifier(target.table)
            )
            q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
            pub_proc = mp.Process(
                target=_publish,
                args=(broker_url, prefix),
                kwargs={
                    "peer_shape": target.name == "node-red",
                    "sensors": args.sensors,
                    "per_message": per_message,
                    "seconds": args.seconds,
                    "rate": _rate(args.rate, per_message),
                    "probe_interval_s": args.probe_interval,
                    "out": q,
                    "publisher": args.publisher,
                },
            )
            t_start = time.perf_counter()
            pub_proc.start()
            published: tuple[int, int, float] | None = None
            stored, last_change, last_sample, last_count = 0, time.perf_counter(), 0.0, 0.0
            while True:
                now = time.perf_counter()
                seen_at = time.time()
                for row in conn.execute(probe_query, [PROBES[0], last_ts]).fetchall():
                    last_ts = row["ts"]
                    result.lags_ms.append((seen_at - last_ts.timestamp()) * 1000.0)
                if now - last_sample > 0.5:
                    sampler.sample(conn)
                    last_sample = now
                if published is None and not q.empty():
                    published = q.get()
                if published is not None and now - last_count > 0.25:
                    # count(*) scans the table: often enough to time the end, rarely enough not to load the cores
                    last_count = now
                    n = _count(conn, target) - baseline
                    if n != stored:
                        stored, last_change = n, time.perf_counter()
                    if stored >= published[0] or time.perf_counter() - last_change > args.settle:
                        break
                if consumer.poll() is not None:
                    raise RuntimeError(f"{target.name} exited with {consumer.returncode}")
                time.sleep(args.poll_interval * poll_spacing.uniform(0.5, 1.5))
            sampler.sample(conn)
            pub_proc.join()
            result.published, result.messages, result.publish_s = published
            result.stored = stored
            result.elapsed_s = last_change - t_start
            result.cpu_s = sampler.cpu_s()
            result.db_cpu_s = sampler.db_cpu_s()
            result.peak_rss_mb = sampler.peak_rss / 2**20
            result.peak_anon_mb = sampler.peak_anon / 2**20
            with broker.log_path.open("rb") as log:
                log.seek(log_offset)
                # Mosquitto drops QoS 1 messages for a subscriber whose queue is full (max_queued_messages).
                result.broker_notes = [
                    line.strip() for line in log.read().decode(errors="replace").splitlines() if "dropped" in line
                ]
    finally:
        consumer.terminate()
        try:
            consumer.wait(20)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()
    return result


def _drain(
    conn: Any,
    consumer: subprocess.Popen[bytes],
    target: Target,
    args: argparse.Namespace,
    per_message: int,
    baseline: int,
    result: Result,
) -> None:
    """Pause the consumer (SIGSTOP, its connection stays open), publish --drain messages, which the broker queues
    for it, resume it and time until all are stored: what the consumer can do, whatever the publisher can."""
    tree = [psutil.Process(consumer.pid), *psutil.Process(consumer.pid).children(recursive=True)]
    for proc in tree:
        proc.suspend()
    try:
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        prefix = f"bench/{target.schema}/lifeline/v1"
        _publish(
            args.broker_url,
            prefix,
            peer_shape=target.name == "node-red",
            sensors=args.sensors,
            per_message=per_message,
            seconds=600.0,
            rate=0.0,
            probe_interval_s=3600.0,
            out=q,
            limit=args.drain,
            publisher=args.publisher,
        )
        result.published, result.messages, result.publish_s = q.get()
        sampler = Sampler(consumer.pid)
        sampler.sample(conn)
    finally:
        for proc in tree:
            proc.resume()
    t_start = time.perf_counter()
    stored, last_change = 0, t_start
    while time.perf_counter() - last_change < args.settle:
        n = _count(conn, target) - baseline
        if n != stored:
            stored, last_change = n, time.perf_counter()
        if stored >= result.published:
            break
        if consumer.poll() is not None:
            raise RuntimeError(f"{target.name} exited with {consumer.returncode}")
        sampler.sample(conn)
        time.sleep(0.1)
    sampler.sample(conn)
    result.stored = stored
    result.elapsed_s = last_change - t_start
    result.cpu_s = sampler.cpu_s()
    result.db_cpu_s = sampler.db_cpu_s()
    result.peak_rss_mb = sampler.peak_rss / 2**20
    result.peak_anon_mb = sampler.peak_anon / 2**20


def lifeline_target(broker_url: str, sensors: int, workdir: Path, protocol: str = "5", workers: int = 1) -> Target:
    """Lifeline Twin's ingest in a fresh schema, started as `bench_ingest.py` starts it.

    With *workers* > 1, that many ingest processes share the stream through one MQTT shared subscription
    (``$share/ingest/…``), each with its own client id, under one shell (so CPU and memory are their sum).
    """
    schema = "bench_" + uuid.uuid4().hex[:8]
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        probes = [Sensor(p, Network.WATER, Quantity.PRESSURE, "lag probe") for p in PROBES]
        upsert_sensors(conn, [*load_sensors(sensors), *probes])
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": PG_URL,
        "LIFELINE_MQTT_URL": broker_url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": f"bench/{schema}/lifeline/v1",
        "LIFELINE_MQTT_CLIENT_ID": f"ingest-{schema}",
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_MAX_AGE_S": str(10 * 86400),
        "LIFELINE_SPOOL_DIR": str(workdir / "spool"),
        "LIFELINE_MQTT_PROTOCOL": protocol,
    }
    if workers == 1:
        return Target(
            "lifeline",
            schema,
            "readings",
            "ts",
            lambda: subprocess.Popen([sys.executable, "-m", "lifeline", "ingest"], env=env),
        )
    env["LIFELINE_MQTT_SHARED_GROUP"] = "ingest"
    env["BENCH_WORKERS"] = str(workers)
    return Target(
        f"lifeline-{workers}w",
        schema,
        "readings",
        "ts",
        lambda: subprocess.Popen([sys.executable, "-c", _WORKERS_LAUNCHER, schema], env=env),
    )


_WORKERS_LAUNCHER = """
import os, signal, subprocess, sys
n, schema = int(os.environ["BENCH_WORKERS"]), sys.argv[1]
children = [
    subprocess.Popen([sys.executable, "-m", "lifeline", "ingest"],
                     env={**os.environ, "LIFELINE_MQTT_CLIENT_ID": f"ingest-{schema}-{k}"})
    for k in range(n)
]
def stop(*_):
    for c in children:
        c.terminate()
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
for c in children:
    c.wait()
"""
"""Starts BENCH_WORKERS ingest processes (each its own client id) and passes SIGTERM on to them."""


def peer_flow(*, broker_port: int, topic: str, schema: str) -> list[dict[str, Any]]:
    """The peer flow of bench/peer/flow.json pointed at this run's broker port, topic and schema; nothing else."""
    flow: list[dict[str, Any]] = json.loads((PEER_DIR / "flow.json").read_text())
    for node in flow:
        if node["id"] == "b1":
            node["port"] = str(broker_port)
        elif node["id"] == "m1":
            node["topic"] = topic
        elif node["id"] == "f1":
            func = node["func"].replace("INSERT INTO peer.readings ", f"INSERT INTO {schema}.readings ")
            if func == node["func"]:
                raise ValueError("bench/peer/flow.json: the pg insert function no longer names peer.readings")
            node["func"] = func
    return flow


def peer_target(broker_url: str, workdir: Path) -> Target:
    """Node-RED with the peer flow, writing to readings(time, sensor_id, value) in a fresh schema."""
    schema = "peer_" + uuid.uuid4().hex[:8]
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.readings (time timestamptz, sensor_id text, value float8)").format(
                sql.Identifier(schema)
            )
        )
        # The peer's README gives no index; one on (sensor_id, time) lets the lag probe be found without a scan
        # and gives the peer's table the same key Lifeline's readings has.
        conn.execute(sql.SQL("CREATE INDEX ON {}.readings (sensor_id, time)").format(sql.Identifier(schema)))
    user_dir = workdir / schema
    user_dir.mkdir()
    port = int(broker_url.rsplit(":", 1)[1])
    flow = peer_flow(broker_port=port, topic=f"bench/{schema}/lifeline/v1/#", schema=schema)
    (user_dir / "flows.json").write_text(json.dumps(flow, indent=1))
    env = {**os.environ, "PEER_USER_DIR": str(user_dir), "PEER_UI_PORT": str(free_port())}
    red = PEER_DIR / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        raise FileNotFoundError(f"{red} is missing: run bench/peer/install.sh")

    def start() -> subprocess.Popen[bytes]:
        log = open(user_dir / "node-red.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            ["node", str(red), "--settings", str(PEER_DIR / "settings.js")],
            cwd=PEER_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def close_log() -> None:
            proc.wait()
            log.close()

        threading.Thread(target=close_log, daemon=True).start()
        return proc

    return Target("node-red", schema, "readings", "time", start)


def _drop(target: Target) -> None:
    with connect(PG_URL, schema=target.schema, autocommit=True) as conn:
        if target.name.startswith("lifeline"):
            drop_schema(conn, schema=target.schema)
        else:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(target.schema)))


def _versions() -> str:
    out = subprocess.run(
        [
            "node",
            "-e",
            "console.log(process.version, require('node-red/package.json').version,"
            " require('pg/package.json').version)",
        ],
        cwd=PEER_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return f"Node.js {out[0]}, Node-RED {out[1]}, pg {out[2]}"


def _rate(asked: float | None, per_message: int) -> float:
    """Messages/s to publish: as asked, else the issue's targets (20,000 single readings, 300,000 in 50s)."""
    if asked is not None:
        return asked
    return 20_000.0 if per_message == 1 else 300_000.0 / per_message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time per run")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="messages/s; default: the issue's targets, 20,000 single-reading messages/s and 6,000 of 50 readings "
        "(300,000 readings/s); 0: as fast as the publisher can (the raw publisher outruns any consumer here: the "
        "broker's queue then overflows and drops messages)",
    )
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--modes", type=int, nargs="+", default=[1, 50], help="readings per message")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="mean seconds between lag probes")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="mean seconds between probe polls")
    parser.add_argument("--settle", type=float, default=15.0, help="give up when the count stalls this long, s")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds for a consumer to store a row")
    parser.add_argument(
        "--systems",
        nargs="+",
        default=["lifeline", "node-red"],
        choices=["lifeline", "lifeline-mqtt311", "node-red"],
        help="consumers to run, in order (lifeline-mqtt311: ingest speaking MQTT 3.1.1 instead of 5)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="for each Lifeline system, run it with each of these numbers of ingest workers on a shared subscription",
    )
    parser.add_argument(
        "--publisher",
        choices=["raw", "paho"],
        default="raw",
        help="raw: PUBLISH packets framed and written in bulk (simulators/raw_publisher.py, >100,000 msg/s); "
        "paho: one paho publish a message (~9,000 msg/s here, what the figures before 2026-11-26 06:00 used)",
    )
    parser.add_argument(
        "--drain",
        type=int,
        default=0,
        help="instead of a live stream: pause each consumer, queue this many messages for it at the broker "
        "(at most 90,000: the broker keeps 100,000 a client), resume it and time the drain",
    )
    args = parser.parse_args()
    if args.drain > 90_000:
        parser.error("--drain: at most 90,000 messages (the broker queues 100,000 a client)")
    broker, _protocol = start_broker(kind="mosquitto")
    args.broker_url = broker.url
    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    rate = (
        f"{args.rate:,.0f} msg/s"
        if args.rate
        else "as fast as possible"
        if args.rate == 0
        else f"{_rate(None, 1):,.0f} msg/s of single readings, {_rate(None, 50):,.0f} of 50"
    )
    if args.drain:
        rate = f"DRAIN: {args.drain:,} messages queued for a paused consumer, then resumed"
    print(
        f"# peer benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}, {_versions()}; publish {args.seconds:.0f} s at {rate}, QoS 1 "
        f"({args.publisher} publisher), {args.sensors} sensors, a lag probe every {args.probe_interval * 1000:.0f} ms",
        flush=True,
    )
    rows: list[tuple[str, str, Result]] = []
    try:
        for per_message in args.modes:
            runs = [
                (name, workers)
                for name in args.systems
                for workers in (args.workers if name.startswith("lifeline") else [1])
            ]
            for name, workers in runs:
                if name.startswith("lifeline"):
                    protocol = "3.1.1" if name == "lifeline-mqtt311" else "5"
                    target = lifeline_target(broker.url, args.sensors, workdir, protocol, workers)
                    target = dataclasses.replace(target, name=name + (f" ×{workers}" if workers > 1 else ""))
                else:
                    target = peer_target(broker.url, workdir)
                try:
                    result = run_once(broker, target, args, per_message)
                finally:
                    _drop(target)
                rows.append((f"{per_message} per message", target.name, result))
                print(
                    f"  {per_message:>2} per message, {target.name}: {result.stored:,}/{result.published:,} stored "
                    f"in {result.elapsed_s:.1f} s (published in {result.publish_s:.1f} s), "
                    f"{result.readings_per_s:,.0f} readings/s, lag p50 {result.lag_ms(50):,.0f} ms "
                    f"p99 {result.lag_ms(99):,.0f} ms ({len(result.lags_ms)} probes), "
                    f"CPU {result.cpu_s:.1f} s + db {result.db_cpu_s:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB "
                    f"({result.peak_anon_mb:.0f} MB anonymous)",
                    flush=True,
                )
                for note in result.broker_notes:
                    print(f"    broker: {note}", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    _print_table(rows)


def _print_table(rows: list[tuple[str, str, Result]]) -> None:
    print()
    print(
        "| mode | system | published | stored | lost | publisher msg/s | readings/s landed | lag p50 ms | lag p99 ms "
        "| CPU s | DB backend CPU s | CPU µs/reading (both) | peak RSS MB | peak anonymous MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, name, r in rows:
        per_reading = (r.cpu_s + r.db_cpu_s) / r.stored * 1e6 if r.stored else float("nan")
        print(
            f"| {mode} | {name} | {r.published:,} | {r.stored:,} | {r.lost:,} | {r.messages / r.publish_s:,.0f} "
            f"| {r.readings_per_s:,.0f} | {r.lag_ms(50):,.0f} | {r.lag_ms(99):,.0f} | {r.cpu_s:.1f} "
            f"| {r.db_cpu_s:.1f} | {per_reading:.1f} | {r.peak_rss_mb:.0f} | {r.peak_anon_mb:.0f} |"
        )
    print()
    print("| mode | readings/s landed | lag p50 | lag p99 | CPU µs/reading (both) | peak RSS | peak anonymous |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    by_mode: dict[str, dict[str, Result]] = {}
    for mode, name, r in rows:
        by_mode.setdefault(mode, {})[name] = r

    def per(r: Result) -> float:
        return (r.cpu_s + r.db_cpu_s) / r.stored if r.stored else float("nan")

    for mode, systems in by_mode.items():
        b = systems.get("node-red")
        for name, a in systems.items():
            if b is None or name == "node-red":
                continue
            print(
                f"| {mode}: {name}/peer | {a.readings_per_s / b.readings_per_s:.2f} "
                f"| {a.lag_ms(50) / b.lag_ms(50):.2f} | {a.lag_ms(99) / b.lag_ms(99):.2f} "
                f"| {per(a) / per(b):.2f} | {a.peak_rss_mb / b.peak_rss_mb:.2f} "
                f"| {a.peak_anon_mb / b.peak_anon_mb:.2f} |"
            )


if __name__ == "__main__":
    main()
