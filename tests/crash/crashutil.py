"""Sizing and figures shared by the crash and fault tests (``conftest.py`` prints the figures at the end)."""

from __future__ import annotations

import os
import tempfile

SOAK = os.environ.get("AIOWAL_SOAK", "") not in ("", "0")

FIGURES: dict[str, tuple[int, float]] = {}
"""Counts reported by the tests: name -> (count, seconds)."""


def report(name: str, count: int, seconds: float) -> None:
    old = FIGURES.get(name, (0, 0.0))
    FIGURES[name] = (old[0] + count, old[1] + seconds)


def scratch_base() -> str:
    """tmpfs when there is one (syncs are free there), else the system temp directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()
