"""AsyncDiskStorage: group commit, call order, reads that never wait for a sync, cancellation, errors; on the default
loop and on uvloop."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from aiowal import (
    AsyncDiskStorage,
    DiskStorage,
    MetaInfo,
    SnapOutOfDateError,
    StorageClosedError,
    StorageFailedError,
    StorageIOError,
    raftpb,
)
from aiowal.fs import FS
from aiowal.logfile import LogFile

LOOPS = ["asyncio", "uvloop"]


def run(loop_kind: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(fn())


def ent(index: int, term: int = 1, data: bytes | None = None) -> raftpb.Entry:
    return raftpb.Entry(term=term, index=index, data=data if data is not None else f"e{index}".encode())


class BlockingSyncFS(FS):
    """fdatasync blocks until released: a sync in flight that we control."""

    def __init__(self) -> None:
        self.block = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.syncs = 0

    def fdatasync(self, fd: int) -> None:
        if self.block:
            self.entered.set()
            assert self.release.wait(10), "test never released the sync"
        self.syncs += 1
        super().fdatasync(fd)


class FailingSyncFS(FS):
    def __init__(self) -> None:
        self.fail = False

    def fdatasync(self, fd: int) -> None:
        if self.fail:
            raise StorageIOError(errno.EIO, "fdatasync: injected EIO")
        super().fdatasync(fd)


class ThreadRecordingFS(FS):
    """Records which thread ran each blocking call (syncs and unlinks) once ``watch`` is set."""

    def __init__(self) -> None:
        self.watch = False
        self.calls: list[tuple[str, int]] = []

    def _note(self, what: str) -> None:
        if self.watch:
            self.calls.append((what, threading.get_ident()))

    def fdatasync(self, fd: int) -> None:
        self._note("fdatasync")
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._note("fsync")
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self._note("fsync_dir")
        super().fsync_dir(path)

    def unlink(self, path: str) -> None:
        self._note("unlink")
        super().unlink(path)


@pytest.mark.parametrize("loop", LOOPS)
def test_concurrent_saves_group_commit_in_call_order(loop: str, tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        async with await AsyncDiskStorage.open(tmp_path, hard_sync=True) as st:
            counter = iter(range(1, 10_000))

            async def one() -> None:
                i = next(counter)  # index taken in call order
                await st.save(raftpb.HardState(term=1, vote=1, commit=i - 1), [ent(i)])

            for _ in range(5):
                await asyncio.gather(*(one() for _ in range(64)))
            assert st.last_index() == 320
            assert [e.index for e in st.entries(1, 321)] == list(range(1, 321))
            assert st.hard_state().commit == 319
            return st.stats()

    stats = run(loop, main)
    assert stats["saves"] == 320
    assert stats["entries"] == 320
    assert stats["syncs"] < stats["saves"] / 4  # group commit: far fewer syncs than saves
    assert stats["batch_size"]["max"] > 1
    with DiskStorage.open(tmp_path) as st:
        assert [e.data for e in st.entries(1, 321)] == [f"e{i}".encode() for i in range(1, 321)]


@pytest.mark.parametrize("loop", LOOPS)
def test_reads_do_not_wait_for_a_sync_in_flight(loop: str, tmp_path: Path) -> None:
    fs = BlockingSyncFS()

    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path, hard_sync=True, fs=fs)
        await st.save(entries=[ent(1)])
        fs.block = True
        pending = asyncio.ensure_future(st.save(entries=[ent(2)]))
        while not fs.entered.is_set():
            await asyncio.sleep(0.001)
        # The sync of entry 2 is in flight: reads answer at once, from the loop thread.
        assert not pending.done()
        assert st.last_index() == 2  # applied to the page cache already
        assert [e.index for e in st.entries(1, 3)] == [1, 2]
        assert st.term(1) == 1
        hs = st.hard_state()
        assert (hs.term, hs.vote, hs.commit) == (0, 0, 0)
        fs.release.set()
        await pending
        fs.block = False
        await st.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_caller_does_not_cancel_the_write(loop: str, tmp_path: Path) -> None:
    fs = BlockingSyncFS()

    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path, hard_sync=True, fs=fs)
        fs.block = True
        task = asyncio.ensure_future(st.save(entries=[ent(1), ent(2)]))
        while not fs.entered.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fs.release.set()
        fs.block = False
        await st.sync()
        assert st.last_index() == 2
        await st.close()

    run(loop, main)
    with DiskStorage.open(tmp_path) as st:
        assert [e.index for e in st.entries(1, 3)] == [1, 2]


@pytest.mark.parametrize("loop", LOOPS)
def test_errors_reach_their_callers_only(loop: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncDiskStorage.open(tmp_path) as st:
            await st.save(entries=[ent(1), ent(2), ent(3)])
            results = await asyncio.gather(
                st.save(entries=[ent(4)]),
                st.save(entries=[ent(9)]),  # a gap: ValueError for this caller alone
                st.save(entries=[ent(5)]),
                return_exceptions=True,
            )
            assert results[0] is None and results[2] is None
            assert isinstance(results[1], ValueError)
            assert st.last_index() == 5
            await st.create_snapshot(3, raftpb.ConfState(voters=[1]), b"snap")
            with pytest.raises(SnapOutOfDateError):
                await st.create_snapshot(2, None, b"")
            await st.set_uint(MetaInfo.RAFT_ID, 7)
            assert st.uint(MetaInfo.RAFT_ID) == 7
            assert st.first_index() == 4
            await st.truncate_entries_until(5)
            assert st.entries(4, 6)[0].data == b""

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_failed_sync_refuses_later_writes(loop: str, tmp_path: Path) -> None:
    fs = FailingSyncFS()

    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path, hard_sync=True, fs=fs)
        await st.save(entries=[ent(1)])
        fs.fail = True
        with pytest.raises(StorageIOError) as info:
            await st.save(entries=[ent(2)])
        assert info.value.errno == errno.EIO
        fs.fail = False
        with pytest.raises(StorageFailedError):
            await st.save(entries=[ent(3)])
        with pytest.raises(StorageFailedError):
            await st.set_uint(MetaInfo.RAFT_ID, 1)
        assert st.entries(1, 2)[0].index == 1  # reads still work
        await st.close()
        with pytest.raises(StorageClosedError):
            await st.save(entries=[ent(3)])

    run(loop, main)
    with DiskStorage.open(tmp_path) as st:
        assert st.entries(1, 2)[0].data == b"e1"


@pytest.mark.parametrize("loop", LOOPS)
def test_backpressure_bounded_queue(loop: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncDiskStorage.open(tmp_path, queue_size=4, max_batch=2) as st:
            counter = iter(range(1, 1000))

            async def one() -> None:
                i = next(counter)
                await st.save(entries=[ent(i)])

            await asyncio.gather(*(one() for _ in range(200)))
            assert st.last_index() == 200
            assert st.stats()["batch_size"]["max"] <= 2

    run(loop, main)


def test_open_and_close_off_the_loop_and_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path, key=b"0123456789abcdef", hard_sync=True)
        await st.save(raftpb.HardState(term=2, vote=1, commit=1), [ent(1, 2), ent(2, 2)])
        await st.close()
        await st.close()  # idempotent
        st = await AsyncDiskStorage.open(tmp_path, key=b"0123456789abcdef")
        assert st.hard_state() == raftpb.HardState(term=2, vote=1, commit=1)
        assert [e.data for e in st.entries(1, 3)] == [b"e1", b"e2"]
        await st.close()

    run("asyncio", main)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st_.lists(
        st_.tuples(st_.integers(0, 3), st_.integers(1, 4), st_.binary(max_size=64)),
        min_size=1,
        max_size=40,
    ),
    hard_sync=st_.booleans(),
)
def test_concurrent_callers_agree_with_a_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list, hard_sync: bool
) -> None:
    """Many concurrent callers, each computing its batch at call time (Raft-like overwrites included): the log
    equals the model built in call order, before and after reopen."""
    d = tmp_path_factory.mktemp("model")
    model: list[raftpb.Entry] = []

    async def main() -> None:
        async with await AsyncDiskStorage.open(d, hard_sync=hard_sync) as st:
            calls = []
            for back, n, data in ops:
                start = max(1, len(model) + 1 - back)
                term = (model[start - 2].term if start > 1 else 1) + (1 if back else 0)
                batch = [raftpb.Entry(term=term, index=start + k, type=0, data=data or None) for k in range(n)]
                del model[start - 1 :]
                model.extend(batch)
                calls.append(st.save(entries=batch))
            await asyncio.gather(*calls)
            assert st.last_index() == len(model)
            assert list(st.entries(1, len(model) + 1)) == model

    run("asyncio", main)
    with DiskStorage.open(d) as st:
        assert list(st.entries(1, len(model) + 1)) == model
    assert os.path.exists(d / "wal.meta")


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("hard_sync", [True, False])
def test_no_blocking_call_on_the_loop_thread(
    loop: str, hard_sync: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation, snapshots (via save and create_snapshot), overwrites and truncate_entries_until sync and unlink
    in the executor: none of it stalls the event loop."""
    monkeypatch.setattr(LogFile, "max_entries", 7)
    fs = ThreadRecordingFS()

    async def main() -> None:
        st = await AsyncDiskStorage.open(tmp_path, hard_sync=hard_sync, fs=fs)
        fs.watch = True
        await asyncio.gather(*(st.save(entries=[ent(i)]) for i in range(1, 41)))  # five rotations
        await st.save(raftpb.HardState(term=2, vote=1, commit=30), [ent(35, 2), ent(36, 2)])  # overwrite
        await st.truncate_entries_until(20)
        await st.create_snapshot(30, raftpb.ConfState(voters=[1]), b"state")  # deletes files below 30
        snap = raftpb.Snapshot(metadata=raftpb.SnapshotMetadata(index=50, term=3))
        await st.save(snapshot=snap, entries=[ent(51, 3)])  # discards the log
        await st.sync()
        assert st.first_index() == 51 and st.last_index() == 51
        fs.watch = False
        await st.close()

    loop_thread: list[int] = []

    async def wrapped() -> None:
        loop_thread.append(threading.get_ident())
        await main()

    run(loop, wrapped)
    kinds = {what for what, _ in fs.calls}
    assert "unlink" in kinds and "fdatasync" in kinds
    on_loop = [what for what, tid in fs.calls if tid == loop_thread[0]]
    assert on_loop == []


