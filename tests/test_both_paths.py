"""The storage suites' two runs (tests/conftest.py) are what their ids say: on the pure-Python path no name of
``aiowal.speedups`` is set, here and in child processes; on the C path every one the build has is."""

from __future__ import annotations

import os
import subprocess
import sys

from aiowal import speedups

CHILD = "from aiowal import speedups; print(speedups.pack is None, speedups.read is None, speedups.sync_worker is None)"


def test_the_path_is_the_one_the_id_says(aiowal_path: str) -> None:
    pure = aiowal_path == "pure-python"
    names = (speedups.pack, speedups.read, speedups.entries_ok)
    assert all(f is None for f in names) if pure else all(f is not None for f in names)
    if pure:
        assert speedups.sync_worker is None
        assert os.environ["AIOWAL_PURE_PYTHON"] == "1"
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    pack_none, read_none, _ = child.stdout.split()
    assert (pack_none, read_none) == (str(pure), str(pure))
