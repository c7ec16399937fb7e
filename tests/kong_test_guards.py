"""Test-only guards for the Kong plugin tests, loaded by policies as ``tests.kong_test_guards:Class``
inside the real plugin server process (its PYTHONPATH is the repo root)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from shared_guards.guard import Guard, GuardConfig, RequestContext
from shared_guards.types import Action, GuardRequest, GuardResponse, GuardResult, Stage

SECRET_TEXT = "exploding-guard-private-detail"


class RaisingGuard(Guard):
    """Raises (with text that must never reach the client) in the configured stage."""

    name: ClassVar[str] = "test_raising"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})

    class Config(GuardConfig):
        stage: Literal["request", "response"] = "request"

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        if self.config.stage == "request":  # type: ignore[attr-defined]
            raise RuntimeError(SECRET_TEXT)
        return GuardResult.allow()

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        if self.config.stage == "response":  # type: ignore[attr-defined]
            raise RuntimeError(SECRET_TEXT)
        return GuardResult.allow()


class SwapWordGuard(Guard):
    """Replaces a word with a placeholder in requests and restores it in answers, through the
    request context: proves the context survives from Kong's access phase to its response phase."""

    name: ClassVar[str] = "test_swap_word"
    modifies: ClassVar[bool] = True
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})

    class Config(GuardConfig):
        word: str = "alpha"
        placeholder: str = "<WORD_1>"

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        word, ph = self.config.word, self.config.placeholder  # type: ignore[attr-defined]
        if not any(word in m.text for m in request.messages):
            return GuardResult.allow()
        ctx.state[self.name] = {ph: word}
        msgs = tuple(m.with_texts([p.text.replace(word, ph) for p in m.parts if p.text is not None])
                     for m in request.messages)
        return GuardResult(Action.MODIFY, sanitized=dataclasses.replace(request, messages=msgs))

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        vault = ctx.state.get(self.name)
        if not vault:
            return GuardResult.allow()
        choices = []
        for c in response.choices:
            text = c.text
            for ph, word in vault.items():
                text = text.replace(ph, word)
            choices.append(dataclasses.replace(c, text=text))
        return GuardResult(Action.MODIFY, sanitized=dataclasses.replace(response, choices=tuple(choices)))


class CompletionProbeGuard(Guard):
    """Appends ``<probe> <ok>`` to a file when a request ends (``on_complete``): shows from outside
    the plugin server that every request is finished exactly once. ``probe`` comes from the body's
    ``metadata``."""

    name: ClassVar[str] = "test_completion_probe"

    class Config(GuardConfig):
        path: str

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        return GuardResult.allow()

    async def on_complete(self, ctx: RequestContext, *, ok: bool) -> None:
        req = ctx.original_request
        probe = str(req.metadata.get("probe", "")) if req is not None else ""
        with open(self.config.path, "a", encoding="utf-8") as fh:  # type: ignore[attr-defined]
            fh.write(f"{probe} {ok}\n")


class SleepGuard(Guard):
    """Takes ``seconds`` to decide (allows)."""

    name: ClassVar[str] = "test_sleep_kong"

    class Config(GuardConfig):
        seconds: float = 1.0

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        import asyncio

        await asyncio.sleep(self.config.seconds)  # type: ignore[attr-defined]
        return GuardResult.allow()