# --- the GIL-free sync worker (C accelerator), used for plain fdatasync steps on the real file system ---------
@pytest.mark.c_accelerator("sync_worker")
@pytest.mark.parametrize("loop", LOOPS)
def test_durable_saves_sync_on_the_gil_free_worker(loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiowal import syncthread

    thread_jobs: list[object] = []
    real_run = syncthread.SyncThread.run

    def counting_run(self: syncthread.SyncThread, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        thread_jobs.append(fn)
        return real_run(self, fn)

    monkeypatch.setattr(syncthread.SyncThread, "run", counting_run)

    async def body() -> None:
        st = await AsyncDiskStorage.open(tmp_path / "w", hard_sync=True)
        try:
            assert st._worker is not None
            await st.save(entries=[ent(1)])  # creates the first file: the directory sync goes to the thread
            thread_jobs.clear()
            await asyncio.gather(*(st.save(entries=[ent(i)]) for i in range(2, 40)))
            await st.save(hard_state=raftpb.HardState(term=2, vote=1, commit=3), entries=[ent(40)])
            await st.sync()
            assert thread_jobs == []  # every fdatasync of those went to the worker
            assert st.stats()["syncs"] >= 3
        finally:
            await st.close()
        assert st._worker is None
        with DiskStorage.open(tmp_path / "w", read_only=True) as ro:
            assert [e.index for e in ro.entries(1, 41)] == list(range(1, 41))
            assert ro.hard_state().term == 2

    run(loop, body)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failed_fdatasync_on_the_worker_fails_the_storage(loop: str, tmp_path: Path) -> None:
    from aiowal.steps import FdSync

    async def body() -> None:
        st = await AsyncDiskStorage.open(tmp_path / "w", hard_sync=True)
        try:
            await st.save(entries=[ent(1)])
            bad = os.open(os.devnull, os.O_RDONLY)
            os.close(bad)  # a descriptor number that is not open: fdatasync fails with EBADF
            with pytest.raises(StorageIOError) as info:
                await st._run_step(FdSync(st.storage.fs, [bad]))
            assert info.value.errno == errno.EBADF
            with pytest.raises(StorageFailedError):
                await st.save(entries=[ent(2)])
            assert st.entries(1, 2)[0].index == 1  # reads still work
        finally:
            await st.close()

    run(loop, body)
