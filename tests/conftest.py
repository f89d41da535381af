"""Shared fixtures: real PostgreSQL and a real MQTT broker, a fresh schema and topic prefix per test."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn

from ingest.service import IngestService
from lifeline.embedded import start_broker
from lifeline.settings import mqtt_config_from_url
from twin.demo import demo_sensors
from twin.errors import ServiceError
from twin.mqtt import MqttConfig
from twin.store.db import DictConnection, connect
from twin.store.schema import drop_schema, migrate
from twin.store.sensors import upsert_sensors
from viewer.app import create_app

PG_URL = os.environ.get("LIFELINE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_URL = os.environ.get("LIFELINE_TEST_MQTT_URL")
ARTIFACTS = Path(__file__).parent / "artifacts"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (set LIFELINE_TEST_DATABASE_URL): {exc}")
    return PG_URL


@pytest.fixture(scope="session")
def broker() -> Iterator[MqttConfig]:
    """The MQTT broker of the tests: LIFELINE_TEST_MQTT_URL, else a private Mosquitto for this test session.

    The private one is configured as deploy/mosquitto.conf is (queues of 100,000 messages): Mosquitto's default
    of 1,000 queued messages per client drops QoS 1 messages when a test publishes faster than ingest consumes.
    """
    if MQTT_URL:
        config = mqtt_config_from_url(MQTT_URL)
        if not _port_open(config.host, config.port):
            pytest.fail(f"no MQTT broker at {config.url} (LIFELINE_TEST_MQTT_URL)")
        yield config
        return
    try:
        server, _protocol = start_broker(kind="mosquitto")
    except ServiceError as exc:
        pytest.fail(f"cannot start Mosquitto for the tests ({exc}); install it or set LIFELINE_TEST_MQTT_URL")
    try:
        yield mqtt_config_from_url(server.url)
    finally:
        server.stop()


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A freshly migrated schema with the demo sensors, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:10]
    with connect(pg_url, schema=name, autocommit=True) as conn:
        migrate(conn, schema=name)
        upsert_sensors(conn, demo_sensors())
    yield name
    with connect(pg_url, schema=name, autocommit=True) as conn:
        drop_schema(conn, schema=name)


@pytest.fixture
def db(pg_url: str, schema: str) -> Iterator[DictConnection]:
    with connect(pg_url, schema=schema, autocommit=True) as conn:
        yield conn


@pytest.fixture
def prefix() -> str:
    """A topic prefix of the test's own, so tests sharing the broker never see each other's messages."""
    return f"test/{uuid.uuid4().hex[:10]}/lifeline/v1"


@pytest.fixture
def start_ingest(pg_url: str, schema: str, broker: MqttConfig, prefix: str) -> Iterator[Callable[..., IngestService]]:
    started: list[IngestService] = []
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"

    def start(**kwargs: Any) -> IngestService:
        config = MqttConfig(
            host=broker.host, port=broker.port, client_id=client_id, session_expiry_s=300, **kwargs.pop("mqtt", {})
        )
        svc = IngestService(
            conninfo=pg_url, schema=schema, mqtt_config=config, prefix=prefix, registry_refresh_s=1.0, **kwargs
        )
        svc.start()
        assert svc.wait_ready(10), "ingest did not subscribe within 10 s"
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI *app* with uvicorn in a thread on a free port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "viewer did not start within 15 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def viewer_url(pg_url: str, schema: str) -> Iterator[str]:
    """The viewer served by uvicorn in a thread on a free port."""
    with serve(create_app(conninfo=pg_url, schema=schema)) as url:
        yield url


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll *predicate* until it returns something truthy; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
