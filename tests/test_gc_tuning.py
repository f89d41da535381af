"""The collector's tuning for ingest: start-up objects frozen out of its walks, cycles made later still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ingest.gc_tuning import settle_collector


@pytest.fixture
def restore_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("restore_collector")
def test_start_up_objects_are_frozen_and_later_cycles_are_still_collected() -> None:
    kept = [{"sensor": i} for i in range(1000)]
    frozen = settle_collector(young_threshold=5_000)
    assert frozen >= len(kept)
    assert gc.get_threshold()[0] == 5_000
    # A cycle made after start-up (as an exception's traceback makes) is garbage the collector still finds.
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    assert ref() is not None
    gc.collect()
    assert ref() is None
    # Frozen objects stay alive and usable; dropping them frees them by reference counting as usual.
    assert kept[999] == {"sensor": 999}
