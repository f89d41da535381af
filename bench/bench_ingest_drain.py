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
        start = datetime.now(UTC) - timedelta(days=1)
        with Publisher(config, client_id=f"pub-{schema}") as pub:
            for k in range(args.messages):
                ts = int((start + timedelta(seconds=k // 1000)).timestamp() * 1000)
                pub.publish(f"{prefix}/water/B{k % 1000:05d}", orjson.dumps({"ts": ts, "value": 300.0, "unit": "kPa"}))
        svc = IngestService(conninfo=PG_URL, schema=schema, mqtt_config=config, prefix=prefix)
        started = time.perf_counter()
        svc.start()
        while svc.stats.messages < args.messages and time.perf_counter() - started < 300:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        svc.stop()
        print(
            f"MQTT {args.protocol}: drained {svc.stats.messages:,} of {args.messages:,} messages "
            f"({svc.stats.readings_stored:,} stored) in {elapsed:.1f} s: {svc.stats.messages / elapsed:,.0f} msg/s"
        )
    finally:
        with connect(PG_URL, schema=schema, autocommit=True) as conn:
            drop_schema(conn, schema=schema)
        broker.stop()


if __name__ == "__main__":
    main()
