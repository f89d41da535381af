"""The embedded servers of the demo: the amqtt fallback broker carries the whole path with MQTT 3.1.1."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from lifeline.embedded import start_broker, start_postgres
from lifeline.settings import mqtt_config_from_url
from simulators.publisher import Publisher
from twin.store.db import DictConnection, connect

from .conftest import wait_for

pytestmark = pytest.mark.integration


def test_amqtt_fallback_broker_carries_readings_with_mqtt_3_1_1(
    pg_url: str, schema: str, prefix: str, db: DictConnection
) -> None:
    from ingest.service import IngestService

    broker, protocol = start_broker(kind="amqtt")
    svc: Any = None
    try:
        assert protocol == "3.1.1"
        config = mqtt_config_from_url(broker.url, protocol=protocol, client_id=f"ingest-{uuid.uuid4().hex[:6]}")
        svc = IngestService(conninfo=pg_url, schema=schema, mqtt_config=config, prefix=prefix)
        svc.start()
        assert svc.wait_ready(15)
        with Publisher(config, client_id=f"pub-{uuid.uuid4().hex[:6]}") as pub:
            for i in range(20):
                pub.publish(
                    f"{prefix}/water/W-P-00{1 + i % 5}",
                    orjson.dumps({"ts": datetime.now(UTC).isoformat(), "value": 300 + i, "unit": "kPa"}),
                )
        wait_for(lambda: svc.stats.readings_stored == 20, timeout=20, what="20 readings through amqtt")
    finally:
        if svc is not None:
            svc.stop()
        broker.stop()
    assert broker.proc.poll() is not None
    row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert row is not None and row["n"] == 20


def test_embedded_postgres_starts_serves_and_stops() -> None:
    server = start_postgres()
    try:
        with connect(server.url, schema="public", autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int AS v").fetchone()
            assert row is not None and row["v"] >= 150000
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert not server.workdir.exists()
