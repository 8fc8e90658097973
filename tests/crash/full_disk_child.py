"""Child process of test_full_disk: fill a small file system through DiskStorage (hard_sync) until a write fails.

Usage: full_disk_child.py DIR SEED KEYHEX|- [FSIZE_LIMIT]

Prints one JSON object per line (flushed): ``{"ack": [[index, term, size], ...]}`` for each acknowledged save,
``{"snap": i}`` for each acknowledged create_snapshot, ``{"error": ..., "errno": n}`` for the first failure,
``{"after": ...}`` for the error of the next write, and ``{"reopen_full": {...}}`` after reading the directory back
while the disk is still full. With FSIZE_LIMIT the process runs under RLIMIT_FSIZE instead of on a full tmpfs
(log files are made small so that the limit is reached quickly); Python ignores SIGXFSZ, so writes get EFBIG.
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
import sys


def data_for(index: int, term: int, size: int) -> bytes:
    seed = hashlib.sha256(b"%d/%d" % (index, term)).digest()
    return (seed * (size // 32 + 1))[:size]


def emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    key = None if sys.argv[3] == "-" else bytes.fromhex(sys.argv[3])
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 0

    import aiowal.logfile
    import aiowal.wal
    from aiowal import DiskStorage, StorageError, StorageFailedError, StorageIOError
    from aiowal.raftpb import ConfState, Entry, HardState

    aiowal.logfile.LogFile.max_entries = 40
    if limit:  # RLIMIT_FSIZE limits each file: one growing log file reaches it
        aiowal.logfile.LogFile.max_entries = 30_000
        aiowal.logfile.LOG_FILE_SIZE = 2 << 20  # type: ignore[attr-defined]
        aiowal.wal.LOG_FILE_SIZE = 2 << 20  # type: ignore[attr-defined]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    rng = random.Random(seed)
    st = DiskStorage.open(directory, key=key, hard_sync=True)
    index, term, commit = 1, 1, 0
    failed = None
    for n in range(100_000):
        try:
            if n % 9 == 8 and n < 60 and commit > st.first_index():  # a few snapshots (they free space)
                i = rng.randint(st.first_index(), commit)
                st.create_snapshot(i, ConfState(voters=[1, 2, 3]), rng.randbytes(rng.randint(100, 20_000)))
                emit({"snap": i})
                continue
            k = rng.randint(1, 6)
            sizes = [rng.choice((0, 10, 300, 3000, 20_000, 90_000)) for _ in range(k)]
            ents = [Entry(term=term, index=index + j, data=data_for(index + j, term, s)) for j, s in enumerate(sizes)]
            commit = index - 1
            st.save(hard_state=HardState(term=term, vote=1, commit=commit), entries=ents)
            emit({"ack": [[index + j, term, s] for j, s in enumerate(sizes)], "commit": commit})
            index += k
        except StorageIOError as exc:
            failed = exc
            emit({"error": type(exc).__name__, "errno": exc.errno, "message": str(exc)})
            break
    if failed is None:
        emit({"error": None})
        return
    try:
        st.save(entries=[Entry(term=term, index=index, data=b"x")])
        emit({"after": None})
    except StorageError as exc:
        emit({"after": type(exc).__name__, "failed": isinstance(exc, StorageFailedError)})
    st.close()
    # Restarting while the disk is still full must work: read everything back (nothing may raise SIGBUS).
    with DiskStorage.open(directory, key=key, read_only=True) as ro:
        first, last = ro.first_index(), ro.last_index()
        ents = ro.entries(first, last + 1) if last >= first else []
        emit({"reopen_full": {"first": first, "last": last, "n": len(ents)}})
    try:
        with DiskStorage.open(directory, key=key, hard_sync=True) as rw:
            emit({"reopen_full_rw": rw.last_index()})
    except StorageIOError as exc:
        emit({"reopen_full_rw": None, "errno": exc.errno})


if __name__ == "__main__":
    main()
