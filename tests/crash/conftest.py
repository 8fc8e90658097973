"""Shared set-up of the crash and fault tests: import paths, scratch space on tmpfs, soak sizing, and the figures
printed at the end of the run (``make soak`` shows them)."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from crashutil import FIGURES, SOAK, scratch_base  # noqa: E402


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("aiowal crash and fault figures" + (" (soak)" if SOAK else ""))
    for name, (count, secs) in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {count} in {secs:.1f} s")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh directory on tmpfs when there is one (fsync is free there), else in the system temp directory."""
    path = Path(scratch_base()) / f"aiowal-crash-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
