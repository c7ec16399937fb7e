"""A small learned named-entity tagger (names, places, street addresses, organizations, NRP).

An averaged structured perceptron over BIO tags with a Viterbi decoder. Features are generic and
computed from the token stream only: word shape, capitalization, character class, affixes, the
token's lower-cased form when it is an ordinary word (seen in lower case in the training text of
several templates), the same for two neighbours on each side, position in a run of capitalized
words and at the start of a sentence or line. A capitalized word's own identity is **not** a feature
unless it is an ordinary lower-case word too (its affixes and character trigrams are): the model
learns what names, places and companies look like, not lists of them. General knowledge comes as
word classes from a small hand-written lexicon (``lx=given``, ``lx=country``...), weighed like any
other feature and stored in the model file.

The model is ~140 KB (``shared_guards/data/pii/ner_model.json.gz``), loads in a fraction of
a second and tags about 200 tokens (1 KB of text) in a few milliseconds in pure Python + numpy.
Tokens and features: :mod:`shared_guards.pii.ner_features`. Train it with
``python -m shared_guards.pii.train_ner`` (see docs/pii.md).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared_guards.pii.ner_features import (  # re-exported: the tagger's tokens and features
    Featurizer,
    is_ordinary,
    shape,
    short_shape,
    tokenize,
)

__all__ = ["LABELS", "TOKENIZER", "Featurizer", "NerModel", "is_ordinary", "load_model", "shape", "short_shape",
           "tag_names", "tags_to_spans", "tokenize", "transition_mask", "viterbi"]

FORMAT = "slg-pii-ner/1"
TOKENIZER = "regex/1"
LABELS: tuple[str, ...] = ("PERSON", "LOCATION", "STREET_ADDRESS", "ORGANIZATION", "NRP")
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "pii" / "ner_model.json.gz"

_NEG = -1e9


def tag_names(labels: Sequence[str]) -> list[str]:
    out = ["O"]
    for lab in labels:
        out += [f"B-{lab}", f"I-{lab}"]
    return out


def transition_mask(labels: Sequence[str]) -> npt.NDArray[np.float64]:
    """Allowed BIO transitions: row = previous tag (last row = start), column = next tag."""
    tags = tag_names(labels)
    n = len(tags)
    m = np.zeros((n + 1, n))
    for j, t in enumerate(tags):
        if not t.startswith("I-"):
            continue
        lab = t[2:]
        for i, p in enumerate(tags):
            if p not in (f"B-{lab}", f"I-{lab}"):
                m[i, j] = _NEG
        m[n, j] = _NEG
    return m


# -- the model ------------------------------------------------------------------------------------


@dataclass
class NerModel:
    """Weights of the averaged perceptron; ``predict`` tags a token sequence."""

    labels: tuple[str, ...]
    words: frozenset[str]
    features: dict[str, int]
    weights: npt.NDArray[np.float32]  # (n_features, n_tags)
    transitions: npt.NDArray[np.float32]  # (n_tags + 1, n_tags); last row = start
    meta: dict[str, Any]
    lexicon: dict[str, list[str]] = field(default_factory=dict)  # {class: words}, see ner_features

    def __post_init__(self) -> None:
        self.tags = tag_names(self.labels)
        self.featurizer = Featurizer(self.words, self.lexicon)
        self._trans = self.transitions.astype(np.float64) + transition_mask(self.labels)
        self._w_ext = np.vstack([self.weights.astype(np.float64), np.zeros((1, len(self.tags)))])
        self._lexv: dict[str, npt.NDArray[np.float64]] = {}

    def feature_ids(self, toks: Sequence[str]) -> list[list[int]]:
        return self.featurizer.ids(toks, self.features)

    def emissions(self, ids: list[list[int]]) -> npt.NDArray[np.float64]:
        n, t = len(ids), len(self.tags)
        flat = [j for row in ids for j in row]
        if not flat:
            return np.zeros((n, t))
        lens = np.fromiter((len(r) for r in ids), dtype=np.int64, count=n)
        w = self.weights[np.asarray(flat, dtype=np.int64)].astype(np.float64)
        out = np.zeros((n, t))
        has = lens > 0
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])[has]
        out[has] = np.add.reduceat(w, starts, axis=0)
        return out

    def viterbi(self, emit: npt.NDArray[np.float64]) -> list[int]:
        return viterbi(emit, self._trans)

    def predict(self, toks: Sequence[str]) -> list[str]:
        if not toks:
            return []
        return [self.tags[i] for i in self.viterbi(self.fast_emissions(toks))]

    def fast_emissions(self, toks: Sequence[str]) -> npt.NDArray[np.float64]:
        """``emissions(feature_ids(toks))`` (same numbers), faster: the weight sum of a token's own
        (lexical) features is cached per word, and its context features are summed in one gather."""
        fz = self.featurizer
        slots = np.asarray(fz.context_slots(toks, self.features), dtype=np.intp).reshape(len(toks), fz.CONTEXT_SLOTS)
        emit = self._w_ext[slots].sum(axis=1)  # row -1 of _w_ext is zeros: -1 means "no such feature"
        emit += np.vstack([self._lex_vec(t) for t in toks])
        return np.asarray(emit)

    def _lex_vec(self, tok: str) -> npt.NDArray[np.float64]:
        v = self._lexv.get(tok)
        if v is None:
            ids = self.featurizer._lex_ids(tok, self.features)
            v = self._w_ext[list(ids)].sum(axis=0) if ids else np.zeros(len(self.tags))
            if len(self._lexv) < 50_000:  # ~10 MB at most
                self._lexv[tok] = v
        return v

    def spans(self, text: str, tokens: tuple[list[str], list[int]] | None = None) -> list[tuple[int, int, str]]:
        """Character spans ``(start, end, label)`` found in ``text`` (``tokens``: its
        :func:`tokenize` result, if already computed)."""
        toks, starts = tokens if tokens is not None else tokenize(text)
        out: list[tuple[int, int, str]] = []
        for a, b, lab in tags_to_spans(self.predict(toks)):
            while a < b and toks[a].isspace():
                a += 1
            while b > a and toks[b - 1].isspace():
                b -= 1
            if a < b:
                start, end = starts[a], starts[b - 1] + len(toks[b - 1])
                if out and out[-1][2] == lab and out[-1][1] + 1 == start and text[start - 1] in "-‐":
                    start = out.pop()[0]  # "Mei-Ling" tagged as two names is one
                out.append((start, end, lab))
        return out

    # -- persistence --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        names = sorted(self.features, key=self.features.__getitem__)
        return {
            "format": FORMAT,
            "labels": list(self.labels),
            "words": sorted(self.words),
            "features": names,
            "shape": list(self.weights.shape),
            "weights": base64.b64encode(self.weights.astype("<f2").tobytes()).decode("ascii"),
            "transitions": [[round(float(x), 4) for x in row] for row in self.transitions],
            "meta": self.meta,
            "lexicon": self.lexicon,
        }

    def save(self, path: str | Path) -> None:
        raw = json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        with open(path, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(raw)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NerModel:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} model (format {d.get('format')!r})")
        if d.get("meta", {}).get("tokenizer", TOKENIZER) != TOKENIZER:
            raise ValueError(f"model needs tokenizer {d['meta']['tokenizer']!r}, this version has {TOKENIZER!r}")
        rows, cols = (int(x) for x in d["shape"])
        w = np.frombuffer(base64.b64decode(d["weights"]), dtype="<f2").astype(np.float32).reshape(rows, cols)
        feats = {f: i for i, f in enumerate(d["features"])}
        if len(feats) != rows:
            raise ValueError("feature count and weight rows differ")
        return cls(tuple(d["labels"]), frozenset(d["words"]), feats, w,
                   np.asarray(d["transitions"], dtype=np.float32), dict(d.get("meta", {})),
                   {str(c): [str(w) for w in ws] for c, ws in d.get("lexicon", {}).items()})

    @classmethod
    def load(cls, path: str | Path) -> NerModel:
        with gzip.open(path, "rb") as fh:
            return cls.from_json(json.loads(fh.read().decode("utf-8")))


def viterbi(emit: npt.NDArray[np.float64], trans: npt.NDArray[np.float64]) -> list[int]:
    """Best tag path. ``trans`` has the start row last."""
    n, t = emit.shape
    if n == 0:
        return []
    body_t = np.ascontiguousarray(trans[:-1].T)  # [next, prev]
    score = trans[-1] + emit[0]
    buf = np.empty((t, t))
    flat = np.arange(t) * t
    backs: list[npt.NDArray[np.intp]] = [flat] * n
    rows = list(emit)
    take, argmax = buf.take, buf.argmax
    for i in range(1, n):
        np.add(body_t, score, out=buf)
        b = argmax(axis=1)
        backs[i] = b
        score = take(flat + b)
        score += rows[i]
    best = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        best.append(int(backs[i][best[-1]]))
    best.reverse()
    return best


def tags_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Token ranges ``[a, b)`` with their label from a BIO sequence."""
    out: list[tuple[int, int, str]] = []
    start, lab = -1, ""
    for i, t in enumerate([*tags, "O"]):
        if t == "O" or t.startswith("B-") or (t.startswith("I-") and t[2:] != lab):
            if start >= 0:
                out.append((start, i, lab))
                start = -1
            if t != "O":
                start, lab = i, t[2:]
    return out


_models: dict[str, NerModel] = {}


def load_model(path: str | Path | None = None) -> NerModel:
    """Load a model once per process per path (the packaged one by default)."""
    key = str(path or DEFAULT_MODEL_PATH)
    m = _models.get(key)
    if m is None:
        m = _models[key] = NerModel.load(key)
    return m
