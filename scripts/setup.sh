#!/usr/bin/env bash
# Create .venv (once) and install Lifeline Twin into it; with "test", also the test tools and a browser.
# Re-running is cheap: pip only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Lifeline Twin needs Python ≥ 3.11 (found: $("$PYTHON" --version 2>&1 || echo none))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

extra=""
[ "${1:-}" = "test" ] && extra="[test]"
stamp=".venv/.installed${extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing lifeline-twin${extra} into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extra}"
  touch "$stamp"
fi

if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium (browser tests) and CJK fonts"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
  else
    echo "!! /usr/bin/chromium is missing: the browser tests need it (sudo apt-get install chromium fonts-noto-cjk)" >&2
  fi
fi

# The sensor-health and baseline kernels are compiled by numba once and cached beside their sources
# (models/__pycache__): do it here, so the first ingest start (or several at once in the tests) does not pay ~20 s.
LIFELINE_KERNELS=jit .venv/bin/python -c \
  'from models import baseline_kernel as b, sensor_health_kernel as h; h.compile_kernels(); b.compile_kernels()'
# They are also compiled ahead of time into extension modules beside their sources (models/kernel_aot.py, ~30 s
# the first time): a running ingest then loads neither numba nor LLVM (~140 MB less resident memory). Needs a C
# compiler; without one the JIT above is used, with the same results.
if ! .venv/bin/python -m models.kernel_aot; then
  echo "!! the kernels could not be compiled ahead of time (is gcc installed?): numba compiles them at start" >&2
fi
