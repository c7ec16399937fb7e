"""`slg eval pii FILE.jsonl --out PRED.jsonl`: PII span detection and its scores.

Input rows: ``{"id", "text"[, "spans": [{"start", "end", "label"}]]}``. Output rows:
``{"id", "spans": [{"start", "end", "label"}]}`` (character offsets, end exclusive, Presidio
entity names). With gold spans, prints precision / recall / F1 / F2 per entity and overall.

Matching (documented in docs/pii.md): gold labels are first mapped to Presidio names
(GPE/LOC/FAC -> LOCATION, DOMAIN_NAME -> URL, ...). A gold span counts as found when a predicted span
with the same label overlaps it by at least one character; a predicted span counts as correct when
it overlaps a gold span with the same label. Precision = correct predictions / predictions, recall =
found gold spans / gold spans. "Overall" covers the labels the detector supports; gold labels it
does not detect by design (ORGANIZATION, TITLE, AGE, ZIP_CODE) are listed separately, and an
"all labels" recall line counts them as misses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared_guards.errors import ConfigError
from shared_guards.pii.entities import PRESIDIO_OUTPUT_MAP, normalize_label


def output_label(entity: str, presidio: bool = True) -> str:
    """The label written for a detection: Presidio's names (STREET_ADDRESS -> LOCATION) by default."""
    return PRESIDIO_OUTPUT_MAP.get(entity, entity) if presidio else entity


@dataclass
class Tally:
    pred: Counter[str] = field(default_factory=Counter)
    pred_ok: Counter[str] = field(default_factory=Counter)
    gold: Counter[str] = field(default_factory=Counter)
    gold_found: Counter[str] = field(default_factory=Counter)

    def add(self, gold: list[tuple[int, int, str]], pred: list[tuple[int, int, str]]) -> None:
        for gs, ge, gl in gold:
            self.gold[gl] += 1
            if any(ps < ge and gs < pe and pl == gl for ps, pe, pl in pred):
                self.gold_found[gl] += 1
        for ps, pe, pl in pred:
            self.pred[pl] += 1
            if any(ps < ge and gs < pe and pl == gl for gs, ge, gl in gold):
                self.pred_ok[pl] += 1


def prf(pred: int, pred_ok: int, gold: int, gold_found: int) -> tuple[float, float, float, float]:
    p = pred_ok / pred if pred else (1.0 if not gold else 0.0)
    r = gold_found / gold if gold else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    f2 = 5 * p * r / (4 * p + r) if 4 * p + r else 0.0
    return p, r, f1, f2


def report(t: Tally, supported: Iterable[str]) -> str:
    sup = set(supported)
    labels = sorted(set(t.gold) | set(t.pred))
    lines = [f"{'entity':<22}{'gold':>6}{'pred':>6}{'P':>8}{'R':>8}{'F1':>8}{'F2':>8}"]
    for lab in labels:
        if lab not in sup:
            continue
        p, r, f1, f2 = prf(t.pred[lab], t.pred_ok[lab], t.gold[lab], t.gold_found[lab])
        lines.append(f"{lab:<22}{t.gold[lab]:>6}{t.pred[lab]:>6}{p:>8.3f}{r:>8.3f}{f1:>8.3f}{f2:>8.3f}")
    scored = [lab for lab in labels if lab in sup]
    tot = [sum(c[lab] for lab in scored) for c in (t.pred, t.pred_ok, t.gold, t.gold_found)]
    p, r, f1, f2 = prf(*tot)
    lines.append(f"{'OVERALL (supported)':<22}{tot[2]:>6}{tot[0]:>6}{p:>8.3f}{r:>8.3f}{f1:>8.3f}{f2:>8.3f}")
    unsupported = [lab for lab in labels if lab not in sup]
    if unsupported:
        lines.append("not detected by design: " + ", ".join(f"{lab} ({t.gold[lab]})" for lab in unsupported))
        all_gold = sum(t.gold.values())
        all_found = sum(t.gold_found.values())
        pa, ra, f1a, f2a = prf(tot[0], tot[1], all_gold, all_found)
        lines.append(f"{'OVERALL (all labels)':<22}{all_gold:>6}{tot[0]:>6}{pa:>8.3f}{ra:>8.3f}{f1a:>8.3f}{f2a:>8.3f}")
    return "\n".join(lines)


def read_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "id" not in row:
                raise ConfigError(f"{path}:{n}: each row needs an 'id' and a string 'text'")
            yield n, row


def gold_spans(row: dict[str, Any], where: str, presidio: bool = True) -> list[tuple[int, int, str]] | None:
    spans = row.get("spans")
    if spans is None:
        return None
    out = []
    for s in spans:
        try:
            out.append((int(s["start"]), int(s["end"]), normalize_label(str(s["label"]), presidio=presidio)))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: spans need integer 'start', 'end' and a 'label'") from None
    return out


def _build_detector(args: argparse.Namespace) -> Any:
    from shared_guards.pii.config import PIIConfig
    from shared_guards.pii.detector import PIIDetector

    policy = getattr(args, "policy", None)
    if policy:
        from shared_guards.policy import load_policy

        loaded = load_policy(policy)
        deps = [args.department] if getattr(args, "department", None) else list(loaded.policy.departments)
        for dep in deps:
            if dep not in loaded.policy.departments:
                raise ConfigError(f"unknown department {dep!r}")
            for spec in loaded.policy.guards_for(dep):
                if spec.name == "pii":
                    cfg = loaded.guard_config(dep, spec.guard_id)
                    assert isinstance(cfg, PIIConfig)
                    return PIIDetector(cfg)
        raise ConfigError("no pii guard in the chosen department(s) of the policy")
    return PIIDetector(PIIConfig(preset="all"))


def run(args: argparse.Namespace) -> int:
    try:
        detector = _build_detector(args)
        rows = list(read_rows(args.file))
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    presidio = getattr(args, "labels", "presidio") != "fine"
    tally = Tally()
    have_gold = False
    t0 = time.perf_counter()
    show = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    with open(args.out, "w", encoding="utf-8") as out:
        for i, (n, row) in enumerate(rows):
            dets = detector.detect(row["text"])
            pred = [(d.start, d.end, output_label(d.entity, presidio)) for d in dets]
            out.write(json.dumps({"id": row["id"], "spans": [
                {"start": s, "end": e, "label": lab} for s, e, lab in pred]}, ensure_ascii=False) + "\n")
            try:
                gold = gold_spans(row, f"{args.file}:{n}", presidio)
            except ConfigError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if gold is not None:
                have_gold = True
                tally.add(gold, pred)
            if show and i % 100 == 0:
                print(f"\r{i}/{len(rows)}", end="", file=sys.stderr)
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
    if show:
        print("", file=sys.stderr)
    print(f"{len(rows)} rows, {ms:.1f} ms/row, predictions in {args.out}")
    if have_gold:
        supported = {output_label(x, presidio) for x in detector.supported_labels()}
        print(report(tally, supported))
    return 0
