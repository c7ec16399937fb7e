"""Detection plus the transformations of one text: block / mask / pseudonymize / tag.

Pure functions over (text, detections, config, vault); the guard runs them in the executor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared_guards.pii.analyzer import Detection, PIIAnalyzer, get_analyzer
from shared_guards.pii.config import PIIConfig
from shared_guards.pii.operators import mask
from shared_guards.pii.presets import PIIAction
from shared_guards.pii.vault import Vault, placeholder_spans


@dataclass(frozen=True, slots=True)
class Hit:
    """A detection with the action the policy gives it. No value."""

    entity: str
    start: int
    end: int
    score: float
    action: PIIAction


class PIIDetector:
    """The analyzer configured by a :class:`PIIConfig` (entities, thresholds, allow-lists)."""

    def __init__(self, config: PIIConfig, analyzer: PIIAnalyzer | None = None) -> None:
        self.config = config
        self.analyzer = analyzer or get_analyzer(config.analyzer)
        self.entities = frozenset(config.actions)
        # Entities scanned in answers: everything whose action changes or refuses content.
        self.answer_entities = frozenset(
            e for e, a in config.actions.items() if a in (PIIAction.MASK, PIIAction.PSEUDONYMIZE, PIIAction.BLOCK)
        )

    def detect(self, text: str, entities: frozenset[str] | None = None) -> list[Detection]:
        c = self.config
        return self.analyzer.analyze(
            text,
            self.entities if entities is None else entities,
            threshold=c.threshold,
            thresholds=c.thresholds,
            allow_list=c.allow_list,
            allow_patterns=c.compiled_allow_patterns,
        )

    def hits(self, text: str, entities: frozenset[str] | None = None) -> list[Hit]:
        acts = self.config.actions
        return [Hit(d.entity, d.start, d.end, d.score, acts[d.entity]) for d in self.detect(text, entities)
                if d.entity in acts]

    def output_label(self, d: Detection) -> str:
        return d.entity

    def supported_labels(self) -> set[str]:
        """The entities this configuration detects (preset plus overrides)."""
        return set(self.entities)


def propagate_values(texts: list[str], all_hits: list[list[Hit]]) -> list[list[Hit]]:
    """A value found anywhere in the request is found everywhere (case-insensitive, whole words):
    "Johanna Lindqvist" in one message also covers "JOHANNA LINDQVIST" in another."""
    values: dict[str, Hit] = {}
    for text, hits in zip(texts, all_hits, strict=True):
        for h in hits:
            v = text[h.start:h.end]
            if h.action is not PIIAction.TAG and len(v.strip()) >= 3:
                values.setdefault(v.casefold(), h)
    if not values:
        return all_hits
    rx = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
                    + r")(?!\w)", re.IGNORECASE)
    out = []
    for text, hits in zip(texts, all_hits, strict=True):
        extra = []
        for m in rx.finditer(text):
            s, e = m.span()
            if any(s < h.end and h.start < e for h in hits):
                continue
            src = values.get(m.group(0).casefold())
            if src is not None:
                extra.append(Hit(src.entity, s, e, src.score, src.action))
        out.append(sorted([*hits, *extra], key=lambda h: h.start) if extra else hits)
    return out


def apply_request_hits(text: str, hits: list[Hit], config: PIIConfig, vault: Vault) -> str:
    """Rewrite one request text: mask and pseudonymize; tag and block leave it unchanged."""
    out: list[str] = []
    pos = 0
    for h in sorted(hits, key=lambda h: h.start):
        if h.action not in (PIIAction.MASK, PIIAction.PSEUDONYMIZE) or h.start < pos:
            continue
        value = text[h.start:h.end]
        out.append(text[pos:h.start])
        if h.action is PIIAction.PSEUDONYMIZE:
            out.append(vault.pseudonym(h.entity, value))
        else:
            out.append(mask(value, h.entity, config.mask_style_for(h.entity)))
        pos = h.end
    out.append(text[pos:])
    return "".join(out)


def answer_hits(text: str, detector: PIIDetector, vault: Vault) -> list[Hit]:
    """PII in an answer (text still holding placeholders) that the vault did not put there."""
    if not detector.answer_entities:
        return []
    phs = placeholder_spans(text)
    known = vault.known_values()
    out = []
    for h in detector.hits(text, detector.answer_entities):
        if any(h.start < e and s < h.end for s, e in phs):
            continue
        if " ".join(text[h.start:h.end].split()).casefold() in known:
            continue  # the caller's own value, e.g. repeated verbatim
        out.append(h)
    return out


def apply_answer_hits(text: str, hits: list[Hit], config: PIIConfig) -> str:
    """Mask new PII in an answer: pseudonymize entities are masked too (nothing to restore)."""
    out: list[str] = []
    pos = 0
    for h in sorted(hits, key=lambda h: h.start):
        if h.action is PIIAction.TAG or h.start < pos:
            continue
        out.append(text[pos:h.start])
        out.append(mask(text[h.start:h.end], h.entity, config.mask_style_for(h.entity)))
        pos = h.end
    out.append(text[pos:])
    return "".join(out)
