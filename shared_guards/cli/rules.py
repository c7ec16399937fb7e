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
    sign_bytes,
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
    try:
        data = Path(args.file).read_bytes()
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
