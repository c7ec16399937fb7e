"""Text normalization for injection detection: one cleaned text, several *views* of it.

Attackers disguise instructions with homoglyphs, invisible characters, markup, leetspeak and
encodings. :func:`normalize` undoes the cheap ones and returns views the matchers scan:

- ``text``: NFKC, confusables folded to Latin, accents stripped, zero-width and bidi controls
  removed, lower-cased, punctuation and markup collapsed to single spaces (``" ignore all ... "``).
- ``leet``: ``text`` with leetspeak digits/symbols folded (only when the text has any).
- ``spaced``: letter-spaced runs (``i g n o r e``) joined (only when present).
- ``split``: words cut by a hyphen or asterisk rejoined (``ig-nore pre-vious in-structions``), only
  where the joined form is a known word and a piece is not one (``well-known`` stays apart).
- ``base64`` / ``hex`` / ``url`` / ``rot13`` / ``reversed``: decoded spans, each its own view with
  the span of the cleaned text it came from. Decoding is bounded (:data:`MAX_SPANS_SEEN`,
  :data:`MAX_DECODED_CHARS`, spans of at most :data:`MAX_SPAN` characters) and keeps only spans
  that decode to mostly printable text; all decodings of one encoding form one view.

Every view's ``text`` is word-normalized and padded with one space at both ends, so phrase
patterns written as ``" ignore previous "`` match on word boundaries. ``raw`` keeps punctuation
(lower-cased, whitespace collapsed) for structural rules (fake turn markers, delimiters).

Pure Python on C-implemented primitives (``str.translate``, ``re``, ``unicodedata``): ~20-60 us
for 1 KB of ASCII text. Offsets: views other than ``text`` report the cleaned-text span they came
from; :func:`map_offsets` maps a ``text``-view match back to the original string (computed only
for matches, on the slow path).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import re2

from shared_guards.injection.suffix import english_words, known_word

MAX_INPUT = 16_000_000  # characters per segment (above any gateway body limit); longer input is cut
MAX_OFFSET_MAP = 256_000  # longer segments report matches without character offsets
MAX_WHOLE_VIEW = 256_000  # characters of a segment re-read as a whole (rot13, reversed, URL, Morse)
MAX_SPLIT_SCAN = 32_768  # of a longer segment the first and last this many characters are searched
# for hyphen-split words (the split view is then built from those two parts only)
MAX_SPAN = 4096  # longest encoded span decoded
MAX_SPANS_SEEN = 100_000  # encoded-looking spans looked at per encoding and segment
MAX_DECODED_CHARS = 1_000_000  # decoded characters kept per encoding and segment
MIN_B64 = 16
MIN_HEX = 16

# -- character tables --------------------------------------------------------------------------

_INVISIBLE = (
    # zero-width and joiners, word joiner, BOM, soft hyphen, Mongolian vowel separator
    [0x200B, 0x200C, 0x200D, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF, 0x00AD, 0x180E, 0x034F]
    # bidi controls: LRM, RLM, ALM, embeddings/overrides, isolates
    + [0x200E, 0x200F, 0x061C, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069]
    # Unicode tag characters (ASCII smuggling) are handled separately: they map to ASCII.
)
_BIDI = {0x200E, 0x200F, 0x061C, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}

# Lookalikes NFKC leaves alone (Cyrillic, Greek, Armenian, Latin small capitals, misc symbols).
_CONFUSABLES = {
    # Cyrillic lower
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "г": "r", "ѕ": "s", "т": "t",
    "ц": "u", "ѵ": "v", "ԝ": "w", "х": "x", "у": "y", "ү": "y", "ɡ": "g", "ь": "b", "п": "n", "и": "u",
    # Cyrillic upper
    "А": "A", "В": "B", "С": "C", "Е": "E", "Ё": "E", "Н": "H", "І": "I", "Ї": "I", "Ј": "J", "К": "K",
    "М": "M", "О": "O", "Р": "P", "Ѕ": "S", "Т": "T", "Х": "X", "У": "Y", "Ү": "Y", "Ԝ": "W", "Ԁ": "D",
    "Ԛ": "Q", "Ӏ": "I", "Ь": "b",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z",
    "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "Ϲ": "C",
    # Armenian and others
    "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "զ": "q", "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i",
    "ʏ": "y", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "ǀ": "l", "∣": "l", "⁄": "/", "∕": "/",
    # quotes and dashes to ASCII (NFKC keeps them)
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "、": ",", "：": ":",
}


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {cp: None for cp in _INVISIBLE}
    # Unicode "tag" block: invisible copies of ASCII used to smuggle text.
    for cp in range(0xE0020, 0xE007F):
        table[cp] = chr(cp - 0xE0000)
    table[0xE0001] = None
    table[0xE007F] = None
    # Variation selectors are invisible.
    for cp in list(range(0xFE00, 0xFE10)) + list(range(0xE0100, 0xE01F0)):
        table[cp] = None
    # Accented Latin to base letters (NFKD minus combining marks), precomputed once.
    for cp in range(0xC0, 0x250):
        ch = chr(cp)
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if base and base != ch and base.isascii():
            table[cp] = base
    table[ord("ß")] = "ss"
    for k, v in _CONFUSABLES.items():
        table[ord(k)] = v
    # Keep folding and lower-casing commutative: an upper-case letter folds like its lower case,
    # so rule patterns (written in lower case) and text (folded, then lower-cased) agree.
    for k, v in _CONFUSABLES.items():
        up = k.upper()
        if len(up) == 1 and up != k and ord(up) not in table and v.isalpha():
            table[ord(up)] = v.upper()
    # Combining marks (U+0300-036F) after NFKC are decoration (Zalgo): drop them.
    for cp in range(0x300, 0x370):
        table[cp] = None
    return table


_TABLE = _build_table()
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"})
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm",
)

_LEET_HINT = re2.compile(r"(?i)[a-z][0-9@$!|+€]+[a-z]|\b[0-9@$|][a-z]{2,}|[a-z]{2,}[0-9@$|]\b")
# Letter-spaced runs: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e" (5+ letters).
# Span finders run on RE2 (linear time, no backtracking); spans are cut to MAX_SPAN.
_SPACED = re2.compile(r"(?:\b\pL[ .\-_*/|]){2,}\pL\b")
_SPACED_SEP = re.compile(r"[ .\-_*/|]")
_SPACED_MARK = re.compile(r"[.\-_*/|]")
# Words glued by emoji or pictographic symbols ("Ignore🔥all🔥prior🔥rules"): the word view keeps
# non-ASCII symbols as letters, so such text gets a view with the symbols turned into spaces.
_SYMBOLS = r"[\p{So}\p{Sk}\x{2190}-\x{21FF}\x{FE0F}]"
_SYMBOL_SEP_HINT = re2.compile(r"(?:\pL+" + _SYMBOLS + r"+){3,}\pL")
_SYMBOL_RUN = re2.compile(_SYMBOLS + "+")
_B64 = re2.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
# The same single character-class run with Python's engine for iterating spans: no nesting, so
# linear, and much less per-match overhead than the RE2 wrapper when a text has many long words.
_B64_ITER = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
# Whether to look at all: a run with a lower-case letter followed later by an upper-case letter or
# a digit/+/ and 8 more characters (ordinary long words and compounds do not qualify), or padding.
_B64_HINT = re2.compile(r"[a-z][A-Za-z0-9+/_-]*[A-Z0-9+/][A-Za-z0-9+/_-]{8,}|[A-Za-z0-9+/]{14,}==?")
_HEX = re2.compile(r"(?:\\x|\b)(?:(?:\\x|0x)?[0-9a-fA-F]{2}[ :,]?){8,}")
# Spans to decode: the same runs, but a digit must show up in the first 8 pairs (text encodes to
# bytes 0x20-0x7e, UTF-8 lead bytes 0xc2-0xf4: a digit in every pair or every few). Runs of
# hex-letter words ("aaaa…", "deadbeefcafe…") then cost one DFA pass, not a match object each.
_HEX_ITER = re2.compile(r"(?:\\x|\b)(?:(?:\\x|0x)?[a-fA-F]{2}[ :,]?){0,7}(?:\\x|0x)?(?:[0-9][0-9a-fA-F]|[a-fA-F][0-9])"
                        r"[ :,]?(?:(?:\\x|0x)?[0-9a-fA-F]{2}[ :,]?)*")
_HEX_JUNK = re.compile(r"\\x|0x|[ :,]")
_URLENC = re2.compile(r"(?:%[0-9A-Fa-f]{2}[^%\s]{0,3}){3,}")
_TAG = re.compile(r"</?[a-z][a-z0-9]{0,20}(?:\s[^<>]{0,300})?/?>")
_HTML_ENT = re.compile(r"&#?[A-Za-z0-9]{1,8};")
# Attribute values a reader of the page (or a model given its HTML) sees as text: alt texts,
# titles, labels, meta content. The word view drops whole tags, so these get a view of their own.
_TEXT_ATTR = re2.compile(r"\b(?:alt|title|aria-label|aria-description|content|placeholder|label|summary|data-[a-z0-9-]{1,30})"
                         r"\s*=\s*(?:\"([^\"<>]{8,300})\"|'([^'<>]{8,300})')")
MAX_ATTR_VIEW = 200_000
_ROT13_HINT = re2.compile(r"(?i)rot[\W_]?13|caesar|cesar|cipher|chiffr|cifrad|verschl|凯撒")
_REVERSE_HINT = re2.compile(r"(?i)revers|backward|ruckwarts|umgekehrt|l.envers|al reves|倒")

# One RE2 set answers "which of the optional views could apply?" in a single pass.
_H_LEET, _H_SPACED, _H_B64, _H_HEX, _H_URL, _H_ROT13, _H_REVERSE, _H_MORSE, _H_SPLIT, _H_SYMSEP = range(10)
_MORSE_HINT = re2.compile(r"(?:[.-]{1,6} ){8,}")
# a word cut by hyphens or asterisks where one piece is short: "ig-nore", "in-structions", "sys*tem"
_SPLIT_HINT = re2.compile(r"(?i)\b[a-z]{1,3}[-*][a-z]|[a-z][-*][a-z]{1,3}\b")
_SPLIT_SEP = re.compile(r"[-*](?=[A-Za-z])")


def _hint_set() -> re2.Set:
    opts = re2.Options()
    opts.log_errors = False
    hs = re2.Set.SearchSet(opts)
    for r in (_LEET_HINT, _SPACED, _B64_HINT, _HEX, _URLENC, _ROT13_HINT, _REVERSE_HINT, _MORSE_HINT,
              _SPLIT_HINT, _SYMBOL_SEP_HINT):
        hs.Add(r.pattern)
    hs.Compile()
    return hs


_HINTS = _hint_set()


@dataclass(frozen=True, slots=True)
class View:
    """One normalized view of a segment.

    ``text`` is word-normalized and space-padded; ``raw`` keeps punctuation (lower-cased,
    whitespace collapsed). ``span`` is the part of the cleaned text the view was derived from
    (the whole text for ``text``/``leet``/``rot13``).
    """

    name: str
    text: str
    raw: str
    span: tuple[int, int]

    @property
    def decoded(self) -> bool:
        return self.name in DECODED_VIEWS


DECODED_VIEWS = frozenset({"base64", "hex", "url", "rot13", "reversed", "html"})


@dataclass(frozen=True, slots=True)
class Normalized:
    """All views of one segment plus what the normalizer noticed (``flags``)."""

    original: str
    cleaned: str
    views: tuple[View, ...]
    flags: frozenset[str] = field(default_factory=frozenset)

    def view(self, name: str) -> View | None:
        for v in self.views:
            if v.name == name:
                return v
        return None


def clean(text: str) -> tuple[str, set[str]]:
    """NFKC + invisible removal + confusable/accent folding (case preserved). Returns flags."""
    flags: set[str] = set()
    if text.isascii():
        return text, flags
    # The distinct non-ASCII characters: delete every ASCII byte of the Latin-1 (a copy, for
    # Western European text) or UTF-8 form, at C speed.
    latin1: bytes | None = None
    try:
        latin1 = text.encode("latin-1")
        distinct = _distinct_latin1(latin1)
    except UnicodeEncodeError:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (valid in JSON strings): replace them
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            data = text.encode("utf-8")
            flags.add("surrogates")
        distinct = set(data.translate(None, _ASCII_BYTES).decode("utf-8"))
    nfkc = text
    if not all(map(_nfkc_inert, distinct)):
        nfkc = unicodedata.normalize("NFKC", text)
        if nfkc != text:
            flags.add("nfkc")
            distinct = {c for c in set(nfkc) if not c.isascii()} if len(nfkc) <= 4096 else \
                set(nfkc.encode("utf-8").translate(None, _ASCII_BYTES).decode("utf-8"))
    # Mostly-ASCII text (European languages): replace each distinct non-ASCII character once
    # (a few C-speed passes) instead of a per-character table lookup over the whole text.
    changing = [c for c in distinct if _TABLE.get(ord(c), c) != c]
    if not changing:
        return nfkc, flags
    if len(changing) <= 48:
        out = nfkc
        if len(nfkc) > 4096 and max(distinct) <= "\xff":  # Latin-1 text: fold the bytes
            data = latin1 if latin1 is not None and nfkc is text else nfkc.encode("latin-1")
            table = bytearray(range(256))
            delete = bytearray()
            longer: list[tuple[bytes, bytes]] = []
            for ch in changing:
                rep = _TABLE[ord(ch)] or ""
                if not rep:
                    delete.append(ord(ch))
                elif len(rep) == 1 and rep <= "\xff":
                    table[ord(ch)] = ord(rep)
                else:  # "ß" -> "ss" (the table folds to ASCII)
                    longer.append((ch.encode("latin-1"), rep.encode("latin-1")))
            data = data.translate(table, delete)
            for old, new in longer:
                data = data.replace(old, new)
            out = data.decode("latin-1")
        else:
            for ch in changing:
                out = out.replace(ch, _TABLE[ord(ch)] or "")
    else:
        out = nfkc.translate(_TABLE)
    # Classify (linear RE2 scans, only when the characters they look for are present).
    if not distinct.isdisjoint(_BIDI_CHARS):
        flags.add("bidi")
    if not distinct.isdisjoint(_ZW_CHARS):
        flags.add("zero_width")
        # Invisible characters between letters, several times: text smuggled past filters.
        if _count(_ZW_IN_WORD, nfkc, 3) >= 3:
            flags.add("zero_width_multi")
    if any("\U000e0000" <= c <= "\U000e007f" for c in distinct):
        flags.add("tag_chars")
    if not distinct.isdisjoint(_LOOKALIKE_SET) and _MIXED_RE.search(nfkc):
        flags.add("homoglyph")
        if _count(_MIXED_WORD, nfkc, 2) >= 2:
            flags.add("homoglyph_multi")
    return out, flags


_inert: dict[str, bool] = {}


def _nfkc_inert(ch: str) -> bool:
    """True when NFKC cannot change text because of ``ch``: it is its own NFKC form, not a
    combining mark, and from a block without composing vowel signs or jamo (Latin, IPA, Greek,
    Cyrillic, Armenian, Hebrew, CJK ideographs). Cached per character."""
    r = _inert.get(ch)
    if r is None:
        cp = ord(ch)
        r = ((cp < 0x600 or 0x4E00 <= cp <= 0x9FFF) and unicodedata.normalize("NFKC", ch) == ch
             and not unicodedata.combining(ch))
        if len(_inert) < 65_536:
            _inert[ch] = r
    return r


def _count(rx: re2._Regexp, s: str, enough: int) -> int:
    n = 0
    for _ in rx.finditer(s):
        n += 1
        if n >= enough:
            break
    return n


_ASCII_BYTES = bytes(range(128))


def _distinct_latin1(data: bytes) -> set[str]:
    """The distinct non-ASCII characters of Latin-1 bytes (a byte histogram for long texts)."""
    if len(data) < 65_536:
        return set(data.translate(None, _ASCII_BYTES).decode("latin-1"))
    import numpy as np

    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    return {chr(int(i)) for i in np.flatnonzero(counts[128:]) + 128}


_LOOKALIKE = "".join(sorted(c for c in _CONFUSABLES if ord(c) >= 0x370 and c.isalpha()))
_LOOKALIKE_SET = frozenset(_LOOKALIKE)
_BIDI_CHARS = frozenset(map(chr, _BIDI))
_ZW_CHARS = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
_ZW_IN_WORD = re2.compile("\\pL[\u200b\u200c\u200d\u2060\ufeff\u00ad]+\\pL")
# Whole words mixing Latin and lookalike letters (each found once).
# A word where lookalikes sit between Latin letters or Latin letters between lookalikes.
_MIXED_WORD = re2.compile(f"[A-Za-z][{_LOOKALIKE}]+[A-Za-z]|[{_LOOKALIKE}][A-Za-z]+[{_LOOKALIKE}]")
# A Latin letter next to a Cyrillic/Greek/Armenian lookalike inside one word.
_MIXED_RE = re2.compile(f"[A-Za-z][{_LOOKALIKE}]|[{_LOOKALIKE}][A-Za-z]")


# ASCII punctuation and controls -> space, on UTF-8 bytes (non-ASCII bytes pass through): a
# C-speed translate instead of a regex substitution.
_PUNCT_BYTES = bytes(c if c >= 128 or chr(c).isalnum() else 32 for c in range(256))


_WS_BYTES = bytes(32 if c in (9, 11, 12, 13) else c for c in range(256))


def _squeeze(data: bytes) -> bytes:
    """Collapse runs of spaces: a few C-speed replace passes for short texts; for long ones one
    numpy pass (drop every space that follows a space), because ``bytes.replace`` and even
    ``b"  " in data`` crawl at ~300 MB/s through text with a space every few bytes."""
    if len(data) < _NUMPY_SQUEEZE:
        while b"  " in data:
            data = data.replace(b"  ", b" ")
        return data
    import numpy as np

    a = np.frombuffer(data, dtype=np.uint8)
    space = a == 32
    double = space[1:] & space[:-1]
    if not double.any():
        return data
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.logical_not(double, out=keep[1:])
    return a[keep].tobytes()


_NUMPY_SQUEEZE = 32_768


def _squeezed(text: str, table: bytes) -> bytes:
    """``text`` as UTF-8, ``table`` applied, runs of spaces collapsed. Long texts go in pieces of
    256 K characters: buffers that stay in the CPU cache made this ~3x faster than whole-text passes
    over megabytes. Exact: a str splits between code points, ``translate`` is per byte, and where two
    squeezed pieces meet with a space each, one of them goes."""
    if len(text) <= _PIECE:
        return _squeeze(text.encode("utf-8", "surrogatepass").translate(table))
    out: list[bytes] = []
    for start in range(0, len(text), _PIECE):
        piece = _squeeze(text[start:start + _PIECE].encode("utf-8", "surrogatepass").translate(table))
        if out and piece[:1] == b" " and out[-1][-1:] == b" ":
            piece = piece[1:]
        if piece:
            out.append(piece)
    return b"".join(out)


_PIECE = 262_144


def _words_lower(lower: str) -> str:
    data = _squeezed(lower, _PUNCT_BYTES).strip(b" ")
    return " " + data.decode("utf-8", "surrogatepass") + " "


def words(s: str) -> str:
    """Lower-case word view: punctuation, markup and whitespace collapse to single spaces; padded."""
    return _words_lower(s.lower())


def raw_view(s: str) -> str:
    """Lower-case, spaces and tabs collapsed, newlines kept (structural rules anchor on lines)."""
    return _raw_lower(s.lower())


def _raw_lower(lower: str) -> str:
    return _squeezed(lower, _WS_BYTES).decode("utf-8", "surrogatepass")


_NOT_PRINTABLE = re.compile(r"[^\S \n\t\r]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NOT_TEXT = re.compile(r"[^\w ]|_")


def _printable_ratio(s: str) -> float:
    if not s:
        return 0.0
    if s.isprintable():
        return 1.0
    return 1.0 - len(_NOT_PRINTABLE.findall(s)) / len(s)


def _letters_ratio(s: str) -> float:
    """Share of letters, digits and spaces: decoded text, not binary noise (C-speed count)."""
    if not s:
        return 0.0
    return 1.0 - len(_NOT_TEXT.findall(s)) / len(s)


def _plausible_b64(span: str) -> bool:
    """Cheap pre-check: base64 mixes cases or digits; a long one-case word is not base64."""
    s = span.rstrip("=")
    if s.isalpha() and (s.islower() or s.isupper()):
        return False
    return len(set(s[:64])) >= 8  # "aaaaaaaaaaaaaaaa" is not base64 worth decoding


def _decode_b64(span: str) -> str | None:
    s = span.rstrip("=")
    if not _plausible_b64(span):
        return None
    s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 6 or _printable_ratio(text) < 0.95 or _letters_ratio(text) < 0.75:
        return None
    return text


def _decode_hex(span: str) -> str | None:
    s = _HEX_JUNK.sub("", span)
    if len(s) < MIN_HEX or len(s) % 2:
        return None
    try:
        text = bytes.fromhex(s).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    if _printable_ratio(text) < 0.95 or _letters_ratio(text) < 0.75:
        return None
    return text


def _collect(name: str, finder: re2._Regexp | re.Pattern[str], cleaned: str,
             decode: Callable[[str], str | None]) -> View | None:
    parts: list[str] = []
    first_src = last_src = ""
    total = 0
    # findall returns plain strings (no match objects): the cheap path for texts full of long words.
    for k, src in enumerate(finder.findall(cleaned)):
        if k >= MAX_SPANS_SEEN or total >= MAX_DECODED_CHARS:
            break
        dec = decode(src[:MAX_SPAN])
        if dec is None:
            continue
        parts.append(dec)
        total += len(dec)
        if not first_src:
            first_src = src
        last_src = src
    if not parts:
        return None
    start = cleaned.find(first_src)
    end = cleaned.rfind(last_src) + len(last_src)
    return _make_view(name, "\n".join(parts), (start, end))


def _make_view(name: str, decoded: str, span: tuple[int, int]) -> View:
    c, _ = clean(decoded)
    return View(name, words(c), raw_view(c), span)


def normalize(text: str, *, decode: bool = True) -> Normalized:
    """All views of ``text`` (see the module doc). Never raises on any string input."""
    if len(text) > MAX_INPUT:
        text = text[:MAX_INPUT]
    cleaned, flags = clean(text)
    if "&" in cleaned and _HTML_ENT.search(cleaned):
        import html  # rare path

        unescaped = html.unescape(cleaned)
        if unescaped != cleaned:
            flags.add("html_entities")
            cleaned, more = clean(unescaped)
            flags |= more
    lower = cleaned.lower()
    # Markup collapses in the word view (tag names and attributes are not words of the text);
    # the raw view keeps it for structural rules (hidden-text styles, fake <system> tags).
    base = _words_lower(_TAG.sub(" ", lower) if "<" in lower else lower)
    views: list[View] = [View("text", base, _raw_lower(lower), (0, len(cleaned)))]
    full = (0, len(cleaned))
    if "=" in lower and "<" in lower:
        attrs = _attribute_text(lower)
        if attrs:
            views.append(View("attrs", words(attrs), raw_view(attrs), full))

    if len(cleaned) <= MAX_TYPO_SCAN:
        fixed, n = _untangle_typos(lower)
        if n >= 2:
            views.append(View("typo", words(fixed), raw_view(fixed), full))

    hints = frozenset(_HINTS.Match(cleaned) or ())
    if not hints:
        return Normalized(text, cleaned, tuple(views), frozenset(flags))

    if _H_LEET in hints:
        leet = base.translate(_LEET)
        if leet != base:
            views.append(View("leet", words(leet), lower.translate(_LEET), full))
            flags.add("leet")
            if _mostly_leet(_words_lower(_QUOTED.sub(" ", lower[:MAX_WHOLE_VIEW]))):
                flags.add("leet_text")

    if _H_SPACED in hints:
        joined = _despace(cleaned)
        if joined is not None:
            views.append(View("spaced", words(joined), raw_view(joined), full))
            flags.add("letter_spacing")
            if _mostly_spaced(cleaned, joined):
                flags.add("spaced_text")

    if _H_SPLIT in hints:
        rejoined, n, odd = _rejoin_split_words(cleaned)
        if n:
            views.append(View("split", words(rejoined), raw_view(rejoined), full))
            if odd >= 2:
                flags.add("word_splitting")

    if _H_SYMSEP in hints:
        unglued = _SYMBOL_RUN.sub(" ", cleaned[:MAX_WHOLE_VIEW])
        views.append(View("symbols", words(unglued), raw_view(unglued), full))

    if _H_MORSE in hints:
        decoded = _morse(cleaned)
        if decoded is not None:
            views.append(View("morse", words(decoded), raw_view(decoded), full))
            flags.add("morse")

    if decode:
        views.extend(_decoded_views(cleaned, hints, flags))
    return Normalized(text, cleaned, tuple(views), frozenset(flags))


def _attribute_text(lower: str) -> str:
    """The prose inside text-bearing attributes of tags (values of three words or more), one
    line each; empty when there is none. Bounded: at most MAX_ATTR_VIEW characters are kept."""
    parts: list[str] = []
    size = 0
    for tag in _TAG.finditer(lower):
        body = tag.group(0)
        if "=" not in body:
            continue
        for m in _TEXT_ATTR.finditer(body):
            value = m.group(1) or m.group(2) or ""
            if value.count(" ") >= 2:
                parts.append(value)
                size += len(value)
        if size > MAX_ATTR_VIEW:
            break
    return "\n".join(parts)


def _decoded_views(cleaned: str, hints: frozenset[int], flags: set[str]) -> list[View]:
    out: list[View] = []
    # Every plausible span is decoded (linear: each input character is decoded at most once);
    # the decodings of one encoding form one view, so decoy blobs cannot push a payload out.
    if _H_B64 in hints:
        view = _collect("base64", _B64_ITER, cleaned, _decode_b64)
        if view is not None:
            out.append(view)
            flags.add("base64")
    if _H_HEX in hints:
        view = _collect("hex", _HEX_ITER, cleaned, _decode_hex)
        if view is not None:
            out.append(view)
            flags.add("hex")
    if _H_URL in hints:
        # Decode the whole text once: encoded words are often separated by plain ones.
        part = cleaned[:MAX_WHOLE_VIEW]
        dec = unquote(part)
        if dec != part:
            out.append(_make_view("url", dec, (0, len(part))))
            flags.add("url_encoded")
    if _H_ROT13 in hints:
        rot = cleaned[:MAX_WHOLE_VIEW].translate(_ROT13)
        out.append(_make_view("rot13", rot, (0, len(cleaned))))
        flags.add("rot13_hint")
    if _H_REVERSE in hints:
        rev = cleaned[:MAX_WHOLE_VIEW][::-1]
        out.append(_make_view("reversed", rev, (0, len(cleaned))))
        flags.add("reverse_hint")
    return out


_HEX_TOKEN = re2.compile(r"^[0-9a-f]+$")
# Quoted passages are talked about ("is this gamer tag 'h4x0r' offensive?"), not said.
_QUOTED = re2.compile(r"\"[^\"\n]{0,400}\"|'[^'\n]{0,400}'|\x{201c}[^\x{201d}\n]{0,400}\x{201d}")


def _mostly_leet(base: str) -> bool:
    """Whole sentences written in leetspeak ("R473 7h15 c4nd1d473 ..."): at least 6 words, and at
    least 40 % of them letters mixed with leet digits that read as plain words once translated.
    Nobody writes a request that way except to get it past a filter; part numbers, IBANs and
    version strings are a word or two of a sentence, not most of it."""
    tokens = base[:MAX_WHOLE_VIEW].split()
    if len(tokens) < 6:
        return False
    vocab = english_words()  # empty without the packaged MiniLM (edge installs): vowels alone decide
    mixed = 0
    for t in tokens:
        if t.isalpha() or t.isdigit() or _HEX_TOKEN.match(t):  # hashes and hex IDs: 3f4a1b7, 41d4
            continue
        if any(c.isalpha() for c in t) and any(c in "013457" for c in t):
            w = t.translate(_LEET)
            # a word once translated: a known English one, or one with a word's share of vowels
            # ("empfiehl"), not a random ID ("k7z0qw" -> "ktzoqw")
            if w.isalpha() and ((vocab and known_word(w, vocab)) or sum(c in "aeiouy" for c in w) >= 0.3 * len(w)):
                mixed += 1
    return mixed >= 0.4 * len(tokens)


def _rejoin_split_words(cleaned: str) -> tuple[str, int, int]:
    """Rejoin words cut by hyphens or asterisks to slip past word filters ("ig-nore all pre-vious
    in-structions", "li-mitations"): a hyphenated token becomes one word when the joined form is a
    known English word and one of its pieces is not a word or is at most 3 letters. Compounds of
    two words ("well-known", "built-in") stay apart; without the packaged vocabulary nothing is
    rejoined. Returns the text, how many tokens were rejoined and how many of those had a piece of
    2+ letters that is no word ("pre-vious", not "e-mail" or "co-op"). A lone rejoined compound
    ("mock-ups") is no disguise: the text comes back unchanged with counts 0 unless at least two
    tokens were rejoined or one had a piece that is no word. Texts over 2 x :data:`MAX_SPLIT_SCAN`
    characters: their head and tail only, joined into one view text."""
    if len(cleaned) > 2 * MAX_SPLIT_SCAN:
        (h, hn, hodd), (t, tn, todd) = (_rejoin_part(cleaned[:MAX_SPLIT_SCAN]),
                                        _rejoin_part(cleaned[-MAX_SPLIT_SCAN:]))
        return h + "\n" + t, hn + tn, hodd + todd
    return _rejoin_part(cleaned)


def _rejoin_part(text: str) -> tuple[str, int, int]:
    vocab = english_words()
    if not vocab:
        return text, 0, 0
    hits: list[tuple[int, int, str]] = []
    odd = 0
    n = len(text)
    last = -1
    # Anchor on the separators (one fast C scan) and widen to the token by hand: a regex for whole
    # hyphenated tokens costs ~15x more on ordinary prose, where compounds are common.
    for m in _SPLIT_SEP.finditer(text):
        i = m.start()
        if i < last or i == 0 or not _ascii_letter(text[i - 1]):
            continue
        a = i
        while a > 0 and (_ascii_letter(text[a - 1]) or text[a - 1] in "-*"):
            a -= 1
        b = i + 1
        while b < n and (_ascii_letter(text[b]) or text[b] in "-*"):
            b += 1
        last = b
        while text[a] in "-*":
            a += 1
        while text[b - 1] in "-*":
            b -= 1
        # part of a code or an ID ("x1-ab", "ab-cd_2", "Größe-ab"): leave it
        if (a > 0 and (text[a - 1].isalnum() or text[a - 1] == "_")) or (b < n and (text[b].isalnum() or text[b] == "_")):
            continue
        verdict = _split_verdict(text[a:b], vocab)
        if verdict is not None:
            hits.append((a, b, verdict[0]))
            odd += verdict[1]
    if not hits or (len(hits) < 2 and not odd):
        return text, 0, 0
    parts: list[str] = []
    pos = 0
    for start, end, joined in hits:
        parts.append(text[pos:start])
        parts.append(joined)
        pos = end
    parts.append(text[pos:])
    return "".join(parts), len(hits), odd


MAX_TYPO_SCAN = 4096  # typed prompts; long documents do not come scrambled
_LONG_WORD = re.compile(r"[a-z]{5,}")
_anagrams: dict[tuple[str, str, str], str] | None = None
_anagrams_lock = threading.Lock()


def warm_up() -> None:
    """Load the packaged vocabulary and build the scrambled-word index now (~25 ms, once per
    process) rather than on the first request that needs them."""
    _anagram_index()


def _anagram_key(word: str) -> tuple[str, str, str]:
    """First letter, last letter, sorted middle letters: the same for "ignore" and "ignroe"."""
    return word[0], word[-1], "".join(sorted(word[1:-1]))


def _anagram_index() -> dict[tuple[str, str, str], str]:
    """Vocabulary words of 5+ letters by (first letter, last letter, sorted middle letters); keys
    shared by two words are dropped. Empty without the packaged vocabulary."""
    global _anagrams
    if _anagrams is None:
        with _anagrams_lock:
            if _anagrams is None:
                idx: dict[tuple[str, str, str], str] = {}
                clash: set[tuple[str, str, str]] = set()
                for w in english_words():
                    if len(w) >= 5:
                        k = _anagram_key(w)
                        if k in idx:
                            clash.add(k)
                        idx[k] = w
                for k in clash:
                    del idx[k]
                _anagrams = idx
    return _anagrams


def _untangle_typos(lower: str) -> tuple[str, int]:
    """Scrambled middles ("ignroe all prevoius insturctions"): an unknown word of 5+ letters whose
    first and last letters and middle letters match exactly one vocabulary word becomes that word.
    Returns the text and how many words changed (0 when nothing changed or no vocabulary)."""
    vocab = english_words()
    if not vocab:
        return lower, 0
    idx = _anagram_index()
    changed = 0

    def fix(m: re.Match[str]) -> str:
        nonlocal changed
        w = m.group()
        if w in vocab:
            return w
        hit = idx.get(_anagram_key(w))
        if hit is None or known_word(w, vocab):  # "readings", "stopped": inflected, not scrambled
            return w
        changed += 1
        return hit

    out = _LONG_WORD.sub(fix, lower)
    return out, changed


def _ascii_letter(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _split_verdict(tok: str, vocab: frozenset[str]) -> tuple[str, int] | None:
    """(joined word, 1 if a piece of 2+ letters is no word else 0) for a token worth rejoining, else
    None. Not cached: a process-wide cache would keep words of users' texts."""
    pieces = [p for p in re.split(r"[-*]", tok.lower()) if p]
    joined = "".join(pieces)
    if len(joined) < 4 or not known_word(joined, vocab):
        return None
    if all(len(p) > 3 and known_word(p, vocab) for p in pieces):
        return None
    return joined, int(any(len(p) >= 2 and not known_word(p, vocab) for p in pieces))


def _mostly_spaced(cleaned: str, joined: str) -> bool:
    """The whole text is letter-spaced ("R e c o m m e n d   t h a t ..."): most tokens are single
    letters and they join into at least 5 words of 2+ letters."""
    tokens = cleaned[:MAX_WHOLE_VIEW].split()
    if not tokens or sum(1 for t in tokens if len(t) == 1) < 0.8 * len(tokens):
        return False
    return sum(1 for w in joined.split() if len(w) >= 2) >= 5


def _despace(cleaned: str) -> str | None:
    """Join letter-spaced text. When most tokens are single letters, single spaces join letters
    and runs of 2+ spaces separate words; otherwise only the letter-spaced runs are joined."""
    tokens = cleaned.split()
    singles = sum(1 for t in tokens if len(t) == 1)
    if tokens and singles >= 0.6 * len(tokens):
        words_ = re.split(r"\s{2,}", cleaned)
        return " ".join(w.replace(" ", "") for w in words_)
    parts: list[str] = []
    pos = 0
    for m in _SPACED.finditer(cleaned):
        parts.append(cleaned[pos:m.start()])
        run = m.group()
        if " " in run and _SPACED_MARK.search(run):
            # "D.i.s.r.e.g.a.r.d t.h.e a.b.o.v.e": dots join letters, spaces separate words
            parts.append(" ".join(_SPACED_SEP.sub("", piece) for piece in run.split()))
        else:
            parts.append(_SPACED_SEP.sub("", run))
        pos = m.end()
    if not parts:
        return None
    parts.append(cleaned[pos:])
    return " ".join(parts)


_MORSE_TABLE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g", "....": "h",
    "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n", "---": "o", ".--.": "p",
    "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u", "...-": "v", ".--": "w", "-..-": "x",
    "-.--": "y", "--..": "z", "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4",
    ".....": "5", "-....": "6", "--...": "7", "---..": "8", "----.": "9", ".-.-.-": ".", "--..--": ",",
}


