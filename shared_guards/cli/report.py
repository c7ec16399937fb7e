"""`slg report --since --until [--audit FILE] --out report.html [--csv out.csv]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared_guards.audit.jsonl import rotated_files
from shared_guards.audit.report import parse_when, summarize, write_report


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="compliance report (HTML with charts, CSV) from the audit log")
    p.add_argument("--since", help="start: ISO date/datetime (UTC) or an age like 24h, 7d (default: all)")
    p.add_argument("--until", help="end (exclusive): ISO date/datetime, 'now' or an age (default: now)")
    p.add_argument("--audit", action="append", metavar="FILE",
                   help="audit JSONL file (repeatable); its rotated predecessors are included. "
                        "Default var/audit.jsonl")
    p.add_argument("--out", default="report.html", help="HTML output (default report.html)")
    p.add_argument("--csv", help="also write a CSV summary here")
    p.add_argument("--no-verify", action="store_true", help="skip the hash chain check")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    try:
        since, until = parse_when(args.since), parse_when(args.until)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if since and until and since >= until:
        print("error: --since must be before --until", file=sys.stderr)
        return 2
    files: list[str] = []
    for f in args.audit or ["var/audit.jsonl"]:
        found = [str(p) for p in rotated_files(f)]
        if not found:
            print(f"error: no audit file {f}", file=sys.stderr)
            return 2
        files += [x for x in found if x not in files]
    summary = summarize(files, since, until, verify=not args.no_verify)
    write_report(summary, args.out, args.csv)
    blocks = sum(n for (_, a), n in summary.decisions.items() if a == "block")
    chain = "not checked" if summary.chain is None else ("intact" if summary.chain.ok else "BROKEN")
    print(f"{summary.requests} requests, {blocks} blocked, {sum(summary.entities.values())} PII entities; "
          f"chain {chain}; wrote {Path(args.out)}" + (f" and {args.csv}" if args.csv else ""))
    return 0
