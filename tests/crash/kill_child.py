"""Child process of test_process_kill: run a random hard_sync workload until killed.

Usage: kill_child.py DIR SEED KEYHEX|- ENTRIES_PER_FILE HARD_SYNC(0|1)

Opens DIR, prints ``ready``, then runs the operations ``crashmodel.gen_op`` draws from ``random.Random(SEED)``,
starting from a model of what the directory holds, and prints ``A <n>`` (flushed) when the n-th one has returned.
The parent draws the same operations, so it knows the acknowledged state and the operation in flight.
"""

from __future__ import annotations

import random
import sys


def main() -> None:
    directory, seed, keyhex, per_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    hard_sync = sys.argv[5] == "1"
    key = None if keyhex == "-" else bytes.fromhex(keyhex)

    from crashmodel import execute, gen_op, model_from_observed, observe

    from aiowal import DiskStorage
    from aiowal.logfile import LogFile

    LogFile.max_entries = per_file
    st = DiskStorage.open(directory, key=key, hard_sync=hard_sync)
    m = model_from_observed(observe(st))
    rng = random.Random(seed)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    n = 0
    while True:
        op = gen_op(m, rng, big=True)
        st = execute(st, op, directory, key, None, hard_sync)
        m = m.apply(op)
        n += 1
        out.write(f"A {n}\n")
        out.flush()


if __name__ == "__main__":
    main()