def _morse(cleaned: str) -> str | None:
    """Decode Morse code: letters separated by one space, words by 2+ spaces or ' / '."""
    part = cleaned[:MAX_WHOLE_VIEW]
    out_words: list[str] = []
    for w in re.split(r"\s{2,}|\s/\s", part):
        letters = [_MORSE_TABLE.get(code) for code in w.split()]
        known = [c for c in letters if c]
        if known:
            out_words.append("".join(known))
    decoded = " ".join(out_words)
    return decoded if len(decoded) >= 8 else None


def rot13(s: str) -> str:
    return codecs.encode(s, "rot13")


_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")


class OffsetMap:
    """Maps spans of the ``text`` view back to the original string (built once per segment, only
    when a match needs offsets). ASCII text without markup tags maps word by word
    (its view is its alphanumeric runs, lower-cased, joined by single spaces); anything else goes
    through a Python loop over the characters."""

    __slots__ = ("chars", "index")

    def __init__(self, original: str) -> None:
        if original.isascii() and ("<" not in original or _TAG.search(original.lower()) is None):
            runs = _ALNUM_RUN.findall(original)
            if runs:
                index: list[int] = [0]
                pos = 0
                for k, run in enumerate(runs):
                    start = original.index(run, pos)
                    if k:
                        index.append(start)  # the space before a word maps to the word's start
                    pos = start + len(run)
                    index.extend(range(start, pos))
                index.append(len(original))
                self.chars = " " + " ".join(runs).lower() + " "
                self.index = index
                return
        self._slow(original)

    def _slow(self, original: str) -> None:
        in_tag = bytearray(len(original))
        if "<" in original:
            for m in _TAG.finditer(original.lower()):
                in_tag[m.start():m.end()] = b"\x01" * (m.end() - m.start())
        chars: list[str] = [" "]
        index = [0]
        pending_space = True
        for i, ch in enumerate(original):
            if in_tag[i]:
                pending_space = True
                continue
            folded = unicodedata.normalize("NFKC", ch) if not ch.isascii() else ch
            folded = folded.translate(_TABLE).lower()
            for c in folded:
                if (c.isalnum() if c.isascii() else not c.isspace()):
                    if pending_space and chars[-1] != " ":
                        chars.append(" ")
                        index.append(i)
                    chars.append(c)
                    index.append(i)
                    pending_space = False
                else:
                    pending_space = True
        if chars[-1] != " ":
            chars.append(" ")
            index.append(len(original))
        self.chars = "".join(chars)
        self.index = index

    def map(self, start: int, end: int) -> tuple[int, int]:
        if start < 0 or end > len(self.index) or start >= end:
            return (-1, -1)
        s, e = start, end
        while s < e and self.chars[s] == " ":
            s += 1
        while e > s and self.chars[e - 1] == " ":
            e -= 1
        if s >= e:
            return (-1, -1)
        return (self.index[s], self.index[e - 1] + 1)


def offset_map(original: str, view_text: str | None = None) -> OffsetMap | None:
    """An :class:`OffsetMap`, or None when the rebuilt view differs from ``view_text`` (e.g. HTML
    entities or NFKC across characters changed the text): offsets are then not reported."""
    if len(original) > MAX_OFFSET_MAP:
        return None
    om = OffsetMap(original)
    if view_text is not None and om.chars != view_text:
        return None
    return om


def map_offsets(original: str, start: int, end: int, view_text: str | None = None) -> tuple[int, int]:
    """Map one ``[start, end)`` span of the ``text`` view of ``original`` back to ``original``."""
    om = offset_map(original, view_text)
    return om.map(start, end) if om is not None else (-1, -1)


__all__ = ["DECODED_VIEWS", "Normalized", "OffsetMap", "View", "clean", "map_offsets", "normalize", "offset_map",
           "raw_view", "words"]
