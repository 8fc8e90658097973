"""The test doubles and the disk model the crash tests rely on: if these are wrong, the crash tests prove nothing."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from fsdoubles import SHORT, FaultFS, RecordingFS
from powersim import Content, Disk

from aiowal import DiskStorage, StorageFailedError, StorageIOError
from aiowal.format import DATA_START
from aiowal.raftpb import Entry


def test_recording_fs_sees_every_mutation(scratch: Path) -> None:
    fs = RecordingFS()
    d = str(scratch / "wal")
    with DiskStorage.open(d, hard_sync=True, fs=fs) as st:
        st.save(entries=[Entry(term=1, index=1, data=b"first entry"), Entry(term=1, index=2, data=b"second")])
    kinds = fs.kinds()
    assert kinds[0] == "mkdir"
    # wal.meta is made as wal.meta.tmp, synced and renamed; the log file is created, sized and synced.
    created = [c.path for c in fs.calls if c.kind == "create"]
    assert [os.path.basename(p) for p in created] == ["wal.meta.tmp", "00001.wal"]
    renames = [(os.path.basename(c.path), os.path.basename(c.dst)) for c in fs.calls if c.kind == "rename"]
    assert renames == [("wal.meta.tmp", "wal.meta")]
    # After the rename the inode is known by its new name.
    meta_ino = fs.names[os.path.join(d, "wal.meta")]
    assert fs.paths[meta_ino] == os.path.join(d, "wal.meta")
    writes = [c for c in fs.calls if c.kind == "write" and c.path.endswith("00001.wal")]
    records = [c for c in writes if c.offset == DATA_START]
    assert records and b"first entry" in records[0].data and b"second" in records[0].data
    slots = [c for c in writes if c.offset == 0]
    assert slots and len(slots[0].data) == 64
    # The slots are written after the records, and both are synced before the save returns.
    assert fs.calls.index(slots[0]) > fs.calls.index(records[0])
    syncs = [k for k, c in enumerate(fs.calls) if c.kind == "sync" and c.path.endswith("00001.wal")]
    assert syncs and syncs[-1] > fs.calls.index(slots[0])
    with open(os.path.join(d, "00001.wal"), "rb") as fh:
        fh.seek(DATA_START)
        assert fh.read(len(records[0].data)) == records[0].data


def test_fault_fs_fails_the_nth_call(scratch: Path) -> None:
    fs = FaultFS()
    st = DiskStorage.open(str(scratch / "wal"), hard_sync=True, fs=fs)
    fault = fs.arm("fdatasync", nth=2, error=errno.EIO)
    st.save(entries=[Entry(term=1, index=1, data=b"a")])  # the first fdatasync of the fault's count
    assert fault.seen == 1 and not fs.fired
    with pytest.raises(StorageIOError) as info:
        st.save(entries=[Entry(term=1, index=2, data=b"b")])
    assert info.value.errno == errno.EIO and fs.fired and fault.fired == 1
    with pytest.raises(StorageFailedError):
        st.save(entries=[Entry(term=1, index=3, data=b"c")])
    st.close()


def test_fault_fs_short_write_stops_at_a_page(scratch: Path) -> None:
    path = str(scratch / "f")
    fs = FaultFS()
    fd = fs.open(path, os.O_RDWR | os.O_CREAT)
    fs.arm("pwrite", nth=1, error=SHORT, sticky=True)
    with pytest.raises(StorageIOError) as info:
        fs.pwrite(fd, b"x" * 10_000, 100)
    assert info.value.errno == errno.ENOSPC
    assert os.path.getsize(path) == 4096  # 100 + 5000 rounded down to a page: 3996 bytes written
    with pytest.raises(StorageIOError):
        fs.pwrite(fd, b"y" * 10, 5000)  # sticky; within one page nothing is written
    assert os.path.getsize(path) == 4096
    fs.disarm()
    fs.pwrite(fd, b"z", 0)
    fs.close(fd)


def test_disk_model(scratch: Path) -> None:
    fs = RecordingFS()
    d = str(scratch / "dir")
    fs.makedirs(d)
    fd = fs.open(os.path.join(d, "a"), os.O_RDWR | os.O_CREAT)
    fs.pwrite(fd, b"1" * 1000, 0)
    disk = Disk(d)
    for c in fs.calls:
        disk.apply(c)
    # Created but the directory was not synced: in the durable state the file does not exist.
    assert disk.state(None, "durable").files == {}
    assert disk.state(None, "all").files["a"].read(0, 1000) == b"1" * 1000
    fs.fsync_dir(d)
    disk.apply(fs.calls[-1])
    assert disk.state(None, "durable").files["a"].size == 0  # the entry is durable, the data is not
    fs.fdatasync(fd)
    disk.apply(fs.calls[-1])
    assert disk.state(None, "durable").files["a"].read(0, 1000) == b"1" * 1000
    # A pending write torn at sector boundaries: every sector is all old or all new, some of each.
    fs.pwrite(fd, b"2" * 1024, 0)
    fs.ftruncate(fd, 600)
    fs.rename(os.path.join(d, "a"), os.path.join(d, "b"))
    for c in fs.calls[-3:]:
        disk.apply(c)
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        s = disk.state(rng, "torn")
        name = next(iter(s.files))
        content = s.files[name].read(0, 1024)
        assert name in ("a", "b")
        for k in range(0, len(content), 512):
            assert len(set(content[k : k + 512])) == 1
        seen.add((name, content))
    assert len(seen) > 4
    c = Content()
    c.write(5000, b"abc")
    c.truncate(5001)
    assert c.read(4990, 20) == bytes(10) + b"a" and c.size == 5001
