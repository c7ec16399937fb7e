"""Metrics, latency tables and the self-contained HTML report (inline SVG ROC) of `slg eval injection`."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared_guards.injection.combined import Verdict

LAYERS = ("normalize", "pattern", "context", "semantic")


def _safe(a: float, b: float) -> float | None:
    return a / b if b else None


def confusion(y: Sequence[int], scores: Sequence[float], thr: float) -> tuple[int, int, int, int]:
    tp = fp = fn = tn = 0
    for label, s in zip(y, scores, strict=True):
        p = s >= thr
        if p and label:
            tp += 1
        elif p:
            fp += 1
        elif label:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def roc(y: Sequence[int], scores: Sequence[float]) -> list[tuple[float, float, float]]:
    """ROC points ``(fpr, tpr, threshold)`` from the highest threshold down (ties grouped)."""
    pos = sum(1 for v in y if v)
    neg = len(y) - pos
    pairs = sorted(zip(scores, y, strict=True), key=lambda t: -t[0])
    pts = [(0.0, 0.0, float("inf"))]
    tp = fp = 0
    i = 0
    while i < len(pairs):
        s = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == s:
            if pairs[i][1]:
                tp += 1
            else:
                fp += 1
            i += 1
        pts.append((fp / neg if neg else 0.0, tp / pos if pos else 0.0, s))
    return pts


def auc(points: Sequence[tuple[float, float, float]]) -> float:
    area = 0.0
    for (x0, y0, _), (x1, y1, _) in zip(points, points[1:], strict=False):
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def metrics(y: Sequence[int], scores: Sequence[float], thr: float) -> dict[str, Any]:
    tp, fp, fn, tn = confusion(y, scores, thr)
    precision = _safe(tp, tp + fp) or 0.0
    recall = _safe(tp, tp + fn) or 0.0
    has_both = 0 < sum(y) < len(y)
    return {
        "n": len(y), "pos": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": precision, "recall": recall,
        "f1": (2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "fpr": _safe(fp, fp + tn) or 0.0, "accuracy": _safe(tp + tn, len(y)) or 0.0,
        "auc": auc(roc(y, scores)) if has_both else float("nan"),
    }


def per_category(y: Sequence[int], scores: Sequence[float], cats: Sequence[str], thr: float) -> list[dict[str, Any]]:
    """One row per category; precision/recall/F1 only where the category has attacks, FPR only
    where it has benign rows (None otherwise)."""
    out: list[dict[str, Any]] = []
    for c in sorted(set(cats)):
        idx = [i for i, k in enumerate(cats) if k == c]
        tp, fp, fn, tn = confusion([y[i] for i in idx], [scores[i] for i in idx], thr)
        pos = tp + fn
        precision = _safe(tp, tp + fp) if pos else None
        recall = _safe(tp, pos)
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append({"category": c, "n": len(idx), "pos": pos, "precision": precision, "recall": recall,
                    "f1": f1, "fpr": _safe(fp, fp + tn), "accuracy": _safe(tp + tn, len(idx))})
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def latency_table(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for layer in (*LAYERS, "total"):
        if layer == "total":
            vals = [sum(v.timings_ms.values()) for v in verdicts]
        else:
            vals = [v.timings_ms[layer] for v in verdicts if layer in v.timings_ms]
        if vals:
            rows.append({"layer": layer, "p50": _pct(vals, 0.5), "p99": _pct(vals, 0.99), "rows": len(vals)})
    skipped = sum(1 for v in verdicts if "semantic" in v.skipped)
    if skipped:
        rows.append({"layer": "model-skipped", "p50": 0.0, "p99": 0.0, "rows": skipped})
    return rows


def _svg_roc(points: Sequence[tuple[float, float, float]], thr: float, y: Sequence[int],
             scores: Sequence[float]) -> str:
    w = h = 360
    pad = 40

    def xy(fpr: float, tpr: float) -> tuple[float, float]:
        return pad + fpr * (w - 2 * pad), h - pad - tpr * (h - 2 * pad)

    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{yy:.1f}" for i, (x, yy) in
                    enumerate(xy(f, t) for f, t, _ in points))
    tp, fp, fn, tn = confusion(y, scores, thr)
    ox, oy = xy(_safe(fp, fp + tn) or 0.0, _safe(tp, tp + fn) or 0.0)
    ticks = "".join(
        f'<text x="{xy(v, 0)[0]:.0f}" y="{h - pad + 16}" font-size="10" text-anchor="middle">{v:.1f}</text>'
        f'<text x="{pad - 6}" y="{xy(0, v)[1] + 3:.0f}" font-size="10" text-anchor="end">{v:.1f}</text>'
        for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    )
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="ROC curve">'
        f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#999"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#ccc" stroke-dasharray="4"/>'
        f'<path d="{path}" fill="none" stroke="#1f6feb" stroke-width="2"/>'
        f'<circle cx="{ox:.1f}" cy="{oy:.1f}" r="4" fill="#d73a49"><title>threshold {thr:.3f}</title></circle>'
        f"{ticks}"
        f'<text x="{w / 2}" y="{h - 6}" font-size="12" text-anchor="middle">false positive rate</text>'
        f'<text x="12" y="{h / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 12 {h / 2})">'
        "true positive rate</text></svg>"
    )


def _cell(v: Any) -> str:
    if v is None:
        return "<td>-</td>"
    if isinstance(v, float):
        return f"<td>{v:.4f}</td>"
    return f"<td>{html.escape(str(v))}</td>"


def write_report(path: str, y: Sequence[int], scores: Sequence[float], thr: float, overall: dict[str, Any],
                 cats: list[dict[str, Any]], lat: list[dict[str, Any]], *, source: str = "") -> None:
    """A self-contained HTML page (no scripts, no external assets): metrics, ROC, categories, latency."""
    points = roc(y, scores)
    head = ["category", "n", "attacks", "precision", "recall", "F1", "FPR", "accuracy"]
    cat_rows = "".join(
        "<tr>" + "".join(_cell(c[k]) for k in ("category", "n", "pos", "precision", "recall", "f1", "fpr",
                                               "accuracy")) + "</tr>" for c in cats
    )
    lat_rows = "".join(f"<tr>{_cell(r['layer'])}{_cell(r['p50'])}{_cell(r['p99'])}{_cell(r['rows'])}</tr>"
                       for r in lat)
    ov = "".join(f"<tr><th>{k}</th>{_cell(overall[k])}</tr>"
                 for k in ("n", "pos", "precision", "recall", "f1", "fpr", "accuracy", "auc"))
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Prompt-injection evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>Prompt-injection evaluation</h1>
<p>File: {html.escape(source)} &middot; threshold {thr:.3f} &middot; generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>
<h2>Overall</h2><table>{ov}</table>
<h2>ROC curve</h2>{_svg_roc(points, thr, y, scores)}
<p>AUC {overall['auc']:.4f}; the red dot is the operating point at the threshold.</p>
<h2>Per category</h2><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cat_rows}</table>
<h2>Latency per layer (ms per row)</h2>
<table><tr><th>layer</th><th>p50</th><th>p99</th><th>rows</th></tr>{lat_rows}</table>
<p>The semantic layer runs batched across rows here; its figure is the per-row share of a batch.</p>
</body></html>
"""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(doc)
