"""Train the semantic head reproducibly and report grouped cross-validation.

    python -m shared_guards.injection.train \\
        --data ../shared/data/prompt_injection_dev.jsonl \\
        --data ../shared/data/prompt_injection_train_extra.jsonl \\
        --eval-on ../shared/data/prompt_injection_dev.jsonl \\
        --target-fpr 0.005 --out shared_guards/data/injection/semantic_head.npz

Steps: every row is cleaned like the guard does (NFKC, invisible characters removed, homoglyphs
folded), split into the same overlapping token windows, embedded ONCE with the encoder (cached
under ``--cache-dir``, keyed by texts, model and window settings); heads are then fitted from the
cache in seconds. Rows whose ``source`` starts with ``generated:`` come from templates, so the
8 CV folds are GROUPED by ``source``: a source is never in train and test at once, which estimates how the
detector does on sources it never saw. Multiple-instance training: a benign row makes all its
windows negative; an attack row makes only its most attack-like window positive (found by a first
model), because an injection sits in one place of a long document. Deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared_guards.injection.semantic import (
    DEFAULT_HEAD,
    ONNX_FORMAT,
    Runtime,
    SemanticSettings,
    get_encoder,
    packaged_model_path,
    resolve_runtime,
)

SEED = 20261126


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    labels: np.ndarray[Any, Any]
    groups: list[str]
    categories: list[str]
    files: list[str]


def load_rows(paths: Sequence[str]) -> Corpus:
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    cats: list[str] = []
    files: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if "label" not in row or "text" not in row:
                    raise SystemExit(f"{path}:{n}: training rows need 'text' and 'label'")
                ids.append(str(row.get("id", f"{Path(path).stem}-{n}")))
                texts.append(str(row["text"]))
                labels.append(int(row["label"]))
                groups.append(str(row.get("source") or Path(path).stem))
                cats.append(str(row.get("category") or ("attack" if int(row["label"]) else "benign")))
                files.append(str(path))
    return Corpus(ids, texts, np.asarray(labels, dtype=np.int64), groups, cats, files)


def model_text(text: str) -> str:
    """What the encoder sees: the guard's cleaned text (same function at training and at run time)."""
    from shared_guards.injection.normalize import clean

    return clean(text)[0]


