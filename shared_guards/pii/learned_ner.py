"""A small learned named-entity tagger (names, places, street addresses, organizations, NRP).

An averaged structured perceptron over BIO tags with a Viterbi decoder. Features are generic and
computed from the token stream only: word shape, capitalization, character class, affixes, the
token's lower-cased form when it is an ordinary word (seen in lower case in the training text of
several templates), the same for two neighbours on each side, position in a run of capitalized
words and at the start of a sentence or line. A capitalized word's own identity is **not** a feature
unless it is an ordinary lower-case word too: the model cannot memorize lists of names or places.

The model is a few hundred KB (``shared_guards/data/pii/ner_model.json.gz``), loads in a fraction of
a second and tags about 200 tokens (1 KB of text) in a few milliseconds in pure Python + numpy.
Train it with ``python -m shared_guards.pii.train_ner`` (see docs/pii.md).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = "slg-pii-ner/1"
TOKENIZER = "regex/1"
LABELS: tuple[str, ...] = ("PERSON", "LOCATION", "STREET_ADDRESS", "ORGANIZATION", "NRP")
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "data" / "pii" / "ner_model.json.gz"

_NEG = -1e9
NGRAMS = True
_SENT_END = frozenset({".", "!", "?", ":", ";", '"', "“", "”", "(", ")", "-", "–", "—", "*", "•"})


# A placeholder (<PERSON_1>), an e-mail address or URL (one token, as in spaCy), words (with inner apostrophes: O'Brien), a
# possessive 's, a line break with the blanks around it, any other single character. Single spaces
# are not tokens.
_TOKEN = re.compile(r"<[A-Z][A-Z_]{1,40}_\d{1,6}>|[\w.+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63}){1,8}|(?i:https?://|www\.)[^\s<>\"']{1,500}"
                    r"|[^\S\n]*\n\s*|\w+(?:['’](?![sS]\b)\w+)*|['’][sS]\b|[^\w\s]")


def tokenize(text: str) -> tuple[list[str], list[int]]:
    """Token texts and their start offsets: what the tagger was trained on (no spaCy needed)."""
    toks: list[str] = []
    starts: list[int] = []
    for m in _TOKEN.finditer(text):
        toks.append(m.group())
        starts.append(m.start())
    return toks, starts


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


# -- token features -------------------------------------------------------------------------------


@cache
def shape(word: str) -> str:
    """``Xxxx``-style shape, runs longer than 3 collapsed, at most 12 characters looked at."""
    out: list[str] = []
    run = 0
    for c in word[:12]:
        k = "X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c
        if out and out[-1] == k:
            run += 1
            if run >= 3:
                continue
        else:
            run = 0
        out.append(k)
    return "".join(out)


@cache
def short_shape(word: str) -> str:
    out: list[str] = []
    for c in word[:12]:
        k = "X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c
        if not out or out[-1] != k:
            out.append(k)
    return "".join(out)


def _script(word: str) -> str:
    for c in word:
        o = ord(c)
        if o < 0x80:
            continue
        if o < 0x250:
            return "latx"
        if 0x370 <= o < 0x400:
            return "greek"
        if 0x400 <= o < 0x530:
            return "cyr"
        if 0x590 <= o < 0x700:
            return "rtl"
        if 0x3040 <= o < 0xA000 or 0xAC00 <= o < 0xD7B0:
            return "cjk"
        return "other"
    return "ascii"


def is_ordinary(word: str) -> bool:
    """A token whose lower-cased form may enter the word vocabulary: lower-case letters only."""
    return word.isalpha() and word.islower() and len(word) <= 20


def _len_bucket(n: int) -> str:
    return "1" if n == 1 else "2" if n == 2 else "3" if n == 3 else "5" if n <= 5 else "8" if n <= 8 else "9"


class Featurizer:
    """Feature strings of a token sequence. ``words`` is the ordinary-word vocabulary."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = frozenset(words)
        self._lex: dict[str, tuple[str, ...]] = {}
        self._key: dict[str, str] = {}
        self._ids: dict[str, tuple[int, ...]] = {}  # valid for one feature index (one model)

    def key(self, tok: str) -> str:
        """How a neighbour is seen: its lower-cased form if ordinary, else its short shape."""
        k = self._key.get(tok)
        if k is None:
            if tok.isspace():
                k = "NL"
            else:
                low = tok.lower()
                if low in self.words:
                    k = low
                elif len(tok) <= 2 and not tok.isalnum():
                    k = tok
                else:
                    k = "<" + short_shape(tok) + ">"
            if len(self._key) < 100_000:
                self._key[tok] = k
        return k

    def lexical(self, tok: str) -> tuple[str, ...]:
        f = self._lex.get(tok)
        if f is not None:
            return f
        low = tok.lower()
        feats = ["b", "s=" + shape(tok), "ss=" + short_shape(tok), "k=" + self.key(tok), "sc=" + _script(tok),
                 "l=" + _len_bucket(len(tok))]
        if tok[:1].isupper() and low in self.words:
            feats.append("capword")
        if tok.isalpha() and len(tok) >= 4:
            feats += ["x2=" + low[-2:], "x3=" + low[-3:], "x4=" + low[-4:], "p2=" + low[:2], "p3=" + low[:3]]
        elif tok.isalpha() and len(tok) == 3:
            feats += ["x2=" + low[-2:], "p2=" + low[:2]]
        if NGRAMS and tok[:1].isupper() and tok.isalpha() and len(tok) >= 4:
            padded = "^" + low + "$"
            feats += sorted({"c3=" + padded[i:i + 3] for i in range(len(padded) - 2)})
        out = tuple(feats)
        if len(self._lex) < 100_000:
            self._lex[tok] = out
        return out

    def sequence(self, toks: Sequence[str]) -> list[list[str]]:
        n = len(toks)
        keys = [self.key(t) for t in toks]
        sshapes = [short_shape(t) for t in toks]
        caps = [bool(t[:1].isupper()) and t.isalpha() for t in toks]
        # length of the run of capitalized words each token is in, and its position in the run
        run_len = [0] * n
        run_pos = [0] * n
        i = 0
        while i < n:
            if caps[i]:
                j = i
                while j < n and caps[j]:
                    j += 1
                for k in range(i, j):
                    run_len[k] = j - i
                    run_pos[k] = k - i
                i = j
            else:
                i += 1
        out: list[list[str]] = []
        for i, tok in enumerate(toks):
            p1 = keys[i - 1] if i >= 1 else "BOS"
            p2 = keys[i - 2] if i >= 2 else "BOS"
            n1 = keys[i + 1] if i + 1 < n else "EOS"
            n2 = keys[i + 2] if i + 2 < n else "EOS"
            ss = sshapes[i]
            f = list(self.lexical(tok))
            f += ["-1=" + p1, "-2=" + p2, "+1=" + n1, "+2=" + n2, "-2-1=" + p2 + " " + p1, "+1+2=" + n1 + " " + n2,
                  "-1+1=" + p1 + " " + n1, "-1s0=" + p1 + " " + ss, "s0+1=" + ss + " " + n1]
            if i == 0 or toks[i - 1] in _SENT_END or "\n" in toks[i - 1]:
                f.append("bos " + ss)
            if caps[i]:
                f.append(_run_feature(run_len[i], run_pos[i]))
            out.append(f)
        return out

    def ids(self, toks: Sequence[str], index: dict[str, int]) -> list[list[int]]:
        """``[index[f] for f in sequence(toks)[i] if f in index]`` per token, faster: lexical and
        single-neighbour features are cached per token text."""
        n = len(toks)
        get = index.get
        keys = [self.key(t) for t in toks]
        sshapes = [short_shape(t) for t in toks]
        lex = [self._lex_ids(t, index) for t in toks]
        ctx = [self._ctx_ids(k, index) for k in keys]
        caps = [bool(t[:1].isupper()) and t.isalpha() for t in toks]
        none: tuple[int, int, int, int] = self._ctx_ids("BOS", index)
        eos: tuple[int, int, int, int] = self._ctx_ids("EOS", index)
        out: list[list[int]] = []
        run_start = -1
        for i in range(n):
            p1 = keys[i - 1] if i >= 1 else "BOS"
            p2 = keys[i - 2] if i >= 2 else "BOS"
            n1 = keys[i + 1] if i + 1 < n else "EOS"
            n2 = keys[i + 2] if i + 2 < n else "EOS"
            ss = sshapes[i]
            row = list(lex[i])
            c1 = ctx[i - 1] if i >= 1 else none
            c2 = ctx[i - 2] if i >= 2 else none
            d1 = ctx[i + 1] if i + 1 < n else eos
            d2 = ctx[i + 2] if i + 2 < n else eos
            row += [x for x in (c1[0], c2[1], d1[2], d2[3]) if x >= 0]
            for f in ("-2-1=" + p2 + " " + p1, "+1+2=" + n1 + " " + n2, "-1+1=" + p1 + " " + n1,
                      "-1s0=" + p1 + " " + ss, "s0+1=" + ss + " " + n1):
                j = get(f)
                if j is not None:
                    row.append(j)
            if i == 0 or toks[i - 1] in _SENT_END or "\n" in toks[i - 1]:
                j = get("bos " + ss)
                if j is not None:
                    row.append(j)
            if caps[i]:
                if run_start < 0 or not caps[i - 1]:
                    run_start = i
                    end = i
                    while end < n and caps[end]:
                        end += 1
                    run_len = end - i
                j = get(_run_feature(run_len, i - run_start))
                if j is not None:
                    row.append(j)
            out.append(row)
        return out

    def _lex_ids(self, tok: str, index: dict[str, int]) -> tuple[int, ...]:
        key = "\x00" + tok
        f = self._ids.get(key)
        if f is None:
            f = tuple(index[x] for x in self.lexical(tok) if x in index)
            if len(self._ids) < 200_000:
                self._ids[key] = f
        return f

    def _ctx_ids(self, k: str, index: dict[str, int]) -> tuple[int, int, int, int]:
        key = "\x01" + k
        f = self._ids.get(key)
        if f is None:
            f = tuple(index.get(r + k, -1) for r in ("-1=", "-2=", "+1=", "+2="))
            if len(self._ids) < 200_000:
                self._ids[key] = f
        return f  # type: ignore[return-value]


