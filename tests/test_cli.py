"""The ``aiowal`` command line: info, dump (table, JSON lines, ranges, streaming), verify (clean and corrupted),
--key-file, one-line errors with a non-zero status, and inspection that never changes a directory."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures import CASES, extract, key_of
from rich.progress import Progress

from aiowal import DiskStorage, MetaInfo, cli, raftpb
from aiowal.cli import dump as dump_cmd
from aiowal.cli import verify as verify_cmd
from aiowal.format import DATA_START, HARD_STATE_OFFSET, SLOT_SIZE
from aiowal.logfile import LogFile

KEY = bytes(range(32))


# --- helpers ------------------------------------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_proc(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiowal", *argv], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def digest(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, mtime and content hash (holes included)."""
    out = {}
    for name in sorted(os.listdir(path)):
        p = path / name
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        st = p.stat()
        out[name] = (st.st_size, st.st_mtime_ns, h.hexdigest())
    return out


def ent(i: int, term: int = 1, data: bytes | None = None, etype: int = 0) -> raftpb.Entry:
    e = raftpb.Entry(term=term, index=i, type=etype)  # type: ignore[arg-type]
    d = f"value-{i}".encode() if data is None else data
    if d:
        e.data = d
    return e


def make_wal(path: Path, n: int = 20, key: bytes | None = None) -> Path:
    """Entries 1..n, a snapshot at 3, a HardState, raft and group ids, a checkpoint; one ConfChange entry."""
    with DiskStorage.open(path, key=key) as st:
        ents = [ent(i, term=1 if i < 10 else 2) for i in range(1, n + 1)]
        ents[4] = ent(
            5,
            etype=1,
            data=raftpb.ConfChange(type=raftpb.ConfChangeType.ConfChangeAddNode, node_id=2).SerializeToString(),
        )
        st.save(hard_state=raftpb.HardState(term=2, vote=1, commit=n), entries=ents)
        st.create_snapshot(3, raftpb.ConfState(voters=[1, 2, 3], learners=[4]), b"snapshot-data")
        st.set_uint(MetaInfo.RAFT_ID, 7)
        st.set_uint(MetaInfo.GROUP_ID, 2)
        st.set_uint(MetaInfo.CHECKPOINT_INDEX, 15)
    return path


def rotated_wal(path: Path, monkeypatch: pytest.MonkeyPatch, n: int = 25, per_file: int = 10) -> Path:
    """A log of ``n`` entries spread over files of ``per_file`` entries (the last one current)."""
    monkeypatch.setattr(LogFile, "max_entries", per_file)
    with DiskStorage.open(path) as st:
        st.save(hard_state=raftpb.HardState(term=1, vote=1, commit=n), entries=[ent(i) for i in range(1, n + 1)])
    monkeypatch.setattr(LogFile, "max_entries", 30_000)
    return path


def slot(path: Path, s: int) -> tuple[int, int, int, int]:
    with open(path, "rb") as fh:
        fh.seek(s * SLOT_SIZE)
        return struct.unpack(">QQQQ", fh.read(SLOT_SIZE))


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == cli.EXIT_ERROR
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aiowal")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


# --- info ---------------------------------------------------------------------------------------------------------
def test_info_shows_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    before = digest(d)
    code, out, err = run_cli(capsys, "info", str(d))
    assert code == 0, err
    assert "raft id / group id  7 / 2" in out
    assert "checkpoint          15" in out
    assert "4 .. 20" in out
    assert "term 2  vote 1  commit 20" in out
    assert "index 3  term 1  data 13 B" in out
    assert "voters [1, 2, 3], learners [4]" in out
    assert "encrypted           no" in out
    row = next(line for line in out.splitlines() if line.startswith("00001.wal"))
    assert row.split()[:4] == ["00001.wal", "1", "20", "20"]
    assert "256.0 MiB" in row  # the current file keeps Dgraph's sparse 256 MiB
    assert digest(d) == before


