"""Alert latency: from a sensor's publish to the alert on a websocket client, idle and while ingest is loaded.

Runs a private Mosquitto, `lifeline ingest` and `lifeline serve` as their own processes (detectors on), a websocket
client on /ws/alerts, and a probe that publishes, about every --probe-interval seconds (at random: 0.5-1.5x), a
reading of one level sensor alternately above its grade-II limit and back below it: each probe raises or clears an
alert. The probe's value carries its sequence number, so each websocket message is matched to the publish that caused
it; latency = arrival at the client − the publish call (same machine, same clock). Under load, a separate process
publishes ordinary readings of --sensors sensors at --rate messages/s (QoS 1, one reading per message, written in bulk
by ``simulators/raw_publisher.py``) at the same time.

    python bench/bench_alert_latency.py                       # idle, then 2,000 and 4,000 msg/s, 30 s each
    python bench/bench_alert_latency.py --rates 0 1000 --seconds 20

Prints p50 / p95 / p99 / max per load, the probes matched, and the load actually published.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import orjson
import websockets.sync.client

from lifeline.embedded import start_broker
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from simulators.raw_publisher import RawPublisher
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROBE = "PROBE-L"
HIGH, LOW = 2.0, 0.1


def _sensors(n: int) -> list[Sensor]:
    limits = (AlarmLimit(Grade.IV, Direction.LOW, 150.0), AlarmLimit(Grade.I, Direction.LOW, 50.0))
    load = [Sensor(f"B{i:05d}", Network.WATER, Quantity.PRESSURE, f"bench {i}", limits=limits) for i in range(n)]
    probe = Sensor(
        PROBE,
        Network.DRAINAGE,
        Quantity.LEVEL,
        "latency probe",
        valid_min=0.0,
        valid_max=10.0,
        limits=(AlarmLimit(Grade.II, Direction.HIGH, 1.0),),
    )
    return [*load, probe]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(url: str, prefix: str, sensors: int, rate: float, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Publish one-reading messages at *rate* per second for *seconds* (paced every millisecond).

    Through :class:`~simulators.raw_publisher.RawPublisher`: paho's publish path tops out near 9,000 messages/s
    here, below the loads this benchmark asks for.
    """
    config = mqtt_config_from_url(url)
    topics = [f"{prefix}/water/B{i:05d}".encode() for i in range(sensors)]
    sent = 0
    last_ms = [0] * sensors
    with RawPublisher.from_config(config, client_id=f"bench-load-{uuid.uuid4().hex[:6]}") as pub:
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            # Each sensor's times only go forward (a repeated (sensor, time) would be a redelivery to ingest) and
            # stay on the wall clock. Until 2026-11-26 07:15 every call took the last call's time + 1 ms, and the
            # loop calls several times a millisecond while acknowledgements stream in: the times ran ahead of the
            # clock, and sensor health raised clock skew for hundreds of load sensors at once.
            # The values move (300–306 kPa): a sensor reading the same value for minutes is stuck, and until then
            # the 1,000 load sensors were all raised as stuck at once (1,001 alert changes in one batch).
            due = min(int(elapsed * rate), sent + min(5_000, sensors))
            if due <= sent:
                pub.poll(0.001)
                continue
            now_ms = int(time.time() * 1000)
            messages = []
            for i in range(sent, due):
                s = i % sensors
                ts = last_ms[s] = max(now_ms, last_ms[s] + 1)
                messages.append((topics[s], b'{"ts":%d,"value":%d.0,"unit":"kPa"}' % (ts, 300 + i % 7)))
            pub.publish_many(messages)
            sent = due
        pub.flush(120.0)
        out.put((sent, time.perf_counter() - t0))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    broker_url: str, port: int, prefix: str, *, rate: float, seconds: float, sensors: int, interval: float
) -> dict[str, float]:
    received: dict[int, float] = {}
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws/alerts", open_timeout=20) as ws:
            ready.set()
            while not stop.is_set():
                try:
                    raw = ws.recv(timeout=0.5)
                except TimeoutError:
                    continue
                at = time.time()
                msg = json.loads(raw)
                if msg.get("type") != "alert" or msg["alert"]["sensor_id"] != PROBE:
                    continue
                if msg["event"] in ("raised", "cleared", "updated"):
                    # The event's own reading: msg["alert"] is the alert as it stands when sent, which under load
                    # may already carry the next probe's value.
                    value = float(msg["event_value"])
                    seq = round((value - (HIGH if value >= 1.0 else LOW)) * 1e6)
                    received.setdefault(seq, at)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not ready.wait(20):
        raise RuntimeError("websocket client did not connect")
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    loader = mp.Process(target=_load, args=(broker_url, prefix, sensors, rate, seconds, q)) if rate > 0 else None
    if loader is not None:
        loader.start()
    sent_at: dict[int, float] = {}
    config = mqtt_config_from_url(broker_url)
    with Publisher(config, client_id=f"bench-probe-{uuid.uuid4().hex[:6]}") as pub:
        # Start every level from a cleared alert: a level that ended on a raise would make this level's first
        # (raising) probe change nothing, and it would count as unmatched.
        pub.publish(
            f"{prefix}/drainage/{PROBE}",
            orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": LOW, "unit": "m"}),
        )
        pub.flush(30.0)
        time.sleep(1.0)
        received.clear()
        t0 = time.perf_counter()
        seq = 0
        # At random intervals (uniform 0.5-1.5x the mean): at a fixed one the probes can lock to ingest's batch
        # cycle and sample one phase of it.
        spacing = random.Random(len(sent_at) + 1)
        while time.perf_counter() - t0 < seconds:
            seq += 1
            value = (HIGH if seq % 2 else LOW) + seq * 1e-6
            body = orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": value, "unit": "m"})
            sent_at[seq] = time.time()
            pub.publish(f"{prefix}/drainage/{PROBE}", body)
            time.sleep(interval * spacing.uniform(0.5, 1.5))
        pub.flush(60.0)
    load_sent, load_s = q.get(timeout=seconds + 300) if loader is not None else (0, seconds)
    if loader is not None:
        loader.join()
    deadline = time.time() + 30
    while time.time() < deadline and len(received) < len(sent_at):
        time.sleep(0.2)
    stop.set()
    listener.join(5)
    latencies = [1000.0 * (received[k] - sent_at[k]) for k in sent_at if k in received]
    missing = sorted(k for k in sent_at if k not in received)
    if missing:
        print(f"  unmatched probes at {rate:,.0f} msg/s: {missing[:20]}", flush=True)
    return {
        "probes": len(sent_at),
        "matched": len(latencies),
        "load_rate": load_sent / load_s if load_s else 0.0,
        "p50": _percentile(latencies, 0.50) if latencies else float("nan"),
        "p95": _percentile(latencies, 0.95) if latencies else float("nan"),
        "p99": _percentile(latencies, 0.99) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level")
    parser.add_argument("--rates", type=float, nargs="+", default=[0, 2000, 4000], help="load, messages/s")
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--probe-interval", type=float, default=0.2, help="mean seconds between probes")
    args = parser.parse_args()
    broker, _protocol = start_broker(kind="mosquitto")
    schema = "bench_" + uuid.uuid4().hex[:8]
    prefix = f"bench/{schema}/lifeline/v1"
    port = _free_port()
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        upsert_sensors(conn, _sensors(args.sensors))
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": PG_URL,
        "LIFELINE_MQTT_URL": broker.url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": prefix,
        "LIFELINE_MQTT_CLIENT_ID": f"ingest-{schema}",
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_AUTH": "off",
        "LIFELINE_HTTP_PORT": str(port),
    }
    ingest = subprocess.Popen([sys.executable, "-m", "lifeline", "ingest"], env=env)
    viewer = subprocess.Popen([sys.executable, "-m", "lifeline", "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4.0)
        print(
            f"# alert latency, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.seconds:.0f} s"
            f" per level, a probe every {args.probe_interval:g} s, {args.sensors} load sensors, detectors on"
        )
        print("| load asked (msg/s) | load published (msg/s) | probes matched | p50 ms | p95 ms | p99 ms | max ms |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for rate in args.rates:
            r = run(
                broker.url,
                port,
                prefix,
                rate=rate,
                seconds=args.seconds,
                sensors=args.sensors,
                interval=args.probe_interval,
            )
            print(
                f"| {rate:,.0f} | {r['load_rate']:,.0f} | {r['matched']:.0f}/{r['probes']:.0f} | {r['p50']:.0f} |"
                f" {r['p95']:.0f} | {r['p99']:.0f} | {r['max']:.0f} |",
                flush=True,
            )
    finally:
        for proc in (viewer, ingest):
            proc.terminate()
            proc.wait(20)
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            drop_schema(conn, schema=schema)
        broker.stop()


if __name__ == "__main__":
    main()
