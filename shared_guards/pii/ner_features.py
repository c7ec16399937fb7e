"""Tokens and features of the learned PII tagger (:mod:`shared_guards.pii.learned_ner`).

A regex tokenizer (no spaCy needed) and the generic token features: shape, capitalization, script,
length, affixes and character trigrams, the lower-cased form of ordinary words only, neighbours and
their pairs, sentence/line starts and runs of capitalized words, and the word classes of the
hand-written lexicon (``shared_guards/data/pii/lexicon.txt``). ``Featurizer.sequence`` is the
reference definition; ``Featurizer.ids`` and ``NerModel.fast_emissions`` compute the same features
faster (a test checks they agree).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

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


# -- the hand-written lexicon ------------------------------------------------------------------

DEFAULT_LEXICON_PATH = Path(__file__).resolve().parents[1] / "data" / "pii" / "lexicon.txt"


def read_lexicon(path: str | Path = DEFAULT_LEXICON_PATH) -> dict[str, list[str]]:
    """``{class: sorted words}`` of a lexicon file: ``@class`` lines start a section, ``#`` a comment."""
    out: dict[str, set[str]] = {}
    cls = ""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("@"):
            cls = line[1:].strip()
            out.setdefault(cls, set())
        elif line:
            if not cls:
                raise ValueError(f"{path}: words before the first @class line")
            out[cls].update(w.lower() for w in line.split())
    return {c: sorted(ws) for c, ws in sorted(out.items())}


_UNFOLDED = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "ß": "ss", "æ": "ae", "œ": "oe",
                           "ı": "i"})