def test_info_json_matches_the_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    code, out, _ = run_cli(capsys, "info", str(d), "--json")
    assert code == 0
    s = json.loads(out)
    with DiskStorage.open(d, read_only=True) as st:
        assert s["first_index"] == st.first_index() == 4
        assert s["last_index"] == st.last_index() == 20
        assert s["num_entries"] == st.num_entries()
        assert s["hard_state"] == {"term": 2, "vote": 1, "commit": 20}
        assert s["snapshot"] == {
            "index": 3,
            "term": 1,
            "conf_state": {
                "voters": [1, 2, 3],
                "learners": [4],
                "voters_outgoing": [],
                "learners_next": [],
                "auto_leave": False,
            },
            "data_size": len(b"snapshot-data"),
        }
        assert (s["raft_id"], s["group_id"], s["checkpoint"]) == (7, 2, 15)
        assert s["encrypted"] is False
        assert s["files"] == st.log_files()
        assert s["repairs_on_open"] == []


def test_info_lists_every_file_with_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch)
    code, out, _ = run_cli(capsys, "info", str(d), "--json")
    assert code == 0
    files = json.loads(out)["files"]
    assert [(f["name"], f["first"], f["last"], f["entries"]) for f in files] == [
        ("00001.wal", 1, 10, 10),
        ("00002.wal", 11, 20, 10),
        ("00003.wal", 21, 25, 5),
    ]
    for f in files[:2]:  # rotated files are cut to the end of their data, as Dgraph does
        assert f["apparent_size"] == f["data_end"] == os.path.getsize(d / f["name"])
        assert 0 < f["allocated_size"] <= f["apparent_size"] + 4096
    assert files[2]["apparent_size"] == 256 << 20
    assert files[2]["allocated_size"] < 16 << 20


def test_info_works_while_another_storage_holds_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = make_wal(tmp_path / "wal")
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(21, term=2)])
        code, out, err = run_cli(capsys, "info", str(d), "--json")
        assert code == 0, err
        assert json.loads(out)["last_index"] == 21


# --- dump ---------------------------------------------------------------------------------------------------------
def test_dump_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    code, out, _ = run_cli(capsys, "dump", str(d))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["index", "term", "type", "size", "data"]
    rows = [line.split() for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(4, 21))
    assert rows[0] == ["4", "1", "Normal", "7", "'value-4'"]
    assert rows[1][:4] == ["5", "1", "ConfChange", "4"]
    assert "AddNode node 2" in lines[2]
    assert rows[-1] == ["20", "2", "Normal", "8", "'value-20'"]


def test_dump_range_is_inclusive_and_clamped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    code, out, _ = run_cli(capsys, "dump", str(d), "--from", "7", "--to", "9")
    assert code == 0
    assert [int(line.split()[0]) for line in out.splitlines()[1:]] == [7, 8, 9]
    code, out, _ = run_cli(capsys, "dump", str(d), "--from", "1", "--to", "5", "--json")
    assert code == 0
    assert [json.loads(line)["index"] for line in out.splitlines()] == [4, 5]
    code, out, _ = run_cli(capsys, "dump", str(d), "--from", "18", "--to", "1000", "--json")
    assert [json.loads(line)["index"] for line in out.splitlines()] == [18, 19, 20]


def test_dump_json_lines_carry_the_exact_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "wal"
    payloads = [os.urandom(i * 37 % 300) for i in range(1, 60)]
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(i, data=p, etype=i % 3) for i, p in enumerate(payloads, start=1)])
    code, out, _ = run_cli(capsys, "dump", str(d), "--json")
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert len(got) == len(payloads)
    names = ["EntryNormal", "EntryConfChange", "EntryConfChangeV2"]
    for i, (line, p) in enumerate(zip(got, payloads, strict=True), start=1):
        assert line == {
            "index": i,
            "term": 1,
            "type": names[i % 3],
            "size": len(p),
            "data": base64.b64encode(p).decode(),
        }


def test_dump_streams_in_bounded_chunks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "wal"
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(i, data=bytes([i % 251]) * 1000) for i in range(1, 501)])
    monkeypatch.setattr(dump_cmd, "READ_CHUNK_BYTES", 16 << 10)
    calls: list[tuple[int, int, int | None, int]] = []
    real = DiskStorage.entries

    def spy(self: DiskStorage, lo: int, hi: int, max_size: int | None = None) -> list[raftpb.Entry]:
        got = real(self, lo, hi, max_size)
        calls.append((lo, hi, max_size, len(got)))
        return got

    monkeypatch.setattr(DiskStorage, "entries", spy)
    code, out, _ = run_cli(capsys, "dump", str(d), "--json")
    assert code == 0
    assert [json.loads(line)["index"] for line in out.splitlines()] == list(range(1, 501))
    assert len(calls) > 20
    assert all(max_size == 16 << 10 and n <= 17 for _, _, max_size, n in calls)


