"""Test-only guards, referenced from test policies as ``tests.guards_for_tests:ClassName``.

They exercise the adapter paths a real guard rarely takes: a guard that raises, one that outlives
its timeout, one that rewrites the request, the answer and the stream, one that stops a stream,
one that blocks an answer and one that answers with a quota error (429 + Retry-After).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from shared_guards.errors import ContentViolation, QuotaExceeded
from shared_guards.guard import Guard, GuardConfig, RequestContext, StreamFilter
from shared_guards.types import (
    Action,
    Choice,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    Stage,
)


class ExplodingGuard(Guard):
    """Raises on every request (the message must never reach the client)."""

    name: ClassVar[str] = "test_exploding"

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        raise RuntimeError("internal detail that must not leak: " + request.texts()[-1][2])


class SleepyConfig(GuardConfig):
    sleep_ms: int = 3000


class SleepyGuard(Guard):
    """Sleeps longer than its ``timeout_ms``."""

    name: ClassVar[str] = "test_sleepy"
    Config: ClassVar[type[GuardConfig]] = SleepyConfig

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        assert isinstance(self.config, SleepyConfig)
        await asyncio.sleep(self.config.sleep_ms / 1000)
        return GuardResult.allow()


class _Upper(StreamFilter):
    def feed(self, delta: str, choice_index: int = 0) -> str:
        return delta.upper()

    def flush(self, choice_index: int = 0) -> str:
        return ""


class ShoutingGuard(Guard):
    """Rewrites: ``secret`` → ``[REDACTED]`` in requests; answers and streams upper-cased."""

    name: ClassVar[str] = "test_shouting"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})
    modifies: ClassVar[bool] = True

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        if not any("secret" in t for _, _, t in request.texts()):
            return GuardResult.allow()
        msgs = tuple(m.with_texts([p.text.replace("secret", "[REDACTED]") for p in m.parts
                                   if p.text is not None]) for m in request.messages)
        finding = Finding(guard=self.name, rule_id="test.redact", layer="test")
        return GuardResult(Action.MODIFY, (finding,), sanitized=GuardRequest(
            msgs, request.model, request.identity, request.max_tokens, request.stream, request.tools,
            request.request_id, request.metadata))

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        choices = tuple(Choice(c.index, c.text.upper(), c.tool_calls, c.finish_reason) for c in response.choices)
        return GuardResult(Action.MODIFY, (), sanitized=GuardResponse(choices, response.usage, response.model))

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        return _Upper()


class _StopOn(StreamFilter):
    def __init__(self, word: str) -> None:
        self.word = word
        self.seen = ""

    def feed(self, delta: str, choice_index: int = 0) -> str:
        self.seen = (self.seen + delta)[-200:]
        if self.word in self.seen.lower():
            raise ContentViolation("Answer stopped by rule test.stream_stop.", rule_id="test.stream_stop")
        return delta

    def flush(self, choice_index: int = 0) -> str:
        return ""


class StreamStopGuard(Guard):
    """Stops a streamed answer once it contains ``forbidden``; blocks whole answers containing ``leak``."""

    name: ClassVar[str] = "test_stream_stop"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        return GuardResult.allow()

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        if any("leak" in c.text.lower() for c in response.choices):
            v = ContentViolation("Answer blocked by rule test.answer_leak.", rule_id="test.answer_leak")
            return GuardResult.block(v, (Finding(guard=self.name, rule_id="test.answer_leak"),))
        return GuardResult.allow()

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        return _StopOn("forbidden")


class AlwaysQuotaGuard(Guard):
    """Every request is over quota (429 with Retry-After: 7)."""

    name: ClassVar[str] = "test_quota"
    tier: ClassVar[int] = 0

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        v = QuotaExceeded("Quota exhausted (rule test.quota).", retry_after=6.2, rule_id="test.quota")
        return GuardResult.block(v, (Finding(guard=self.name, rule_id="test.quota"),))


class _HoldAll(StreamFilter):
    def __init__(self) -> None:
        self.held: dict[int, str] = {}

    def feed(self, delta: str, choice_index: int = 0) -> str:
        self.held[choice_index] = self.held.get(choice_index, "") + delta
        return ""

    def flush(self, choice_index: int = 0) -> str:
        return "<" + self.held.pop(choice_index, "") + ">"


class HoldingGuard(Guard):
    """Holds back the whole streamed answer and releases it, bracketed, on flush."""

    name: ClassVar[str] = "test_holding"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        return GuardResult.allow()

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        return _HoldAll()
