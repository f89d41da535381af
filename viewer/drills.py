"""Drills started from the operations centre: scenario runs of ``lifeline simulate`` in child processes.

The viewer never imports the simulators: a drill is the same command a test team runs, started with the
viewer's broker and database settings, publishing over MQTT like real sensors. Each drill can be listed and
stopped (SIGINT, the command's clean stop, which keeps what it wrote).

With a database, every drill is registered (:mod:`twin.store.drills`) before its command starts, with the
networks it feeds: alerts raised on them while it runs are marked with its id (演练 DRILL) wherever they show.
A thread renews the registry's lease of the running drills and records when each stops or finishes.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twin.errors import ConfigError
from twin.store import drills as registry
from twin.store.db import connect

log = logging.getLogger(__name__)

ALL_NETWORKS = ("drainage", "water", "gas", "rain")


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
    networks: tuple[str, ...] = ALL_NETWORKS
    registered: bool = False
    closed: bool = False
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
            "networks": list(self.networks),
            "registered": self.registered,
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
        conninfo, schema: the store where drills are registered so their alerts are marked; None: not registered
            (the drill's alerts then look like real ones apart from the page's banner).
        renew_s: how often the registry's leases are renewed and ended drills recorded, seconds.
    """

    def __init__(
        self,
        *,
        env: dict[str, str] | None,
        demo_city: bool = False,
        max_running: int = 2,
        conninfo: str | None = None,
        schema: str | None = None,
        renew_s: float = registry.RENEW_S,
    ) -> None:
        self.env = env
        self.demo_city = demo_city
        self.max_running = max_running
        self.conninfo = conninfo
        self.schema = schema
        self.renew_s = renew_s
        self._drills: dict[int, Drill] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def enabled(self) -> bool:
        return self.env is not None

    def running(self) -> bool:
        return any(d.status == "running" for d in self._drills.values())

    def describe(self) -> list[dict[str, Any]]:
        return [d.as_dict() for d in sorted(self._drills.values(), key=lambda d: -d.drill_id)]

    def start(self, kind: str, *, speed: str, params: dict[str, Any], started_by: str = "") -> Drill:
        """Start a drill of *kind* (``rainstorm``, ``leak``, ``gas-leak`` or ``scenario``).

        The drill is registered first (when a store is configured), so its first alert is already marked.

        Raises:
            ConfigError: drills are disabled here, too many are running, or a parameter is wrong.
        """
        if self.env is None:
            raise ConfigError("drills are not enabled on this server (it has no MQTT broker configured)")
        with self._lock:
            if sum(d.status == "running" for d in self._drills.values()) >= self.max_running:
                raise ConfigError(f"{self.max_running} drills are running already; stop one first")
            workdir = Path(tempfile.mkdtemp(prefix="lifeline-drill-"))
            try:
                drill_args = self._args(kind, params, workdir)
            except ConfigError:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            networks = networks_of(kind, params)
            registered = self.conninfo is not None and self.schema is not None
            drill_id = self._register(kind, networks, params, started_by) if registered else next(self._ids)
            args = [
                "simulate",
                *drill_args,
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
            drill = Drill(drill_id, kind, args, datetime.now(UTC), workdir, proc, networks=networks)
            drill.registered = registered
            self._drills[drill_id] = drill
            if registered and (self._watcher is None or not self._watcher.is_alive()):
                self._watcher = threading.Thread(target=self._watch, name="drill-lease", daemon=True)
                self._watcher.start()
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
        self._record_end(drill)
        return drill

    def close(self) -> None:
        """Stop every running drill and remove the drills' folders."""
        self._closing.set()
        for drill_id in list(self._drills):
            self.stop(drill_id)
            shutil.rmtree(self._drills[drill_id].workdir, ignore_errors=True)

    def _register(self, kind: str, networks: tuple[str, ...], params: dict[str, Any], started_by: str) -> int:
        assert self.conninfo is not None and self.schema is not None
        shown = {k: v for k, v in params.items() if k != "toml"}  # a scenario file's text stays in its folder
        try:
            with connect(self.conninfo, schema=self.schema, autocommit=True) as conn:
                return registry.open_drill(conn, kind=kind, networks=networks, params=shown, started_by=started_by)
        except Exception as exc:
            # An unmarked drill would raise alerts that look real: better not to start it.
            raise ConfigError(f"cannot register the drill in the store, so it is not started: {exc}") from exc

    def _record_end(self, drill: Drill) -> None:
        if not drill.registered or drill.closed or drill.status == "running":
            return
        assert self.conninfo is not None and self.schema is not None
        try:
            with connect(self.conninfo, schema=self.schema, autocommit=True) as conn:
                registry.close_drill(conn, drill.drill_id, outcome=drill.status)
            drill.closed = True
        except Exception:  # the lease ends it anyway; try again on the next round
            log.exception("drill %d: could not record its end in the store", drill.drill_id)

    def _watch(self) -> None:
        """Renew the leases of running drills and record the ends of finished ones, until none runs."""
        while True:
            running = [d for d in list(self._drills.values()) if d.registered and d.status == "running"]
            for drill in list(self._drills.values()):
                self._record_end(drill)
            if running and not self._closing.is_set():
                assert self.conninfo is not None and self.schema is not None
                try:
                    with connect(self.conninfo, schema=self.schema, autocommit=True) as conn:
                        registry.renew(conn, [d.drill_id for d in running])
                except Exception:
                    log.exception("could not renew the drills' leases; retrying in %.0f s", self.renew_s)
            elif not any(d.registered and not d.closed for d in self._drills.values()):
                return
            if self._closing.wait(self.renew_s):
                for drill in list(self._drills.values()):
                    self._record_end(drill)
                return

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

        def methane_reporting() -> list[str]:
            # How the methane detectors report: "regular" (once a sensor step) or "change" (also at once when the
            # value moves: the setting the gas early-warning figures need), as `lifeline simulate gas-leak` takes.
            report = params.get("methane_report", "regular")
            if report not in ("regular", "change"):
                raise ConfigError("methane_report must be 'regular' or 'change'")
            if report == "regular":
                for name in ("methane_sample_s", "methane_change"):
                    if name in params:
                        raise ConfigError(f"{name} needs methane_report 'change'")
                return []
            sample = params.get("methane_sample_s", 5)
            if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1 or 60 % sample:
                raise ConfigError("methane_sample_s must be a whole number of seconds dividing 60")
            change = float(number("methane_change", 2.0))
            if not 0 < change <= 100:
                raise ConfigError("methane_change must be above 0 and at most 100 %LEL")
            return ["--methane-report", "change", "--methane-sample-s", str(sample), "--methane-change", str(change)]

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
            args = [
                kind,
                *ids,
                "--flow",
                number("flow", 10 if kind == "leak" else 20),
                "--at",
                number("at_h", 0.5),
                "--hours",
                number("hours", 3),
            ]
            if kind == "gas-leak":
                args += methane_reporting()
            return args
        if kind == "scenario":
            text = params.get("toml")
            if not isinstance(text, str) or not text.strip():
                raise ConfigError("a scenario drill needs the scenario file's text in 'toml'")
            path = workdir / "scenario.toml"
            path.write_text(text, encoding="utf-8")
            return ["scenario", str(path)]
        raise ConfigError(f"unknown drill kind {kind!r}: rainstorm, leak, gas-leak or scenario")


def networks_of(kind: str, params: dict[str, Any]) -> tuple[str, ...]:
    """The networks a drill of *kind* publishes readings on (all four when a scenario file cannot be read)."""
    if kind == "rainstorm":
        return ("drainage", "rain")
    if kind == "leak":
        return ("water",)
    if kind == "gas-leak":
        return ("gas",)
    try:
        doc = tomllib.loads(str(params.get("toml", "")))
    except tomllib.TOMLDecodeError:
        return ALL_NETWORKS
    found = []
    if "rainstorm" in doc:
        found += ["drainage", "rain"]
    if "water" in doc:
        found.append("water")
    if "gas" in doc:
        found.append("gas")
    return tuple(found) or ALL_NETWORKS
