"""aiowal quickstart (asyncio): many concurrent durable saves share a few fdatasync calls (group commit).

    python examples/async_quickstart.py [DIR] [--saves N]

Each save below is durable when its ``await`` returns (``hard_sync=True``). Saved one after another, every save
costs one sync; saved concurrently, the writer task batches whatever is queued and syncs once per batch, which
``stats()`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from aiowal import AsyncDiskStorage
from aiowal.raftpb import Entry, HardState


async def run(path: str, n: int) -> dict[str, object]:
    async with AsyncDiskStorage.open(path, hard_sync=True) as st:
        # Continue the log that is there (examples/quickstart.py may have left one at a higher term): its terms
        # never go down, and save() refuses an entry whose term would.
        start = st.last_index()
        hs = st.hard_state()
        term = max(hs.term, st.term(start), 1)
        # 1. One after another: each save waits for its own sync.
        t0 = time.perf_counter()
        for i in range(start + 1, start + 101):
            await st.save(entries=[Entry(term=term, index=i, data=b"sequential %d" % i)])
        seq = st.stats()
        seq_secs = time.perf_counter() - t0
        print(f"sequential: {seq['saves']} saves, {seq['syncs']} syncs, {seq_secs * 1000:.0f} ms")

        # 2. Concurrently: N tasks each save one entry (plus a HardState committing it). Saves are applied in
        # call order, so the indexes given at call time stay contiguous.
        first = st.last_index() + 1

        async def client(index: int) -> None:
            await st.save(
                hard_state=HardState(term=term, vote=hs.vote or 1, commit=index),
                entries=[Entry(term=term, index=index, data=b"concurrent %d" % index)],
            )

        t0 = time.perf_counter()
        await asyncio.gather(*(client(first + k) for k in range(n)))
        conc_secs = time.perf_counter() - t0
        stats = st.stats()
        saves = stats["saves"] - seq["saves"]
        syncs = stats["syncs"] - seq["syncs"]
        batches = stats["batches"] - seq["batches"]
        print(f"concurrent: {saves} saves, {batches} batches, {syncs} syncs, {conc_secs * 1000:.0f} ms")
        print(f"group commit: {saves / max(syncs, 1):.1f} saves per sync")

        # Reads are plain methods, served from memory and the mapped files.
        last = st.last_index()
        print(f"last_index={last} commit={st.hard_state().commit} entry {last}: {st.entries(last, last + 1)[0].data!r}")
        print("stats() =", json.dumps(stats, indent=2))
        return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("dir", nargs="?", help="WAL directory (default: a fresh temporary directory)")
    p.add_argument("--saves", type=int, default=2000, help="concurrent saves (default 2000)")
    args = p.parse_args()
    if args.dir:
        asyncio.run(run(args.dir, args.saves))
    else:
        with tempfile.TemporaryDirectory(prefix="aiowal-async-") as tmp:
            asyncio.run(run(tmp, args.saves))


if __name__ == "__main__":
    main()
