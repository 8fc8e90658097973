"""Without ``hard_sync`` the write path pays for no sync: appends across many rotations call no ``fdatasync``
(Dgraph's ``--survive=process``); ``sync()`` and ``close()`` make everything durable."""

from __future__ import annotations

from pathlib import Path

import pytest
from fsdoubles import CountingFS

from aiowal import DiskStorage
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry


@pytest.mark.parametrize("durable", [False, True])
def test_appends_across_rotations_sync_only_when_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    monkeypatch.setattr(LogFile, "max_entries", 100)
    fs = CountingFS()
    data = bytes(1024)
    with DiskStorage.open(tmp_path, hard_sync=durable, fs=fs) as st:
        opened = fs.syncs
        for first in range(1, 1025, 256):  # 1,024 entries: ten rotations
            st.save(entries=[Entry(term=1, index=i, type=0, data=data) for i in range(first, first + 256)])
        assert st.num_log_files() == 10
        during = fs.syncs - opened
        st.sync()
        assert fs.syncs > opened + during
    if durable:
        assert during >= 4  # every save's log sync, and each rotation's full file
    else:
        assert during == 0
    with DiskStorage.open(tmp_path) as st:
        assert st.last_index() == 1024 and st.repairs == []
