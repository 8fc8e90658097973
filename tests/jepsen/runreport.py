"""Figures of the cluster runs (operations checked, faults injected), printed at the end of the pytest session."""

from __future__ import annotations

LINES: list[str] = []
