"""Synthetic indirect-injection rows (written for this project): deterministic, labelled, and a
regression table for the context layer on families it must catch and hard negatives it must pass."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from shared_guards.injection.context import Segment, analyze_segments
from shared_guards.injection.synth import generate, main
from shared_guards.types import Role


def test_generation_is_deterministic_and_balanced() -> None:
    a, b = list(generate(60, seed=7)), list(generate(60, seed=7))
    assert a == b
    assert list(generate(60, seed=8)) != a
    assert sum(r["label"] == 1 for r in a) == 60 and sum(r["label"] == 0 for r in a) == 60
    assert {str(r["source"]).split(":")[0] for r in a} == {"synthetic"}
    assert len({r["id"] for r in a}) == 120


def test_cli_writes_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    assert main(["--n", "12", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and all({"id", "text", "label", "source", "category"} <= r.keys() for r in rows)


def test_context_layer_on_synthetic_documents_pasted_by_a_user() -> None:
    flagged: dict[str, list[bool]] = defaultdict(list)
    for row in generate(300, seed=20261126):
        res = analyze_segments([Segment(0, Role.USER, str(row["text"]))])
        flagged[str(row["source"])].append(res.score >= 0.5)
    rate = {k: sum(v) / len(v) for k, v in flagged.items()}
    # benign requests about a document, and clean documents: never flagged
    assert rate["synthetic:benign-doc-task"] == 0.0 and rate["synthetic:benign-clean"] == 0.0
    # instructions that reshape the reply or plant code/exfiltration: a good share is caught by rules
    # alone (the rest is the semantic layer's job); these floors guard against regressions
    assert rate["synthetic:code"] >= 0.5
    assert rate["synthetic:exfil"] >= 0.3
    assert rate["synthetic:form"] >= 0.2
    assert rate["synthetic:reply"] >= 0.2
