"""`slg eval injection FILE --out PRED` and `slg eval pii FILE --out PRED` (fixed contracts)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a detector on a JSONL file")
    esub = p.add_subparsers(dest="eval_command", required=True)
    inj = esub.add_parser("injection", help="prompt-injection detection: rows {id, text[, label, category]}")
    inj.add_argument("file")
    inj.add_argument("--out", required=True, help="predictions JSONL: {id, score, pred}")
    inj.add_argument("--report", help="also write an HTML report with the ROC curve")
    inj.add_argument("--policy", help="policy file whose injection settings to use")
    inj.add_argument("--department", help="department of the policy (default: first with injection guards)")
    inj.add_argument("--threshold", type=float, help="override the decision threshold")
    inj.add_argument("--no-progress", action="store_true")
    inj.set_defaults(func=_run("shared_guards.evaluation.injection"))
    pii = esub.add_parser("pii", help="PII detection: rows {id, text[, spans]}")
    pii.add_argument("file")
    pii.add_argument("--out", required=True, help="predictions JSONL: {id, spans: [{start, end, label}]}")
    pii.add_argument("--policy", help="policy file whose PII settings to use")
    pii.add_argument("--department", help="department of the policy")
    pii.add_argument("--no-progress", action="store_true")
    pii.set_defaults(func=_run("shared_guards.evaluation.pii"))


def _run(module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).run(args))

    return run
