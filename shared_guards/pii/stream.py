"""Streamed answers: scan for new PII and restore placeholders with a bounded buffer.

Per choice, text is held back until at least ``batch`` new characters arrived beyond a ``hold``
tail; then the held text is scanned and everything up to a safe cut (not inside a detection, a
placeholder or a word) is masked, restored and emitted. Memory per choice stays below
``hold + batch + one delta``; the whole stream is never held.
"""

from __future__ import annotations

from collections.abc import Callable

from shared_guards.errors import ContentViolation
from shared_guards.guard import StreamFilter
from shared_guards.pii.config import PIIConfig
from shared_guards.pii.detector import Hit, PIIDetector, answer_hits, apply_answer_hits
from shared_guards.pii.presets import PIIAction
from shared_guards.pii.vault import PLACEHOLDER_RE, Vault, hold_point

OnHits = Callable[[list[Hit]], None]
_CONTEXT_CHARS = 48
_MAX_PEM_HOLD = 16_384


def block_violation(entities: list[str], stage: str) -> ContentViolation:
    types = sorted(set(entities))
    rule = f"pii.block.{types[0]}"
    return ContentViolation(
        f"{stage} contains personal data that the policy does not allow: {', '.join(types)} (rule {rule}).",
        rule_id=rule,
        code="pii_detected",
    )


def safe_cut(text: str, cut: int, hits: list[Hit]) -> int:
    """Move ``cut`` left so it splits no detection, no placeholder and no word."""
    cut = max(0, min(cut, len(text)))
    moved = True
    while moved and cut > 0:
        moved = False
        for h in hits:
            if h.start < cut < h.end:
                cut, moved = h.start, True
        for m in PLACEHOLDER_RE.finditer(text, max(0, cut - 60), min(len(text), cut + 60)):
            if m.start() < cut < m.end():
                cut, moved = m.start(), True
        hp = hold_point(text[:cut])
        if hp < cut:
            cut, moved = hp, True
    # Prefer a whitespace boundary so a name or number is never cut in two.
    if 0 < cut < len(text) and not text[cut].isspace():
        ws = max(text.rfind(" ", 0, cut), text.rfind("\n", 0, cut))
        if ws > 0:
            cut = ws + 1
    return cut


class PIIStreamFilter(StreamFilter):
    def __init__(self, detector: PIIDetector, config: PIIConfig, vault: Vault, on_hits: OnHits | None = None) -> None:
        self.detector = detector
        self.config = config
        self.vault = vault
        self.scan = config.scan_responses and bool(detector.answer_entities)
        self.on_hits = on_hits
        self._pending: dict[int, str] = {}
        self._context: dict[int, str] = {}  # the end of what was already emitted, for context cues

    def _hits(self, buf: str, choice_index: int) -> list[Hit]:
        ctx = self._context.get(choice_index, "")
        n = len(ctx)
        hits = answer_hits(ctx + buf, self.detector, self.vault)
        return [Hit(h.entity, h.start - n, h.end - n, h.score, h.action) for h in hits if h.start >= n]

    def _remember(self, emitted_raw: str, choice_index: int) -> None:
        self._context[choice_index] = (self._context.get(choice_index, "") + emitted_raw)[-_CONTEXT_CHARS:]

    def _emit(self, text: str, hits: list[Hit]) -> str:
        if hits:
            if self.on_hits is not None:
                self.on_hits(hits)
            blocked = [h.entity for h in hits if h.action is PIIAction.BLOCK]
            if blocked:
                raise block_violation(blocked, "The answer")
            text = apply_answer_hits(text, hits, self.config)
        return self.vault.restore(text)

    def feed(self, delta: str, choice_index: int = 0) -> str:
        buf = self._pending.get(choice_index, "") + delta
        if not self.scan:
            cut = hold_point(buf)
            self._pending[choice_index] = buf[cut:]
            return self.vault.restore(buf[:cut])
        hold, batch = self.config.stream_hold_chars, self.config.stream_batch_chars
        if len(buf) < hold + batch:
            self._pending[choice_index] = buf
            return ""
        hits = self._hits(buf, choice_index)
        cut = safe_cut(buf, len(buf) - hold, hits)
        begin = buf.rfind("-----BEGIN", 0, cut)
        if begin >= 0 and "-----END" not in buf[begin:] and len(buf) - begin <= _MAX_PEM_HOLD:
            # an unfinished private-key block: hold it (at most _MAX_PEM_HOLD) until its END line
            if begin == 0:
                self._pending[choice_index] = buf
                return ""
            cut = begin
        if cut <= 0:  # one detection longer than the buffer: emit up to its end
            cut = max((h.end for h in hits), default=len(buf))
        self._pending[choice_index] = buf[cut:]
        self._remember(buf[:cut], choice_index)
        return self._emit(buf[:cut], [h for h in hits if h.end <= cut])

    def flush(self, choice_index: int = 0) -> str:
        buf = self._pending.pop(choice_index, "")
        if not buf:
            return ""
        hits = self._hits(buf, choice_index) if self.scan else []
        self._context.pop(choice_index, None)
        return self._emit(buf, hits)
