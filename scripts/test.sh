#!/usr/bin/env bash
# Set up (first run only) and run every quality gate and test: ruff, mypy, pytest.
# Needs PostgreSQL (LIFELINE_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test) and Mosquitto
# installed: the tests start their own broker, or use LIFELINE_TEST_MQTT_URL if set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test

export LIFELINE_TEST_DATABASE_URL=${LIFELINE_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
.venv/bin/python - <<'PY'
import os, shutil, socket, sys
from urllib.parse import urlsplit
missing = []
mosquitto = shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")
if not os.environ.get("LIFELINE_TEST_MQTT_URL") and not mosquitto:
    missing.append("Mosquitto is not installed (the tests start their own): apt-get install mosquitto, "
                   "or set LIFELINE_TEST_MQTT_URL")
for name in ("LIFELINE_TEST_DATABASE_URL", "LIFELINE_TEST_MQTT_URL"):
    if name not in os.environ:
        continue
    url = urlsplit(os.environ[name])
    port = url.port or (5432 if url.scheme.startswith("postgres") else 1883)
    try:
        socket.create_connection((url.hostname or "127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        missing.append(f"{name}={os.environ[name]}: {exc}")
if missing:
    sys.exit("!! services the tests need are not reachable:\n   " + "\n   ".join(missing))
PY

echo "== ruff"
.venv/bin/ruff check --no-cache .
.venv/bin/ruff format --check --no-cache .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
