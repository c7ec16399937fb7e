"""The pattern layer: one multi-pattern pass over every normalized view.

Phrases go into one Aho-Corasick automaton (pyahocorasick); regexes into one RE2 set per target
view kind (word view, punctuation-keeping view). Each view is scanned once by each automaton:
linear time in the text, whatever the number of rules. Offsets of regex matches are computed
afterwards only for the rules that matched (one RE2 search each, still linear).

Score: ``1 - prod(1 - w)`` over the distinct rules (and normalizer signals) that matched, so two
weak signals add up and one strong rule is enough. Per-category scores combine the same way.

Compiled matchers are cached per process by the pack's SHA-256: guards built per department and
Kong's per-configuration plugin instances share one automaton.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick
import re2

from shared_guards.injection.normalize import Normalized, OffsetMap, View, clean, normalize, offset_map, words
from shared_guards.injection.rulepack import RulePack, RulePackError, expand, load_pack

# Default weights of normalizer flags (a pack's ``signals`` overrides them). Alone they stay below
# any sensible threshold; they add up with a matched rule.
DEFAULT_SIGNALS: dict[str, float] = {
    "homoglyph": 0.35,
    "homoglyph_multi": 0.5,  # several words mixing Latin and lookalike letters
    "zero_width": 0.25,
    "zero_width_multi": 0.5,  # invisible characters inside words, several times
    "bidi": 0.3,
    "tag_chars": 0.6,
    "letter_spacing": 0.1,
    "morse": 0.2,
    "decoded_match": 0.3,  # a rule matched inside a decoded (base64/hex/rot13/url/reversed) view
}


STANDALONE_SIGNAL = 0.5


@dataclass(frozen=True, slots=True)
class PatternMatch:
    rule_id: str
    category: str
    weight: float
    view: str  # which view matched: text, leet, spaced, base64, hex, url, rot13, reversed, signal
    start: int = -1  # offsets in the original segment text (text view) or of the decoded span
    end: int = -1


@dataclass(frozen=True, slots=True)
class PatternResult:
    score: float
    matches: tuple[PatternMatch, ...] = ()
    categories: dict[str, float] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    pack: str = ""

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.rule_id for m in self.matches))

    @property
    def top(self) -> PatternMatch | None:
        """The strongest match (rules before signals)."""
        rules = [m for m in self.matches if m.view != "signal"] or list(self.matches)
        return max(rules, key=lambda m: m.weight) if rules else None


EMPTY = PatternResult(0.0)


def combine(weights: Iterable[float]) -> float:
    p = 1.0
    for w in weights:
        p *= 1.0 - w
    return 1.0 - p


@dataclass(frozen=True, slots=True)
class _RuleInfo:
    id: str
    category: str
    weight: float


def _re2_options() -> re2.Options:
    opts = re2.Options()
    opts.max_mem = 64 << 20
    opts.log_errors = False
    return opts


class PatternMatcher:
    """The compiled form of one rule pack. Immutable after construction; thread-safe to use."""

    def __init__(self, pack: RulePack) -> None:
        self.pack = pack
        self.rules: list[_RuleInfo] = [_RuleInfo(r.id, r.category, r.weight) for r in pack.rules]
        self.signals = {**DEFAULT_SIGNALS, **pack.signals}
        self._ac = ahocorasick.Automaton()
        n_phrases = 0
        for i, r in enumerate(pack.rules):
            for ph in r.phrases:
                key = _phrase_key(ph)
                if key.strip():
                    existing = self._ac.get(key, ())
                    self._ac.add_word(key, (*existing, i))
                    n_phrases += 1
        self._has_ac = n_phrases > 0
        if self._has_ac:
            self._ac.make_automaton()
        self._word_set, self._word_ids, self._word_res = self._build_set(pack, raw=False)
        self._raw_set, self._raw_ids, self._raw_res = self._build_set(pack, raw=True)

    @staticmethod
    def _build_set(pack: RulePack, *, raw: bool) -> tuple[re2.Set | None, list[int], list[re2._Regexp]]:
        s = re2.Set.SearchSet(_re2_options())
        ids: list[int] = []
        res: list[re2._Regexp] = []
        for i, r in enumerate(pack.rules):
            for pat in r.raw_regex if raw else r.regex:
                # Fold the pattern like the text (lookalike letters, accents): a Russian or Greek
                # phrase in a rule meets the folded text it has to match.
                expanded = expand(pat, pack.macros)
                if not expanded.isascii():  # write such patterns in lower case
                    expanded = clean(expanded)[0]
                try:
                    compiled = re2.compile(expanded, _re2_options())
                except re2.error:
                    raise RulePackError(f"rule {r.id}: invalid RE2 pattern") from None
                if s.Add(expanded) < 0:
                    raise RulePackError(f"rule {r.id}: pattern rejected by RE2 set")
                ids.append(i)
                res.append(compiled)
        if not ids:
            return None, [], []
        if s.Compile() is False:
            raise RulePackError("RE2 set failed to compile (out of memory?)")
        return s, ids, res

    # -- scanning --------------------------------------------------------------------------------

    def _scan_view(self, view: View, hits: dict[int, tuple[str, int, int]]) -> None:
        """Add ``rule index -> (view name, start, end in view.text)`` for every rule matched."""
        text = view.text
        if self._has_ac:
            for end, idxs in self._ac.iter(text):
                for i in idxs:
                    if i not in hits:
                        # phrase keys are padded with spaces when word-bounded: we only know the end.
                        hits[i] = (view.name, -1, end + 1)
        if self._word_set is not None:
            for k in self._word_set.Match(text) or ():
                i = self._word_ids[k]
                if i not in hits:
                    hits[i] = (view.name, -2, k)  # offsets resolved later for the text view
        if self._raw_set is not None:
            for k in self._raw_set.Match(view.raw) or ():
                i = self._raw_ids[k]
                if i not in hits:
                    hits[i] = (view.name, -3, k)

    def scan(self, norm: Normalized, *, offsets: bool = True) -> PatternResult:
        hits: dict[int, tuple[str, int, int]] = {}
        for view in norm.views:
            self._scan_view(view, hits)
        matches: list[PatternMatch] = []
        text_view = norm.views[0]
        decoded_hit = False
        omap: OffsetMap | None | bool = False  # False: not built yet
        for i, (vname, kind, val) in hits.items():
            info = self.rules[i]
            start = end = -1
            if vname == "text" and offsets:
                if omap is False:
                    omap = offset_map(norm.original, text_view.text)
                if isinstance(omap, OffsetMap):
                    start, end = self._offsets(omap, text_view, i, kind, val)
            elif vname != "text":
                other = norm.view(vname)
                if other is not None and other.decoded:
                    decoded_hit = True
                    start, end = other.span
            matches.append(PatternMatch(info.id, info.category, info.weight, vname, start, end))
        for flag in sorted(norm.flags):
            w = self.signals.get(flag)
            # Weak signals only add to a matched rule; strong ones count alone.
            if w and (matches or w >= STANDALONE_SIGNAL):
                matches.append(PatternMatch(f"obfuscation.{flag}", "obfuscation", w, "signal"))
        if decoded_hit:
            matches.append(PatternMatch("obfuscation.decoded_match", "obfuscation",
                                        self.signals["decoded_match"], "signal"))
        if not matches:
            return PatternResult(0.0, (), {}, norm.flags, self.pack.ident)
        matches.sort(key=lambda m: -m.weight)
        by_cat: dict[str, list[float]] = {}
        for m in matches:
            by_cat.setdefault(m.category, []).append(m.weight)
        cats = {c: round(combine(ws), 4) for c, ws in by_cat.items()}
        score = round(combine(m.weight for m in matches), 4)
        return PatternResult(score, tuple(matches), cats, norm.flags, self.pack.ident)

    def _offsets(self, omap: OffsetMap, view: View, i: int, kind: int, val: int) -> tuple[int, int]:
        if kind == -1:  # AC phrase: find the phrase start from its end
            end = val
            for ph in self.pack.rules[i].phrases:
                key = _phrase_key(ph)
                if view.text.startswith(key, end - len(key)):
                    return omap.map(end - len(key), end)
            return (-1, -1)
        if kind == -2:
            m = self._word_res[val].search(view.text)
            if m is None:
                return (-1, -1)
            s0, e0 = m.span()
            return omap.map(s0, e0)
        return (-1, -1)  # raw-view offsets are not mapped back (structure markers)

    def scan_text(self, text: str, *, offsets: bool = True) -> PatternResult:
        return self.scan(normalize(text), offsets=offsets)


def _phrase_key(phrase: str) -> str:
    """Word-normalized phrase; padded with spaces on sides that end in an ASCII letter/digit."""
    w = words(clean(phrase)[0]).strip()
    if not w:
        return ""
    if w[0].isascii():
        w = " " + w
    if w[-1].isascii():
        w = w + " "
    return w


# -- process-wide cache --------------------------------------------------------------------------

_matchers: dict[str, PatternMatcher] = {}
_matchers_lock = threading.Lock()
_default_pack: RulePack | None = None


def get_matcher(pack: RulePack) -> PatternMatcher:
    """The compiled matcher for ``pack``, built once per process per pack hash."""
    m = _matchers.get(pack.sha256)
    if m is None:
        with _matchers_lock:
            m = _matchers.get(pack.sha256)
            if m is None:
                m = PatternMatcher(pack)
                if len(_matchers) > 8:  # old packs after many reloads
                    _matchers.clear()
                _matchers[pack.sha256] = m
    return m


def default_matcher() -> PatternMatcher:
    """The matcher of the bundled, signature-checked core pack."""
    global _default_pack
    if _default_pack is None:
        _default_pack = load_pack()
    return get_matcher(_default_pack)


def scan_patterns(text: str, matcher: PatternMatcher | None = None, *, offsets: bool = True) -> PatternResult:
    """Normalize ``text`` and run the pattern layer (default: the bundled core pack)."""
    m = matcher if matcher is not None else default_matcher()
    return m.scan(normalize(text), offsets=offsets)


__all__ = [
    "DEFAULT_SIGNALS",
    "EMPTY",
    "PatternMatch",
    "PatternMatcher",
    "PatternResult",
    "combine",
    "default_matcher",
    "get_matcher",
    "scan_patterns",
]
