"""Train (and cross-validate) the learned PII tagger of :mod:`shared_guards.pii.learned_ner`.

    python -m shared_guards.pii.train_ner --data /work/shared/data/pii_dev.jsonl \\
        --out shared_guards/data/pii/ner_model.json.gz [--cv 5]

Input rows: ``{"id", "text", "spans": [{"start", "end", "label"}], "template_id"?}``. Gold labels are
folded into the tagger's labels (GPE/LOC/FAC -> LOCATION, NORP -> NRP, ORG -> ORGANIZATION, PER ->
PERSON, STREET_ADDRESS); other labels are left to the pattern recognizers. The hand-written word
classes of ``--lexicon`` (default ``shared_guards/data/pii/lexicon.txt``) become features and are
stored in the model. Deterministic: same data and options, byte-identical model file.

``--cv K`` first reports out-of-fold scores with folds grouped by ``template_id`` (rows of one
template never sit on both sides; rows without one are their own group): the tagger alone and, with
``--cv-analyzer``, the whole analyzer (patterns + tagger) as ``slg eval pii`` scores it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared_guards.pii.learned_ner import (
    LABELS,
    TOKENIZER,
    Featurizer,
    NerModel,
    is_ordinary,
    tag_names,
    tokenize,
    transition_mask,
    viterbi,
)
from shared_guards.pii.ner_features import DEFAULT_LEXICON_PATH, read_lexicon

LABEL_MAP: dict[str, str] = {
    "PERSON": "PERSON", "PER": "PERSON",
    "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "LOCATION": "LOCATION",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "ORGANIZATION": "ORGANIZATION", "ORG": "ORGANIZATION",
    "NRP": "NRP", "NORP": "NRP",
}


@dataclass
class Example:
    id: str
    group: str
    text: str
    toks: list[str]
    offsets: list[tuple[int, int]]
    gold_tags: list[str]
    gold_spans: list[tuple[int, int, str]]  # character spans, tagger labels


def read_examples(path: str | Path) -> list[Example]:
    out: list[Example] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            text = row["text"]
            toks, starts = tokenize(text)
            offs = [(s, s + len(t)) for t, s in zip(toks, starts, strict=True)]
            spans = sorted((int(s["start"]), int(s["end"]), LABEL_MAP[s["label"]])
                           for s in row.get("spans", []) if s["label"] in LABEL_MAP)
            tags = ["O"] * len(toks)
            for gs, ge, lab in spans:
                first = True
                for i, (ts, te) in enumerate(offs):
                    if ts < ge and gs < te and tags[i] == "O":
                        if toks[i].isspace() and first:
                            continue
                        tags[i] = ("B-" if first else "I-") + lab
                        first = False
            group = str(row["template_id"]) if row.get("template_id") is not None else f"row:{row.get('id', n)}"
            out.append(Example(str(row.get("id", n)), group, text, toks, offs, tags, spans))
    return out


def read_vocab_texts(paths: Sequence[str | Path], min_rows: int = 3) -> frozenset[str]:
    """Ordinary words (lower case in the text) found in at least ``min_rows`` rows of other JSONL
    files with a ``text`` field: plain English the tagger should know is not a name."""
    rows: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    toks, _ = tokenize(str(json.loads(line).get("text", "")))
                    rows.update({t for t in toks if is_ordinary(t)})
    return frozenset(w for w, n in rows.items() if n >= min_rows)


def build_vocab(examples: Sequence[Example], min_groups: int, extra_words: frozenset[str] = frozenset(),
                lexicon: dict[str, list[str]] | None = None) -> tuple[frozenset[str], dict[str, int]]:
    """Ordinary words (seen in lower case in ``min_groups`` templates, or in ``extra_words``) and the
    feature strings seen in at least ``min_groups`` templates."""
    word_groups: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        for t in ex.toks:
            if is_ordinary(t):
                word_groups[t].add(ex.group)
    words = frozenset(w for w, g in word_groups.items() if len(g) >= min_groups) | extra_words
    fz = Featurizer(words, lexicon)
    feat_groups: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        for fs in fz.sequence(ex.toks):
            for f in fs:
                feat_groups[f].add(ex.group)
    names = sorted(f for f, g in feat_groups.items() if len(g) >= min_groups)
    return words, {f: i for i, f in enumerate(names)}


def train(examples: Sequence[Example], *, epochs: int = 8, min_groups: int = 2, seed: int = 13,
          labels: Sequence[str] = LABELS, extra_words: frozenset[str] = frozenset(),
          lexicon: dict[str, list[str]] | None = None) -> NerModel:
    """Averaged structured perceptron with BIO-constrained Viterbi. ``lexicon``: hand-written word
    classes (:func:`~shared_guards.pii.ner_features.read_lexicon`), kept in the model."""
    lexicon = lexicon or {}
    words, feats = build_vocab(examples, min_groups, extra_words, lexicon)
    tags = tag_names(labels)
    tag_ix = {t: i for i, t in enumerate(tags)}
    nt = len(tags)
    model = NerModel(tuple(labels), words, feats, np.zeros((len(feats), nt), dtype=np.float32),
                     np.zeros((nt + 1, nt), dtype=np.float32), {}, lexicon)
    data = [(model.feature_ids(ex.toks), [tag_ix[t] for t in ex.gold_tags]) for ex in examples if ex.toks]
    w = np.zeros((len(feats), nt))
    wsum = np.zeros_like(w)  # Daume's averaging: avg = w - wsum / c
    tr = np.zeros((nt + 1, nt))
    trsum = np.zeros_like(tr)
    mask = transition_mask(labels)
    rng = random.Random(seed)
    order = list(range(len(data)))
    c = 1.0
    for _ in range(epochs):
        rng.shuffle(order)
        for k in order:
            ids, gold = data[k]
            emit = _emissions(w, ids, nt)
            pred = viterbi(emit, tr + mask)
            if pred != gold:
                for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
                    if g != p:
                        row = np.asarray(ids[i], dtype=np.int64)
                        np.add.at(w[:, g], row, 1.0)
                        np.add.at(w[:, p], row, -1.0)
                        np.add.at(wsum[:, g], row, c)
                        np.add.at(wsum[:, p], row, -c)
                    gp = gold[i - 1] if i else nt
                    pp = pred[i - 1] if i else nt
                    if (gp, g) != (pp, p):
                        tr[gp, g] += 1.0
                        tr[pp, p] -= 1.0
                        trsum[gp, g] += c
                        trsum[pp, p] -= c
            c += 1.0
    avg_w = (w - wsum / c).astype(np.float32)
    avg_tr = (tr - trsum / c).astype(np.float32)
    keep = np.flatnonzero(np.abs(avg_w).max(axis=1) >= 1e-3)  # drop features that never mattered
    names = sorted(feats, key=feats.__getitem__)
    kept = {names[int(i)]: n for n, i in enumerate(keep)}
    meta = {"tokenizer": TOKENIZER, "epochs": epochs, "min_groups": min_groups, "seed": seed, "rows": len(examples),
            "groups": len({ex.group for ex in examples})}
    return NerModel(tuple(labels), words, kept, avg_w[keep], avg_tr, meta, lexicon)


def _emissions(w: npt.NDArray[np.float64], ids: list[list[int]], nt: int) -> npt.NDArray[np.float64]:
    out = np.zeros((len(ids), nt))
    for i, row in enumerate(ids):
        if row:
            out[i] = w[row].sum(axis=0)
    return out


# -- scoring ---------------------------------------------------------------------------------------


def predict_spans(model: NerModel, ex: Example) -> list[tuple[int, int, str]]:
    return model.spans(ex.text, (ex.toks, [a for a, _ in ex.offsets]))


def grouped_folds(examples: Sequence[Example], k: int) -> list[list[int]]:
    """Row indices per fold; every group in exactly one fold, folds balanced by rows (greedy,
    largest group first, ties by group name: deterministic)."""
    sizes = Counter(ex.group for ex in examples)
    fold_of: dict[str, int] = {}
    load = [0] * k
    for g, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += n
    folds: list[list[int]] = [[] for _ in range(k)]
    for i, ex in enumerate(examples):
        folds[fold_of[ex.group]].append(i)
    return folds


def _fold_label(lab: str) -> str:
    return "LOCATION" if lab == "STREET_ADDRESS" else lab


def score_table(gold: list[list[tuple[int, int, str]]], pred: list[list[tuple[int, int, str]]],
                fold_labels: bool = True) -> str:
    from shared_guards.evaluation.pii import Tally, report

    t = Tally()
    for g, p in zip(gold, pred, strict=True):
        f = _fold_label if fold_labels else (lambda x: x)
        t.add([(a, b, f(lab)) for a, b, lab in g], [(a, b, f(lab)) for a, b, lab in p])
    labels = {_fold_label(x) if fold_labels else x for x in LABELS}
    return report(t, labels)


def cross_validate(examples: Sequence[Example], k: int, **kw: Any) -> tuple[list[NerModel], list[list[int]],
                                                                              list[list[tuple[int, int, str]]]]:
    folds = grouped_folds(examples, k)
    preds: list[list[tuple[int, int, str]]] = [[] for _ in examples]
    models = []
    for f, test in enumerate(folds):
        held = set(test)
        model = train([ex for i, ex in enumerate(examples) if i not in held], **kw)
        models.append(model)
        for i in test:
            preds[i] = predict_spans(model, examples[i])
        print(f"fold {f + 1}/{k}: {len(test)} rows held out, {len(model.features)} features", file=sys.stderr)
    return models, folds, preds


def analyzer_oof(path: str | Path, examples: Sequence[Example], models: Sequence[NerModel],
                 folds: Sequence[Sequence[int]], settings: dict[str, Any] | None = None) -> str:
    """``slg eval pii``'s report for the whole analyzer (preset ``all``), each row scored by the
    analyzer whose tagger was trained without that row's template."""
    from shared_guards.evaluation.pii import Tally, gold_spans, output_label, read_rows, report
    from shared_guards.pii.analyzer import AnalyzerSettings, PIIAnalyzer
    from shared_guards.pii.config import PIIConfig
    from shared_guards.pii.detector import PIIDetector

    rows = [row for _, row in read_rows(str(path))]
    if len(rows) != len(examples):
        raise ValueError("rows and examples differ")
    tally = Tally()
    supported: set[str] = set()
    for model, test in zip(models, folds, strict=True):
        det = PIIDetector(PIIConfig(preset="all"),
                          analyzer=PIIAnalyzer(AnalyzerSettings(cache_size=0, **(settings or {})), ner_model=model))
        supported = {output_label(x) for x in det.supported_labels()}
        for i in test:
            pred = [(d.start, d.end, output_label(d.entity)) for d in det.detect(rows[i]["text"])]
            tally.add(gold_spans(rows[i], str(i)) or [], pred)
    return report(tally, supported)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_guards.pii.train_ner", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="JSONL rows with text and gold spans")
    ap.add_argument("--out", help="model file to write (.json.gz); omit to only cross-validate")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--min-groups", type=int, default=2, help="keep words/features seen in this many templates")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--vocab-text", action="append", default=[],
                    help="JSONL file(s) with a 'text' field: their lower-case words (in 3+ rows) are ordinary words")
    ap.add_argument("--lexicon", default=str(DEFAULT_LEXICON_PATH),
                    help="hand-written word classes (@class sections); their flags are features (default: packaged)")
    ap.add_argument("--no-lexicon", action="store_true", help="train without word-class features")
    ap.add_argument("--cv", type=int, default=0, help="K-fold cross-validation grouped by template_id first")
    ap.add_argument("--cv-analyzer", choices=["learned", "both", "spacy"], action="append", default=[],
                    help="with --cv: also score the whole analyzer with this NER backend out-of-fold")
    args = ap.parse_args(argv)
    kw: dict[str, Any] = {"epochs": args.epochs, "min_groups": args.min_groups, "seed": args.seed,
                          "extra_words": read_vocab_texts(args.vocab_text),
                          "lexicon": {} if args.no_lexicon else read_lexicon(args.lexicon)}
    examples = read_examples(args.data)
    print(f"{len(examples)} rows, {len({e.group for e in examples})} groups", file=sys.stderr)
    if args.cv:
        t0 = time.perf_counter()
        models, folds, preds = cross_validate(examples, args.cv, **kw)
        print(f"tagger alone, out-of-fold ({args.cv} folds grouped by template), {time.perf_counter() - t0:.0f} s:")
        print(score_table([e.gold_spans for e in examples], preds))
        for backend in args.cv_analyzer:
            print(f"analyzer (ner: {backend}, preset all), out-of-fold:")
            print(analyzer_oof(args.data, examples, models, folds, {"ner": backend}))
    if args.out:
        model = train(examples, **kw)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        model.save(args.out)
        print(f"wrote {args.out}: {len(model.features)} features, {Path(args.out).stat().st_size // 1024} KB")
        print("tagger alone, in-sample (trained on these rows):")
        print(score_table([e.gold_spans for e in examples], [predict_spans(model, e) for e in examples]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
