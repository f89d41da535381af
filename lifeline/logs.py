"""Logging set-up for the command line."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with time, level and module; quieten chatty libraries."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("amqtt", "transitions", "uvicorn.access", "httpx", "pandapower", "pandapipes", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
