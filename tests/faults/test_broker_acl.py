"""The generated Mosquitto password file and ACL, enforced by a real Mosquitto: a sensor publishes only as itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.broker_config import accounts_for, write_broker_config
from twin.demo import demo_sensors

from ..conftest import free_port, wait_for

pytestmark = pytest.mark.integration
PREFIX = "lifeline/v1"


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        pytest.skip("Mosquitto is not installed")
    port = free_port()
    accounts = accounts_for(demo_sensors(), prefix=PREFIX)
    extra = ["persistence false", "log_dest stderr"] + (["user root"] if os.geteuid() == 0 else [])
    files = write_broker_config(tmp_path, accounts, port=port, bind="127.0.0.1", extra=extra)
    proc = subprocess.Popen([mosquitto, "-c", str(files.config)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _can_connect(port), timeout=10, what="secured Mosquitto")
        yield port, {a.username: a.password for a in accounts}
    finally:
        proc.terminate()
        proc.wait(10)


def _can_connect(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _client(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, list[object]]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    results: list[object] = []
    c.on_connect = lambda _c, _u, _f, rc, _p=None: results.append(rc)
    if user:
        c.username_pw_set(user, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: results, timeout=5, what="CONNACK")
    return c, results


def test_sensor_publishes_only_to_its_own_topic(secured_broker: tuple[int, dict[str, str]]) -> None:
    port, passwords = secured_broker
    got: list[str] = []
    ready = threading.Event()
    ingest, rc = _client(port, "lifeline-ingest", passwords["lifeline-ingest"])
    assert not rc[0].is_failure  # type: ignore[attr-defined]
    ingest.on_message = lambda _c, _u, msg: got.append(msg.topic)
    ingest.on_subscribe = lambda *_a: ready.set()
    ingest.subscribe(f"{PREFIX}/#", qos=1)
    assert ready.wait(5)
    sensor, rc = _client(port, "D-L-001", passwords["D-L-001"])
    assert not rc[0].is_failure  # type: ignore[attr-defined]
    own = sensor.publish(f"{PREFIX}/drainage/D-L-001", b"{}", qos=1)
    other = sensor.publish(f"{PREFIX}/drainage/D-L-002", b"{}", qos=1)
    forged = sensor.publish(f"{PREFIX}/alerts/drainage/D-L-001", b"{}", qos=1)
    for info in (own, other, forged):
        info.wait_for_publish(5)
    time.sleep(0.5)
    assert got == [f"{PREFIX}/drainage/D-L-001"]
    for c in (sensor, ingest):
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize(("user", "password"), [(None, None), ("D-L-001", "wrong"), ("nobody-here", "x")])
def test_anonymous_and_bad_credentials_are_refused(
    secured_broker: tuple[int, dict[str, str]], user: str | None, password: str | None
) -> None:
    port, _passwords = secured_broker
    client, rc = _client(port, user, password)
    assert rc[0].is_failure  # type: ignore[attr-defined]
    client.loop_stop()
