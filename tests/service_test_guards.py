"""Test guards for the guard-service tests (``tests.service_test_guards:Class`` in test policies).

Small, deterministic stand-ins for an injection guard and a pseudonymizing PII guard, so the
service's plumbing (contexts, vault restore, streams, LiteLLM's Generic Guardrail API) is tested
on its own; the real guards are exercised through the same paths where the policy uses them.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from shared_guards.errors import ConfigError, ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources, StreamFilter
from shared_guards.types import (
    Action,
    Choice,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    PartKind,
    Stage,
)

ATTACK = re.compile(r"(?i)ignore (all )?(previous|prior) instructions")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}")
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
PLACEHOLDER = re.compile(r"<EMAIL_\d{1,4}>")
KEY = "svc_test_pii"


class PhraseInjectionGuard(Guard):
    name: ClassVar[str] = "svc_test_injection"

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        for i, _, text in request.texts():
            if ATTACK.search(text):
                f = Finding(guard=self.name, rule_id="svc_test.injection", layer="pattern", message_index=i)
                return GuardResult.block(ContentViolation("Prompt injection detected (rule svc_test.injection).",
                                                          rule_id="svc_test.injection"), (f,))
        return GuardResult.allow()


def _restore(text: str, vault: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: vault.get(m.group(0), m.group(0)), text)


class _RestoreFilter(StreamFilter):
    """Restores ``<EMAIL_n>`` and masks SSNs in a stream; holds back a possibly cut tail (≤ 16 chars)."""

    def __init__(self, vault: dict[str, str]) -> None:
        self.vault = vault
        self.pending: dict[int, str] = {}

    def _process(self, text: str) -> str:
        return SSN.sub("<US_SSN>", _restore(text, self.vault))

    def feed(self, delta: str, choice_index: int = 0) -> str:
        text = self.pending.get(choice_index, "") + delta
        cut = len(text)
        lt = text.rfind("<")
        if lt != -1 and ">" not in text[lt:] and len(text) - lt <= 16:
            cut = lt
        m = re.search(r"[\d-]{1,11}$", text[:cut])
        if m:
            cut = m.start()
        self.pending[choice_index] = text[cut:]
        return self._process(text[:cut])

    def flush(self, choice_index: int = 0) -> str:
        return self._process(self.pending.pop(choice_index, ""))


class VaultPIIGuard(Guard):
    """Emails → ``<EMAIL_n>`` (restored in answers), SSNs → ``<US_SSN>`` (never restored)."""

    name: ClassVar[str] = "svc_test_pii"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})
    modifies: ClassVar[bool] = True

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        vault: dict[str, str] = ctx.state.setdefault(KEY, {})
        by_value = {v: k for k, v in vault.items()}
        findings: list[Finding] = []

        def email(m: re.Match[str]) -> str:
            value = m.group(0)
            if value not in by_value:
                by_value[value] = f"<EMAIL_{len(by_value) + 1}>"
                vault[by_value[value]] = value
            findings.append(Finding(guard=self.name, rule_id="svc_test.email", entity_type="EMAIL_ADDRESS"))
            return by_value[value]

        def ssn(m: re.Match[str]) -> str:
            findings.append(Finding(guard=self.name, rule_id="svc_test.ssn", entity_type="US_SSN"))
            return "<US_SSN>"

        msgs = tuple(m.with_texts([SSN.sub(ssn, EMAIL.sub(email, p.text)) for p in m.parts
                                   if p.kind is PartKind.TEXT and p.text is not None]) for m in request.messages)
        if not findings:
            return GuardResult.allow()
        sanitized = GuardRequest(msgs, request.model, request.identity, request.max_tokens, request.stream,
                                 request.tools, request.request_id, request.metadata)
        return GuardResult(Action.MODIFY, tuple(findings), sanitized=sanitized)

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        vault: dict[str, str] = ctx.state.get(KEY, {})
        choices = tuple(Choice(c.index, SSN.sub("<US_SSN>", _restore(c.text, vault)), c.tool_calls, c.finish_reason)
                        for c in response.choices)
        if choices == response.choices:
            return GuardResult.allow()
        return GuardResult(Action.MODIFY, (), sanitized=GuardResponse(choices, response.usage, response.model))

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        return _RestoreFilter(ctx.state.setdefault(KEY, {}))


class EdgeAwareGuard(Guard):
    """A package guard declaring its own edge options: drops itself when ``heavy`` is set."""

    name: ClassVar[str] = "svc_test_edge_aware"

    class Config(GuardConfig):
        heavy: bool = False
        mode: str = "full"

    @classmethod
    def edge_options(cls, options: dict[str, Any]) -> dict[str, Any] | None:
        return None if options.get("heavy") else {**options, "mode": "edge"}

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        return GuardResult.allow()


class BrokenArtifactGuard(Guard):
    """Cannot be built (like a guard whose model file is missing or malformed)."""

    name: ClassVar[str] = "svc_test_broken"

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        raise ConfigError("svc_test_broken: artifact missing")

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        return GuardResult.allow()
