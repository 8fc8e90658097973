"""What ``save`` refuses before anything is written: terms that go down along the log, a commit past the log's end
after the save, and misused arguments of ``open`` (synchronous and asyncio). Each refusal is a ``ValueError`` or
``TypeError`` (or ``StorageError`` for a path that is not a directory), and the directory is unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from aiowal import AsyncDiskStorage, DiskStorage, StorageError
from aiowal.logfile import LogFile
from aiowal.raftpb import Entry, HardState, Snapshot, SnapshotMetadata


def E(index: int, term: int, data: bytes = b"x") -> Entry:
    return Entry(term=term, index=index, type=0, data=data)


def tree(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def state(st: DiskStorage) -> tuple[object, ...]:
    return (st.first_index(), st.last_index(), st.hard_state(), st.entries(st.first_index(), st.last_index() + 1))


def refused(st: DiskStorage, d: Path, match: str, **save: object) -> None:
    before, files = state(st), tree(d)
    with pytest.raises(ValueError, match=match):
        st.save(**save)  # type: ignore[arg-type]
    assert state(st) == before
    assert tree(d) == files


# --- terms never decrease ----------------------------------------------------------------------------------------
def test_a_term_below_the_previous_entry_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    """The reproduction: term 2 at index 1, then term 1 at index 2 was acknowledged and cut on reopen."""
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(1, 2)])
        refused(st, tmp_path, r"entry 2 has term 1, below the term of entry 1 \(2\)", entries=[E(2, 1)])
        st.save(entries=[E(2, 2)])
    with DiskStorage.open(tmp_path) as st:
        assert st.entries(1, 3) == [E(1, 2), E(2, 2)]
        assert st.repairs == []


def test_a_term_that_goes_down_inside_one_save_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(1, 1)])
        refused(st, tmp_path, r"entry 3 has term 2, below the term 3 of entry 2", entries=[E(2, 3), E(3, 2)])


def test_an_overwrite_below_the_term_of_the_entry_before_it_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(1, 1), E(2, 3), E(3, 3)])
        refused(st, tmp_path, r"entry 3 has term 2, below the term of entry 2 \(3\)", entries=[E(3, 2)])
        st.save(entries=[E(3, 4)])  # a new leader's overwrite keeps its terms rising
        assert st.entries(1, 4) == [E(1, 1), E(2, 3), E(3, 4)]


def test_a_term_below_the_snapshot_is_refused(tmp_path: Path) -> None:
    snap = Snapshot(metadata=SnapshotMetadata(index=10, term=5))
    with DiskStorage.open(tmp_path) as st:
        st.save(snapshot=snap)
        refused(st, tmp_path, r"entry 11 has term 4, below the snapshot's term \(5\)", entries=[E(11, 4)])
        newer = Snapshot(metadata=SnapshotMetadata(index=20, term=6))
        refused(st, tmp_path, r"below the snapshot's term \(6\)", snapshot=newer, entries=[E(21, 5)])
        st.save(entries=[E(11, 5)])


def test_a_term_that_goes_down_across_a_file_boundary_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepted, it made a rotated directory unopenable (its next file did not follow the one before)."""
    monkeypatch.setattr(LogFile, "max_entries", 5)
    with DiskStorage.open(tmp_path) as st:
        st.save(entries=[E(i, 3) for i in range(1, 6)])
        refused(st, tmp_path, r"entry 6 has term 2", entries=[E(6, 2)])
        refused(st, tmp_path, r"entry 6 has term 2", entries=[E(i, 3 if i < 6 else 2) for i in range(4, 8)])
        st.save(entries=[E(6, 3)])
    with DiskStorage.open(tmp_path) as st:
        assert st.last_index() == 6 and st.repairs == []


