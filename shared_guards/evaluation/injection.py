"""`slg eval injection FILE.jsonl --out PRED.jsonl [--report r.html] [--threshold T] [--policy P --department D]`.

Reads rows ``{"id", "text", ...}`` (``label`` 0/1 and ``category`` optional), runs the combined
``injection`` detector on each text as one user message, and writes one row per input
``{"id", "score", "pred"}``. Without ``--policy`` the detector uses the ``injection`` guard's
default options, which is what the demo policy (``config/policy.yaml``) configures. With labels it
prints precision, recall, F1, FPR and accuracy overall and per ``category``, and p50/p99 latency
per layer; ``--report`` writes a self-contained HTML report with the ROC curve.

The model runs batched across rows (rows the cheap layers already decided skip it), so the
semantic latency printed is the per-row share of a batch; ``benchmarks/bench_injection_semantic.py``
measures single-request latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from shared_guards.errors import ConfigError
from shared_guards.evaluation.injection_report import latency_table, metrics, per_category, write_report
from shared_guards.guards.injection import InjectionConfig, build_detector
from shared_guards.injection.combined import CombinedDetector, Segment, Verdict
from shared_guards.types import Role

BATCH_ROWS = 32


def _read_rows(path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("text"), str):
                raise ConfigError(f"{path}:{n}: each row needs an 'id' and a string 'text'")
            if "label" in row and row["label"] not in (0, 1, True, False, None):
                raise ConfigError(f"{path}:{n}: 'label' must be 0 or 1")
            rows.append(row)
    return rows


def detector_config(policy: str | None, department: str | None) -> tuple[InjectionConfig, str]:
    """The injection config to evaluate: a policy's (first department with the guard) or the defaults."""
    if not policy:
        return InjectionConfig(), "."
    from shared_guards.policy import load_policy

    loaded = load_policy(policy)
    deps = [department] if department else list(loaded.policy.departments)
    if department and department not in loaded.policy.departments:
        raise ConfigError(f"unknown department {department!r} in {policy}")
    for dep in deps:
        for spec in loaded.policy.guards_for(dep):
            if spec.name == "injection":
                cfg = loaded.guard_config(dep, spec.guard_id)
                assert isinstance(cfg, InjectionConfig)
                return cfg, str(Path(policy).resolve().parent)
    raise ConfigError(f"no 'injection' guard in {policy}" + (f" for department {department!r}" if department else ""))


def evaluate(detector: CombinedDetector, texts: list[str], *, progress: bool = False) -> list[Verdict]:
    """Verdicts for many texts, the model batched over rows the cheap layers did not settle."""
    out: list[Verdict] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), unit="row", file=sys.stderr)
    for start in range(0, len(texts), BATCH_ROWS):
        chunk = texts[start : start + BATCH_ROWS]
        parts = [detector.cheap([Segment(0, Role.USER, t)]) for t in chunk]
        need = [i for i, p in enumerate(parts) if detector.needs_model(p)]
        sem: dict[int, Any] = {}
        per_row_ms = 0.0
        if need:
            inputs = [detector.model_inputs(parts[i]) for i in need]
            flat = [t for group in inputs for t in group]
            t0 = time.perf_counter()
            scores = detector.run_semantic(flat)
            per_row_ms = (time.perf_counter() - t0) * 1000 / len(need)
            pos = 0
            for i, group in zip(need, inputs, strict=True):
                sem[i] = scores[pos : pos + len(group)]
                pos += len(group)
        for i, p in enumerate(parts):
            out.append(detector.finish(p, sem.get(i), per_row_ms if i in sem else 0.0))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        rows = _read_rows(args.file)
        cfg, base = detector_config(args.policy, args.department)
        detector = build_detector(cfg, base)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threshold = cfg.threshold if args.threshold is None else float(args.threshold)
    if not 0.0 <= threshold <= 1.0:
        print("error: --threshold must be within [0, 1]", file=sys.stderr)
        return 2
    progress = not args.no_progress and sys.stderr.isatty() and len(rows) >= 50
    t0 = time.perf_counter()
    verdicts = evaluate(detector, [r["text"] for r in rows], progress=progress)
    wall = time.perf_counter() - t0
    scores = [v.score for v in verdicts]
    preds = [int(s >= threshold) for s in scores]
    with open(args.out, "w", encoding="utf-8") as fh:
        for r, s, p in zip(rows, scores, preds, strict=True):
            fh.write(json.dumps({"id": r["id"], "score": round(s, 6), "pred": p}) + "\n")
    print(f"{len(rows)} rows scored in {wall:.1f} s, threshold {threshold:.3f}; predictions: {args.out}")
    labelled = [i for i, r in enumerate(rows) if r.get("label") is not None]
    lat = latency_table(verdicts)
    if labelled:
        y = [int(rows[i]["label"]) for i in labelled]
        sc = [scores[i] for i in labelled]
        cats = [str(rows[i].get("category") or "-") for i in labelled]
        overall = metrics(y, sc, threshold)
        cat_rows = per_category(y, sc, cats, threshold)
        _print_metrics(sys.stdout, overall, cat_rows)
        if args.report:
            write_report(args.report, y, sc, threshold, overall, cat_rows, lat, source=Path(args.file).name)
            print(f"report: {args.report}")
    elif args.report:
        print("note: no labels in the file, no report written", file=sys.stderr)
    _print_latency(sys.stdout, lat)
    return 0


def _print_metrics(out: TextIO, overall: dict[str, Any], cats: list[dict[str, Any]]) -> None:
    out.write(
        "overall: precision {precision:.4f} recall {recall:.4f} f1 {f1:.4f} fpr {fpr:.4f} accuracy {accuracy:.4f} "
        "auc {auc:.4f} (n={n}, positives={pos})\n".format(**overall)
    )
    out.write(f"{'category':28} {'n':>6} {'pos':>5} {'prec':>7} {'recall':>7} {'f1':>7} {'fpr':>7} {'acc':>7}\n")
    for c in cats:
        out.write(
            f"{c['category']:28} {c['n']:>6} {c['pos']:>5} {_f(c['precision'])} {_f(c['recall'])} {_f(c['f1'])} "
            f"{_f(c['fpr'])} {_f(c['accuracy'])}\n"
        )


def _print_latency(out: TextIO, lat: list[dict[str, Any]]) -> None:
    out.write("latency per layer (ms per row; semantic = per-row share of a batched call):\n")
    for r in lat:
        out.write(f"  {r['layer']:10} p50 {r['p50']:8.3f}  p99 {r['p99']:8.3f}  rows {r['rows']}\n")


def _f(v: float | None) -> str:
    return f"{'-':>7}" if v is None else f"{v:7.4f}"
