"""`slg audit verify FILE [FILE...]`: check the audit hash chain; exit 1 and say where it breaks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared_guards.audit import rotated_files, verify_files


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser(
        "verify",
        help="verify the hash chain of audit JSONL files (oldest first); exit 1 on any edited, deleted, "
             "inserted or reordered record",
    )
    v.add_argument("files", nargs="+", metavar="FILE")
    v.add_argument("--rotated", action="store_true",
                   help="also check FILE's rotated predecessors (FILE.000001, ...) as one chain")
    v.add_argument("--anchor", action="append", default=[], metavar="HASH",
                   help="a record hash known from elsewhere (SIEM copy, earlier run) that must still be "
                        "in the chain: detects records cut off the end")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    files: list[str] = []
    for f in args.files:
        if args.rotated:
            files += [str(p) for p in rotated_files(f) if str(p) not in files]
            if not Path(f).exists() and f not in files:
                files.append(f)
        else:
            files.append(f)
    res = verify_files(files, anchors=args.anchor)
    if args.json:
        json.dump({"ok": res.ok, "files": res.files, "records": res.records, "first_seq": res.first_seq,
                   "last_seq": res.last_seq, "last_hash": res.last_hash, "rotations": res.rotations,
                   "problems": [{"file": p.file, "line": p.line, "what": p.what} for p in res.problems]},
                  sys.stdout, indent=2)
        print()
    elif res.ok:
        print(f"OK: {res.summary()}")
    else:
        for p in res.problems:
            print(f"BROKEN {p}", file=sys.stderr)
        print(f"FAILED: {len(res.problems)} problem(s); {res.summary()}", file=sys.stderr)
    return 0 if res.ok else 1
