"""Ingest alone: how fast `IngestService` drains a backlog of QoS 1 messages queued for its persistent session.

Publishes N single-reading messages to a private Mosquitto while ingest is away (its persistent session queues
them), then starts ingest and times until every message is stored. No publisher competes for the cores, so this
isolates ingest's own cost per message (paho, decoding, detectors, the database write).

    python bench/bench_ingest_drain.py --messages 60000
    py-spy record -o profile.svg -- python bench/bench_ingest_drain.py   # where the time goes
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from ingest.service import IngestService
from lifeline.embedded import start_broker
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from twin.sensors import AlarmLimit, Direction, Grade, Network, Quantity, Sensor
from twin.store.db import connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--per-message", type=int, default=1, help="readings per message (one sensor's, 10 ms apart)")
    args = parser.parse_args()
    broker, _ = start_broker(kind="mosquitto")
    schema = "drain_" + uuid.uuid4().hex[:8]
    prefix = f"bench/{schema}/lifeline/v1"
    limits = (AlarmLimit(Grade.IV, Direction.LOW, 150.0),)
    try:
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            migrate(conn, schema=schema, mode="postgresql")
            upsert_sensors(
                conn,
                [Sensor(f"B{i:05d}", Network.WATER, Quantity.PRESSURE, "bench", limits=limits) for i in range(1000)],
            )
        config = mqtt_config_from_url(
            broker.url, client_id=f"ingest-{schema}", session_expiry_s=600, protocol=args.protocol
        )
        svc = IngestService(conninfo=PG_URL, schema=schema, mqtt_config=config, prefix=prefix)
        svc.start()
        svc.wait_ready(10)
        svc.stop()  # the persistent session stays on the broker and queues what follows
        # Recent timestamps, as a city's sensors send them (a day-old stream would look like clocks running late).
        start = int((datetime.now(UTC) - timedelta(seconds=30)).timestamp() * 1000)
        per = args.per_message
        with Publisher(config, client_id=f"pub-{schema}") as pub:
            for k in range(args.messages):
                sid = f"B{k % 1000:05d}"
                ts0 = start + 10 * per * (k // 1000)
                if per == 1:
                    body = orjson.dumps({"ts": ts0, "value": 300.0 + k % 7, "unit": "kPa"})
                else:
                    items = [{"sensor": sid, "ts": ts0 + 10 * j, "value": 300.0 + j % 7} for j in range(per)]
                    body = orjson.dumps({"unit": "kPa", "readings": items})
                pub.publish(f"{prefix}/water/{sid}", body)
        svc = IngestService(conninfo=PG_URL, schema=schema, mqtt_config=config, prefix=prefix)
        started = time.perf_counter()
        cpu0 = time.process_time()
        svc.start()
        while svc.stats.messages < args.messages and time.perf_counter() - started < 300:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        svc.stop()
        stored = svc.stats.readings_stored
        print(
            f"MQTT {args.protocol}, {per} per message: drained {svc.stats.messages:,} of {args.messages:,} messages "
            f"({stored:,} readings stored) in {elapsed:.1f} s: {svc.stats.messages / elapsed:,.0f} msg/s, "
            f"{stored / elapsed:,.0f} readings/s; ingest CPU {cpu / max(stored, 1) * 1e6:.1f} µs a reading"
        )
        seconds = svc.detectors.seconds if svc.detectors is not None else {}
        print("  detector seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
        print(
            f"  {svc.stats.batches:,} batches ({stored / max(svc.stats.batches, 1):,.0f} readings each), "
            f"alert events {svc.stats.alert_events:,}, dead letters {svc.stats.dead_letters:,}"
        )
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            kinds = conn.execute(
                "SELECT split_part(cause_key, ':', 1) || ':' || split_part(cause_key, ':', 3) AS kind, count(*)"
                " FROM alerts GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        print("  alerts by kind: " + (", ".join(f"{row['kind']} {row['count']}" for row in kinds) or "none"))
    finally:
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            drop_schema(conn, schema=schema)
        broker.stop()


if __name__ == "__main__":
    main()
