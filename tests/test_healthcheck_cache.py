"""The health check's period cache: a stale result is served at once and refreshed in the background.

Evaluating a year of a city takes tens of seconds; only the first request for a period, or a request that needs a
fresh result (a diagnosis writes to the ledger), may wait for it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from models.healthcheck.report import PeriodResult
from viewer.routes import healthcheck


def _result(label: str) -> PeriodResult:
    return cast(PeriodResult, label)  # the cache only keeps and returns it


def _label(result: PeriodResult) -> str:
    return cast(str, result)


def test_stale_result_is_served_at_once_and_refreshed_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(healthcheck, "CACHE_TTL_S", 0.05)
    cache = healthcheck._Cache()
    calls: list[str] = []
    release = threading.Event()

    def compute() -> PeriodResult:
        calls.append("compute")
        return _result("first")

    def slow_refresh() -> PeriodResult:
        calls.append("refresh")
        release.wait(10)
        return _result("second")

    assert _label(cache.get("y2026", compute, background=slow_refresh)) == "first"  # nothing kept: computed now
    time.sleep(0.1)  # now stale
    started = time.monotonic()
    assert _label(cache.get("y2026", compute, background=slow_refresh)) == "first"  # kept one, at once
    assert _label(cache.get("y2026", compute, background=slow_refresh)) == "first"  # one refresh at a time
    assert time.monotonic() - started < 1.0
    release.set()
    deadline = time.monotonic() + 10
    while _label(cache.get("y2026", compute, background=slow_refresh)) != "second":
        assert time.monotonic() < deadline, "the refresh never landed"
        time.sleep(0.01)
    assert calls.count("compute") == 1 and calls.count("refresh") >= 1


def test_fresh_requests_wait_for_a_new_result_and_a_failed_refresh_keeps_the_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(healthcheck, "CACHE_TTL_S", 0.05)
    cache = healthcheck._Cache()
    assert _label(cache.get("p", lambda: _result("old"))) == "old"
    time.sleep(0.1)

    def broken() -> PeriodResult:
        raise RuntimeError("database away")

    assert _label(cache.get("p", lambda: _result("never"), background=broken)) == "old"
    deadline = time.monotonic() + 5
    while "p" in cache.refreshing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _label(cache.items["p"][1]) == "old"  # the failed refresh kept what was there
    # Without a background refresh (a diagnosis), a stale entry is computed again before answering.
    assert _label(cache.get("p", lambda: _result("new"))) == "new"


def test_one_computation_of_a_period_at_a_time() -> None:
    cache = healthcheck._Cache()
    running = 0
    most = 0
    lock = threading.Lock()

    def compute() -> PeriodResult:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return _result("done")

    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", compute))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["done"] * 4 and most == 1