def test_dump_of_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "wal"
    DiskStorage.open(d).close()
    code, out, _ = run_cli(capsys, "dump", str(d))
    assert code == 0
    assert out.splitlines()[1] == "(no entries)"
    code, out, _ = run_cli(capsys, "dump", str(d), "--json")
    assert (code, out) == (0, "")


class RecordingStdout(io.RawIOBase):
    """A stdout that keeps every write, or takes only ``room`` bytes in all and then returns 0 (nothing written)."""

    def __init__(self, room: int | None = None) -> None:
        self.data = bytearray()
        self.writes: list[int] = []
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = len(view) if self.room is None else min(len(view), self.room - len(self.data))
        self.data += view[:n]
        self.writes.append(n)
        return n


def use_stdout(monkeypatch: pytest.MonkeyPatch, raw: RecordingStdout) -> None:
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))


@pytest.mark.parametrize("chunk", [3, 4, 30, 31, 1 << 20])
def test_dump_json_of_a_large_entry_streams_its_data(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry larger than the chunk is encoded and written a piece at a time, and the line is byte for byte the
    one-shot encoding (pieces cut at a multiple of 3 bytes, so no padding lands inside the base64)."""
    d = tmp_path / "wal"
    payloads = [b"", b"ab", os.urandom(1000), os.urandom(1001), os.urandom(1002), b"tail"]
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(i, data=p) for i, p in enumerate(payloads, start=1)])
    monkeypatch.setattr(dump_cmd, "JSON_DATA_CHUNK_BYTES", chunk)
    raw = RecordingStdout()
    use_stdout(monkeypatch, raw)
    assert cli.main(["dump", str(d), "--json"]) == 0
    with DiskStorage.open(d, read_only=True) as st:
        expected = "".join(json.dumps(dump_cmd.entry_json(e)) + "\n" for e in st.entries(1, 7))
    assert raw.data.decode() == expected
    assert [json.loads(line)["data"] for line in expected.splitlines()] == [
        base64.b64encode(p).decode() for p in payloads
    ]
    step = max(3, chunk // 3 * 3)
    if step < 1000:
        assert max(raw.writes) <= max(4 * step // 3, 120)  # no write holds a whole large entry
        assert len(raw.writes) > 3 * (1000 // step)


def test_dump_fails_when_stdout_takes_less_than_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "wal"
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(i, data=bytes(300)) for i in range(1, 11)])
    for argv in (["dump", str(d), "--json"], ["dump", str(d)]):
        raw = RecordingStdout(room=700)
        use_stdout(monkeypatch, raw)
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        assert cli.main(argv) == cli.EXIT_ERROR
        assert len(raw.data) == 700
        assert err.getvalue().startswith("aiowal: error: cannot write the output: a write of ")


def test_dump_to_a_full_device_exits_non_zero(tmp_path: Path) -> None:
    d = tmp_path / "wal"
    with DiskStorage.open(d) as st:
        st.save(entries=[ent(i, data=os.urandom(5000)) for i in range(1, 101)])
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "aiowal", "dump", str(d), "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    assert r.returncode == cli.EXIT_ERROR
    assert r.stderr.splitlines() == ["aiowal: error: cannot write the output: No space left on device"]


if os.environ.get("AIOWAL_SOAK"):  # make soak: a real entry over 2 GiB (a few GiB of memory, about a minute)

    @pytest.mark.soak
    def test_dump_json_of_an_entry_over_2_gib(tmp_path: Path) -> None:
        """One write of more than 2 GiB to stdout stops at 2 GiB (Linux's limit per write), silently through
        Python's buffered stream: the line must still come out whole."""
        d = tmp_path / "wal"
        data = os.urandom(1 << 20) * 2200
        size, expected = len(data), hashlib.sha256(data).digest()
        with DiskStorage.open(d) as st:
            st.save(entries=[ent(1, data=data), ent(2, data=b"after")])
        del data
        out = tmp_path / "dump.jsonl"
        with open(out, "wb") as fh:
            r = subprocess.run(
                [sys.executable, "-m", "aiowal", "dump", str(d), "--json"],
                stdout=fh,
                stderr=subprocess.PIPE,
                timeout=900,
                check=False,
            )
        assert r.returncode == 0, r.stderr
        shutil.rmtree(d)
        head = f'{{"index": 1, "term": 1, "type": "EntryNormal", "size": {size}, "data": "'.encode()
        encoded_len = 4 * -(-size // 3)
        got = hashlib.sha256()
        with open(out, "rb") as fh:
            assert fh.read(len(head)) == head
            left = encoded_len
            while left:
                piece = fh.read(min(left, 4 << 20))  # a multiple of 4 characters: decodes on its own
                assert piece
                got.update(base64.b64decode(piece, validate=True))
                left -= len(piece)
            rest = fh.read().decode()
        out.unlink()
        assert got.digest() == expected
        assert rest.splitlines() == ['"}', json.dumps(dump_cmd.entry_json(ent(2, data=b"after")))]


# --- verify -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_verify_dgraph_fixtures_are_clean_and_untouched(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = extract(case, tmp_path)
    key = key_of(case)
    args = ["verify", str(d)]
    if key is not None:
        (tmp_path / "key").write_bytes(key)
        args += ["--key-file", str(tmp_path / "key")]
    before = digest(d)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("OK: ")
    for cmd in (["info", str(d)], ["dump", str(d)], ["dump", str(d), "--json"]):
        code, _, err = run_cli(capsys, *cmd, *args[2:])
        assert code == 0, err
    assert digest(d) == before


def test_verify_clean_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == 0
    assert out.strip() == f"OK: {d}: wal.meta, 1 log file and 20 entries checked"


def test_verify_reports_a_corrupted_record_in_an_older_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch)
    f2 = d / "00002.wal"
    _, index, offset, _ = slot(f2, 3)
    assert index == 14
    flip_byte(f2, offset + 5)  # a payload byte: only the CRC in the slot's type word can tell
    before = digest(d)
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    problems = out.splitlines()[:-1]
    assert problems == [f"{f2}: offset {3 * SLOT_SIZE}: slot 3 (index 14): record checksum mismatch (record at offset"
                        f" {offset})"]  # fmt: skip
    assert out.splitlines()[-1] == f"FAILED: 1 problem in {d}"
    assert digest(d) == before


def test_verify_reports_broken_slot_order_that_stops_an_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch)
    f1 = d / "00001.wal"
    with open(f1, "r+b") as fh:  # slot 6 claims index 3
        fh.seek(6 * SLOT_SIZE + 8)
        fh.write(struct.pack(">Q", 3))
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    assert out.splitlines()[0].startswith(f"{f1}: offset {6 * SLOT_SIZE}: slot 6 (index 3): index does not follow 6")
    # info cannot open it either: one line naming the file and the offset
    code, out, err = run_cli(capsys, "info", str(d))
    assert_one_line_error(code, out, err, str(f1), f"offset {6 * SLOT_SIZE}")


def test_verify_reports_a_lost_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch)
    (d / "00002.wal").unlink()  # entries 11..20 are gone
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    assert out.splitlines()[0].startswith(
        f"{d / '00003.wal'}: offset 0: first entry 21 leaves a gap after {d / '00001.wal'}'s last 10 (entries up"
    )
    assert out.splitlines()[-1] == f"FAILED: 1 problem in {d}"


