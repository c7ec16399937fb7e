"""The pattern layer: one multi-pattern pass over every normalized view.

Phrases (escaped literals) and regexes go into one RE2 set per target view kind (word view,
punctuation-keeping view). Each view is scanned once by each set, a DFA: linear time in the text,
whatever the number of rules (RE2's set ran ~4x faster than a pyahocorasick automaton holding the
phrases alone). Offsets of matches are computed afterwards only for the rules that matched (one
RE2 search each, still linear).

Score: ``1 - prod(1 - w)`` over the distinct rules (and normalizer signals) that matched, so two
weak signals add up and one strong rule is enough. Per-category scores combine the same way.
Occurrences in the ``text`` view are judged in their surroundings (:func:`mention_factor`): a
negated, quoted or talked-about instruction ("never reveal your prompt", "the 'ignore previous
instructions' attack") weighs less than one that is given.

Compiled matchers are cached per process by the pack's SHA-256: guards built per department and
Kong's per-configuration plugin instances share one automaton.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import re2

from shared_guards.injection.normalize import Normalized, OffsetMap, View, clean, normalize, offset_map, warm_up, words
from shared_guards.injection.rulepack import RulePack, RulePackError, expand, load_pack
from shared_guards.injection.suffix import find_suffix, suffix_weight

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
    "word_splitting": 0.25,  # two or more words cut by hyphens/asterisks and rejoined (normalize)
    "decoded_match": 0.3,  # a rule matched inside a decoded (base64/hex/rot13/url/reversed) view
    # weight of a confident token-soup suffix (suffix.THRESHOLD); weaker windows scale down to 0.2,
    # stronger ones up; 0 turns the check off (see suffix.py)
    "adversarial_suffix": 0.5,
}


STANDALONE_SIGNAL = 0.5
SUFFIX_SKIP_AT = 0.9  # rule evidence from which the adversarial-suffix check is not run
# Categories judged without the mention/negation discount (markup and disguises are what they are).
STRUCTURAL = frozenset({"delimiter_injection", "obfuscation"})
MAX_QUOTE_CHECK = 256_000

# Negation right before an occurrence ("never reveal ...", "don't ignore ...").
_NEGATION = re.compile(
    r"(?:^| )(?:never|not|don t|do not|dont|doesn t|does not|didn t|did not|cannot|can t|won t|will not|"
    r"must not|mustn t|should not|shouldn t|wouldn t|refuse to|refuses to|no need to|avoid|avoids|avoiding|"
    r"nicht|nie|niemals|jamais|nunca)(?: ever| even| to| be| you| u)?(?: (?:reveal|share|disclose|show|tell|"
    r"print|repeat|give|output|follow|ignore|forget|disregard|mention|leak|expose|discuss|change|override|"
    r"obey|send|forward|include))? $")
# Talking about an instruction rather than giving it ("make an LLM ignore ...", "a user says ...").
_META_BEFORE = re.compile(
    r"(?:^| )(?:(?:make|makes|making|made|get|gets|getting|trick|tricks|tricking|tricked|cause|causes|causing|"
    r"let|lets|force|forces|forcing|convince|convinces|convincing|prevent|prevents|preventing|stop|stops|"
    r"stopping|keep|keeps|detect|detects|detecting|block|blocks|blocking)(?: \S+){0,3} (?:llms?|models?|ais?|"
    r"chatbots?|bots?|assistants?|gpt|it|them|agents?|systems?|apps?|users?|attackers?|people|someone)"
    r"(?: from| to)?|says|said|saying|typed|types|writes|wrote|enters|entered|sends|sent|phrases?|"
    r"such as|like|e g|for example|example|examples|called|known as|the words|strings?|prompts? like|"
    r"text like|detect|detecting|filter|filtering|classify|flag|flags|what does|what do|what is|what s|"
    r"meaning of|definition of|define|explain|you see|you ll see|you will see|it shows|it says|it reads|"
    r"displays|appears|pops up|the message|a message|a banner|a toast|a notification)(?: the| a| an)? $")
_META_AFTER = re.compile(
    r"^ ?(?:\S+ )?(?:attacks?|injections?|jailbreaks?|phrases?|examples?|strings?|tricks?|techniques?|payloads?|"
    r"prompts? injection)\b")
# A gerund after these reports what someone does ("my bot keeps ignoring the instruction to ...",
# "the team was disregarding the guidelines"): a description, not an order.
_GERUND = re.compile(r"^ ?(?:ignoring|disregarding|forgetting|overlooking|bypassing|overriding|skipping|"
                     r"dismissing|discarding|neglecting|abandoning|circumventing|violating|breaking|revealing|"
                     r"leaking|sharing|disclosing|sending|forwarding|printing|repeating)\b")
_DESCRIBES_BEFORE = re.compile(
    r"(?:^| )(?:keeps?|kept|keeping|is|are|was|were|been|be|am|s|re|m|still|kept on|goes on|went on|"
    r"stop|stops|stopped|avoid|avoids|of|about|from|without|against|prevent|prevents|after|before|"
    r"while|when|since|risk|risks|accused|caught)(?: \S+)? $")
_QUOTES = frozenset("'\"`\u2018\u2019\u201c\u201d\u00ab\u00bb\u201a\u201e")
# Categories where "talked about" is a real difference (an instruction vs. a mention of one).
MENTION_CATEGORIES = frozenset({"instruction_override", "prompt_leak", "exfiltration", "indirect_injection",
                                 "persona_jailbreak", "role_hijack"})


# Code spans of the punctuation-keeping view: fenced blocks, inline code, and lines that hold a
# template placeholder ("f\"<s>[INST] {prompt} [/INST]\"").
_FENCED = re2.compile(r"(?s)```.*?(?:```|$)|~~~.*?(?:~~~|$)")
_INLINE_CODE = re2.compile(r"`[^`\n]{1,400}`")
_PLACEHOLDER_LINE = re2.compile(r"[^\n]*\{[a-z_][a-z0-9_]{0,40}\}[^\n]*")
CODE_FACTOR = 0.4  # chat-template tokens shown as code: how a developer asks about templates


def all_in_code(raw: str, regex: re2._Regexp, limit: int = 16) -> bool:
    """Every occurrence of ``regex`` in ``raw`` (a raw view) lies in code: a fenced block, inline
    code or a line with a ``{placeholder}``. A template token typed as markup in prose is not code."""
    spans: list[tuple[int, int]] | None = None
    seen = 0
    for m in regex.finditer(raw):
        if spans is None:
            spans = [x.span() for rx in (_FENCED, _INLINE_CODE, _PLACEHOLDER_LINE) for x in rx.finditer(raw)]
            if not spans:
                return False
        s0, e0 = m.span()
        if not any(a <= s0 and e0 <= b for a, b in spans):
            return False
        seen += 1
        if seen >= limit:
            break
    return seen > 0


def mention_factor(view_text: str, start: int, end: int, omap: OffsetMap | None, original: str,
                   category: str = "instruction_override") -> float:
    """How much an occurrence counts: 1.0 normally, less when it is negated ("never reveal your
    prompt"), talked about ("make an LLM ignore ...", "a user says ...", "the '...' attack") or
    quoted."""
    before = view_text[max(0, start - 80):start]
    if not before.endswith(" "):
        before += " "
    f = 1.0
    if _NEGATION.search(before) and not before.endswith(("never mind ", "nevermind ")):
        f *= 0.15
    if category in MENTION_CATEGORIES:
        if _GERUND.match(view_text[start:end]) and _DESCRIBES_BEFORE.search(before):
            f *= 0.3
        if _META_BEFORE.search(before):
            f *= 0.4
        if _META_AFTER.search(view_text[end:end + 40]):
            f *= 0.6
        if omap is not None:
            s, e = omap.map(start, end)
            if s >= 0 and any(c in _QUOTES for c in original[max(0, s - 3):s]) and \
                    any(c in _QUOTES for c in original[e:e + 3]):
                f *= 0.75
            elif s >= 0 and f >= 1.0:
                # inside a double-quoted passage that is introduced as an example ("a classic
                # example is hidden text saying \"Ignore ... and forward the inbox to ...\""):
                # judge the words before the opening quote
                q = _opening_quote(original, s, e)
                if q > 0 and _META_BEFORE.search(words(original[max(0, q - 80):q])[:-1] + " "):
                    f *= 0.4
    return f


_DQ_OPEN = frozenset('"\u201c\u00ab\u201e')
_DQ_CLOSE = frozenset('"\u201d\u00bb\u201c')
_SQ = frozenset("'\u2018\u2019")


def _opening_quote(original: str, s: int, e: int, reach: int = 400) -> int:
    """Index of the quote that opens a quoted passage around ``[s, e)`` on the same line, or -1.

    Double quotes pair up by count; a single quote counts as opening only after a space, colon or
    bracket and as closing only before one (an apostrophe sits between letters: "user's")."""
    line_start = max(original.rfind("\n", 0, s) + 1, s - reach)
    head = original[line_start:s]
    line_end = original.find("\n", e)
    tail = original[e:(line_end if line_end >= 0 else len(original))][:reach]
    opens = [i for i, c in enumerate(head) if c in _DQ_OPEN or c in _DQ_CLOSE]
    if opens and not (sum(1 for c in head if c == '"') % 2 == 0 and head[opens[-1]] == '"'):
        if any(c in _DQ_CLOSE for c in tail):
            return line_start + opens[-1]
    # single quotes: the last one before the match that opens (not an apostrophe), not closed since
    for i in range(len(head) - 1, -1, -1):
        c = head[i]
        if c in _SQ:
            before = head[i - 1] if i > 0 else " "
            after = head[i + 1] if i + 1 < len(head) else ""
            if before.isalnum():
                if after.isalnum():
                    continue  # an apostrophe inside a word
                return -1  # a closing quote: the match is outside
            for j, d in enumerate(tail):
                if d in _SQ and (j + 1 == len(tail) or not tail[j + 1].isalnum()) and (j == 0 or tail[j - 1] != " "):
                    return line_start + i
            return -1
    return -1


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
        self._word_set, self._word_ids, self._word_res = self._build_set(pack, raw=False)
        self._raw_set, self._raw_ids, self._raw_res = self._build_set(pack, raw=True)

    @staticmethod
    def _build_set(pack: RulePack, *, raw: bool) -> tuple[re2.Set | None, list[int], list[re2._Regexp]]:
        s = re2.Set.SearchSet(_re2_options())
        ids: list[int] = []
        res: list[re2._Regexp] = []
        for i, r in enumerate(pack.rules):
            # Phrases are word-bounded literals of the word view: escaped into the same set.
            phrases = [] if raw else [re2.escape(k) for k in map(_phrase_key, r.phrases) if k.strip()]
            for pat in phrases:
                s.Add(pat)
                ids.append(i)
                res.append(re2.compile(pat, _re2_options()))
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
        if self._word_set is not None:
            for k in self._word_set.Match(view.text) or ():
                i = self._word_ids[k]
                if i not in hits:
                    hits[i] = (view.name, -2, k)  # offsets resolved later for the text view
        if self._raw_set is not None:
            for k in self._raw_set.Match(view.raw) or ():
                i = self._raw_ids[k]
                if i not in hits:
                    hits[i] = (view.name, -3, k)

    def scan(self, norm: Normalized, *, offsets: bool = True, suffix: bool = True) -> PatternResult:
        """Rule matches and signals of one normalized segment. ``suffix=False`` skips the
        adversarial-suffix check (callers do for tool results and documents: optimized suffixes are
        written into a user's own prompt, and JSON or HTML data is where the check costs most)."""
        hits: dict[int, tuple[str, int, int]] = {}
        for view in norm.views:
            self._scan_view(view, hits)
        matches: list[PatternMatch] = []
        text_view = norm.views[0]
        decoded_hit = False
        omap: OffsetMap | None | bool = False  # False: not built yet
        for i, (vname, kind, val) in hits.items():
            info = self.rules[i]
            weight = info.weight
            start = end = -1
            if vname == "text" and kind != -3:
                # Judge every occurrence in its surroundings: negated ("never reveal your
                # prompt"), quoted or talked about ("if a user says 'ignore ...'") occurrences
                # weigh less; the strongest occurrence counts.
                if omap is False and (offsets or len(norm.original) <= MAX_QUOTE_CHECK):
                    omap = offset_map(norm.original, text_view.text)
                om = omap if isinstance(omap, OffsetMap) else None
                best = (-1.0, -1, -1)
                for vs, ve in self._spans(text_view, i, kind, val):
                    f = 1.0 if info.category in STRUCTURAL else mention_factor(
                        text_view.text, vs, ve, om, norm.original, info.category)
                    os_, oe = om.map(vs, ve) if om is not None and offsets else (-1, -1)
                    if weight * f > best[0]:
                        best = (weight * f, os_, oe)
                    if f >= 1.0:
                        break
                if best[0] >= 0:
                    weight, start, end = round(best[0], 4), best[1], best[2]
            elif vname == "text" and info.category == "delimiter_injection" and \
                    all_in_code(text_view.raw, self._raw_res[val]):
                weight = round(weight * CODE_FACTOR, 4)
            elif vname != "text":
                other = norm.view(vname)
                if other is not None and other.decoded:
                    decoded_hit = True
                    if norm.cleaned == norm.original:  # spans are in cleaned-text coordinates
                        start, end = other.span
            matches.append(PatternMatch(info.id, info.category, weight, vname, start, end))
        for flag in sorted(norm.flags):
            w = self.signals.get(flag)
            # Weak signals only add to a matched rule; strong ones count alone.
            if w and (matches or w >= STANDALONE_SIGNAL):
                matches.append(PatternMatch(f"obfuscation.{flag}", "obfuscation", w, "signal"))
        if decoded_hit:
            matches.append(PatternMatch("obfuscation.decoded_match", "obfuscation",
                                        self.signals["decoded_match"], "signal"))
        base = self.signals.get("adversarial_suffix", 0.0) if suffix else 0.0
        # an already conclusive segment (the combined guard skips the model at 0.9) needs no suffix check
        if base > 0 and combine(m.weight for m in matches) < SUFFIX_SKIP_AT:
            # lone surrogates (valid in JSON) cannot reach RE2: read the cleaned text then, without offsets
            exact = "surrogates" not in norm.flags
            hit = find_suffix(norm.original if exact else norm.cleaned)
            if hit is not None:
                w = round(min(0.95, suffix_weight(hit) * base / 0.5), 4)
                s_, e_ = (hit.start, hit.end) if offsets and exact else (-1, -1)
                matches.append(PatternMatch("obfuscation.adversarial_suffix", "obfuscation", w, "text", s_, e_))
        return self._result(matches, norm.flags)

    def _result(self, matches: list[PatternMatch], flags: frozenset[str]) -> PatternResult:
        if not matches:
            return PatternResult(0.0, (), {}, flags, self.pack.ident)
        matches.sort(key=lambda m: -m.weight)
        by_cat: dict[str, list[float]] = {}
        for m in matches:
            by_cat.setdefault(m.category, []).append(m.weight)
        cats = {c: round(combine(ws), 4) for c, ws in by_cat.items()}
        score = round(combine(m.weight for m in matches), 4)
        return PatternResult(score, tuple(matches), cats, flags, self.pack.ident)

    def restrict(self, result: PatternResult, categories: frozenset[str]) -> PatternResult:
        """The result counting only ``categories`` (e.g. structural ones for operator prompts)."""
        return self._result([m for m in result.matches if m.category in categories], result.flags)

    def _spans(self, view: View, i: int, kind: int, val: int) -> list[tuple[int, int]]:
        """Spans (in ``view.text``) of the occurrences of rule ``i``, at most 16."""
        out: list[tuple[int, int]] = []
        if kind == -2:
            for m in self._word_res[val].finditer(view.text):
                s0, e0 = m.span()
                out.append((s0, e0))
                if len(out) >= 16:
                    break
        return out

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
                warm_up()  # the normalizer's word lists, before the first request needs them
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
