"""``python -m benchmarks [--quick] [--out PATH]``: run the benchmarks, print one JSON document to stdout and write it
to ``bench-results/latest.json`` (progress goes to stderr)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.runner import run

DEFAULT_OUT = os.path.join("bench-results", "latest.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke run)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"where to write the JSON (default {DEFAULT_OUT})")
    parser.add_argument(
        "--only", action="append", metavar="SECTION", help="run only this group or section (save, durable.uvloop)"
    )
    args = parser.parse_args(argv)
    doc = run(quick=args.quick, log=lambda msg: print(msg, file=sys.stderr, flush=True), only=args.only)
    text = json.dumps(doc, indent=2)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    for t in doc["targets"]:
        bound = f">= {t['target']}" if "target" in t else f"<= {t['limit']}"
        print(f"{'met   ' if t['met'] else 'MISSED'} {t['figure']}: {t['value']} ({bound})", file=sys.stderr)
    if doc["errors"]:
        print(f"sections that failed: {', '.join(doc['errors'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
