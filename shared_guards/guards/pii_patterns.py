"""The PII guard of the ``edge`` profile: pattern recognizers only, no Presidio, spaCy or torch.

It takes the PII guard's options (``preset``, ``entities``, mask styles, allow-lists, stream
sizes) and reuses its presidio-free parts (presets, vault, masks, check digits), so the edge
profile swaps ``pii`` for it without touching the policy. Entities that need NER (PERSON,
LOCATION, DATE_TIME, NRP, ORGANIZATION) are not detected here: that is the edge trade-off.
Every regex is bounded; check digits (Luhn, IBAN mod-97, SSN and NINO rules) cut false positives.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources, StreamFilter
from shared_guards.pii import checksums
from shared_guards.pii.entities import NER_ENTITIES, Entity
from shared_guards.pii.operators import mask
from shared_guards.pii.presets import DEFAULT_MASK_STYLE, PRESETS, MaskStyle, PIIAction, Preset
from shared_guards.pii.vault import PLACEHOLDER_RE, Vault, hold_point
from shared_guards.types import (
    Action,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    PartKind,
    Stage,
)

STATE_KEY = "pii_patterns"


class EntityRule(GuardConfig):
    action: PIIAction | None = None
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    mask_style: MaskStyle | None = None


class PatternPIIConfig(GuardConfig):
    """The PII guard's options; ``analyzer`` (Presidio/spaCy settings) is accepted and unused."""

    preset: Preset = Preset.GDPR
    entities: dict[Entity, EntityRule | PIIAction] = Field(default_factory=dict)
    threshold: float = Field(0.4, ge=0.0, le=1.0)
    mask_style: MaskStyle | None = None
    allow_list: list[str] = Field(default_factory=list)
    allow_patterns: list[str] = Field(default_factory=list)
    scan_responses: bool = True
    stream_hold_chars: int = Field(96, ge=16, le=4096)
    stream_batch_chars: int = Field(160, ge=16, le=8192)
    tag_header: str = Field("x-slg-pii", pattern=r"^[A-Za-z0-9-]{1,64}$")
    analyzer: dict[str, Any] = Field(default_factory=dict)

    def actions(self) -> dict[str, PIIAction]:
        acts: dict[str, PIIAction] = {e.value: a for e, a in PRESETS[self.preset].items()}
        for e, r in self.entities.items():
            a = r if isinstance(r, PIIAction) else r.action
            if a is not None:
                acts[e.value] = a
        return {e: a for e, a in acts.items() if a is not PIIAction.IGNORE and Entity(e) not in NER_ENTITIES}

    def mask_style_for(self, entity: str) -> MaskStyle:
        r = self.entities.get(Entity(entity))
        if isinstance(r, EntityRule) and r.mask_style is not None:
            return r.mask_style
        return self.mask_style or DEFAULT_MASK_STYLE.get(Entity(entity), MaskStyle.PLACEHOLDER)


@dataclass(frozen=True)
class _Rule:
    entity: str
    regex: re.Pattern[str]
    score: float
    check: Callable[[str], bool] | None = None


def _secret(v: str) -> bool:
    return checksums.looks_like_secret(v)


RULES: tuple[_Rule, ...] = (
    _Rule("EMAIL_ADDRESS", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})"
                                      r"{0,8}\.[A-Za-z]{2,24}(?![\w-])"), 1.0),
    _Rule("CREDIT_CARD", re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"), 1.0, checksums.luhn_ok),
    _Rule("US_SSN", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), 0.85, checksums.us_ssn_ok),
    _Rule("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), 1.0,
          checksums.iban_ok),
    _Rule("UK_NINO", re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), 0.85, checksums.uk_nino_ok),
    _Rule("IP_ADDRESS", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
                                   r"(?![\d.])"), 0.8),
    # +CC ..., (area) ..., or US 3-3-4; never a run of digit groups (cards, IBANs) or a version.
    _Rule("PHONE_NUMBER", re.compile(r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,3}"
                                     r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w.-])"), 0.6),
    _Rule("URL", re.compile(r"\bhttps?://[^\s<>\"']{3,2048}"), 0.6),
    _Rule("SECRET", re.compile(r"\b(?:sk|pk|rk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{16,200}\b|\bAKIA[0-9A-Z]{16}\b"),
          0.9, _secret),
)


