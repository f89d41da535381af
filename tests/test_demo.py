"""`lifeline demo` as a new user runs it: embedded servers, the page answers, an alert arrives, Ctrl-C cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from .conftest import free_port, wait_for

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_demo_starts_embedded_servers_serves_alerts_and_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    proc = subprocess.Popen(
        # The what-if surrogate's training (18 SWMM runs) has its own test (tests/test_whatif_demo.py).
        [sys.executable, "-m", "lifeline", "demo", "--port", str(port), "--interval", "0.5", "--no-whatif"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: out.extend(iter(stdout.readline, "")), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: any(url in line for line in out), timeout=60, what=f"the demo to print {url}")
        assert "吉安市城市生命线安全监测" in httpx.get(url).text
        assert httpx.get(url + "api/info").json()["drill"] is True
        assert len(httpx.get(url + "api/sensors").json()) >= 400
        assert httpx.get(url + "api/scene.glb").content[:4] == b"glTF"
        assert httpx.get(url + "api/twin").json()["layers"]["drainage"]["version"] == 1
        alerts = wait_for(lambda: httpx.get(url + "api/alerts").json(), timeout=90, what="a first alert")
        assert alerts[0]["grade"] in (1, 2, 3, 4)
        servers = _children(proc.pid)
        assert len(servers) == 2, f"expected PostgreSQL and the broker as children, got {servers}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, "".join(out[-30:])
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any("demo stopped" in line for line in out)
    wait_for(lambda: not any(_alive(pid) for pid in servers), timeout=10, what="embedded servers to exit")
