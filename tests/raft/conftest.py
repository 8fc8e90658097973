"""Reports how many simulation seeds ran, at the end of the pytest run."""

from __future__ import annotations

import pytest
import raft_sim


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if raft_sim.SEEDS_PASSED:
        terminalreporter.write_line(
            f"raft simulation: {sum(raft_sim.SEEDS_PASSED.values())} seeds passed "
            f"({', '.join(f'{n} on {kind}' for kind, n in sorted(raft_sim.SEEDS_PASSED.items()))})"
        )
