"""Child process of test_async_process_kill: concurrent callers of ``AsyncDiskStorage`` until killed.

Usage: async_kill_child.py DIR SEED KEYHEX|- ENTRIES_PER_FILE LOOP CALLERS HARD_SYNC(0|1)

Opens DIR, prints ``ready`` and ``worker 0|1`` (whether the C sync worker runs the fdatasync steps), then runs
CALLERS concurrent callers, each issuing the operations ``asyncmodel.OpSource`` draws from SEED, starting from a
model of what the directory holds; it prints ``C <k>`` before op k is called and ``A <k>`` once it returned. The
parent draws the same operations, so it knows what was acknowledged and what was in flight.
"""

from __future__ import annotations

import asyncio
import random
import sys


def main() -> None:
    directory, seed, keyhex, per_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    loop_kind, n_callers, hard_sync = sys.argv[5], int(sys.argv[6]), sys.argv[7] == "1"
    key = None if keyhex == "-" else bytes.fromhex(keyhex)

    from asyncmodel import LineTrace, OpSource, caller, run_loop
    from crashmodel import model_from_observed, observe

    from aiowal import AsyncDiskStorage
    from aiowal.logfile import LogFile

    LogFile.max_entries = per_file

    async def run() -> None:
        st = await AsyncDiskStorage.open(directory, key=key, hard_sync=hard_sync)
        source = OpSource(seed, model_from_observed(observe(st.storage)), big=True)
        out = sys.stdout
        out.write(f"ready\nworker {int(st._worker is not None)}\n")
        out.flush()
        trace = LineTrace(out)
        rng = random.Random(seed)
        forever = 1 << 62
        await asyncio.gather(
            *(caller(st, source, trace, forever, random.Random(rng.random())) for _ in range(n_callers))
        )

    run_loop(loop_kind, run)


if __name__ == "__main__":
    main()
