"""A directory in use can be inspected: read-only opens and ``aiowal verify`` against a writer in another process
(durable saves, rotations, snapshots that delete files, overwrites) never report corruption that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aiowal import CorruptionError, DiskStorage, StorageError
from aiowal.cli.verify import verify_dir

WRITER = textwrap.dedent(
    """
    import sys, time
    from aiowal import CorruptionError, DiskStorage, StorageError
    from aiowal.logfile import LogFile
    from aiowal.raftpb import ConfState, Entry, HardState

    LogFile.max_entries = 400  # rotate often
    path = sys.argv[1]
    with DiskStorage.open(path) as st:
        term, i, saves = 1, 1, 0
        print("ready", flush=True)
        while True:
            if saves % 37 == 36 and i > 30:  # a new leader overwrites the last entries
                i -= 20
                term += 1
            batch = [Entry(term=term, index=i + k, data=b"entry %d" % (i + k)) for k in range(40)]
            st.save(hard_state=HardState(term=term, vote=1, commit=i - 1), entries=batch)
            i += 40
            saves += 1
            if saves % 10 == 0:
                st.create_snapshot(i - 300, ConfState(voters=[1]), b"state at %d" % (i - 300))
            if saves % 7 == 0 and i > 400:
                st.truncate_entries_until(i - 400)
    """
)


@pytest.fixture
def live_writer(tmp_path: Path) -> Path:
    d = tmp_path / "wal"
    src = Path(__file__).resolve().parent.parent / "src"
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(d)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        yield d
        assert proc.poll() is None, "the writer died"
    finally:
        proc.kill()
        proc.wait()


def test_read_only_opens_and_verify_of_a_live_directory(live_writer: Path) -> None:
    """What a view returns is the log as the writer had made it durable, or a StorageError saying the writer
    replaced it since (reopen); never a CorruptionError, never an entry with the wrong index or data."""
    opens = verifies = stale = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline or opens < 40 or verifies < 20:
        with DiskStorage.open(live_writer, read_only=True) as ro:
            first, last = ro.first_index(), ro.last_index()
            assert first <= last + 1
            assert ro.hard_state().commit <= last
            try:
                got = ro.entries(first, last + 1) if last >= first else []
            except StorageError as exc:
                assert "reopen it" in str(exc) and not isinstance(exc, CorruptionError)
                stale += 1
            else:
                assert [e.index for e in got] == list(range(first, last + 1))
                assert all(e.data in (b"", b"entry %d" % e.index) for e in got)
        opens += 1
        if opens % 2 == 0:
            report = verify_dir(str(live_writer), None)
            assert report.problems == [], report.problems
            verifies += 1
