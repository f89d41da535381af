"""Drills started from the operations centre: scenario runs of ``lifeline simulate`` in child processes.

The viewer never imports the simulators: a drill is the same command a test team runs, started with the
viewer's broker and database settings, publishing over MQTT like real sensors. Each drill can be listed and
stopped (SIGINT, the command's clean stop, which keeps what it wrote).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.errors import ConfigError


@dataclass
class Drill:
    """One drill: its command, process and output folder."""

    drill_id: int
    kind: str
    args: list[str]
    started_at: datetime
    workdir: Path
    proc: subprocess.Popen[bytes]
    stopped: bool = False
    log: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "running"
        if self.stopped:
            return "stopped"
        return "finished" if code == 0 else f"failed ({code})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.drill_id,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at,
            "output": str(self.workdir),
            "log_tail": self._tail(),
        }

    def _tail(self) -> str:
        path = self.workdir / "drill.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace")[-600:]
        except OSError:
            return ""


class DrillManager:
    """Start, list and stop drills.

    Args:
        env: environment for the drill commands (``LIFELINE_MQTT_URL``, ``LIFELINE_TOPIC_PREFIX``, and the database
            settings so drills run on the stored twin); None disables drills.
        demo_city: run drills on the built-in demo city (``--demo``) instead of the stored twin.
        max_running: how many drills may run at once.
    """

    def __init__(self, *, env: dict[str, str] | None, demo_city: bool = False, max_running: int = 2) -> None:
        self.env = env
        self.demo_city = demo_city
        self.max_running = max_running
        self._drills: dict[int, Drill] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.env is not None

    def running(self) -> bool:
        return any(d.status == "running" for d in self._drills.values())

    def describe(self) -> list[dict[str, Any]]:
        return [d.as_dict() for d in sorted(self._drills.values(), key=lambda d: -d.drill_id)]

    def start(self, kind: str, *, speed: str, params: dict[str, Any]) -> Drill:
        """Start a drill of *kind* (``rainstorm``, ``leak``, ``gas-leak`` or ``scenario``).

        Raises:
            ConfigError: drills are disabled here, too many are running, or a parameter is wrong.
        """
        if self.env is None:
            raise ConfigError("drills are not enabled on this server (it has no MQTT broker configured)")
        with self._lock:
            if sum(d.status == "running" for d in self._drills.values()) >= self.max_running:
                raise ConfigError(f"{self.max_running} drills are running already; stop one first")
            drill_id = next(self._ids)
            workdir = Path(tempfile.mkdtemp(prefix=f"lifeline-drill-{drill_id}-"))
            args = [
                "simulate",
                *self._args(kind, params, workdir),
                "--speed",
                str(speed),
                "--output",
                str(workdir / "run"),
            ]
            if self.demo_city:
                args.append("--demo")
            log = (workdir / "drill.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "lifeline", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
            log.close()
            drill = Drill(drill_id, kind, args, datetime.now(UTC), workdir, proc)
            self._drills[drill_id] = drill
            return drill

    def stop(self, drill_id: int, timeout_s: float = 20.0) -> Drill:
        """Stop a drill cleanly (what it published stays). Raises KeyError for an unknown id."""
        drill = self._drills[drill_id]
        if drill.proc.poll() is None:
            drill.stopped = True
            drill.proc.send_signal(signal.SIGINT)
            try:
                drill.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                drill.proc.kill()
                drill.proc.wait()
        return drill

    def close(self) -> None:
        """Stop every running drill and remove the drills' folders."""
        for drill_id in list(self._drills):
            self.stop(drill_id)
            shutil.rmtree(self._drills[drill_id].workdir, ignore_errors=True)

    @staticmethod
    def _args(kind: str, params: dict[str, Any], workdir: Path) -> list[str]:
        def number(name: str, default: float) -> str:
            value = params.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number")
            return str(value)

        def ident(name: str) -> list[str]:
            value = params.get(name)
            if value is None:
                return []
            if not isinstance(value, str) or not value or len(value) > 64 or value.startswith("-"):
                raise ConfigError(f"{name} must be an asset id")
            return [f"--{name}", value]

        if kind == "rainstorm":
            return [
                "rainstorm",
                "--return-period",
                number("return_period", 50),
                "--duration",
                str(int(float(number("duration_min", 120)))),
                "--drain",
                number("drain_min", 60),
            ]
        if kind in ("leak", "gas-leak"):
            ids = ident("junction") + ident("pipe")
            if not ids:
                raise ConfigError("a leak drill needs 'junction' or 'pipe'")
            return [
                kind,
                *ids,
                "--flow",
                number("flow", 10 if kind == "leak" else 20),
                "--at",
                number("at_h", 0.5),
                "--hours",
                number("hours", 3),
            ]
        if kind == "scenario":
            text = params.get("toml")
            if not isinstance(text, str) or not text.strip():
                raise ConfigError("a scenario drill needs the scenario file's text in 'toml'")
            path = workdir / "scenario.toml"
            path.write_text(text, encoding="utf-8")
            return ["scenario", str(path)]
        raise ConfigError(f"unknown drill kind {kind!r}: rainstorm, leak, gas-leak or scenario")