def embed_corpus(corpus: Corpus, settings: SemanticSettings, cache_dir: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Window embeddings (float32) and the row index of every window; cached on disk."""
    model_path = Path(settings.model_path) if settings.model_path else packaged_model_path()
    cleaned = [model_text(t)[: settings.max_chars] for t in corpus.texts]
    h = hashlib.sha256()
    h.update(str(model_path.resolve()).encode())
    h.update(f"{settings.chunk_tokens}/{settings.chunk_overlap}/{settings.max_chunks}".encode())
    runtime = resolve_runtime(settings.runtime)
    h.update((runtime.value + ("/" + ONNX_FORMAT if runtime is not Runtime.TORCH else "")).encode())
    for t in cleaned:
        h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
    cache = cache_dir / f"slg_injection_emb_{h.hexdigest()[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return z["emb"].astype(np.float32), z["owner"]
    enc = get_encoder(model_path, settings.runtime)
    embs: list[np.ndarray[Any, Any]] = []
    owners: list[np.ndarray[Any, Any]] = []
    step = 256
    t0 = time.time()
    for start in range(0, len(cleaned), step):
        e, o = enc.embed(cleaned[start : start + step], chunk_tokens=settings.chunk_tokens,
                         chunk_overlap=settings.chunk_overlap, max_chunks=settings.max_chunks,
                         batch_size=settings.batch_size)
        embs.append(e)
        owners.append(np.asarray(o, dtype=np.int64) + start)
        done = min(start + step, len(cleaned))
        print(f"  embedded {done}/{len(cleaned)} rows ({time.time() - t0:.0f} s)", file=sys.stderr)
    emb = np.concatenate(embs)
    owner = np.concatenate(owners)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, emb=emb.astype(np.float16), owner=owner)
    return emb, owner


# -- fitting ----------------------------------------------------------------------------------

BENIGN_EASY = ("benign_task", "benign_query", "benign_chat", "benign_with_pii")
BENIGN_HARD = ("benign_roleplay_hard", "benign_document")


@dataclass
class Fitted:
    w1: np.ndarray[Any, Any]
    b1: np.ndarray[Any, Any]
    exemplars: np.ndarray[Any, Any]


def _fit_lr(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], c: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=SEED)
    lr.fit(x, y)
    return lr.coef_.T.astype(np.float32), lr.intercept_.astype(np.float32)


def _knn(emb: np.ndarray[Any, Any], ex: np.ndarray[Any, Any], k: int, self_idx: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
    """Mean of the top-k cosine similarities to exemplars (``self_idx``: exemplar row to ignore per query)."""
    out = np.zeros(len(emb), dtype=np.float32)
    for s in range(0, len(emb), 2048):
        sims = emb[s : s + 2048] @ ex.T
        if self_idx is not None:
            si = self_idx[s : s + 2048]
            rows = np.nonzero(si >= 0)[0]
            sims[rows, si[rows]] = -1.0
        kk = min(k, sims.shape[1])
        out[s : s + 2048] = np.partition(sims, -kk, axis=1)[:, -kk:].mean(axis=1)
    return out


def _row_max(values: np.ndarray[Any, Any], owner: np.ndarray[Any, Any], n_rows: int) -> np.ndarray[Any, Any]:
    out = np.full(n_rows, -np.inf, dtype=np.float64)
    np.maximum.at(out, owner, values)
    return out


def _window_labels(train_rows: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], emb: np.ndarray[Any, Any],
                   owner: np.ndarray[Any, Any], c: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Window indices and labels for training (multiple-instance: best window of each attack row)."""
    in_train = np.isin(owner, train_rows)
    win = np.nonzero(in_train)[0]
    counts = np.bincount(owner[win], minlength=len(labels))
    single = win[(counts[owner[win]] == 1) | (labels[owner[win]] == 0)]
    w1, b1 = _fit_lr(emb[single], labels[owner[single]], c)
    multi = win[(counts[owner[win]] > 1) & (labels[owner[win]] == 1)]
    chosen: list[int] = []
    if len(multi):
        z = emb[multi] @ w1[:, 0] + b1[0]
        best: dict[int, tuple[float, int]] = {}
        for wi, zi in zip(multi.tolist(), z.tolist(), strict=True):
            o = int(owner[wi])
            if o not in best or zi > best[o][0]:
                best[o] = (zi, wi)
        chosen = [wi for _, wi in best.values()]
    idx = np.concatenate([single, np.asarray(chosen, dtype=np.int64)])
    return idx, labels[owner[idx]]


def _fit_fold(train_rows: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], emb: np.ndarray[Any, Any],
              owner: np.ndarray[Any, Any], c: float) -> Fitted:
    idx, y = _window_labels(train_rows, labels, emb, owner, c)
    w1, b1 = _fit_lr(emb[idx], y, c)
    return Fitted(w1, b1, emb[idx[y == 1]])


def _metrics(score: np.ndarray[Any, Any], y: np.ndarray[Any, Any], cats: list[str], thr: float) -> dict[str, Any]:
    pred = score >= thr
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    out: dict[str, Any] = {
        "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "fpr": fp / max(1, fp + tn),
        "accuracy": (tp + tn) / max(1, len(y)),
    }
    out["f1"] = 2 * out["precision"] * out["recall"] / max(1e-9, out["precision"] + out["recall"])
    ca = np.asarray(cats)
    for name, group in (("fpr_benign_chat_tasks", BENIGN_EASY), ("fpr_benign_hard", BENIGN_HARD)):
        m = np.isin(ca, group)
        out[name] = float(pred[m].mean()) if m.any() else float("nan")
    out["per_category"] = {
        c: {"n": int((ca == c).sum()), "flagged": float(pred[ca == c].mean())} for c in sorted(set(cats))
    }
    return out


