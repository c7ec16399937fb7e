"""The combined detector's cross-validated numbers: rules as shipped, semantic scores out of fold.

    python -m shared_guards.injection.train --data DEV --data EXTRA --eval-on DEV --oof-out oof.npz ...
    python -m shared_guards.evaluation.injection_cv DEV --oof oof.npz

The semantic head is trained on the dev set, so ``slg eval injection`` on the dev set flatters it.
This command scores every row as a user turn with the real combined detector (pattern and context
layers as shipped, the default weights, role weight and short-circuit), but replaces the semantic
layer's score by the row's out-of-fold score from the train command's grouped cross-validation,
calibrated with the shipped head's threshold (``--threshold`` overrides). The rules are not trained,
so they need no folds. Prints recall, false-positive rates by benign family and recall by category.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from shared_guards.guards.injection import InjectionConfig, build_detector
from shared_guards.injection.combined import Segment
from shared_guards.injection.semantic import DEFAULT_HEAD, SemanticScore, calibrate
from shared_guards.types import Role

EASY = ("benign_chat", "benign_query", "benign_task", "benign_with_pii")


def combined_scores(texts: Sequence[str], semantic: Sequence[float], *, threshold: float) -> list[float]:
    """Combined score per text (a user turn), with ``semantic`` as the raw out-of-fold head scores."""
    det = build_detector(InjectionConfig.model_validate({"layers": ["pattern", "context"]}))
    out: list[float] = []
    for text, raw in zip(texts, semantic, strict=True):
        part = det.cheap([Segment(0, Role.USER, text)])
        conclusive = det.finish(part, None).score >= det.settings.short_circuit
        sem = None if conclusive else [SemanticScore(calibrate(float(raw), threshold))]
        out.append(det.finish(part, sem).score)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_guards.evaluation.injection_cv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="labelled JSONL rows {id, text, label, category}")
    ap.add_argument("--oof", required=True, help="npz from the train command's --oof-out (ids, oof)")
    ap.add_argument("--threshold", type=float, help="head operating point (default: the shipped head's)")
    ap.add_argument("--block-at", type=float, default=0.5, help="the guard's threshold")
    ap.add_argument("--by", default="category", help="row field to break the rates down by (e.g. source)")
    args = ap.parse_args(argv)

    with open(args.data, encoding="utf-8") as fh:  # not str.splitlines: texts may hold U+2028
        rows = [json.loads(line) for line in fh if line.strip()]
    z = np.load(args.oof)
    pos = {str(i): k for k, i in enumerate(z["ids"])}
    missing = [str(r.get("id")) for r in rows if str(r.get("id")) not in pos]
    if missing:
        print(f"{len(missing)} rows have no out-of-fold score (e.g. {missing[0]}): wrong --oof file?",
              file=sys.stderr)
        return 2
    thr = args.threshold if args.threshold is not None else float(np.load(DEFAULT_HEAD)["threshold"])
    sem = [float(z["oof"][pos[str(r.get("id"))]]) for r in rows]
    scores = np.asarray(combined_scores([str(r["text"]) for r in rows], sem, threshold=thr))
    pred = scores >= args.block_at
    y = np.asarray([int(r["label"]) for r in rows])
    cats = np.asarray([str(r.get("category", "")) for r in rows])
    groups = np.asarray([str(r.get(args.by, "")) for r in rows])
    print(f"combined detector, semantic out of fold (head threshold {thr:.4f}), block at {args.block_at}")
    print(f"recall {pred[y == 1].mean():.3f} ({int(pred[y == 1].sum())}/{int((y == 1).sum())})")
    easy = np.isin(cats, EASY) & (y == 0)
    print(f"FPR benign chat/query/task/pii {pred[easy].mean():.4f} (n={int(easy.sum())})")
    for g in sorted(set(groups.tolist())):
        for label in (0, 1):
            m = (groups == g) & (y == label)
            if m.any():
                kind = "recall" if label else "FPR"
                print(f"  {g:24s} n={int(m.sum()):5d}  {kind} {pred[m].mean():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
