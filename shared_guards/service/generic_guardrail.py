"""LiteLLM's Generic Guardrail API (``guardrail: generic_guardrail_api``), served by the guard service.

Contract (litellm 1.108.7: ``types/proxy/guardrails/guardrail_hooks/generic_guardrail_api.py`` and
``proxy/guardrails/guardrail_hooks/generic_guardrail_api/``): LiteLLM POSTs
``{api_base}/beta/litellm_basic_guardrail_api`` with ``texts`` (message texts, or the answer's
texts per choice), ``structured_messages``, ``images``, ``tools``, ``tool_calls``, ``model``,
``request_data`` (``user_api_key_*`` identity), ``input_type`` (request | response) and
``litellm_call_id``; it expects ``{action: BLOCKED | NONE | GUARDRAIL_INTERVENED, blocked_reason,
texts, stream_holdback_chars}``. A BLOCKED answer reaches the client as a 400 carrying
``blocked_reason``.

The request stage's context (pseudonymization vault, quota reservation) is kept under the call id,
so the answer (same ``litellm_call_id``) gets its placeholders restored. With
``streaming_transform_mode: incremental_diff`` LiteLLM re-sends the growing streamed answer every
few chunks; each round is checked as a whole and the last ``stream_holdback`` characters are held
back, so a placeholder or PII value cut at the end is never emitted half-way.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared_guards.errors import GuardViolation
from shared_guards.guard import RequestContext
from shared_guards.openai_format import parse_chat_request
from shared_guards.service.schemas import GenericGuardrailRequestIn, GenericMetadataIn
from shared_guards.service.sessions import Entry
from shared_guards.service.state import ServiceState
from shared_guards.types import Choice, Decision, GuardRequest, GuardResponse, Identity, Message, PartKind

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
PATH = "/beta/litellm_basic_guardrail_api"


def _texts_of(messages: tuple[Message, ...]) -> list[str]:
    return [p.text for m in messages for p in m.parts if p.kind is PartKind.TEXT and p.text is not None]


def _blocked(v: GuardViolation) -> dict[str, Any]:
    return {"action": "BLOCKED", "blocked_reason": v.message}


def _finding_keys(d: Decision) -> frozenset[tuple[str, str, str]]:
    return frozenset((f.guard, f.rule_id, f.entity_type) for f in d.findings)


class GenericGuardrail:
    def __init__(self, state: ServiceState) -> None:
        self.s = state

    # -- identity ---------------------------------------------------------------------------------

    def identity(self, md: GenericMetadataIn) -> Identity:
        """``request_data`` → Identity. A key hash listed in the policy's ``api_keys`` wins; else
        LiteLLM's user, team (id, then alias), key alias and org."""
        policy = self.s.engine.loaded.policy
        h = (md.user_api_key_hash or "").lower()
        if _HEX64.match(h):
            for k in policy.api_keys:
                if hmac.compare_digest(k.digest(), h):
                    return Identity(user=k.user, key_alias=k.key_alias, department=k.department,
                                    team=k.department, gateway="litellm")
        base = Identity(user=md.user_api_key_user_id, team=md.user_api_key_team_id, key_alias=md.user_api_key_alias,
                        tenant=md.user_api_key_org_id, gateway="litellm")
        alias = md.user_api_key_team_alias
        if alias and alias != base.team and policy.resolve(base) is None:
            with_alias = Identity(user=base.user, team=alias, key_alias=base.key_alias, tenant=base.tenant,
                                  gateway="litellm")
            if policy.resolve(with_alias) is not None:
                return with_alias
        return base

    # -- request ----------------------------------------------------------------------------------

    def build_request(self, obj: GenericGuardrailRequestIn, identity: Identity, request_id: str) -> GuardRequest:
        texts = obj.texts or []
        model = obj.model or "unknown"
        if obj.structured_messages:
            try:
                parsed = parse_chat_request({"model": model, "messages": obj.structured_messages,
                                             "tools": obj.tools or []}, identity, request_id)
            except GuardViolation:
                parsed = None
            if parsed is not None and _texts_of(parsed.messages) == texts:
                if obj.images and not any(p.kind is PartKind.IMAGE for m in parsed.messages for p in m.parts):
                    parsed = parse_chat_request({"model": model, "tools": obj.tools or [], "messages": [
                        *obj.structured_messages,
                        {"role": "user", "content": [{"type": "image_url"} for _ in obj.images]}]},
                        identity, request_id)
                return parsed
        # Roles unknown: every text is scanned as user text (the strictest reading).
        messages: list[dict[str, Any]] = [{"role": "user", "content": t} for t in texts]
        if obj.images:
            messages.append({"role": "user", "content": [{"type": "image_url"} for _ in obj.images]})
        if obj.tool_calls:
            messages.append({"role": "assistant", "content": None, "tool_calls": obj.tool_calls})
        if not messages:
            messages.append({"role": "user", "content": ""})
        return parse_chat_request({"model": model, "messages": messages, "tools": obj.tools or []},
                                  identity, request_id)

    async def _request(self, obj: GenericGuardrailRequestIn) -> dict[str, Any]:
        call_id = obj.litellm_call_id or ""
        try:
            greq = self.build_request(obj, self.identity(obj.request_data), call_id)
        except GuardViolation as v:
            return _blocked(v)
        decision, ctx = await self.s.engine.check_request(greq)
        self.s.metrics.decisions.labels("litellm_request", decision.action.value).inc()
        if decision.blocked:
            assert decision.violation is not None
            return _blocked(decision.violation)
        if ctx is not None:
            if call_id:
                await self.s.sessions.put("litellm:" + call_id, ctx)
                self.s.metrics.contexts.set(len(self.s.sessions))
            else:
                await self.s.engine.finish(ctx, ok=True)
        if not decision.changed:
            return {"action": "NONE"}
        texts = _texts_of(decision.request.messages)
        if len(texts) != len(obj.texts or []):  # cannot be mapped back: never forward the original
            return {"action": "BLOCKED", "blocked_reason": "The sanitized request could not be mapped back "
                                                           "(rule service.unmappable)."}
        return {"action": "GUARDRAIL_INTERVENED", "texts": texts}

    # -- response ---------------------------------------------------------------------------------

    async def _response(self, obj: GenericGuardrailRequestIn) -> dict[str, Any]:
        texts = obj.texts or []
        key = "litellm:" + obj.litellm_call_id if obj.litellm_call_id else ""
        entry: Entry | None = self.s.sessions.get(key) if key else None
        ctx: RequestContext
        if entry is not None:
            ctx = entry.ctx
        else:  # no request stage seen (expired, or only post_call configured): a fresh context
            greq = GuardRequest(messages=(), model=obj.model or "unknown", identity=self.identity(obj.request_data),
                                request_id=obj.litellm_call_id or "")
            try:
                ctx = self.s.engine.new_context(greq)
            except GuardViolation as v:
                return _blocked(v)
            ctx.request = greq
        gresp = GuardResponse(tuple(Choice(index=i, text=t) for i, t in enumerate(texts)), model=obj.model or "")
        if entry is None or entry.rounds == 0:
            decision = await self.s.engine.check_response(ctx, gresp)
        else:  # a later round of the same streamed answer: audit only what is new
            decision = await self.s.engine.pipeline(ctx.department).run_response(gresp, ctx)
            if decision.blocked or not _finding_keys(decision) <= entry.seen:
                self.s.engine.record(decision, ctx, stream_round=entry.rounds + 1)
        self.s.metrics.decisions.labels("litellm_response", decision.action.value).inc()
        if entry is not None:
            entry.rounds += 1
            entry.answered = True
            entry.seen |= _finding_keys(decision)
            entry.deadline = time.monotonic() + self.s.settings.generic_linger  # more rounds may follow
        if decision.blocked:
            assert decision.violation is not None
            if entry is not None:
                await self.s.sessions.close(key, ok=False)
            else:
                await self.s.engine.finish(ctx, ok=False)
            return _blocked(decision.violation)
        if entry is None:
            await self.s.engine.finish(ctx, ok=True)
        out_texts = texts
        if decision.changed and decision.response is not None:
            by_index = {c.index: c.text for c in decision.response.choices}
            out_texts = [by_index.get(i, t) for i, t in enumerate(texts)]
        hold = self.s.settings.stream_holdback
        result: dict[str, Any] = {"action": "GUARDRAIL_INTERVENED" if out_texts != texts else "NONE",
                                  "stream_holdback_chars": [min(len(t), hold) for t in out_texts]}
        if out_texts != texts:
            result["texts"] = out_texts
        return result

    async def handle(self, request: Request, obj: GenericGuardrailRequestIn, data: dict[str, Any]) -> Response:
        result = await (self._request(obj) if obj.input_type == "request" else self._response(obj))
        return JSONResponse(result)