@dataclass(frozen=True, slots=True)
class Hit:
    entity: str
    start: int
    end: int
    score: float
    action: PIIAction


class PatternDetector:
    def __init__(self, cfg: PatternPIIConfig) -> None:
        self.cfg = cfg
        self.actions = cfg.actions()
        thresholds = {e.value: (r.threshold if isinstance(r, EntityRule) and r.threshold is not None
                                else cfg.threshold) for e, r in cfg.entities.items()}
        self.rules = [r for r in RULES if r.entity in self.actions
                      and r.score >= thresholds.get(r.entity, cfg.threshold)]
        self.allow = {a.casefold() for a in cfg.allow_list}
        self.allow_patterns = tuple(re.compile(p) for p in cfg.allow_patterns)

    def hits(self, text: str, entities: frozenset[str] | None = None) -> list[Hit]:
        found: list[Hit] = []
        for r in self.rules:
            if entities is not None and r.entity not in entities:
                continue
            for m in r.regex.finditer(text):
                value = m.group(0)
                if r.check is not None and not (r.check(value) if r.entity != "CREDIT_CARD"
                                                else r.check(checksums.digits_only(value))):
                    continue
                if value.casefold() in self.allow or any(p.fullmatch(value) for p in self.allow_patterns):
                    continue
                found.append(Hit(r.entity, m.start(), m.end(), r.score, self.actions[r.entity]))
        found.sort(key=lambda h: (h.start, -(h.end - h.start)))
        out: list[Hit] = []
        for h in found:  # the first (longest) match at a position wins; overlaps dropped
            if not out or h.start >= out[-1].end:
                out.append(h)
        return out


def _violation(entities: list[str], what: str) -> ContentViolation:
    types = sorted(set(entities))
    rule = f"pii.block.{types[0]}"
    return ContentViolation(f"{what} contains personal data that the policy does not allow: {', '.join(types)} "
                            f"(rule {rule}).", rule_id=rule, code="pii_detected")


def _rewrite(text: str, hits: list[Hit], cfg: PatternPIIConfig, vault: Vault | None) -> str:
    """Mask and pseudonymize (with a vault) or mask everything (answers: nothing to restore)."""
    out, pos = [], 0
    for h in hits:
        if h.action in (PIIAction.TAG, PIIAction.IGNORE) or (vault is None and h.action is PIIAction.BLOCK):
            continue
        out.append(text[pos:h.start])
        value = text[h.start:h.end]
        if vault is not None and h.action is PIIAction.PSEUDONYMIZE:
            out.append(vault.pseudonym(h.entity, value))
        else:
            out.append(mask(value, h.entity, cfg.mask_style_for(h.entity)))
        pos = h.end
    out.append(text[pos:])
    return "".join(out)


def _vault(ctx: RequestContext) -> Vault:
    v = ctx.state.get(STATE_KEY)
    if not isinstance(v, Vault):
        v = ctx.state[STATE_KEY] = Vault()
    return v


