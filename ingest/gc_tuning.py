"""Python's cyclic garbage collector, tuned for a long-running ingest process.

Measured with ``perf`` on ingest taking 20,000 single-reading messages a second (``bench/bench_peer.py --modes 1
--rate 20000``): 45 % of the process's CPU was the collector (``gc_collect_main``, ``visit_decref``,
``visit_reachable``). Every message makes a few short-lived containers (the parsed JSON, a tuple, a list), so a
young-generation collection ran every 700 of them, and the older generations' collections kept walking the
hundreds of thousands of objects start-up made (the sensor registry, the detectors, numpy, numba, psycopg) although
none of them will ever be garbage.

So once ingest has started: collect once, :func:`gc.freeze` what is left (the collector then never walks it again;
it is still freed normally by reference counting if it is dropped), and let far more allocations pass between
young collections. Cycles made later (an exception's traceback, a reconnect) are still collected, just less often;
the readings themselves hold no cycles and are freed at once by reference counting.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 50_000
"""Net allocations of tracked objects between young collections (Python's default: 700)."""


def settle_collector(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Freeze everything alive now out of the collector's walks and raise its young threshold.

    Call it once start-up has loaded what the process keeps for its lifetime. Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, max(middle, 20), max(old, 100))
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d start-up objects frozen, thresholds %s", frozen, gc.get_threshold())
    return frozen
