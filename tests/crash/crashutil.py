"""Sizing and figures shared by the crash and fault tests (``conftest.py`` prints the figures at the end), and
reading the output of a child process that is killed."""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def read_until_ready(proc: subprocess.Popen[bytes], errfile: Path, timeout: float = 30.0) -> bytes:
    """Read the child's stdout until its ``ready`` line; returns what came after it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"ready\n" not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    if b"ready\n" not in buf:
        proc.kill()
        proc.wait()
        raise AssertionError(f"child did not start: {errfile.read_text()[-3000:]}")
    return buf.split(b"ready\n", 1)[1]


def read_for(proc: subprocess.Popen[bytes], seconds: float, until: Callable[[bytes], bool] | None = None) -> bytes:
    """What the child writes to stdout in the next ``seconds``, or until ``until`` holds for what was read (read as
    it comes, so that the child never blocks on a full pipe)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not (until is not None and until(out)):
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    return out


def read_rest(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    proc.stdout.close()
    proc.wait()
    return out