def fit_and_report(corpus: Corpus, emb: np.ndarray[Any, Any], owner: np.ndarray[Any, Any], args: argparse.Namespace) -> int:
    from sklearn.metrics import roc_auc_score

    c, k = args.c, args.knn_k
    labels = corpus.labels
    n = len(labels)
    all_rows = np.arange(n)
    eval_mask = np.isin(np.asarray(corpus.files), args.eval_on) if args.eval_on else np.ones(n, dtype=bool)
    report: dict[str, Any] = {"rows": n, "windows": int(len(emb)), "c": c, "knn_k": k}
    # Grouped (leave-one-source-out) out-of-fold features: head logit and exemplar similarity.
    oof_z = np.zeros(len(emb), dtype=np.float32)
    oof_k = np.zeros(len(emb), dtype=np.float32)
    protos = _prototypes(args)
    proto = _knn(emb, protos, 3)  # untrained: no fold needed
    groups = np.asarray(corpus.groups)
    if not args.no_cv:
        from sklearn.model_selection import GroupKFold

        t0 = time.time()
        for train_rows, test_rows in GroupKFold(n_splits=args.folds).split(all_rows, labels, groups):
            fit = _fit_fold(train_rows, labels, emb, owner, c)
            tw = np.nonzero(np.isin(owner, test_rows))[0]
            oof_z[tw] = emb[tw] @ fit.w1[:, 0] + fit.b1[0]
            oof_k[tw] = _knn(emb[tw], fit.exemplars, k)
        print(f"{args.folds}-fold CV grouped by source ({len(set(corpus.groups))} sources) in {time.time() - t0:.0f} s",
              file=sys.stderr)
    # Stacker on the out-of-fold row maxima (3 numbers; fitted on OOF values).
    from sklearn.linear_model import LogisticRegression

    feats = np.stack([_row_max(oof_z, owner, n), _row_max(oof_k, owner, n), _row_max(proto, owner, n)], axis=1)
    stacker = LogisticRegression(C=1.0, class_weight="balanced", random_state=SEED).fit(feats, labels)
    stack = np.asarray([*stacker.coef_[0], stacker.intercept_[0]], dtype=np.float32)

    def proba(z: np.ndarray[Any, Any], kn: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(1 / (1 + np.exp(-np.clip(stack[0] * z + stack[1] * kn + stack[2] * proto + stack[3],
                                                   -30, 30))))

    oof = _row_max(proba(oof_z, oof_k), owner, n)
    # Operating point: the target FPR on benign chat/task rows (out of fold).
    easy = np.isin(np.asarray(corpus.categories), BENIGN_EASY) & (labels == 0)
    benign = oof[easy] if easy.any() else oof[labels == 0]
    thr = float(np.quantile(benign, 1 - args.target_fpr)) if len(benign) else 0.5
    report["stack"] = stack.tolist()
    report["threshold"] = thr
    if not args.no_cv:
        em = eval_mask
        cats = [ct for ct, m in zip(corpus.categories, em, strict=True) if m]
        report["cv"] = _metrics(oof[em], labels[em], cats, thr)
        report["cv"]["auc"] = float(roc_auc_score(labels[em], oof[em]))
        for name, s in (("head_only", _row_max(oof_z, owner, n)), ("knn_only", _row_max(oof_k, owner, n))):
            report["cv"][f"auc_{name}"] = float(roc_auc_score(labels[em], s[em]))
    # Final head on everything.
    fit = _fit_fold(all_rows, labels, emb, owner, c)
    ex = fit.exemplars
    keep = _dedupe(ex, args.max_exemplars)
    meta = {"trained_on": [Path(p).name for p in args.data], "rows": n, "c": c, "cv": report.get("cv"),
            "target_fpr": args.target_fpr, "chunk_tokens": 256, "chunk_overlap": 64,
            "encoder": "all-MiniLM-L6-v2" if not args.model_path else Path(args.model_path).name,
            "runtime": resolve_runtime(args.runtime).value}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, w1=fit.w1.astype(np.float32), b1=fit.b1.astype(np.float32),
                        exemplars=ex[keep].astype(np.float16), knn_k=np.int64(k), stack=stack,
                        prototypes=protos.astype(np.float32),
                        threshold=np.float64(thr), meta=np.asarray(json.dumps(meta)))
    # Full-data (not cross-validated) fit of the shipped artifact on the eval rows.
    z_full = emb @ fit.w1[:, 0] + fit.b1[0]
    k_full = _knn(emb, ex[keep], k)
    full = _row_max(proba(z_full, k_full), owner, n)
    cats = [ct for ct, m in zip(corpus.categories, eval_mask, strict=True) if m]
    report["shipped_artifact_on_eval_rows(not CV)"] = _metrics(full[eval_mask], labels[eval_mask], cats, thr)
    report["exemplars"] = int(len(keep))
    print(json.dumps(report, indent=1))
    if args.oof_out and not args.no_cv:
        np.savez(args.oof_out, ids=np.asarray(corpus.ids), oof=oof, labels=labels)
    return 0