def test_verify_reports_damage_to_a_synced_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last record of a closed directory was synced: damage there is a problem, as open says too."""
    d = make_wal(tmp_path / "wal")
    f = d / "00001.wal"
    _, index, offset, _ = slot(f, 19)
    assert index == 20
    flip_byte(f, offset + 4)
    before = digest(d)
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    lines = out.splitlines()
    assert lines[0].startswith(
        f"{f}: offset {19 * SLOT_SIZE}: slot 19 (index 20): record checksum mismatch (record at offset {offset})"
    )
    assert "entries up to 20 were made durable" in lines[0]
    code, out, err = run_cli(capsys, "info", str(d))
    assert_one_line_error(code, out, err, str(f), f"offset {19 * SLOT_SIZE}")
    assert digest(d) == before


def test_verify_notes_a_torn_tail_that_an_open_would_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Entries written after the last sync and damaged (as a power cut leaves them): a writable open cuts them, so
    verify notes it and passes; ``info`` shows what that open keeps, without repairing."""
    live = tmp_path / "live"
    st = DiskStorage.open(live, hard_sync=False)
    st.save(entries=[ent(i) for i in range(1, 11)])
    st.sync()
    st.save(raftpb.HardState(term=1, vote=1, commit=20), [ent(i) for i in range(11, 21)])
    d = tmp_path / "crashed"
    shutil.copytree(live, d)  # the page cache as a power cut could leave it, durable mark at 10
    st.close()
    f = d / "00001.wal"
    _, index, offset, _ = slot(f, 19)
    assert index == 20
    flip_byte(f, offset + 4)
    before = digest(d)
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == 0, out
    lines = out.splitlines()
    assert any(
        line.startswith(f"note: a writable open would repair: {f}: offset {19 * SLOT_SIZE}: slot 19 (index 20)")
        and "torn tail" in line
        for line in lines
    )
    assert any("HardState commit 20 is past the last index 19" in line for line in lines)
    assert lines[-1] == f"OK: {d}: wal.meta, 1 log file and 19 entries checked"
    code, out, _ = run_cli(capsys, "info", str(d), "--json")
    s = json.loads(out)
    assert (s["last_index"], s["hard_state"]["commit"]) == (19, 19)
    assert len(s["repairs_on_open"]) == 2
    assert digest(d) == before


