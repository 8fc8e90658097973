"""A failed sync inside a group commit of ``AsyncDiskStorage``: no caller is told its save succeeded unless a
completed sync covered it.

One batch holds plain appends, then a save whose own log part syncs (an overwrite by a new term, or a save with a
snapshot): that sync also covers the appends written before it. Each fdatasync of the batch in turn fails with EIO
(``FaultFS`` over a ``RecordingFS``). Then the durable state of the disk (what a power cut right after keeps) must
hold every save whose caller got success, and when the save with the failed sync of its own got the error, the
appends before it must get one too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
from pathlib import Path

import pytest
from asyncmodel import LOOPS, OpSource, call, check_concurrent, run_loop
from crashmodel import Ent, Model, Op, Snap, observe
from fsdoubles import FaultFS, RecordingFS
from powersim import Disk

from aiowal import AsyncDiskStorage, DiskStorage, StorageError, StorageIOError

ACKED = [Op("save", ((i, Ent(1, 0, b"acked %d " % i * 30)),), (1, 1, i)) for i in range(1, 11)]
APPENDS = [Op("save", ((i, Ent(1, 0, b"append %d " % i * 50)),), (1, 1, 10)) for i in range(11, 14)]
LAST = {
    "overwrite": Op("save", ((12, Ent(2, 0, b"new leader's 12")), (13, Ent(2, 0, b"new leader's 13"))), (2, 2, 11)),
    "snapshot": Op(
        "save", ((21, Ent(2, 0, b"after the snapshot")),), (2, 2, 20), Snap(20, 2, b"snapshot data", (1, 2, 3))
    ),
}


def _batch_with_a_failed_sync(
    d: str, loop: str, last: Op, nth: int
) -> tuple[bool, list[BaseException | None], RecordingFS, OpSource]:
    """Run the acknowledged prefix, then the batch with the ``nth`` fdatasync failing; whether the fault fired, and
    each batch caller's outcome."""
    rec = RecordingFS()
    fs = FaultFS(rec)
    source = OpSource(0, Model())

    async def main() -> list[BaseException | None]:
        st = await AsyncDiskStorage.open(d, hard_sync=True, fs=fs)
        try:
            for op in ACKED:
                await call(st, op)
                source.add(op)
            fs.arm("fdatasync", nth, errno.EIO)
            batch = [*APPENDS, last]
            for op in batch:
                source.add(op)
            results = await asyncio.gather(*(call(st, op) for op in batch), return_exceptions=True)
            assert st.stats()["batch_size"]["max"] == len(batch)  # one batch: the appends and the last save
            return list(results)
        finally:
            with contextlib.suppress(StorageIOError):  # the fault may hit close()'s own sync
                await st.close()

    results = run_loop(loop, main)
    return fs.fired, results, rec, source


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("last", sorted(LAST))
def test_no_save_acknowledged_after_a_failed_sync(scratch: Path, loop: str, last: str) -> None:
    faults = 0
    appends_refused_with_it = 0
    for nth in range(1, 13):
        d = str(scratch / f"wal{nth}")
        fired, results, rec, source = _batch_with_a_failed_sync(d, loop, LAST[last], nth)
        if not fired:
            break  # the batch (and close) did fewer fdatasyncs
        faults += 1
        for r in results:
            assert r is None or isinstance(r, StorageError), r
        *appends, last_result = results
        if isinstance(last_result, StorageIOError):  # the failed sync was one of its own log part
            assert last_result.errno == errno.EIO
            assert all(isinstance(r, StorageError) for r in appends), (
                f"fdatasync #{nth} failed inside the {last}, yet appends before it were acknowledged: {appends}"
            )
            appends_refused_with_it += 1
        # A power cut now keeps the durable state: every acknowledged save must be in it.
        first_batch_op = len(ACKED) + 1
        ok = [first_batch_op + k for k, r in enumerate(results) if r is None]
        p = max(ok, default=len(ACKED))
        disk = Disk(d)
        for c in rec.calls:
            disk.apply(c)
        sd = str(scratch / f"state{nth}")
        disk.state(None, "durable").materialize(sd)
        with DiskStorage.open(sd) as st:
            problems = check_concurrent(observe(st), source.models, source.ops, p, len(source.ops) - 1)
        assert not problems, f"fdatasync #{nth} failed, outcomes {results}: {problems}"
        shutil.rmtree(sd)
        shutil.rmtree(d)
    assert faults >= 3 and appends_refused_with_it >= 1, (faults, appends_refused_with_it)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_reports_a_failed_final_sync(scratch: Path, loop: str) -> None:
    """Without hard_sync, close()'s sync is what makes the saves durable: when it fails, close() raises it (as
    ``DiskStorage.close`` does) and still releases the directory."""
    d = str(scratch / "wal")
    fs = FaultFS()
    unhandled: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        st = await AsyncDiskStorage.open(d, hard_sync=False, fs=fs)
        await asyncio.gather(*(call(st, op) for op in ACKED))
        fs.arm("fdatasync", 1, errno.EIO)
        with pytest.raises(StorageIOError) as info:
            await st.close()
        assert info.value.errno == errno.EIO and fs.fired
        assert st.closed
        await st.close()  # idempotent: the error was reported once
        reopened = await AsyncDiskStorage.open(d)  # the lock was released
        await reopened.close()

    run_loop(loop, main)
    assert unhandled == []
