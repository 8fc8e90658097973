"""The nemesis: kills and restarts nodes, pauses and resumes them, and partitions them, one fault at a time.

Each fault lasts a random while and is then undone (restart, SIGCONT, heal); about half of them aim at the current
leader. Every step is logged with its time on the history's clock, so a failing history can be read against it.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
from cluster import Cluster
from faultproxy import Network
from kvclients import Recorder


class Nemesis:
    def __init__(
        self, cluster: Cluster, net: Network, session: aiohttp.ClientSession, recorder: Recorder, seed: int
    ) -> None:
        self.cluster = cluster
        self.net = net
        self.session = session
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.log: list[dict[str, object]] = []
        self.faults: Counter[str] = Counter()
        self.killed: set[int] = set()
        self.paused: set[int] = set()

    def _note(self, event: str, **detail: object) -> None:
        self.log.append({"at": round(self.recorder.now(), 6), "event": event, **detail})

    async def leader(self) -> int | None:
        """The node that says it leads, asking the live ones briefly (a paused node does not answer)."""
        for i in self.cluster.ids:
            if i in self.killed or i in self.paused:
                continue
            host, port = self.cluster.http[i]
            try:
                async with self.session.get(
                    f"http://{host}:{port}/status", timeout=aiohttp.ClientTimeout(total=0.5)
                ) as resp:
                    st = await resp.json()
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue
            if st.get("is_leader"):
                return i
        return None

    async def _victim(self) -> int:
        lead = await self.leader() if self.rng.random() < 0.5 else None
        return lead if lead is not None else self.rng.choice(self.cluster.ids)

    # --- faults: each applies itself, waits, and undoes itself --------------------------------------------------
    async def kill(self) -> None:
        i = await self._victim()
        self._note("kill", node=i)
        self.killed.add(i)
        await asyncio.to_thread(self.cluster.kill, i)
        await self._hold()
        await self._restart(i)

    async def _restart(self, i: int) -> None:
        await asyncio.to_thread(self.cluster.start, i)
        self.killed.discard(i)
        self._note("restarted", node=i)

    async def pause(self) -> None:
        i = await self._victim()
        self._note("pause", node=i)
        self.paused.add(i)
        self.cluster.pause(i)
        await self._hold()
        self.cluster.resume(i)
        self.paused.discard(i)
        self._note("resume", node=i)

    async def isolate(self) -> None:
        """One node (often the leader) cut from the other two, in both directions."""
        i = await self._victim()
        mode = self.rng.choice(("down", "stalled"))
        self.net.partition([i], [j for j in self.cluster.ids if j != i], mode=mode)
        self._note("isolate", node=i, mode=mode)
        await self._hold()
        self.heal()

    async def bridge(self) -> None:
        """Two nodes cannot talk to each other but both talk to the third, which can win a majority either side."""
        a, b = self.rng.sample(self.cluster.ids, 2)
        self.net.cut([(a, b), (b, a)])
        self._note("bridge", cut=[a, b])
        await self._hold()
        self.heal()

    async def one_way(self) -> None:
        """A node's messages to the others are lost while theirs still reach it (or the other way round)."""
        i = await self._victim()
        others = [j for j in self.cluster.ids if j != i]
        outgoing = self.rng.random() < 0.5
        self.net.cut([(i, j) if outgoing else (j, i) for j in others])
        self._note("one-way", node=i, direction="outgoing" if outgoing else "incoming")
        await self._hold()
        self.heal()

    def heal(self) -> None:
        self.net.heal()
        self._note("heal")

    async def _hold(self) -> None:
        await asyncio.sleep(self.rng.choice((self.rng.uniform(0.05, 0.5), self.rng.uniform(0.5, 3.0))))

    async def run(self, until: float) -> None:
        faults: list[Callable[[], Awaitable[None]]] = [self.kill, self.pause, self.isolate, self.bridge, self.one_way]
        while self.recorder.now() < until:
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))
            fault = self.rng.choice(faults)
            self.faults[fault.__name__] += 1
            await fault()

    async def recover(self) -> None:
        """Undo whatever is still in force (after a failure or a cancellation half-way through a fault)."""
        self.heal()
        for i in sorted(self.paused):
            self.cluster.resume(i)
        self.paused.clear()
        for i in sorted(self.killed):
            if i in self.cluster.procs:
                await asyncio.to_thread(self.cluster.kill, i)
            await self._restart(i)
