"""Full disk: a child process fills a real small file system through DiskStorage with hard_sync.

``tmpfs``: a 4 MiB tmpfs is mounted (we are root; when mounting is not allowed the test runs the RLIMIT_FSIZE
variant instead and says so). ``rlimit``: the child runs under RLIMIT_FSIZE, so writes past the limit get EFBIG.

Checked: the failing write raises StorageIOError with errno ENOSPC (EFBIG under the rlimit), the next write raises
StorageFailedError, the child never dies of a signal (SIGBUS: a read through a mapping of a sparse file on a full
tmpfs), the directory can be read back while the disk is still full, and after space is freed it reopens with every
acknowledged entry intact, accepts new writes, and shows them after another reopen.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crashutil import report
from full_disk_child import data_for

from aiowal import DiskStorage
from aiowal.raftpb import Entry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


def _run_child(directory: Path, seed: int, key: bytes | None, limit: int = 0) -> tuple[int, list[dict[str, Any]]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(HERE)]))
    args = [sys.executable, str(HERE / "full_disk_child.py"), str(directory), str(seed), key.hex() if key else "-"]
    if limit:
        args.append(str(limit))
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    if r.returncode != 0:
        sig = f" (signal {signal.Signals(-r.returncode).name})" if r.returncode < 0 else ""
        raise AssertionError(f"child exited with {r.returncode}{sig}; output {lines[-3:]}; stderr {r.stderr[-2000:]}")
    return r.returncode, lines


def _check_after_free(directory: Path, key: bytes | None, lines: list[dict[str, Any]]) -> None:
    acked: dict[int, tuple[int, int]] = {}
    snap = 0
    for obj in lines:
        for i, t, size in obj.get("ack", []):
            acked[i] = (t, size)
        snap = max(snap, obj.get("snap", 0))
    assert acked, "nothing was acknowledged before the disk filled up"
    with DiskStorage.open(directory, key=key, hard_sync=True) as st:
        assert st.snapshot().metadata.index == snap
        first, last = st.first_index(), st.last_index()
        assert first == (snap + 1 if snap else 1)
        want_last = max(acked)
        assert last in (want_last, *range(want_last, want_last + 7)), (last, want_last)
        ents = st.entries(first, last + 1)
        assert [e.index for e in ents] == list(range(first, last + 1))
        for e in ents:
            if e.index in acked:
                t, size = acked[e.index]
                assert (e.term, e.data) == (t, data_for(e.index, t, size)), f"entry {e.index} changed"
            else:  # the save that failed: absent or exactly what it wrote
                assert e.data == data_for(e.index, e.term, len(e.data)), f"unacknowledged entry {e.index} is garbage"
        assert all(i in {e.index for e in ents} for i in acked if i > snap), "an acknowledged entry is missing"
        # It accepts writes again.
        nxt = [Entry(term=9, index=last + 1 + j, data=data_for(last + 1 + j, 9, 5000)) for j in range(3)]
        st.save(entries=nxt)
    with DiskStorage.open(directory, key=key) as st:
        assert st.last_index() == last + 3
        assert [e.data for e in st.entries(last + 1, last + 4)] == [e.data for e in nxt]


def _check_child_output(lines: list[dict[str, Any]], allowed: tuple[int, ...]) -> None:
    err = next(o for o in lines if "error" in o)
    assert err["error"] == "StorageIOError", lines[-4:]
    assert err["errno"] in allowed, err
    after = next(o for o in lines if "after" in o)
    assert after["after"] == "StorageFailedError" and after["failed"], after
    full = next(o for o in lines if "reopen_full" in o)["reopen_full"]
    acked_last = max(i for o in lines for i, _, _ in o.get("ack", []))
    assert full["last"] >= acked_last and full["n"] == full["last"] - full["first"] + 1, full
    assert any("reopen_full_rw" in o for o in lines)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_full_disk_tmpfs(tmp_path: Path, encrypted: bool) -> None:
    t0 = time.monotonic()
    key = os.urandom(32) if encrypted else None
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "4m"):
        print("mounting a tmpfs is not allowed here: running the RLIMIT_FSIZE variant instead")
        _rlimit_case(tmp_path, key)
        return
    try:
        ballast = mnt / "ballast"
        ballast.write_bytes(os.urandom(768 << 10))
        d = mnt / "wal"
        _, lines = _run_child(d, 7 + encrypted, key)
        _check_child_output(lines, (errno.ENOSPC,))
        ballast.unlink()  # free some space
        _check_after_free(d, key, lines)
    finally:
        _umount(mnt)
    report("full-disk runs (tmpfs)", 1, time.monotonic() - t0)


def _rlimit_case(tmp_path: Path, key: bytes | None) -> None:
    d = tmp_path / "wal"
    _, lines = _run_child(d, 11, key, limit=5 << 20)
    _check_child_output(lines, (errno.EFBIG, errno.ENOSPC))
    _check_after_free(d, key, lines)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_full_disk_rlimit(tmp_path: Path, encrypted: bool) -> None:
    t0 = time.monotonic()
    _rlimit_case(tmp_path, os.urandom(16) if encrypted else None)
    report("full-disk runs (RLIMIT_FSIZE)", 1, time.monotonic() - t0)