def _prototypes(args: argparse.Namespace) -> np.ndarray[Any, Any]:
    """Embeddings of the generic attack-intent sentences (one per line of ``--prototypes``)."""
    lines = [ln.strip() for ln in Path(args.prototypes).read_text(encoding="utf-8").splitlines()]
    texts = [ln for ln in lines if ln and not ln.startswith("#")]
    emb, _ = get_encoder(args.model_path, args.runtime).embed(texts)
    return emb


def _dedupe(ex: np.ndarray[Any, Any], limit: int) -> np.ndarray[Any, Any]:
    """Indices of exemplars after dropping near-duplicates (cos > 0.97), at most ``limit`` (spread)."""
    keep: list[int] = []
    kept = np.zeros((0, ex.shape[1]), dtype=np.float32)
    for i in range(len(ex)):
        if len(kept) and float((kept @ ex[i]).max()) > 0.97:
            continue
        keep.append(i)
        kept = np.vstack([kept, ex[i : i + 1]])
    idx = np.asarray(keep, dtype=np.int64)
    if len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(np.int64)]
    return idx


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared_guards.injection.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", required=True, help="labelled JSONL (repeatable)")
    ap.add_argument("--eval-on", action="append", default=[], help="report CV metrics only on rows of these files")
    ap.add_argument("--out", default=str(DEFAULT_HEAD))
    ap.add_argument("--cache-dir", default="/tmp")
    ap.add_argument("--model-path", help="encoder directory (default: packaged all-MiniLM-L6-v2)")
    ap.add_argument("--runtime", default=Runtime.AUTO.value, choices=[r.value for r in Runtime],
                    help="encoder runtime (default auto: onnx-int8 when onnxruntime is installed); train the "
                    "head with the runtime the guard will use")
    ap.add_argument("--embed-only", action="store_true", help="only build the embedding cache")
    ap.add_argument("--no-cv", action="store_true", help="skip grouped cross-validation")
    ap.add_argument("--target-fpr", type=float, default=0.005,
                    help="out-of-fold FPR on benign chat/task rows at which the threshold is set")
    ap.add_argument("--c", type=float, default=0.3, help="inverse L2 strength of the logistic head")
    ap.add_argument("--knn-k", type=int, default=3)
    ap.add_argument("--max-exemplars", type=int, default=3000)
    ap.add_argument("--chunk-tokens", type=int, default=SemanticSettings.chunk_tokens)
    ap.add_argument("--chunk-overlap", type=int, default=SemanticSettings.chunk_overlap)
    ap.add_argument("--max-chunks", type=int, default=SemanticSettings.max_chunks)
    ap.add_argument("--folds", type=int, default=8, help="grouped CV folds (groups = source)")
    ap.add_argument("--prototypes", default=str(DEFAULT_HEAD.parent / "prototypes.txt"))
    ap.add_argument("--oof-out", help="write out-of-fold row scores (npz) for analysis")
    args = ap.parse_args(argv)
    settings = SemanticSettings(model_path=args.model_path, chunk_tokens=args.chunk_tokens,
                                chunk_overlap=args.chunk_overlap, max_chunks=args.max_chunks,
                                runtime=Runtime(args.runtime))
    corpus = load_rows(args.data)
    print(f"{len(corpus.texts)} rows, {int(corpus.labels.sum())} attacks, {len(set(corpus.groups))} sources",
          file=sys.stderr)
    emb, owner = embed_corpus(corpus, settings, Path(args.cache_dir))
    print(f"{len(emb)} windows", file=sys.stderr)
    if args.embed_only:
        return 0
    return fit_and_report(corpus, emb, owner, args)


if __name__ == "__main__":
    raise SystemExit(main())
