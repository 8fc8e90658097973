"""End-to-end demo (``make demo``): acknowledged writes survive ``kill -9``.

1. Start ``kv_server.py`` on 127.0.0.1 (a free port) over a fresh WAL directory.
2. Write keys through HTTP with many concurrent clients; every 200 reply is an acknowledged, durable write.
3. Write more keys and SIGKILL the server while those writes are in flight.
4. Restart it: it rebuilds its state from the last snapshot plus the log.
5. Read every acknowledged key back, show ``aiowal info`` of the directory, and exit non-zero if anything
   acknowledged is missing or wrong.

    python examples/demo.py [--keys N] [--clients C] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import aiohttp
except ImportError:  # pragma: no cover - depends on the environment
    raise SystemExit("demo.py needs aiohttp: pip install 'aiowal[examples]'") from None

HERE = Path(__file__).resolve().parent
KV_SERVER = HERE / "kv_server.py"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


class Server:
    """kv_server.py as a child process; its output goes to a log file."""

    def __init__(self, wal_dir: Path, log_path: Path, snapshot_every: int, entries_per_file: int) -> None:
        self.wal_dir = wal_dir
        self.log_path = log_path
        self.args = ["--snapshot-every", str(snapshot_every), "--entries-per-file", str(entries_per_file)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.recovered: dict[str, Any] = {}

    def start(self, timeout: float = 30.0) -> None:
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(KV_SERVER), str(self.wal_dir), "0", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.log_path.read_bytes()[start_at:].decode(errors="replace").splitlines()
            listening = [ln for ln in lines if ln.startswith("listening on ")]
            recovered = [ln for ln in lines if ln.startswith("recovered ")]
            if listening and recovered:
                self.url = listening[0].removeprefix("listening on ").strip()
                self.recovered = json.loads(recovered[0].removeprefix("recovered "))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = self.log_path.read_bytes()[start_at:].decode(errors="replace")[-2000:]
        raise RuntimeError(f"kv_server did not start (exit status {self.proc.poll()}):\n{tail}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> int:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


async def write_keys(
    url: str, keys: list[str], clients: int, on_ack: Any = None, stop: asyncio.Event | None = None
) -> tuple[dict[str, str], list[str]]:
    """PUT each key with a fresh random value from ``clients`` concurrent workers.

    Returns the acknowledged writes (key -> value) and the keys whose request got no 200 reply (an error, or the
    server went away)."""
    acked: dict[str, str] = {}
    failed: list[str] = []
    queue = list(reversed(keys))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def worker() -> None:
            while queue and not (stop is not None and stop.is_set()):
                key = queue.pop()
                value = f"{key}={secrets.token_hex(8)}"
                try:
                    async with http.put(f"{url}/kv/{key}", data=value) as resp:
                        await resp.read()
                        if resp.status != 200:
                            failed.append(key)
                            continue
                except (TimeoutError, aiohttp.ClientError):
                    failed.append(key)
                    continue
                acked[key] = value
                if on_ack is not None:
                    on_ack(len(acked))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return acked, failed


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def read_back(url: str, keys: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    async with aiohttp.ClientSession() as http:
        sem = asyncio.Semaphore(32)

        async def one(key: str) -> None:
            async with sem, http.get(f"{url}/kv/{key}") as resp:
                found[key] = await resp.text() if resp.status == 200 else None

        await asyncio.gather(*(one(k) for k in keys))
    return found


async def in_flight_kill(server: Server, keys: list[str], clients: int, after: int) -> tuple[dict[str, str], list[str]]:
    """Write ``keys`` and SIGKILL the server as soon as ``after`` of them are acknowledged."""
    stop = asyncio.Event()
    killed: list[int] = []

    def on_ack(n: int) -> None:
        if n >= after and not killed:
            os.kill(server.pid, signal.SIGKILL)
            killed.append(n)
            stop.set()

    acked, failed = await write_keys(server.url, keys, clients, on_ack=on_ack, stop=stop)
    if not killed:
        server.kill()
    return acked, failed


def run(args: argparse.Namespace, root: Path) -> int:
    wal_dir = root / "wal"
    server = Server(wal_dir, root / "server.log", args.snapshot_every, args.entries_per_file)
    server.start()
    say(f"started kv_server (pid {server.pid}) at {server.url}, log in {wal_dir}")

    first = [f"a{i:05d}" for i in range(args.keys)]
    t = time.monotonic()
    acked, failed = asyncio.run(write_keys(server.url, first, args.clients))
    secs = time.monotonic() - t
    stats = asyncio.run(get_json(f"{server.url}/stats"))
    log = stats["log"]
    say(
        f"{len(acked)} writes acknowledged in {secs:.2f} s by {args.clients} concurrent clients"
        f" (server: {log['saves']} durable saves, {log['syncs']} fdatasync calls,"
        f" {stats['snapshots_taken']} snapshots, log files now: {stats['log_files']})"
    )
    if failed:
        say(f"FAILED: {len(failed)} writes were refused before any kill")
        server.stop()
        return 1

    second = [f"b{i:05d}" for i in range(args.keys)]
    acked2, failed2 = asyncio.run(in_flight_kill(server, second, args.clients, after=args.keys // 2))
    status = server.proc.wait() if server.proc is not None else None
    say(
        f"SIGKILL sent (pid {server.pid}, exit status {status}) with writes in flight:"
        f" {len(acked2)} more acknowledged, {len(failed2)} cut off without a reply"
    )
    acked.update(acked2)

    server.start()
    rec = server.recovered
    say(
        f"restarted (pid {server.pid}): state rebuilt in {rec['ms']} ms from snapshot {rec['snapshot_index']}"
        f" ({rec['keys_from_snapshot']} keys) + {rec['entries_replayed']} log entries -> {rec['keys']} keys"
    )

    found = asyncio.run(read_back(server.url, sorted(acked)))
    missing = [k for k, v in acked.items() if found.get(k) is None]
    wrong = [k for k, v in acked.items() if found.get(k) is not None and found[k] != v]
    survived = asyncio.run(read_back(server.url, failed2)) if failed2 else {}
    extra = sum(1 for v in survived.values() if v is not None)
    if missing or wrong:
        say(f"LOST: {len(missing)} acknowledged writes missing, {len(wrong)} with a wrong value")
        for k in (missing + wrong)[:10]:
            print(f"    {k}: expected {acked[k]!r}, found {found.get(k)!r}")
    else:
        say(
            f"all {len(acked)} acknowledged writes found with their values"
            f" ({extra} of the {len(failed2)} cut-off writes had also reached the log: allowed, never acknowledged)"
        )

    print(f"\n$ aiowal info {wal_dir}   (read-only, while the server runs)", flush=True)
    info = subprocess.run([sys.executable, "-m", "aiowal", "info", str(wal_dir)], check=False)
    verify = subprocess.run(
        [sys.executable, "-m", "aiowal", "verify", str(wal_dir)], capture_output=True, text=True, check=False
    )
    print()
    say(f"aiowal verify: {(verify.stdout.strip().splitlines() or ['(no output)'])[-1]}")
    code = server.stop()
    say(f"server stopped (exit status {code})")
    if missing or wrong or info.returncode or verify.returncode:
        say("DEMO FAILED")
        return 1
    say("DEMO OK: every acknowledged write survived kill -9")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="acknowledged writes survive kill -9 (see the module docstring)")
    p.add_argument("--keys", type=int, default=1000, help="keys per phase (default 1000)")
    p.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients (default 32)")
    p.add_argument("--snapshot-every", type=int, default=300, help="server snapshot interval in entries")
    p.add_argument("--entries-per-file", type=int, default=200, help="server log file rotation, in entries")
    p.add_argument("--dir", type=Path, help="work directory to keep (default: a temporary one)")
    args = p.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return run(args, args.dir)
    with tempfile.TemporaryDirectory(prefix="aiowal-demo-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