@pytest.mark.parametrize("merged", [False, True])
def test_terms_are_checked_through_the_async_writer(tmp_path: Path, merged: bool) -> None:
    """Through AsyncDiskStorage, also when the bad save sits in a batch of merged appends: only its caller fails."""

    async def main() -> list[object]:
        async with AsyncDiskStorage.open(tmp_path) as st:
            await st.save(entries=[E(1, 2)])
            calls = [st.save(entries=[E(2, 2)]), st.save(entries=[E(3, 1)]), st.save(entries=[E(3, 2)])]
            if not merged:
                return [await c for c in [_outcome(c) for c in calls]]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError) and "terms never decrease" in str(results[1])
    with DiskStorage.open(tmp_path) as st:
        assert st.entries(1, 4) == [E(1, 2), E(2, 2), E(3, 2)]


async def _outcome(coro: object) -> object:
    try:
        await coro  # type: ignore[misc]
    except Exception as exc:
        return exc
    return None


# --- the commit never runs past the log ------------------------------------------------------------------------------
def test_a_commit_past_the_last_index_after_the_save_is_refused(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path) as st:
        refused(st, tmp_path, r"commit 1 is past the last index 0", hard_state=HardState(term=1, vote=1, commit=1))
        st.save(hard_state=HardState(term=1, vote=1, commit=2), entries=[E(1, 1), E(2, 1)])
        refused(st, tmp_path, r"commit 3 is past the last index 2", hard_state=HardState(term=1, vote=1, commit=3))
        # the entries of the same save count, and so does a snapshot's index
        st.save(hard_state=HardState(term=1, vote=1, commit=3), entries=[E(3, 1)])
        snap = Snapshot(metadata=SnapshotMetadata(index=9, term=2))
        hs = HardState(term=2, commit=10)
        refused(st, tmp_path, r"commit 10 is past the last index 9", hard_state=hs, snapshot=snap)
        st.save(hard_state=HardState(term=2, commit=9), snapshot=snap)
        assert st.hard_state() == HardState(term=2, vote=0, commit=9)


def test_a_commit_past_the_log_through_the_async_writer(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncDiskStorage.open(tmp_path) as st:
            with pytest.raises(ValueError, match="past the last index"):
                await st.save(hard_state=HardState(term=1, commit=5), entries=[E(1, 1)])
            assert st.last_index() == 0

    asyncio.run(main())


# --- open's arguments ------------------------------------------------------------------------------------------------
def test_durable_by_default(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path / "a") as st:
        assert st.hard_sync

    async def main() -> None:
        async with AsyncDiskStorage.open(tmp_path / "b") as st:
            assert st.hard_sync

    asyncio.run(main())


def test_open_on_a_regular_file_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"data")
    for read_only in (False, True):
        with pytest.raises(StorageError, match="not a directory"):
            DiskStorage.open(f, read_only=read_only)
    assert f.read_bytes() == b"data"


@pytest.mark.parametrize("bad", [b"/tmp/aiowal-bytes-path", 42, None, "", "a\0b"])
def test_a_bad_path_is_refused_before_anything_is_created(
    tmp_path: Path, bad: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises((TypeError, ValueError)):
        DiskStorage.open(bad)  # type: ignore[arg-type]
    assert not os.path.exists(b"/tmp/aiowal-bytes-path")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"queue_size": 0}, ValueError),
        ({"queue_size": -1}, ValueError),
        ({"max_batch": 0}, ValueError),
        ({"queue_size": 1.5}, TypeError),
        ({"hard_sync": "yes"}, TypeError),
        ({"key": "a text key"}, TypeError),
    ],
)
def test_async_open_checks_its_arguments_before_touching_the_disk(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception]
) -> None:
    async def main() -> None:
        with pytest.raises(error):
            await AsyncDiskStorage.open(tmp_path / "wal", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(error):
            async with AsyncDiskStorage.open(tmp_path / "wal", **kwargs):  # type: ignore[arg-type]
                pass

    asyncio.run(main())
    assert not (tmp_path / "wal").exists()


@pytest.mark.parametrize("flag", ["hard_sync", "read_only"])
def test_sync_open_checks_its_flags(tmp_path: Path, flag: str) -> None:
    with pytest.raises(TypeError, match=flag):
        DiskStorage.open(tmp_path / "wal", **{flag: "yes"})  # type: ignore[arg-type]
    assert not (tmp_path / "wal").exists()
