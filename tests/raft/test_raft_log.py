"""The unstable log and RaftLog over a storage (after etcd raft's log_test.go and log_unstable_test.go)."""

from __future__ import annotations

import pytest
from raft_harness import ent, storage_with

from aiowal.errors import CompactedError
from aiowal.raft import MemoryStorage, RaftInvariantError, RaftLog, Unstable
from aiowal.raftpb import ConfState, Snapshot, SnapshotMetadata


def terms(ents: list[object]) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in ents]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("offset", "existing", "new", "want_offset", "want"),
    [
        (5, [(5, 1)], [(6, 1), (7, 1)], 5, [(5, 1), (6, 1), (7, 1)]),  # append at the end
        (5, [(5, 1)], [(5, 2), (6, 2)], 5, [(5, 2), (6, 2)]),  # replace everything
        (5, [(5, 1)], [(4, 2), (5, 2), (6, 2)], 4, [(4, 2), (5, 2), (6, 2)]),
        (5, [(5, 1), (6, 1), (7, 1)], [(6, 2)], 5, [(5, 1), (6, 2)]),  # truncate the tail
        (5, [(5, 1), (6, 1), (7, 1)], [(7, 2), (8, 2)], 5, [(5, 1), (6, 1), (7, 2), (8, 2)]),
    ],
)
def test_unstable_truncate_and_append(
    offset: int,
    existing: list[tuple[int, int]],
    new: list[tuple[int, int]],
    want_offset: int,
    want: list[tuple[int, int]],
) -> None:
    u = Unstable(offset)
    u.entries = [ent(i, t) for i, t in existing]
    u.truncate_and_append([ent(i, t) for i, t in new])
    assert u.offset == want_offset
    assert terms(u.entries) == want  # type: ignore[arg-type]


def test_unstable_stable_to_ignores_mismatched_term() -> None:
    u = Unstable(5)
    u.entries = [ent(5, 1), ent(6, 1)]
    u.stable_to(6, 2)
    assert u.offset == 5 and len(u.entries) == 2
    u.stable_to(5, 1)
    assert u.offset == 6 and terms(u.entries) == [(6, 1)]  # type: ignore[arg-type]


def test_log_append_and_conflict() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 2)]))
    assert log.find_conflict([ent(1, 1), ent(2, 2)]) == 0
    assert log.find_conflict([ent(2, 2), ent(3, 3)]) == 3
    assert log.find_conflict([ent(2, 3)]) == 2
    assert log.maybe_append(1, 1, 2, [ent(2, 3), ent(3, 3)]) == 3
    assert terms(log.entries(1, None)) == [(1, 1), (2, 3), (3, 3)]  # type: ignore[arg-type]
    assert log.committed == 2
    assert log.maybe_append(3, 2, 3, []) is None
    with pytest.raises(RaftInvariantError):
        log.maybe_append(0, 0, 3, [ent(1, 4)])  # would overwrite a committed entry


def test_log_find_conflict_by_term() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 1), (3, 3), (4, 3), (5, 5)]))
    assert log.find_conflict_by_term(5, 4) == (4, 3)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(5, 0) == (0, 0)
    assert log.find_conflict_by_term(9, 9) == (9, 0)


def test_log_is_up_to_date() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 2), (3, 3)]))
    assert log.is_up_to_date(2, 4)
    assert not log.is_up_to_date(9, 2)
    assert log.is_up_to_date(3, 3)
    assert not log.is_up_to_date(2, 3)


def test_log_over_compacted_storage() -> None:
    st = MemoryStorage()
    st.save(None, [ent(i, 1) for i in range(1, 11)])
    st.create_snapshot(5, ConfState(voters=[1]), b"")
    log = RaftLog(st)
    assert (log.first_index(), log.last_index(), log.committed) == (6, 10, 5)
    assert log.term(5) == 1
    assert log.term(4) is None
    assert log.term(11) is None
    with pytest.raises(CompactedError):
        log.entries(3, None)
    assert terms(log.slice(6, 11, 1)) == [(6, 1)]  # type: ignore[arg-type]
    log.append([ent(11, 2), ent(12, 2)])
    assert terms(log.slice(9, 13, None)) == [(9, 1), (10, 1), (11, 2), (12, 2)]  # type: ignore[arg-type]


def test_log_restore_snapshot() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 1)]))
    snap = Snapshot(metadata=SnapshotMetadata(index=10, term=3, conf_state=ConfState(voters=[1])))
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed, log.term(10)) == (11, 10, 10, 3)
    assert log.next_ents() == []


def test_next_ents_from_applied() -> None:
    log = RaftLog(storage_with([(1, 1), (2, 1), (3, 1)]))
    log.commit_to(3)
    log.applied_to(1)
    assert terms(log.next_ents()) == [(2, 1), (3, 1)]  # type: ignore[arg-type]
    with pytest.raises(RaftInvariantError):
        log.commit_to(4)
    with pytest.raises(RaftInvariantError):
        log.applied_to(4)


def test_memory_storage_contract() -> None:
    st = MemoryStorage()
    st.save(None, [ent(1, 1), ent(2, 1), ent(3, 2)])
    assert (st.first_index(), st.last_index(), st.term(0), st.term(3)) == (1, 3, 0, 2)
    st.save(None, [ent(2, 3)])  # overwrites from index 2
    assert terms(st.entries(1, 3)) == [(1, 1), (2, 3)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        st.save(None, [ent(9, 3)])
    st.create_snapshot(1, None, b"d")
    with pytest.raises(CompactedError):
        st.entries(1, 2)
    assert st.snapshot().metadata.index == 1
    snap = Snapshot(data=b"s", metadata=SnapshotMetadata(index=7, term=4))
    st.save(None, [], snap)
    assert (st.first_index(), st.last_index(), st.term(7)) == (8, 7, 4)
