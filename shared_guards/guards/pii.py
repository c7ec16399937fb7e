"""The PII guard: detect personal data and secrets in requests and answers, and block, mask,
pseudonymize (restored in the answer, also when streamed) or tag them, per entity type.

Per-request data (the vault, the findings of a stream) lives in ``ctx.state["pii"]``; the guard
object holds only its configuration and the process-wide analyzer. Presidio runs in
``resources.executor``. Findings carry entity types, offsets, scores and actions, never values.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from shared_guards.guard import Guard, RequestContext, Resources, StreamFilter
from shared_guards.pii.config import PIIConfig
from shared_guards.pii.detector import (
    Hit,
    PIIDetector,
    answer_hits,
    apply_answer_hits,
    apply_request_hits,
    propagate_values,
)
from shared_guards.pii.presets import PIIAction
from shared_guards.pii.stream import PIIStreamFilter, block_violation
from shared_guards.pii.vault import Vault
from shared_guards.types import (
    Action,
    ContentPart,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    Message,
    PartKind,
    Stage,
    ToolCall,
)

STATE_KEY = "pii"
T = TypeVar("T")
_SEVERITY = {PIIAction.BLOCK: "high", PIIAction.MASK: "medium", PIIAction.PSEUDONYMIZE: "medium", PIIAction.TAG: "low"}


@dataclass
class PIIState:
    """What the guard keeps for one request (in ``ctx.state``). Its repr never shows values."""

    vault: Vault = field(default_factory=Vault)
    request_types: set[str] = field(default_factory=set)
    answer_counts: dict[str, int] = field(default_factory=dict)

    def record_answer(self, hits: list[Hit]) -> None:
        for h in hits:
            key = f"{h.entity}:{h.action.value}"
            self.answer_counts[key] = self.answer_counts.get(key, 0) + 1

    def __repr__(self) -> str:
        return f"PIIState(vault={self.vault!r}, request_types={sorted(self.request_types)})"


def _finding(h: Hit, message_index: int) -> Finding:
    return Finding(
        guard="pii", rule_id=f"pii.{h.action.value}.{h.entity}", layer="presidio", score=round(h.score, 3),
        category="pii", entity_type=h.entity, message_index=message_index, start=h.start, end=h.end,
        severity=_SEVERITY[h.action],
    )


class PIIGuard(Guard):
    name: ClassVar[str] = "pii"
    Config: ClassVar[type[PIIConfig]] = PIIConfig
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})
    modifies: ClassVar[bool] = True
    tier: ClassVar[int] = 1

    def __init__(self, config: PIIConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self.cfg = config
        self.detector = PIIDetector(config)  # the analyzer loads once per process per settings

    async def _offload(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.resources.executor, fn)

    def _state(self, ctx: RequestContext) -> PIIState:
        st = ctx.state.get(STATE_KEY)
        if not isinstance(st, PIIState):
            st = ctx.state[STATE_KEY] = PIIState()
        return st

    # -- request ---------------------------------------------------------------------------------

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        state = self._state(ctx)
        # (message index, part index or -1 - tool call index, text)
        slots: list[tuple[int, int, str]] = []
        for mi, m in enumerate(request.messages):
            for pi, p in enumerate(m.parts):
                if p.kind is PartKind.TEXT and p.text:
                    slots.append((mi, pi, p.text))
            for ti, tc in enumerate(m.tool_calls):
                if tc.arguments:
                    slots.append((mi, -1 - ti, tc.arguments))
        if not slots:
            return GuardResult.allow()
        detector = self.detector
        texts = [t for _, _, t in slots]
        all_hits = await self._offload(lambda: propagate_values(texts, [detector.hits(t) for t in texts]))

        findings = tuple(_finding(h, mi) for (mi, _, _), hits in zip(slots, all_hits, strict=True) for h in hits)
        types = sorted({h.entity for hits in all_hits for h in hits})
        state.request_types.update(types)
        headers = {self.cfg.tag_header: ",".join(types)} if types else {}
        blocked = [h.entity for hits in all_hits for h in hits if h.action is PIIAction.BLOCK]
        if blocked:
            return GuardResult.block(block_violation(blocked, "The request"), findings)
        if not any(h.action in (PIIAction.MASK, PIIAction.PSEUDONYMIZE) for hits in all_hits for h in hits):
            return GuardResult(Action.ALLOW, findings, _score(findings), headers=headers)

        for _, _, t in slots:
            state.vault.reserve(t)
        new_texts = {(mi, pi): apply_request_hits(t, hits, self.cfg, state.vault)
                     for (mi, pi, t), hits in zip(slots, all_hits, strict=True)}
        messages = tuple(_rewrite(m, mi, new_texts) for mi, m in enumerate(request.messages))
        sanitized = dataclasses.replace(request, messages=messages)
        return GuardResult(Action.MODIFY, findings, _score(findings), sanitized=sanitized, headers=headers)

    # -- response --------------------------------------------------------------------------------

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        state = self._state(ctx)
        vault = state.vault
        scan = self.cfg.scan_responses and bool(self.detector.answer_entities)
        texts = [c.text for c in response.choices]
        if not any(texts) and not any(c.tool_calls for c in response.choices):
            return GuardResult.allow()
        detector = self.detector
        all_hits: list[list[Hit]] = (
            await self._offload(lambda: [answer_hits(t, detector, vault) if t else [] for t in texts])
            if scan else [[] for _ in texts]
        )
        findings = tuple(_finding(h, -1) for hits in all_hits for h in hits)
        for hits in all_hits:
            state.record_answer(hits)
        blocked = [h.entity for hits in all_hits for h in hits if h.action is PIIAction.BLOCK]
        if blocked:
            return GuardResult.block(block_violation(blocked, "The answer"), findings)
        choices = []
        for c, hits in zip(response.choices, all_hits, strict=True):
            text = vault.restore(apply_answer_hits(c.text, hits, self.cfg)) if c.text else c.text
            calls = tuple(dataclasses.replace(tc, arguments=vault.restore(tc.arguments)) for tc in c.tool_calls)
            choices.append(dataclasses.replace(c, text=text, tool_calls=calls))
        new = dataclasses.replace(response, choices=tuple(choices))
        if new == response:
            return GuardResult(Action.ALLOW, findings, _score(findings))
        return GuardResult(Action.MODIFY, findings, _score(findings), sanitized=new)

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        state = self._state(ctx)
        scan = self.cfg.scan_responses and bool(self.detector.answer_entities)
        if not scan and not len(state.vault):
            return None
        return PIIStreamFilter(self.detector, self.cfg, state.vault, on_hits=state.record_answer)

    async def on_complete(self, ctx: RequestContext, *, ok: bool) -> None:
        ctx.state.pop(STATE_KEY, None)  # drop the vault as soon as the request ends


def _score(findings: tuple[Finding, ...]) -> float:
    return max((f.score for f in findings), default=0.0)


def _rewrite(m: Message, mi: int, new_texts: dict[tuple[int, int], str]) -> Message:
    parts = tuple(
        dataclasses.replace(p, text=new_texts[(mi, pi)]) if (mi, pi) in new_texts else p
        for pi, p in enumerate(m.parts)
    )
    calls = tuple(
        dataclasses.replace(tc, arguments=new_texts[(mi, -1 - ti)]) if (mi, -1 - ti) in new_texts else tc
        for ti, tc in enumerate(m.tool_calls)
    )
    return dataclasses.replace(m, parts=parts, tool_calls=calls)


__all__ = ["STATE_KEY", "ContentPart", "PIIGuard", "PIIState", "ToolCall"]
