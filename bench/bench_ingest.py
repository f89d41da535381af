"""End-to-end ingest benchmark: readings published over MQTT (QoS 1) by a separate process → stored in PostgreSQL.

Runs a private Mosquitto (queues raised so nothing is dropped at the broker), `lifeline ingest` as its own process
with the detectors on, and a publisher process; counts what was published and what was stored (nothing may be
lost) and reports readings/s from the first publish to the last row stored.

    python bench/bench_ingest.py --seconds 20 --sensors 1000
    LIFELINE_BENCH_DATABASE_URL=postgresql://… python bench/bench_ingest.py

Prints a table; medians of --repeat runs per mode.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from lifeline.embedded import start_broker
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = os.environ.get("LIFELINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _sensors(n: int) -> list[Sensor]:
    limits = (AlarmLimit(Grade.IV, Direction.LOW, 150.0), AlarmLimit(Grade.I, Direction.LOW, 50.0))
    return [Sensor(f"B{i:05d}", Network.WATER, Quantity.PRESSURE, f"bench {i}", limits=limits) for i in range(n)]


def _publish(url: str, prefix: str, sensors: int, per_message: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    config = mqtt_config_from_url(url)
    start = datetime.now(UTC) - timedelta(days=1)
    sent = 0
    with Publisher(config, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}") as pub:
        t0 = time.perf_counter()
        k = 0
        while time.perf_counter() - t0 < seconds:
            sid = k % sensors
            ts0 = start + timedelta(milliseconds=10 * (k // sensors) * per_message)
            if per_message == 1:
                body = orjson.dumps({"ts": int(ts0.timestamp() * 1000), "value": 300.0, "unit": "kPa"})
            else:
                base = int(ts0.timestamp() * 1000)
                body = orjson.dumps(
                    {
                        "unit": "kPa",
                        "readings": [{"ts": base + 10 * j, "value": 300.0 + j % 7} for j in range(per_message)],
                    }
                )
            pub.publish(f"{prefix}/water/B{sid:05d}", body)
            sent += per_message
            k += 1
        pub.flush(120.0)
        out.put((sent, time.perf_counter() - t0))


def run_once(broker_url: str, *, sensors: int, per_message: int, seconds: float) -> dict[str, float]:
    schema = "bench_" + uuid.uuid4().hex[:8]
    prefix = f"bench/{schema}/lifeline/v1"
    with connect(PG_URL, schema=schema, autocommit=True) as conn:
        migrate(conn, schema=schema, mode="postgresql")
        upsert_sensors(conn, _sensors(sensors))
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": PG_URL,
        "LIFELINE_MQTT_URL": broker_url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": prefix,
        "LIFELINE_MQTT_CLIENT_ID": f"ingest-{schema}",
        "LIFELINE_LOG_LEVEL": "WARNING",
        "LIFELINE_MAX_AGE_S": str(10 * 86400),
    }
    ingest = subprocess.Popen([sys.executable, "-m", "lifeline", "ingest"], env=env)
    try:
        time.sleep(2.0)
        q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        pub = mp.Process(target=_publish, args=(broker_url, prefix, sensors, per_message, seconds, q))
        t_start = time.perf_counter()
        pub.start()
        sent, pub_s = q.get(timeout=seconds + 300)
        pub.join()
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            stored, last_change, previous = 0, time.perf_counter(), -1
            while time.perf_counter() - last_change < 5.0:
                row = conn.execute("SELECT count(*) AS n FROM readings").fetchone()
                stored = int(row["n"]) if row else 0
                if stored != previous:
                    previous, last_change = stored, time.perf_counter()
                if stored >= sent:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - t_start
            if stored >= sent:
                elapsed = last_change - t_start
            drop_schema(conn, schema=schema)
    finally:
        ingest.terminate()
        ingest.wait(20)
    return {
        "published": sent,
        "stored": stored,
        "lost": sent - stored,
        "publish_s": pub_s,
        "elapsed_s": elapsed,
        "readings_per_s": stored / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time per run")
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    broker, _protocol = start_broker(kind="mosquitto")
    try:
        print(
            f"# ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"publish {args.seconds:.0f} s per run, {args.sensors} sensors, detectors on"
        )
        print("| mode | published | stored | lost | readings/s (median) |")
        print("|---|---:|---:|---:|---:|")
        for label, per_message in (("1 reading per message", 1), ("50 readings per message", 50)):
            runs = [
                run_once(broker.url, sensors=args.sensors, per_message=per_message, seconds=args.seconds)
                for _ in range(args.repeat)
            ]
            rate = statistics.median(r["readings_per_s"] for r in runs)
            last = runs[-1]
            print(
                f"| {label} | {last['published']:,.0f} | {last['stored']:,.0f} | {last['lost']:,.0f} | {rate:,.0f} |",
                flush=True,
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