def test_verify_reports_slots_after_the_first_empty_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    f = d / "00001.wal"
    with open(f, "r+b") as fh:
        fh.seek(100 * SLOT_SIZE + 16)
        fh.write(struct.pack(">Q", DATA_START))
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == 0  # past the durable mark (20): a tail a writable open cuts
    assert f"{f}: offset {100 * SLOT_SIZE}: slot 100 is not empty after the first empty slot 20" in out


def test_verify_reports_a_bad_meta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal")
    with open(d / "wal.meta", "r+b") as fh:
        fh.seek(HARD_STATE_OFFSET)
        fh.write(struct.pack(">I", 600))
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    assert out.splitlines()[0] == f"{d / 'wal.meta'}: offset {HARD_STATE_OFFSET}: HardState length 600 >= 512"


def test_verify_shows_progress_on_long_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch, n=300, per_file=100)
    advanced: list[float] = []
    real = Progress.advance

    def spy(self: Any, task: Any, advance: float = 1) -> None:
        advanced.append(advance)
        real(self, task, advance)

    monkeypatch.setattr(Progress, "advance", spy)
    monkeypatch.setattr(verify_cmd, "PROGRESS_MIN_SLOTS", 100)
    report = verify_cmd.verify_dir(str(d), None, progress=True)
    assert report.problems == []
    assert (report.files, report.entries) == (3, 300)
    assert sum(advanced) == 300


def damage_records(path: Path, slots: range) -> None:
    """Flip a payload byte of each record in ``slots``: each fails its checksum."""
    for s in slots:
        _, _, offset, _ = slot(path, s)
        flip_byte(path, offset + 5)


def test_verify_caps_the_problems_it_prints_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch, n=40, per_file=30)
    f1 = d / "00001.wal"
    damage_records(f1, range(25))
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    lines = out.splitlines()
    assert len(lines) == verify_cmd.MAX_PROBLEMS_PER_FILE + 2
    assert all(line.startswith(f"{f1}: offset ") for line in lines[:-2])
    assert "slot 19 (index 20): record checksum mismatch" in lines[-3]
    assert lines[-2] == f"... and 5 more problems in {f1}"
    assert lines[-1] == f"FAILED: 25 problems in {d} (20 shown; --all prints every one)"
    code, out, _ = run_cli(capsys, "verify", str(d), "--all")
    assert code == cli.EXIT_PROBLEMS
    lines = out.splitlines()
    assert len(lines) == 26
    assert lines[-1] == f"FAILED: 25 problems in {d}"


def test_verify_caps_the_problems_it_prints_in_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rotated_wal(tmp_path / "wal", monkeypatch, n=25, per_file=10)
    f1, f2 = d / "00001.wal", d / "00002.wal"
    damage_records(f1, range(5))
    damage_records(f2, range(5))
    monkeypatch.setattr(verify_cmd, "MAX_PROBLEMS_SHOWN", 8)
    monkeypatch.setattr(verify_cmd, "MAX_PROBLEMS_PER_FILE", 4)
    code, out, _ = run_cli(capsys, "verify", str(d))
    assert code == cli.EXIT_PROBLEMS
    lines = out.splitlines()
    assert [line.split(": offset ")[0] for line in lines[:8]] == [str(f1)] * 4 + [str(f2)] * 4
    assert lines[8:] == [
        f"... and 1 more problem in {f1}",
        f"... and 1 more problem in {f2}",
        f"FAILED: 10 problems in {d} (8 shown; --all prints every one)",
    ]


