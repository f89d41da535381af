"""Print the fault suite's figures at the end of the run, so CI logs show them without -s."""

from __future__ import annotations

from typing import Any

from .harness import REPORTED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTED:
        terminalreporter.section("faults: published, stored, duplicated, lost, time to recover")
        for result in REPORTED:
            terminalreporter.write_line(result.line())
