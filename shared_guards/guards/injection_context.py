"""Guard ``injection_context``: role-aware injection checks and canary tokens.

Policy example::

    - name: injection_context
      action: block
      options:
        threshold: 0.5
        data_roles: [tool, function, document]   # segments that carry data, not instructions
        canary: true              # insert a random marker into the system prompt ...
        canary_action: block      # ... and block (or alert) when an answer contains it

Request stage: imperatives aimed at the assistant inside data segments (indirect injection),
attempts to replace the system prompt or claim a privileged role in user turns, fake turns and
chat-template delimiters in any non-system segment (see :mod:`shared_guards.injection.context`).
With ``canary: true`` the guard also *modifies* the request: a per-request random canary goes into
the first system message, kept in ``ctx.state`` (never logged or put into a finding). Response
stage and streams: an answer containing the canary is a prompt leak, rule ``context.canary_leak``.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, StreamFilter
from shared_guards.guards.injection_pattern import INLINE_LIMIT
from shared_guards.injection.context import (
    DATA_ROLES,
    CanaryStreamFilter,
    analyze_context,
    contains_canary,
    insert_canary,
    make_canary,
)
from shared_guards.types import Action, Finding, GuardRequest, GuardResponse, GuardResult, Role, Stage

log = logging.getLogger("shared_guards.guards.injection_context")

CANARY_RULE = "context.canary_leak"


class CanaryAction(StrEnum):
    BLOCK = "block"
    ALERT = "alert"


class ContextConfig(GuardConfig):
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    data_roles: list[Role] = Field(default_factory=lambda: sorted(DATA_ROLES),
                                   description="Roles whose content is data (indirect-injection checks).")
    canary: bool = Field(False, description="Insert a per-request canary into the system prompt.")
    canary_action: CanaryAction = CanaryAction.BLOCK
    canary_without_system: bool = Field(False, description="Add a system message for the canary when "
                                                           "the request has none.")


def _severity(score: float) -> str:
    return "critical" if score >= 0.85 else "high" if score >= 0.6 else "medium" if score >= 0.35 else "low"


class _CanaryFilter(StreamFilter):
    def __init__(self, guard: ContextGuard, canary: str, ctx: RequestContext) -> None:
        self.guard = guard
        self.ctx = ctx
        self.inner = CanaryStreamFilter(canary, self._leak)

    def _leak(self, choice_index: int) -> None:
        self.guard.record_leak(self.ctx, choice_index)
        if self.guard.cfg.canary_action is CanaryAction.BLOCK:
            raise self.guard.leak_violation()

    def feed(self, delta: str, choice_index: int = 0) -> str:
        return self.inner.feed(delta, choice_index)

    def flush(self, choice_index: int = 0) -> str:
        return self.inner.flush(choice_index)


class ContextGuard(Guard):
    name: ClassVar[str] = "injection_context"
    Config: ClassVar[type[GuardConfig]] = ContextConfig
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})
    modifies: ClassVar[bool] = True  # only when ``canary`` is on (the canary goes into the system prompt)

    def __init__(self, config: GuardConfig, resources: Any) -> None:
        super().__init__(config, resources)
        assert isinstance(config, ContextConfig)
        self.cfg = config
        self.data_roles = frozenset(config.data_roles)

    def _state(self, ctx: RequestContext) -> dict[str, Any]:
        st = ctx.state.get(self.name)
        if not isinstance(st, dict):
            st = ctx.state[self.name] = {}
        return st

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        if sum(len(t) for _, _, t in request.texts()) > INLINE_LIMIT:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self.resources.executor, lambda: analyze_context(request, data_roles=self.data_roles))
        else:
            result = analyze_context(request, data_roles=self.data_roles)
        findings = tuple(
            Finding(guard=self.name, rule_id=f.rule_id, layer="context", score=f.score, category=f.category,
                    message_index=f.message_index, start=f.start, end=f.end, severity=_severity(f.score))
            for f in result.findings
        )
        st = self._state(ctx)
        st["score"] = result.score
        top = result.top
        if top is not None and result.score >= self.cfg.threshold:
            violation = ContentViolation(
                f"Request blocked: prompt injection detected (rule {top.rule_id}, layer context, "
                f"message {top.message_index}, role {top.role}, score {result.score:.2f}).",
                rule_id=top.rule_id, code="prompt_injection", param=f"messages[{top.message_index}]",
            )
            return GuardResult.block(violation, findings, result.score)
        if self.cfg.canary:
            canary = make_canary()
            modified = insert_canary(request, canary, create_system=self.cfg.canary_without_system)
            if modified is not None:
                st["canary"] = canary
                return GuardResult(Action.MODIFY, findings, result.score, sanitized=modified)
        return GuardResult.allow(findings, result.score)

    # -- canary ----------------------------------------------------------------------------------

    def leak_violation(self) -> ContentViolation:
        return ContentViolation(
            f"Response blocked: the answer reveals the system prompt (rule {CANARY_RULE}).",
            rule_id=CANARY_RULE, code="prompt_leak", param=None,
        )

    def record_leak(self, ctx: RequestContext, choice_index: int) -> None:
        st = self._state(ctx)
        st["canary_leak"] = True
        log.warning("canary leak detected (request %s, choice %d, action %s)", ctx.request_id, choice_index,
                    self.cfg.canary_action.value)

    def _canary(self, ctx: RequestContext) -> str | None:
        st = ctx.state.get(self.name)
        if isinstance(st, dict):
            c = st.get("canary")
            return c if isinstance(c, str) else None
        return None

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        canary = self._canary(ctx)
        if canary is None:
            return GuardResult.allow()
        for ch in response.choices:
            texts = [ch.text, *(c.arguments for c in ch.tool_calls)]
            if any(contains_canary(t, canary) for t in texts if t):
                self.record_leak(ctx, ch.index)
                finding = Finding(guard=self.name, rule_id=CANARY_RULE, layer="context", score=1.0,
                                  category="prompt_leak", message_index=ch.index, severity="critical")
                if self.cfg.canary_action is CanaryAction.ALERT:
                    return GuardResult(Action.ALERT, (finding,), 1.0)
                return GuardResult.block(self.leak_violation(), (finding,))
        return GuardResult.allow()

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        canary = self._canary(ctx)
        if canary is None:
            return None
        return _CanaryFilter(self, canary, ctx)