def test_cap_problems_keeps_order_and_counts_what_it_leaves_out() -> None:
    problems = [f"/w/1.wal: offset {i}: bad" for i in range(5)] + ["no file named", "/w/2.wal: offset 0: bad"]
    problems += ["another without a file"]
    shown, omitted = verify_cmd.cap_problems(problems, per_file=2, total=4)
    assert shown == [*problems[:2], "no file named", "/w/2.wal: offset 0: bad"]
    assert dict(omitted) == {"/w/1.wal": 3, None: 1}
    shown, omitted = verify_cmd.cap_problems(problems, per_file=100, total=100)
    assert (shown, omitted) == (problems, {})


# --- encryption ---------------------------------------------------------------------------------------------------
def test_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_wal(tmp_path / "wal", key=KEY)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    before = digest(d)
    code, out, err = run_cli(capsys, "info", str(d))
    assert_one_line_error(code, out, err, "encrypted", "--key-file")
    for argv in (["info", str(d), "--key-file", str(key_file)], ["--key-file", str(key_file), "info", str(d)]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert "encrypted           yes" in out
    code, out, _ = run_cli(capsys, "dump", str(d), "--key-file", str(key_file), "--from", "20", "--json")
    assert json.loads(out)["data"] == base64.b64encode(b"value-20").decode()
    code, out, _ = run_cli(capsys, "verify", str(d), "--key-file", str(key_file))
    assert code == 0
    code, out, _ = run_cli(capsys, "verify", str(d))  # checksums cover the stored bytes: no key needed
    assert code == 0
    assert out.startswith("note: the log is encrypted")
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(32))
    for cmd in ("info", "dump", "verify"):
        code, out, err = run_cli(capsys, cmd, str(d), "--key-file", str(wrong))
        assert_one_line_error(code, out, err, "mismatch")
    newline = tmp_path / "newline"
    newline.write_bytes(KEY[:16] + b"\n")
    code, out, err = run_cli(capsys, "info", str(d), "--key-file", str(newline))
    assert_one_line_error(code, out, err, "holds 17 bytes", "trailing newline")
    code, out, err = run_cli(capsys, "info", str(d), "--key-file", str(tmp_path / "missing"))
    assert_one_line_error(code, out, err, "cannot read key file")
    assert digest(d) == before


# --- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["info", "{missing}"], "no such directory"),
        (["dump", "{file}"], "not a directory"),
        (["verify", "{empty}"], "not a WAL directory"),
        (["info", "{empty}"], "not a WAL directory"),
        (["dump", "{wal}", "--from", "x"], "not an index"),
        (["dump", "{wal}", "--from", "-3"], "not negative"),
        (["dump", "{wal}", "--from", "9", "--to", "2"], "after --to"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_errors_are_one_line(argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wal = make_wal(tmp_path / "wal")
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "file": tmp_path / "file", "empty": tmp_path / "empty", "wal": wal}
    code, out, err = run_cli(capsys, *(a.format(**paths) for a in argv))
    assert_one_line_error(code, out, err, needle)
    assert os.listdir(tmp_path / "empty") == []


def test_a_real_process_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    wal = make_wal(tmp_path / "wal")
    (wal / "00001.wal").write_bytes(b"short")  # shorter than its 1 MiB header
    r = run_proc("info", str(wal))
    assert r.returncode == cli.EXIT_ERROR
    assert r.stdout == ""
    [line] = r.stderr.splitlines()
    assert line.startswith(f"aiowal: error: {wal / '00001.wal'}: offset 5: log file shorter than its 1 MiB header")
    r = run_proc("verify", str(wal))
    assert r.returncode == cli.EXIT_PROBLEMS
    assert "log file shorter than its 1 MiB header" in r.stdout
    assert r.stderr == ""


def test_help_and_version() -> None:
    r = run_proc("--help")
    assert r.returncode == 0
    for cmd in ("info", "dump", "verify", "bench", "--key-file"):
        assert cmd in r.stdout
    r = run_proc("--version")
    assert (r.returncode, r.stdout.strip()) == (0, "aiowal 0.1.0")
