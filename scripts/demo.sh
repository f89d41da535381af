#!/usr/bin/env bash
# Set up (first run only) and run the demo: embedded PostgreSQL and MQTT broker unless
# LIFELINE_DATABASE_URL / LIFELINE_MQTT_URL are set. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lifeline demo "$@"
