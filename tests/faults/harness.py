"""Shared parts of the fault tests: real ingest processes, a private Mosquitto, a paced load and its count.

Every fault test publishes a fixed load (one reading per message, QoS 1, at a fixed rate), injects its fault in
the middle of the stream, and then counts what the ``readings`` table holds against what was published:

- *published*: messages sent (each holds one reading); *acked*: those the broker acknowledged (PUBACK);
- *stored*: published readings found in the table with the published value;
- *duplicated*: extra rows for a ``(sensor_id, ts)`` that is already there (counted with ``GROUP BY``, not by
  trusting the primary key);
- *lost*: published readings missing from the table;
- *unexpected*: rows that nobody published (a wrong timestamp or sensor would show here).

Each test prints one line (and appends it to ``tests/artifacts/faults.jsonl``) with the fault, the counts and the
time to recover: seconds from the end of the fault (restart issued, lock released…) until a reading published after
that moment is in the table, which includes working off the backlog the fault left.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from twin.demo import demo_sensors
from twin.mqtt import MqttConfig, connect, make_client
from twin.sensors import Quantity, Sensor
from twin.store.db import DictConnection

from ..conftest import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
FAULTS_LOG = ARTIFACTS / "faults.jsonl"

# A value for each quantity, in its canonical unit, that stays inside the valid range and below every alarm limit
# of the demo sensors, so the load measures storage and not alerting.
_QUIET_VALUE: Mapping[Quantity, tuple[float, str]] = {
    Quantity.LEVEL: (0.30, "m"),
    Quantity.FLOW: (50.0, "L/s"),
    Quantity.RAIN_RATE: (5.0, "mm/h"),
    Quantity.PRESSURE: (300.0, "kPa"),
    Quantity.METHANE: (1.0, "%LEL"),
}

# A flood wave at a drainage level sensor, metres: 0.3 m up to 1.8 m and back in 0.1 m steps, crossing the grade
# IV, III and II limits (0.8, 1.2, 1.6 m) both ways. Gradual, so sensor health sees no spike.
_ALERT_CYCLE_M = tuple(round(0.3 + 0.1 * min(i, 30 - i), 1) for i in range(30))


# -- the load -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    """A fixed load: *n* readings spread over the demo sensors, one reading per message.

    Reading *k* belongs to sensor ``k % len(sensors)`` at ``start + (k // len(sensors)) * step_s``, so every
    ``(sensor_id, ts)`` is distinct; its value is a quiet value for the quantity plus ``(k % 1000) / 10000``, so a
    stored value can be checked against the published one.

    With *alerting*, the load uses only the drainage level sensors and runs each through flood waves (0.3 m to
    1.8 m and back in 0.1 m steps, 30 readings), which cross their alarm limits both ways: about six alert events a
    wave.

    Attributes:
        n: number of readings (= messages).
        prefix: the test's topic prefix.
        alerting: make alert events (see above) instead of quiet readings.
        start: time of the first reading (UTC); defaults to two hours ago, well inside the accepted age.
        step_s: seconds between a sensor's readings.
    """

    n: int
    prefix: str
    alerting: bool = False
    start: datetime = field(default_factory=lambda: (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0))
    step_s: float = 1.0
    sensors: tuple[Sensor, ...] = field(init=False)

    def __post_init__(self) -> None:
        sensors = demo_sensors()
        if self.alerting:
            sensors = [s for s in sensors if s.quantity is Quantity.LEVEL and s.network.value == "drainage"]
        object.__setattr__(self, "sensors", tuple(sensors))

    @classmethod
    def live(cls, n: int, prefix: str, *, rate_per_s: float, alerting: bool = False) -> Load:
        """A load whose timestamps follow the publishing schedule at *rate_per_s* from now, as live sensors'
        would: sensor health judges a steady delay of hours as a clock running late and distrusts the readings.
        """
        probe = cls(1, prefix, alerting=alerting)
        return cls(n, prefix, alerting=alerting, start=datetime.now(UTC), step_s=len(probe.sensors) / rate_per_s)

    def key(self, k: int) -> tuple[str, int]:
        """Return reading *k*'s ``(sensor_id, ts in epoch milliseconds)``."""
        sensor = self.sensors[k % len(self.sensors)]
        start_ms = int(self.start.timestamp() * 1000)
        return sensor.sensor_id, start_ms + (k // len(self.sensors)) * round(self.step_s * 1000)

    def value(self, k: int) -> float:
        """Return reading *k*'s value in the sensor's canonical unit."""
        if self.alerting:
            return _ALERT_CYCLE_M[(k // len(self.sensors)) % len(_ALERT_CYCLE_M)]
        base, _unit = _QUIET_VALUE[self.sensors[k % len(self.sensors)].quantity]
        return round(base + (k % 1000) / 10000, 4)

    def message(self, k: int) -> tuple[str, bytes]:
        """Return reading *k* as an MQTT ``(topic, payload)``."""
        sensor = self.sensors[k % len(self.sensors)]
        _sensor_id, ts_ms = self.key(k)
        _base, unit = _QUIET_VALUE[sensor.quantity]
        payload = orjson.dumps({"ts": ts_ms, "value": self.value(k), "unit": unit, "seq": k})
        return f"{self.prefix}/{sensor.network.value}/{sensor.sensor_id}", payload


NO_MATCHING_SUBSCRIBERS = 16
"""MQTT 5 PUBACK reason code: the broker accepted the message but no subscription matched, so it went nowhere."""


class LoadPublisher:
    """Publish a :class:`Load` at a fixed rate from a thread, as a sensor gateway would.

    The client has a persistent session and paho's own unbounded queue: a message published while the broker is
    away is kept and sent after the reconnect, and one sent without a PUBACK is sent again (with DUP).

    Args:
        config: the broker.
        load: what to publish.
        rate_per_s: messages per second.
        client_id: the publisher's client id.
    """

    def __init__(self, config: MqttConfig, load: Load, *, rate_per_s: float, client_id: str) -> None:
        self.load = load
        self.rate_per_s = rate_per_s
        self.sent = 0
        self.sent_at: list[float] = []
        self.errors: list[str] = []
        self._config = MqttConfig(
            host=config.host, port=config.port, client_id=client_id, session_expiry_s=300, protocol=config.protocol
        )
        self._client = make_client(self._config, persistent=True)
        self._connected = threading.Event()
        self.connects = 0
        self._acked = 0
        self.unrouted: list[int] = []
        """Packet ids the broker acknowledged with MQTT 5 reason 16, "No matching subscribers": counted as acked
        (the broker answered), but it kept them for nobody."""
        self._mids: list[int] = []
        self._acked_at_by_mid: dict[int, float] = {}
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="load-publisher", daemon=True)

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object = None) -> None:
        if not reason.is_failure:
            self.connects += 1
            self._connected.set()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: object, _p: object = None) -> None:
        # Called once per QoS 1 message, on its PUBACK (MQTTMessageInfo.is_published() raises for a message
        # that was queued while disconnected, even after it has been sent and acknowledged).
        self._acked += 1
        self._acked_at_by_mid[mid] = time.time()
        if getattr(reason, "value", 0) == NO_MATCHING_SUBSCRIBERS:
            self.unrouted.append(mid)

    def acked_at(self, k: int) -> float | None:
        """Wall-clock time (epoch seconds) at which the broker acknowledged message *k*, or None if it has not.

        Packet ids wrap at 65,535, so this holds only for loads smaller than that.
        """
        return self._acked_at_by_mid.get(self._mids[k]) if k < len(self._mids) else None

    def start(self, timeout_s: float = 15.0) -> LoadPublisher:
        """Connect, then start publishing in the background."""
        connect(self._client, self._config, persistent=True)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            pytest.fail(f"publisher could not connect to {self._config.url} within {timeout_s} s")
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        for k in range(self.load.n):
            delay = t0 + k / self.rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            topic, payload = self.load.message(k)
            info = self._client.publish(topic, payload, qos=1)
            self._mids.append(info.mid)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self.errors.append(f"message {k}: {mqtt.error_string(info.rc)}")
            self.sent_at.append(time.monotonic())
            self.sent = k + 1

    @property
    def done(self) -> bool:
        return self.sent == self.load.n

    def acked(self) -> int:
        """Messages the broker has acknowledged so far."""
        return self._acked

    def wait_sent(self, count: int, timeout_s: float) -> None:
        """Wait until *count* messages have been handed to the client."""
        wait_for(lambda: self.sent >= count, timeout=timeout_s, what=f"{count} messages published")

    def first_sent_after(self, t: float) -> int:
        """Index of the first message published at or after monotonic time *t* (the last one if none was)."""
        wait_for(lambda: self.done or (self.sent_at and self.sent_at[-1] >= t), timeout=60, what="publishing")
        for k, at in enumerate(self.sent_at):
            if at >= t:
                return k
        return self.load.n - 1

    def finish(self, timeout_s: float = 120.0) -> int:
        """Wait for every message to be sent and acknowledged by the broker; return the number acknowledged."""
        self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.acked() < self.load.n and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.acked()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# -- counting -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """What the table holds for a :class:`Load` (see the module docstring for each count)."""

    published: int
    stored: int
    duplicated: int
    lost: int
    unexpected: int
    wrong_value: int

    @property
    def exact(self) -> bool:
        """Every published reading stored once with its value, nothing else."""
        return (self.stored, self.duplicated, self.lost, self.unexpected, self.wrong_value) == (
            self.published,
            0,
            0,
            0,
            0,
        )


def count_stored(db: DictConnection, load: Load) -> Tally:
    """Count the ``readings`` rows of the test's schema against *load*."""
    expected = {load.key(k): load.value(k) for k in range(load.n)}
    rows = db.execute(
        "SELECT sensor_id, round(extract(epoch FROM ts) * 1000)::bigint AS ts_ms, value FROM readings"
    ).fetchall()
    seen: Counter[tuple[str, int]] = Counter()
    wrong = 0
    for row in rows:
        key = (row["sensor_id"], int(row["ts_ms"]))
        seen[key] += 1
        if key in expected and abs(float(row["value"]) - expected[key]) > 1e-6:
            wrong += 1
    present = [key for key in seen if key in expected]
    return Tally(
        published=load.n,
        stored=len(present),
        duplicated=sum(c - 1 for c in seen.values()),
        lost=load.n - len(present),
        unexpected=sum(c for key, c in seen.items() if key not in expected),
        wrong_value=wrong,
    )


def lost_readings(db: DictConnection, load: Load) -> list[int]:
    """Indexes of the readings of *load* that are not in the table."""
    rows = db.execute("SELECT sensor_id, round(extract(epoch FROM ts) * 1000)::bigint AS ts_ms FROM readings")
    present = {(row["sensor_id"], int(row["ts_ms"])) for row in rows.fetchall()}
    return [k for k in range(load.n) if load.key(k) not in present]


def row_count(db: DictConnection) -> int:
    row = db.execute("SELECT count(*) AS n FROM readings").fetchone()
    assert row is not None
    return int(row["n"])


def is_stored(db: DictConnection, load: Load, k: int) -> bool:
    """Whether reading *k* of *load* is in the table."""
    sensor_id, ts_ms = load.key(k)
    row = db.execute(
        "SELECT 1 AS one FROM readings WHERE sensor_id = %s AND ts = to_timestamp(%s / 1000.0)", (sensor_id, ts_ms)
    ).fetchone()
    return row is not None


def wait_stored(db: DictConnection, load: Load, *, timeout_s: float, quiet_s: float | None = None) -> Tally:
    """Wait until every reading of *load* is stored, *timeout_s* passes, or (given *quiet_s*) the table has not
    grown for *quiet_s* seconds; return the final count.

    Returns the count rather than failing, so the test reports what was lost.
    """
    deadline = time.monotonic() + timeout_s
    rows, grew_at = row_count(db), time.monotonic()
    while rows < load.n and time.monotonic() < deadline:
        if quiet_s is not None and time.monotonic() - grew_at > quiet_s:
            break
        time.sleep(0.2)
        now_rows = row_count(db)
        if now_rows != rows:
            rows, grew_at = now_rows, time.monotonic()
    # Anything still in flight would show as a late duplicate or a late row: give it a moment.
    time.sleep(1.0)
    return count_stored(db, load)


def time_to_recover(db: DictConnection, publisher: LoadPublisher, fault_end: float, *, timeout_s: float) -> float:
    """Seconds from *fault_end* (monotonic) until the first reading published after it is stored."""
    k = publisher.first_sent_after(fault_end)
    deadline = time.monotonic() + timeout_s
    while not is_stored(db, publisher.load, k):
        if time.monotonic() > deadline:
            pytest.fail(f"reading {k}, published after the fault, not stored within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - fault_end


# -- reporting ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultReport:
    """One line of the fault suite's results."""

    fault: str
    published: int
    acked: int
    stored: int
    duplicated: int
    lost: int
    recover_s: float | None
    redelivered: int = 0
    note: str = ""
    unrouted: int | None = None

    def line(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f} s"
        unrouted = "" if self.unrouted is None else f" (of them with no matching subscriber {self.unrouted})"
        text = (
            f"FAULT {self.fault}: published {self.published}, acked by broker {self.acked}{unrouted}, stored "
            f"{self.stored}, duplicated {self.duplicated}, lost {self.lost}, time to recover {recover}, "
            f"redelivered (duplicates ignored by ingest) {self.redelivered}"
        )
        return f"{text}; {self.note}" if self.note else text


REPORTED: list[FaultReport] = []
"""Every fault reported in this pytest run, in order (for a terminal summary)."""


def report(
    fault: str,
    tally: Tally,
    *,
    acked: int,
    recover_s: float | None,
    redelivered: int = 0,
    note: str = "",
    unrouted: int | None = None,
) -> FaultReport:
    """Print the fault's line and append it to ``tests/artifacts/faults.jsonl``; return it. *unrouted*: of the
    acked messages, how many the broker acknowledged with "no matching subscribers" (kept for nobody)."""
    result = FaultReport(
        fault=fault,
        published=tally.published,
        acked=acked,
        stored=tally.stored,
        duplicated=tally.duplicated,
        lost=tally.lost,
        recover_s=None if recover_s is None else round(recover_s, 2),
        redelivered=redelivered,
        note=note,
        unrouted=unrouted,
    )
    print(result.line())
    REPORTED.append(result)
    ARTIFACTS.mkdir(exist_ok=True)
    with FAULTS_LOG.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"), **asdict(result)}) + "\n")
    return result


# -- processes ------------------------------------------------------------------------------------------------


def lifeline_env(
    *, pg_url: str, schema: str, broker: MqttConfig, prefix: str, state_dir: Path, **settings: str
) -> dict[str, str]:
    """The environment of a ``lifeline`` subprocess: this test's database schema, broker and topic prefix.

    Ingest's disk spools go under *state_dir* (the test's ``tmp_path``), not the user's home. Extra *settings* are
    given without the ``LIFELINE_`` prefix, e.g. ``mqtt_client_id="ingest-a"``.
    """
    env = {
        **os.environ,
        "LIFELINE_DATABASE_URL": pg_url,
        "LIFELINE_MQTT_URL": broker.url,
        "LIFELINE_DB_SCHEMA": schema,
        "LIFELINE_TOPIC_PREFIX": prefix,
        "LIFELINE_MQTT_SESSION_EXPIRY_S": "300",
        "LIFELINE_SPOOL_DIR": str(state_dir / "spool"),
        "LIFELINE_LOG_LEVEL": "INFO",
    }
    env.update({f"LIFELINE_{name.upper()}": value for name, value in settings.items()})
    return env


_STATS = re.compile(r"ingest stopped: (\{.*\})")
_DUPLICATES = re.compile(r"batch: \d+ readings stored, (\d+) duplicates ignored")


class LifelineProcess:
    """A ``python -m lifeline <command>`` subprocess whose log (stderr) is collected line by line.

    Args:
        args: the command and its options, e.g. ``["ingest"]`` or ``["serve", "--port", "8123"]``.
        env: its environment (see :func:`lifeline_env`).
        name: shown in failure messages.
    """

    def __init__(self, args: list[str], env: Mapping[str, str], *, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lifeline", *args],
            env=dict(env),
            cwd=REPO,
            text=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        """How many log lines contain *text*."""
        return sum(1 for line in list(self.lines) if text in line)

    def wait_log(self, text: str, *, times: int = 1, timeout_s: float = 30.0) -> None:
        """Wait until *text* has appeared in *times* log lines; fail (with the log's tail) if the process exits."""

        def seen() -> bool:
            if self.count(text) >= times:
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return False

        wait_for(seen, timeout=timeout_s, what=f"{self.name} to log {text!r} ({times}×)")

    def tail(self, n: int = 30) -> str:
        return "".join(list(self.lines)[-n:])

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last write, no acknowledgements."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL after *timeout_s*. Return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode

    def ingest_stats(self) -> dict[str, Any]:
        """The counters ingest logged when it stopped cleanly (``messages``, ``readings_stored``, …)."""
        for line in reversed(list(self.lines)):
            match = _STATS.search(line)
            if match:
                # The dict's repr holds datetime objects; keep only the numbers and flags.
                text = re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1))
                stats: dict[str, Any] = ast.literal_eval(text)
                return stats
        pytest.fail(f"{self.name} logged no final statistics:\n{self.tail()}")

    def duplicates_ignored(self) -> int:
        """Readings ingest found already stored (redeliveries), from its per-batch log lines."""
        return sum(int(m.group(1)) for line in list(self.lines) if (m := _DUPLICATES.search(line)))


def start_ingest_process(env: Mapping[str, str], *, name: str = "ingest", timeout_s: float = 60.0) -> LifelineProcess:
    """Start ``lifeline ingest`` and wait until it has subscribed."""
    proc = LifelineProcess(["ingest"], env, name=name)
    try:
        proc.wait_log("subscribed to", timeout_s=timeout_s)
    except BaseException:
        proc.stop()
        raise
    return proc


# -- a private Mosquitto that can be restarted -------------------------------------------------------------------


class RestartableMosquitto:
    """A private Mosquitto built from ``deploy/mosquitto.conf``, with its persistence file in *workdir*.

    The deployed settings are kept (persistence, autosave interval, queue and in-flight limits); only the listener
    (a free port on 127.0.0.1), the persistence location and the log destination change. :meth:`restart` stops it
    with SIGTERM (Mosquitto then writes its persistence file) and starts it again on the same port.
    """

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.skip("Mosquitto is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = []
        for line in (REPO / "deploy" / "mosquitto.conf").read_text().splitlines():
            word = line.split(" ", 1)[0]
            if word == "listener":
                line = f"listener {self.port} 127.0.0.1"
            elif word == "persistence_location":
                line = f"persistence_location {self.data}/"
            elif word == "log_dest":
                line = "log_dest stderr"
            lines.append(line)
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise Mosquitto switches to the 'mosquitto' user
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def config(self) -> MqttConfig:
        return MqttConfig(host="127.0.0.1", port=self.port)

    @property
    def persistence_file(self) -> Path:
        return self.data / "mosquitto.db"

    def start(self, timeout_s: float = 15.0) -> None:
        with self.log.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        self.starts += 1

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"Mosquitto exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout=timeout_s, what="Mosquitto to listen")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        """Stop with *sig* (SIGTERM: Mosquitto saves its persistence file first) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


# -- a websocket client that resumes -----------------------------------------------------------------------------


class ResumingAlertClient:
    """A reconnecting ``/ws/alerts`` client that resumes from the last alert event it saw.

    It behaves as emergency staff's client should: on any disconnect it tries again every *retry_s* seconds with
    ``?after=<last event id it saw>`` (``?after=0`` the first time, so it sees every event).

    Attributes:
        event_ids: every ``event_id`` received, in order, repeats included.
        connections: monotonic times at which a connection was opened (the first included).
        disconnects: monotonic times at which a connection was lost.
        first_message_at: for each connection, when its first message (``hello``) arrived.
    """

    def __init__(self, ws_url: str, *, retry_s: float = 0.2) -> None:
        self.ws_url = ws_url
        self.retry_s = retry_s
        self.event_ids: list[int] = []
        self.connections: list[float] = []
        self.disconnects: list[float] = []
        self.first_message_at: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-client", daemon=True)

    def start(self) -> ResumingAlertClient:
        self._thread.start()
        return self

    @property
    def last_id(self) -> int:
        return self.event_ids[-1] if self.event_ids else 0

    def _run(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect as ws_connect

        while not self._stop.is_set():
            try:
                with ws_connect(f"{self.ws_url}?after={self.last_id}", open_timeout=5) as ws:
                    self.connections.append(time.monotonic())
                    first = True
                    while not self._stop.is_set():
                        try:
                            message = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        if first:
                            self.first_message_at.append(time.monotonic())
                            first = False
                        if message.get("type") == "alert":
                            self.event_ids.append(int(message["event_id"]))
            except (OSError, WebSocketException) as exc:
                if self.connections and (not self.disconnects or self.disconnects[-1] < self.connections[-1]):
                    self.disconnects.append(time.monotonic())
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                self._stop.wait(self.retry_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