def _run_feature(length: int, pos: int) -> str:
    return "run=" + str(min(length, 4)) + " " + str(min(pos, 3))


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

    def __post_init__(self) -> None:
        self.tags = tag_names(self.labels)
        self.featurizer = Featurizer(self.words)
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
        """``emissions(feature_ids(toks))`` (same numbers), faster: the lexical features' weight sum
        is cached per word, and the 11 context features per token are gathered in one numpy step."""
        fz, index = self.featurizer, self.features
        get = index.get
        n = len(toks)
        keys = [fz.key(t) for t in toks]
        sshapes = [short_shape(t) for t in toks]
        ctx = [fz._ctx_ids(k, index) for k in keys]
        caps = [bool(t[:1].isupper()) and t.isalpha() for t in toks]
        none4 = fz._ctx_ids("BOS", index)
        eos4 = fz._ctx_ids("EOS", index)
        slots: list[int] = []
        add = slots.extend
        run_start = run_len = 0
        for i in range(n):
            p1 = keys[i - 1] if i >= 1 else "BOS"
            p2 = keys[i - 2] if i >= 2 else "BOS"
            n1 = keys[i + 1] if i + 1 < n else "EOS"
            n2 = keys[i + 2] if i + 2 < n else "EOS"
            ss = sshapes[i]
            bos = -1
            if i == 0 or toks[i - 1] in _SENT_END or "\n" in toks[i - 1]:
                bos = get("bos " + ss, -1)
            run = -1
            if caps[i]:
                if i == 0 or not caps[i - 1]:
                    run_start = end = i
                    while end < n and caps[end]:
                        end += 1
                    run_len = end - i
                run = get(_run_feature(run_len, i - run_start), -1)
            add(((ctx[i - 1] if i >= 1 else none4)[0], (ctx[i - 2] if i >= 2 else none4)[1],
                 (ctx[i + 1] if i + 1 < n else eos4)[2], (ctx[i + 2] if i + 2 < n else eos4)[3],
                 get("-2-1=" + p2 + " " + p1, -1), get("+1+2=" + n1 + " " + n2, -1), get("-1+1=" + p1 + " " + n1, -1),
                 get("-1s0=" + p1 + " " + ss, -1), get("s0+1=" + ss + " " + n1, -1), bos, run))
        w = self._w_ext  # row -1 is zeros: -1 means "no such feature"
        emit = w[np.asarray(slots, dtype=np.intp).reshape(n, 11)].sum(axis=1)
        emit += np.vstack([self._lex_vec(t) for t in toks])
        return np.asarray(emit)

    def _lex_vec(self, tok: str) -> npt.NDArray[np.float64]:
        v = self._lexv.get(tok)
        if v is None:
            ids = self.featurizer._lex_ids(tok, self.features)
            v = self._w_ext[list(ids)].sum(axis=0) if ids else np.zeros(len(self.tags))
            if len(self._lexv) < 200_000:
                self._lexv[tok] = v
        return v

    def spans(self, text: str, tokens: tuple[list[str], list[int]] | None = None) -> list[tuple[int, int, str]]:
        """Character spans ``(start, end, label)`` found in ``text`` (``tokens``: its
        :func:`tokenize` result, if already computed)."""
        toks, starts = tokens if tokens is not None else tokenize(text)
        out = []
        for a, b, lab in tags_to_spans(self.predict(toks)):
            while a < b and toks[a].isspace():
                a += 1
            while b > a and toks[b - 1].isspace():
                b -= 1
            if a < b:
                out.append((starts[a], starts[b - 1] + len(toks[b - 1]), lab))
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
                   np.asarray(d["transitions"], dtype=np.float32), dict(d.get("meta", {})))

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
