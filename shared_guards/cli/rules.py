"""`slg rules verify|update|sign|keygen|show`: signed rule packs for the injection pattern layer.

- ``slg rules verify FILE``: check the signature and the rules (patterns compile); exit 1 on any
  problem (tampering, unknown key, bad pattern).
- ``slg rules update SRC [--dest PATH]``: fetch a pack from a file or http(s) URL, verify it, then
  install it atomically (default destination ``$SLG_RULES_DIR/<name>.yaml`` or
  ``var/rules/<name>.yaml``). Guards pointing ``rules_path`` there pick it up without a restart.
- ``slg rules sign FILE --key PRIVATE.pem``: (maintainers) re-sign a pack in place.
- ``slg rules keygen --private PATH --public PATH``: a new Ed25519 key pair.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from shared_guards.injection.rulepack import (
    RulePackError,
    fetch,
    generate_keypair,
    install,
    load_pack_bytes,
    parse_pack,
    sign_bytes,
    split_signature,
)


def register(sub: Any) -> None:
    p = sub.add_parser("rules", help="verify, update and sign injection rule packs")
    rsub = p.add_subparsers(dest="rules_command", required=True)

    v = rsub.add_parser("verify", help="verify a rule pack's signature and rules; exit 1 on failure")
    v.add_argument("file")
    v.add_argument("--trusted-keys", action="append", default=[], metavar="DIR_OR_FILE",
                   help="extra trusted public keys (*.pub); repeatable")
    v.set_defaults(func=_verify)

    u = rsub.add_parser("update", help="fetch (file or URL), verify, install atomically")
    u.add_argument("src", help="file path or http(s) URL of a signed pack")
    u.add_argument("--dest", help="install path (default: $SLG_RULES_DIR or var/rules, /<name>.yaml)")
    u.add_argument("--trusted-keys", action="append", default=[], metavar="DIR_OR_FILE")
    u.set_defaults(func=_update)

    s = rsub.add_parser("sign", help="(maintainers) sign a pack in place with an Ed25519 private key")
    s.add_argument("file")
    s.add_argument("--key", required=True, help="PEM private key path (never commit it)")
    s.add_argument("--out", help="write here instead of in place")
    s.set_defaults(func=_sign)

    e = rsub.add_parser("eval", help="per-category detection rates of the pattern (and context) layer alone")
    e.add_argument("file", help="JSONL rows {id, text[, label, category]}")
    e.add_argument("--pack", help="rule pack (default: the bundled one)")
    e.add_argument("--unsigned", action="store_true", help="accept an unsigned pack (rule development)")
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--context-role", help="also run the context layer, the text as a message of this role "
                                          "(e.g. tool, user)")
    e.set_defaults(func=_eval)

    k = rsub.add_parser("keygen", help="(maintainers) create an Ed25519 key pair")
    k.add_argument("--private", required=True)
    k.add_argument("--public", required=True)
    k.set_defaults(func=_keygen)


def _check(data: bytes, source: str, trusted: list[str]) -> Any:
    from shared_guards.injection.patterns import PatternMatcher

    pack = load_pack_bytes(data, source=source, trusted_key_dirs=trusted)
    PatternMatcher(pack)  # every pattern must compile into the RE2 set / automaton
    return pack


def _verify(args: argparse.Namespace) -> int:
    try:
        data = fetch(args.file)
        pack = _check(data, args.file, args.trusted_keys)
    except RulePackError as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    print(f"OK {args.file}: {pack.ident}, {len(pack.rules)} rules, signed by key {pack.key_id}, "
          f"sha256 {pack.sha256[:16]}")
    return 0


def _default_dest(name: str) -> Path:
    base = os.environ.get("SLG_RULES_DIR") or "var/rules"
    return Path(base) / f"{name}.yaml"


def _update(args: argparse.Namespace) -> int:
    try:
        data = fetch(args.src)
        pack = _check(data, args.src, args.trusted_keys)
        dest = Path(args.dest) if args.dest else _default_dest(pack.name)
        install(data, dest)
    except RulePackError as exc:
        print(f"REFUSED {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"FAILED cannot install: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"installed {pack.ident} ({len(pack.rules)} rules) -> {dest}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from shared_guards.injection.patterns import PatternMatcher

    try:
        data = Path(args.file).read_bytes()
        # a pack that would not load is never signed: YAML, schema and every pattern checked first
        PatternMatcher(parse_pack(split_signature(data)[0], source=args.file))
        signed = sign_bytes(data, args.key)
        out = Path(args.out) if args.out else Path(args.file)
        install(signed, out)
    except RulePackError as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"FAILED {exc.strerror}", file=sys.stderr)
        return 1
    print(f"signed {out}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    kid = generate_keypair(args.private, args.public)
    print(f"key id {kid}: private {args.private} (keep it secret), public {args.public}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json
    from collections import defaultdict

    from shared_guards.injection.context import Segment, analyze_segments
    from shared_guards.injection.normalize import normalize
    from shared_guards.injection.patterns import PatternMatcher
    from shared_guards.injection.rulepack import load_pack
    from shared_guards.types import Role

    try:
        pack = load_pack(args.pack, require_signature=not args.unsigned)
    except RulePackError as exc:
        print(f"FAILED {exc}", file=sys.stderr)
        return 1
    matcher = PatternMatcher(pack)
    role = Role(args.context_role) if args.context_role else None
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    labels: dict[str, int] = {}
    try:
        with open(args.file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = str(row["text"])
                except (ValueError, KeyError, TypeError):
                    print(f"FAILED {args.file}:{n}: not a JSON object with a 'text' field", file=sys.stderr)
                    return 1
                norm = normalize(text)
                score = matcher.scan(norm, offsets=False).score
                if role is not None:
                    ctx = analyze_segments([Segment(0, role, text)], [norm]).score
                    score = 1 - (1 - score) * (1 - ctx)
                cat = str(row.get("category") or ("attack" if row.get("label") == 1 else "benign"))
                stats[cat][0] += 1
                stats[cat][1] += score >= args.threshold
                if "label" in row:
                    labels[cat] = int(row["label"])
    except OSError as exc:
        print(f"FAILED cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    layers = "pattern" + (f" + context (as {role.value})" if role else "")
    print(f"{pack.ident}, {layers}, threshold {args.threshold}")
    print(f"{'category':28} {'n':>6} {'flagged':>8}  meaning")
    for cat, (n, hit) in sorted(stats.items()):
        meaning = {1: "recall", 0: "false-positive rate"}.get(labels.get(cat, -1), "")
        print(f"{cat:28} {n:6d} {hit / n:8.3f}  {meaning}")
    pos = [stats[c] for c in stats if labels.get(c) == 1]
    neg = [stats[c] for c in stats if labels.get(c) == 0]
    if pos and neg:
        tp, p = sum(h for _, h in pos), sum(n for n, _ in pos)
        fp, q = sum(h for _, h in neg), sum(n for n, _ in neg)
        print(f"{'ALL attacks / ALL benign':28} {p:6d} {tp / p:8.3f}  recall;  {q} benign, FPR {fp / q:.4f}")
    return 0
