"""``AsyncDiskStorage.stats()``: counters and histograms since open that a metrics exporter can take as they are."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiowal import AsyncDiskStorage
from aiowal.raftpb import Entry, HardState


def test_histograms_count_every_sync_and_commit_since_open(tmp_path: Path) -> None:
    async def main() -> list[dict[str, object]]:
        seen = []
        async with AsyncDiskStorage.open(tmp_path / "wal", hard_sync=True) as st:
            seen.append(st.stats())
            index = 0
            for _ in range(3):  # one save at a time: a commit each
                index += 1
                await st.save(HardState(term=1, commit=index), [Entry(term=1, index=index, data=b"x")], None)
            seen.append(st.stats())
            # 50 saves at once: they share commits, so some commit carries several entries.
            saves = [
                st.save(None, [Entry(term=1, index=i, data=b"y" * 100)], None) for i in range(index + 1, index + 51)
            ]
            await asyncio.gather(*saves)
            seen.append(st.stats())
        return seen

    first, sequential, concurrent = asyncio.run(main())
    for stats in (first, sequential, concurrent):
        for name in ("sync_seconds", "entries_per_commit"):
            h = stats[name]
            assert isinstance(h, dict)
            assert len(h["le"]) == len(h["cumulative"]) and h["le"] == sorted(h["le"])
            assert h["cumulative"] == sorted(h["cumulative"]) and h["cumulative"][-1] <= h["count"]
    s, c = sequential, concurrent
    assert isinstance(s, dict) and isinstance(c, dict)
    # Every fdatasync step is in the histogram (the counts never restart, unlike the last-N summaries).
    assert s["sync_seconds"]["count"] == s["syncs"] >= 3
    assert c["sync_seconds"]["count"] == c["syncs"] > s["syncs"]
    assert 0 < s["sync_seconds"]["sum"] < c["sync_seconds"]["sum"]
    # One entry per commit while saves come one at a time; then 50 more entries in fewer commits.
    assert s["commits"] == 3 and s["entries_per_commit"]["cumulative"][0] == 3
    assert c["entries_per_commit"]["sum"] == c["entries"] == 53
    assert c["commits"] - s["commits"] < 50
    assert c["entries_per_commit"]["count"] == c["commits"]
    assert c["entries_per_commit"]["cumulative"][0] < c["entries_per_commit"]["count"]  # some commit held more
