"""`slg policy validate FILE` and `slg policy schema`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared_guards.errors import PolicyError
from shared_guards.policy import load_policy, policy_json_schema


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="validate a policy or print its JSON Schema")
    psub = p.add_subparsers(dest="policy_command", required=True)
    v = psub.add_parser("validate", help="validate a policy file; exit 1 and name the field on errors")
    v.add_argument("file")
    v.set_defaults(func=_validate)
    s = psub.add_parser("schema", help="print the policy's JSON Schema")
    s.set_defaults(func=_schema)


def _validate(args: argparse.Namespace) -> int:
    try:
        loaded = load_policy(args.file)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    deps = ", ".join(loaded.policy.departments)
    print(f"OK {args.file}: version {loaded.version}; departments: {deps}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    json.dump(policy_json_schema(), sys.stdout, indent=2)
    print()
    return 0