class PatternPIIGuard(Guard):
    name: ClassVar[str] = "pii_patterns"
    Config: ClassVar[type[GuardConfig]] = PatternPIIConfig
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})
    modifies: ClassVar[bool] = True

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        assert isinstance(config, PatternPIIConfig)
        self.cfg = config
        self.detector = PatternDetector(config)
        self.answer_entities = frozenset(e for e, a in self.detector.actions.items()
                                         if a in (PIIAction.MASK, PIIAction.PSEUDONYMIZE, PIIAction.BLOCK))

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        vault = _vault(ctx)
        findings: list[Finding] = []
        blocked: list[str] = []
        messages = []
        for mi, m in enumerate(request.messages):
            texts = []
            for p in m.parts:
                if p.kind is not PartKind.TEXT or p.text is None:
                    continue
                hits = self.detector.hits(p.text)
                findings += [Finding(guard=self.name, rule_id=f"pii.{h.entity}", layer="pattern", score=h.score,
                                     entity_type=h.entity, message_index=mi, start=h.start, end=h.end)
                             for h in hits]
                blocked += [h.entity for h in hits if h.action is PIIAction.BLOCK]
                vault.reserve(p.text)
                texts.append(_rewrite(p.text, hits, self.cfg, vault))
            calls = tuple(dataclasses.replace(c, arguments=_rewrite(c.arguments, self.detector.hits(c.arguments),
                                                                    self.cfg, vault)) for c in m.tool_calls)
            messages.append(dataclasses.replace(m.with_texts(texts), tool_calls=calls))
        if blocked:
            return GuardResult.block(_violation(blocked, "The request"), tuple(findings))
        types = sorted({f.entity_type for f in findings})
        headers = {self.cfg.tag_header: ",".join(types)} if types else {}
        sanitized = dataclasses.replace(request, messages=tuple(messages))
        if sanitized == request:
            return GuardResult(Action.ALLOW, tuple(findings), headers=headers)
        return GuardResult(Action.MODIFY, tuple(findings), 1.0, sanitized=sanitized, headers=headers)

    def _answer(self, text: str, vault: Vault) -> tuple[str, list[Hit]]:
        hits: list[Hit] = []
        if self.cfg.scan_responses and self.answer_entities:
            spans = [m.span() for m in PLACEHOLDER_RE.finditer(text)]
            known = vault.known_values()
            hits = [h for h in self.detector.hits(text, self.answer_entities)
                    if not any(h.start < e and s < h.end for s, e in spans)
                    and " ".join(text[h.start:h.end].split()).casefold() not in known]
        return vault.restore(_rewrite(text, hits, self.cfg, None)), hits

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        vault = _vault(ctx)
        choices, findings = [], []
        for c in response.choices:
            text, hits = self._answer(c.text, vault)
            if any(h.action is PIIAction.BLOCK for h in hits):
                return GuardResult.block(_violation([h.entity for h in hits if h.action is PIIAction.BLOCK],
                                                    "The answer"))
            findings += [Finding(guard=self.name, rule_id=f"pii.{h.entity}", layer="pattern", entity_type=h.entity,
                                 message_index=c.index, start=h.start, end=h.end) for h in hits]
            calls = tuple(dataclasses.replace(t, arguments=vault.restore(t.arguments)) for t in c.tool_calls)
            choices.append(dataclasses.replace(c, text=text, tool_calls=calls))
        new = dataclasses.replace(response, choices=tuple(choices))
        if new == response:
            return GuardResult.allow(tuple(findings))
        return GuardResult(Action.MODIFY, tuple(findings), sanitized=new)

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        return _PatternStream(self, _vault(ctx))


class _PatternStream(StreamFilter):
    """Holds back ``stream_hold_chars`` (at a word boundary, never inside a value or a placeholder),
    scans the rest, masks new PII and restores placeholders. Memory per choice: hold + one batch."""

    def __init__(self, guard: PatternPIIGuard, vault: Vault) -> None:
        self.guard = guard
        self.vault = vault
        self.pending: dict[int, str] = {}

    def feed(self, delta: str, choice_index: int = 0) -> str:
        buf = self.pending.get(choice_index, "") + delta
        hold = self.guard.cfg.stream_hold_chars
        if len(buf) < hold + self.guard.cfg.stream_batch_chars:
            self.pending[choice_index] = buf
            return ""
        cut = len(buf) - hold
        ws = buf.rfind(" ", 0, cut)
        cut = ws + 1 if ws > 0 else cut
        cut = min(cut, hold_point(buf[:cut]))
        for h in self.guard.detector.hits(buf):
            if h.start < cut < h.end:
                cut = h.start
        self.pending[choice_index] = buf[cut:]
        return self._emit(buf[:cut])

    def flush(self, choice_index: int = 0) -> str:
        return self._emit(self.pending.pop(choice_index, ""))

    def _emit(self, text: str) -> str:
        out, hits = self.guard._answer(text, self.vault)
        blocked = [h.entity for h in hits if h.action is PIIAction.BLOCK]
        if blocked:
            raise _violation(blocked, "The answer")
        return out
