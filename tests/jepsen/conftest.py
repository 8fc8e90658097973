"""Shared set-up of the Jepsen-style tests: the example cluster's helpers on the import path, and the figures of
the cluster runs at the end of the session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import runreport

CLUSTER = str(Path(__file__).resolve().parents[2] / "examples" / "cluster")
if CLUSTER not in sys.path:
    sys.path.insert(0, CLUSTER)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if runreport.LINES:
        terminalreporter.section("linearizability under faults")
        for line in runreport.LINES:
            terminalreporter.write_line(line)
