"""The ``aiowal`` command line: the entry point and its arguments; each command lives in a module of its own.

``info``, ``dump`` and ``verify`` open the directory with ``DiskStorage.open(path, read_only=True)``: no lock is
taken, nothing is repaired, created or written, so they are safe on a directory another process has open.
``bench`` measures the disk under a directory in a subdirectory of its own, removed afterwards.

Exit status: 0 on success (``verify``: the directory is clean), 1 when ``verify`` found problems, 2 on an error
(bad arguments, a directory that cannot be opened, a wrong key, output that cannot be written), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console

from aiowal import __version__
from aiowal.cli.bench import DEFAULT_MAX_CALLERS, DEFAULT_SECONDS, QUICK_SECONDS, cmd_bench
from aiowal.cli.common import EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS, CliError, read_key
from aiowal.cli.dump import cmd_dump
from aiowal.cli.info import cmd_info
from aiowal.cli.verify import MAX_PROBLEMS_PER_FILE, MAX_PROBLEMS_SHOWN, cmd_verify
from aiowal.errors import StorageError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PROBLEMS", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    # What recovery would change is part of the output; the library's own log lines would only repeat it.
    lib_log = logging.getLogger("aiowal")
    if not any(isinstance(h, logging.NullHandler) for h in lib_log.handlers):
        lib_log.addHandler(logging.NullHandler())
    out = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    try:
        key = read_key(args.key_file) if getattr(args, "key_file", None) else None
        status: int = args.func(args, key, out)
        return status
    except (CliError, StorageError, ValueError) as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # The reader went away (``aiowal dump DIR | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("AIOWAL_DEBUG"):
            raise
        return _error(f"unexpected {type(exc).__name__}: {exc} (set AIOWAL_DEBUG=1 for a traceback)")


def _error(message: str) -> int:
    """Print ``message`` as one line on stderr; returns the error exit status."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"aiowal: error: {first}", file=sys.stderr)
    return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="aiowal",
        description="Inspect, dump and verify an aiowal / Dgraph raftwal directory; check a disk for a Raft log.",
        epilog="Inspection never modifies the directory and works while another process has it open.",
    )
    p.add_argument("--version", action="version", version=f"aiowal {__version__}")
    key_help = "file holding the raw 16-, 24- or 32-byte encryption key (as Dgraph's key file)"
    p.add_argument("--key-file", metavar="PATH", help=key_help)
    common = _Parser(add_help=False)
    common.add_argument("--key-file", metavar="PATH", default=argparse.SUPPRESS, help=key_help)
    sub = p.add_subparsers(title="commands", metavar="COMMAND", required=True, parser_class=_Parser)

    info = sub.add_parser("info", parents=[common], help="summary of a WAL directory")
    info.add_argument("dir", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    info.set_defaults(func=cmd_info)

    dump = sub.add_parser("dump", parents=[common], help="print entries as a table or as JSON lines")
    dump.add_argument("dir", metavar="DIR")
    dump.add_argument("--from", dest="lo", type=_index, metavar="I", help="first index to print (default: first)")
    dump.add_argument(
        "--to", dest="hi", type=_index, metavar="J", help="last index to print, inclusive (default: last)"
    )
    dump.add_argument("--json", action="store_true", help="one JSON object per entry (data in base64)")
    dump.set_defaults(func=cmd_dump)

    verify = sub.add_parser("verify", parents=[common], help="check every file's structure and every entry")
    verify.add_argument("dir", metavar="DIR")
    verify.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    verify.add_argument(
        "--all",
        action="store_true",
        help=f"print every problem (default: the first {MAX_PROBLEMS_PER_FILE} of each file,"
        f" {MAX_PROBLEMS_SHOWN} in all, then counts)",
    )
    verify.set_defaults(func=cmd_verify)

    bench = sub.add_parser(
        "bench",
        help="check the disk under DIR for a Raft log: fdatasync latency, durable saves, group commit",
        description="Measure the disk under DIR (default: the current directory) in a new subdirectory, removed"
        " afterwards: fdatasync of small writes, durable saves through AsyncDiskStorage(hard_sync=True) by one"
        " caller, and group commit by more. Prints the figures and a verdict.",
    )
    bench.add_argument("dir", metavar="DIR", nargs="?", help="a directory on the disk to check (default: .)")
    how_long = bench.add_mutually_exclusive_group()
    how_long.add_argument(
        "--duration",
        type=_seconds,
        metavar="SECONDS",
        help=f"time for the whole check (default {DEFAULT_SECONDS:g})",
    )
    how_long.add_argument("--quick", action="store_true", help=f"a {QUICK_SECONDS:g}-second check")
    bench.add_argument(
        "--max-callers",
        type=_positive,
        default=DEFAULT_MAX_CALLERS,
        metavar="N",
        help=f"concurrent callers of the last group-commit level: 1, 4, 16, ... N (default {DEFAULT_MAX_CALLERS})",
    )
    bench.add_argument("--json", action="store_true", help="print the figures and the verdict as one JSON object")
    bench.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    bench.set_defaults(func=cmd_bench)
    return p


def _index(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an index: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"an index is not negative: {text}")
    return v


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return v