def _fold(word: str) -> str:
    """Lower case without diacritics (``Zoë`` -> ``zoe``, ``Łódź`` -> ``lodz``)."""
    low = word.lower()
    if low.isascii():
        return low
    return "".join(c for c in unicodedata.normalize("NFKD", low.translate(_UNFOLDED)) if not unicodedata.combining(c))


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
    """Feature strings of a token sequence. ``words`` is the ordinary-word vocabulary, ``lexicon``
    the hand-written word classes (``{class: words}``, :func:`read_lexicon`): a word's classes are
    features (``lx=given``), its identity is not."""

    def __init__(self, words: Iterable[str], lexicon: Mapping[str, Iterable[str]] | None = None) -> None:
        self.words = frozenset(words)
        classes: dict[str, list[str]] = {}
        for cls, ws in sorted((lexicon or {}).items()):
            for w in ws:
                classes.setdefault(w, []).append(cls)
        self.classes = {w: tuple(cs) for w, cs in classes.items()}
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
                    k = "<" + ":".join((short_shape(tok), *self.lexicon_classes(tok))) + ">"
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
        feats += ["lx=" + c for c in self.lexicon_classes(tok)]
        if tok.isalpha() and len(tok) >= 4:
            feats += ["x2=" + low[-2:], "x3=" + low[-3:], "x4=" + low[-4:], "p2=" + low[:2], "p3=" + low[:3]]
        elif tok.isalpha() and len(tok) == 3:
            feats += ["x2=" + low[-2:], "p2=" + low[:2]]
        if tok[:1].isupper() and tok.isalpha() and len(tok) >= 4:
            padded = "^" + low + "$"
            feats += sorted({"c3=" + padded[i:i + 3] for i in range(len(padded) - 2)})
        out = tuple(feats)
        if len(self._lex) < 100_000:
            self._lex[tok] = out
        return out

    def lexicon_classes(self, tok: str) -> tuple[str, ...]:
        """The lexicon classes of a word (accents ignored; a plural -s of a demonym counts)."""
        if not self.classes or not tok[:1].isalpha():
            return ()
        low = _fold(tok).replace("'", "").replace("’", "")
        cs = self.classes.get(low)
        if cs is None and len(low) > 4 and low.endswith("s"):
            cs = tuple(c for c in self.classes.get(low[:-1], ()) if c == "nrp")
        return cs or ()

    def _context(self, toks: Sequence[str], keys: Sequence[str]) -> list[list[str]]:
        """Per token, the 7 features that combine it with its neighbours or its place: word pairs,
        shape pairs, start of sentence/line, position in a run of capitalized words ("" where one
        does not apply). The four single-neighbour features are cached per word (:meth:`_ctx_ids`)."""
        n = len(toks)
        sshapes = [short_shape(t) for t in toks]
        caps = [bool(t[:1].isupper()) and t.isalpha() for t in toks]
        out: list[list[str]] = []
        run_start = run_len = 0
        for i in range(n):
            p1 = keys[i - 1] if i >= 1 else "BOS"
            p2 = keys[i - 2] if i >= 2 else "BOS"
            n1 = keys[i + 1] if i + 1 < n else "EOS"
            n2 = keys[i + 2] if i + 2 < n else "EOS"
            ss = sshapes[i]
            bos = "bos " + ss if i == 0 or toks[i - 1] in _SENT_END or "\n" in toks[i - 1] else ""
            run = ""
            if caps[i]:
                if i == 0 or not caps[i - 1]:  # a run of capitalized words starts here
                    run_start = end = i
                    while end < n and caps[end]:
                        end += 1
                    run_len = end - i
                run = _run_feature(run_len, i - run_start)
            out.append(["-2-1=" + p2 + " " + p1, "+1+2=" + n1 + " " + n2, "-1+1=" + p1 + " " + n1,
                        "-1s0=" + p1 + " " + ss, "s0+1=" + ss + " " + n1, bos, run])
        return out

    def sequence(self, toks: Sequence[str]) -> list[list[str]]:
        """Every feature name of every token (the reference path; training uses it)."""
        n = len(toks)
        keys = [self.key(t) for t in toks]
        out: list[list[str]] = []
        for i, (tok, ctx) in enumerate(zip(toks, self._context(toks, keys), strict=True)):
            p1 = keys[i - 1] if i >= 1 else "BOS"
            p2 = keys[i - 2] if i >= 2 else "BOS"
            n1 = keys[i + 1] if i + 1 < n else "EOS"
            n2 = keys[i + 2] if i + 2 < n else "EOS"
            out.append([*self.lexical(tok), "-1=" + p1, "-2=" + p2, "+1=" + n1, "+2=" + n2, *filter(None, ctx)])
        return out

    CONTEXT_SLOTS = 11

    def context_slots(self, toks: Sequence[str], index: dict[str, int]) -> list[int]:
        """The ids of every token's ``CONTEXT_SLOTS`` non-lexical features, flat, -1 where the
        feature is unknown or does not apply (fixed width: one numpy gather sums them)."""
        n = len(toks)
        get = index.get
        keys = [self.key(t) for t in toks]
        ctx = [self._ctx_ids(k, index) for k in keys]
        none = self._ctx_ids("BOS", index)
        eos = self._ctx_ids("EOS", index)
        out: list[int] = []
        add = out.extend
        for i, strs in enumerate(self._context(toks, keys)):
            add(((ctx[i - 1] if i >= 1 else none)[0], (ctx[i - 2] if i >= 2 else none)[1],
                 (ctx[i + 1] if i + 1 < n else eos)[2], (ctx[i + 2] if i + 2 < n else eos)[3]))
            add([get(f, -1) for f in strs])
        return out

    def ids(self, toks: Sequence[str], index: dict[str, int]) -> list[list[int]]:
        """``[index[f] for f in sequence(toks)[i] if f in index]`` per token, faster: lexical and
        single-neighbour features are cached per token text."""
        slots = self.context_slots(toks, index)
        w = self.CONTEXT_SLOTS
        return [[*self._lex_ids(tok, index), *(x for x in slots[i * w:(i + 1) * w] if x >= 0)]
                for i, tok in enumerate(toks)]

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
