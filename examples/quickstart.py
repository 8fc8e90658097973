"""aiowal quickstart (synchronous): save Raft state, read it back, overwrite a suffix, snapshot, reopen.

python examples/quickstart.py [DIR]      # DIR defaults to a fresh temporary directory
"""

from __future__ import annotations

import sys
import tempfile

from aiowal import CompactedError, DiskStorage
from aiowal.raftpb import ConfState, Entry, HardState


def show(st: DiskStorage, what: str) -> None:
    ents = st.entries(st.first_index(), st.last_index() + 1)
    listed = ", ".join(f"{e.index}@t{e.term}:{e.data.decode()}" for e in ents) or "none"
    print(f"{what}: first={st.first_index()} last={st.last_index()} entries=[{listed}]")


def main(path: str) -> None:
    # hard_sync=True: every save() is durable (fdatasync) when it returns.
    with DiskStorage.open(path, hard_sync=True) as st:
        # One Raft Ready: entries 1..3 of term 1, and the HardState that says they are committed.
        st.save(
            hard_state=HardState(term=1, vote=1, commit=3),
            entries=[Entry(term=1, index=i, data=f"set x={i}".encode()) for i in (1, 2, 3)],
        )
        show(st, "after save")

        # A new leader in term 2 overwrites the log from index 3 on (etcd's append rule).
        st.save(
            hard_state=HardState(term=2, vote=2, commit=3),
            entries=[Entry(term=2, index=3, data=b"set y=3"), Entry(term=2, index=4, data=b"set y=4")],
        )
        show(st, "after overwrite")
        print(f"term(3)={st.term(3)} term(4)={st.term(4)}")

        # The state machine applied up to 3: snapshot there. Entries up to 3 are compacted away.
        st.create_snapshot(3, ConfState(voters=[1, 2, 3]), b"x=2,y=3")
        snap = st.snapshot()
        print(f"snapshot: index={snap.metadata.index} term={snap.metadata.term} data={snap.data.decode()}")
        try:
            st.entries(2, 4)
        except CompactedError as exc:
            print(f"entries(2, 4): CompactedError: {exc}")

    # Everything is on disk: a new process (or this one) opens the same state.
    with DiskStorage.open(path) as st:
        hs, cs = st.initial_state()
        print(f"reopened: hard_state=(term={hs.term} vote={hs.vote} commit={hs.commit}) voters={list(cs.voters)}")
        show(st, "reopened")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="aiowal-quickstart-") as tmp:
            main(tmp)
