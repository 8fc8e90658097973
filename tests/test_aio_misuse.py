"""Misuse of the asyncio API fails cleanly: an event loop that ends without ``close()``, a storage dropped without
closing, calls from another loop or thread, and the ``async with AsyncDiskStorage.open(...)`` form."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import uvloop

from aiowal import AsyncDiskStorage, DiskStorage, StorageLockedError, WrongEventLoopError, raftpb

LOOPS = ["asyncio", "uvloop"]


def ent(index: int, term: int = 1) -> raftpb.Entry:
    return raftpb.Entry(term=term, index=index, type=0, data=b"e%d" % index)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


@pytest.mark.parametrize("loop", LOOPS)
def test_close_after_the_loop_ended_releases_everything(
    loop: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``st = asyncio.run(open_it())`` then ``asyncio.run(st.close())``: the writer's loop is gone, yet close()
    syncs and releases the lock and the files, and the writer's end is no ERROR."""

    async def open_it() -> AsyncDiskStorage:
        st = await AsyncDiskStorage.open(tmp_path)
        await st.save(entries=[ent(1)])
        return st

    with caplog.at_level(logging.ERROR, logger="aiowal"):
        with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
            st = runner.run(open_it())
        assert not st.closed
        with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
            runner.run(st.close())
    assert st.closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with DiskStorage.open(tmp_path) as again:  # the lock is free
        assert again.entries(1, 2) == [ent(1)]
    with asyncio.Runner() as runner:
        runner.run(st.close())  # idempotent, from any loop


def test_close_from_another_loop_while_the_first_runs_is_refused(tmp_path: Path) -> None:
    started, done = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def owner() -> None:
        async def main() -> None:
            box["st"] = await AsyncDiskStorage.open(tmp_path)
            started.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
            await box["st"].close()

        asyncio.run(main())

    t = threading.Thread(target=owner)
    t.start()
    assert started.wait(10)
    with pytest.raises(WrongEventLoopError):
        asyncio.run(box["st"].close())
    done.set()
    t.join(10)
    assert box["st"].closed


def test_a_storage_dropped_without_close_releases_its_lock_with_a_warning(tmp_path: Path) -> None:
    st = DiskStorage.open(tmp_path)
    st.save(entries=[ent(1)])
    with pytest.raises(StorageLockedError):
        DiskStorage.open(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del st
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and "unclosed DiskStorage" in str(w.message) for w in caught)
    with DiskStorage.open(tmp_path) as again:
        assert again.entries(1, 2) == [ent(1)]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_write_from_another_loop_is_refused_before_it_is_queued(loop: str, tmp_path: Path) -> None:
    """Before, it raised asyncio's 'attached to a different loop' after the write had been applied."""
    ready, done = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def owner() -> None:
        async def main() -> None:
            box["st"] = await AsyncDiskStorage.open(tmp_path)
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.01)
            box["last"] = box["st"].last_index()
            await box["st"].close()

        with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
            runner.run(main())

    t = threading.Thread(target=owner)
    t.start()
    assert ready.wait(10)
    st: AsyncDiskStorage = box["st"]
    writes = [
        lambda: st.save(entries=[ent(1)]),
        lambda: st.create_snapshot(1, None, b""),
        lambda: st.truncate_entries_until(1),
        lambda: st.sync(),
    ]
    for write in writes:
        with pytest.raises(WrongEventLoopError, match="event loop"):
            asyncio.run(write())
    done.set()
    t.join(10)
    assert box["last"] == 0  # nothing was applied
    with DiskStorage.open(tmp_path) as again:
        assert again.last_index() == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_async_with_open_closes_on_exit(loop: str, tmp_path: Path) -> None:
    async def main() -> AsyncDiskStorage:
        async with AsyncDiskStorage.open(tmp_path) as st:
            assert not st.closed
            await st.save(entries=[ent(1)])
        return st

    with asyncio.Runner(loop_factory=lambda: new_loop(loop)) as runner:
        st = runner.run(main())
    assert st.closed
    with DiskStorage.open(tmp_path) as again:
        assert again.entries(1, 2) == [ent(1)]
