"""`/v1/guard/*`: check a request, its answer, or a streamed answer chunk by chunk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared_guards.errors import GuardViolation
from shared_guards.openai_format import apply_request, apply_response, parse_chat_request, parse_chat_response
from shared_guards.service.http import HttpError
from shared_guards.service.schemas import ChunkIn, GuardRequestIn, GuardResponseIn, StreamEndIn
from shared_guards.service.sessions import Entry
from shared_guards.service.state import ServiceState, decision_out, header_identity, violation_out
from shared_guards.types import Action, Decision, Identity, Stage


class Ids:
    """Request ids (audit correlation: unique, not secret) and context ids (unguessable: an HMAC of
    a counter under a per-process key). One ``os.urandom`` at start instead of one per request
    (it costs ~0.8 ms per call on some virtual machines)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def request_id(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"

    def context_id(self) -> str:
        n = next(self._counter).to_bytes(8, "big")
        return base64.urlsafe_b64encode(hmac.new(self._key, n, hashlib.sha256).digest()[:24]).decode()


def _unknown(context_id: str) -> HttpError:
    return HttpError(404, "Unknown or expired context id.", code="context_not_found", param="context_id")


class GuardApi:
    def __init__(self, state: ServiceState) -> None:
        self.s = state
        self.ids = Ids()

    def _identity(self, request: Request, obj: GuardRequestIn) -> Identity:
        fields = header_identity(request.headers)
        api_key = None
        if obj.identity is not None:
            given = obj.identity.model_dump(exclude_none=True, exclude_defaults=True)
            api_key = given.pop("api_key", None)
            if "groups" in given:
                given["groups"] = tuple(given["groups"])
            fields.update(given)
        if api_key:
            found = self.s.engine.authenticate_key(api_key)
            if found is None:  # an unknown key is an unknown identity: claimed fields must not stand in
                return Identity(gateway="service")
            # the policy's key entry wins over claimed fields
            fields.update(user=found.user, key_alias=found.key_alias, department=found.department,
                          team=found.team)
        return Identity(**fields, gateway="service")

    async def request(self, request: Request, obj: GuardRequestIn, data: dict[str, Any]) -> Response:
        body = dict(data["body"])
        for key in ("max_tokens", "max_completion_tokens"):  # 2.0 → 2, as validated
            if body.get(key) is not None:
                body[key] = getattr(obj.body, key)
        request_id = obj.request_id or self.ids.request_id()
        greq = parse_chat_request(body, self._identity(request, obj), request_id=request_id)
        decision, ctx = await self.s.engine.check_request(greq)
        self.s.metrics.decisions.labels("request", decision.action.value).inc()
        context_id = None
        if ctx is not None and not decision.blocked:
            if obj.expect_response:
                context_id = self.ids.context_id()
                await self.s.sessions.put(context_id, ctx)
            else:
                await self.s.engine.finish(ctx, ok=True)
        self.s.metrics.contexts.set(len(self.s.sessions))
        out = decision_out(decision)
        out.update(
            context_id=context_id,
            request_id=request_id,
            department=decision.department or (ctx.department if ctx else None),
            policy_version=decision.policy_version,
            body=None if decision.blocked else apply_request(body, decision.request),
            expires_in=self.s.settings.context_ttl if context_id else None,
        )
        return JSONResponse(out)

    async def response(self, request: Request, obj: GuardResponseIn, data: dict[str, Any]) -> Response:
        entry = self.s.sessions.get(obj.context_id)
        if entry is None:
            raise _unknown(obj.context_id)
        body = data["body"]
        decision = await self.s.engine.check_response(entry.ctx, parse_chat_response(body))
        entry.answered = True
        self.s.metrics.decisions.labels("response", decision.action.value).inc()
        if obj.final or decision.blocked:
            await self.s.sessions.close(obj.context_id, ok=not decision.blocked)
        self.s.metrics.contexts.set(len(self.s.sessions))
        out = decision_out(decision)
        resp = decision.response
        out.update(context_id=obj.context_id,
                   body=None if decision.blocked or resp is None else apply_response(body, resp))
        return JSONResponse(out)

    def _entry(self, request: Request) -> tuple[str, Entry]:
        context_id = str(request.path_params["context_id"])
        entry = self.s.sessions.get(context_id)
        if entry is None:
            raise _unknown(context_id)
        return context_id, entry

    async def _stopped(self, context_id: str, entry: Entry, v: GuardViolation) -> dict[str, Any]:
        ctx = entry.ctx
        req = ctx.request or ctx.original_request
        if req is not None:
            self.s.engine.record(Decision(Stage.RESPONSE, Action.BLOCK, req, violation=v, department=ctx.department,
                                          policy_version=self.s.engine.loaded.version), ctx, stream="stopped")
        await self.s.sessions.close(context_id, ok=False)
        self.s.metrics.decisions.labels("stream", "block").inc()
        self.s.metrics.streams.set(self.s.sessions.open_streams)
        return {"context_id": context_id, "action": "block", "blocked": True, "violation": violation_out(v)}

    async def chunk(self, request: Request, obj: ChunkIn, data: dict[str, Any]) -> Response:
        context_id, entry = self._entry(request)
        stream = self.s.sessions.stream(entry)
        entry.answered = True
        self.s.metrics.streams.set(self.s.sessions.open_streams)
        try:
            text = stream.feed(obj.delta, obj.choice_index)
        except GuardViolation as v:
            return JSONResponse({**await self._stopped(context_id, entry, v), "text": ""})
        entry.choices.add(obj.choice_index)
        return JSONResponse({"context_id": context_id, "text": text, "action": "allow", "blocked": False,
                             "violation": None})

    async def end(self, request: Request, obj: StreamEndIn, data: dict[str, Any]) -> Response:
        context_id, entry = self._entry(request)
        stream = self.s.sessions.stream(entry)
        choices: list[dict[str, Any]] = []
        try:
            for idx in sorted(entry.choices or {0}):
                choices.append({"index": idx, "text": stream.flush(idx)})
        except GuardViolation as v:
            return JSONResponse({**await self._stopped(context_id, entry, v), "text": "", "choices": []})
        await self.s.sessions.close(context_id, ok=True)
        self.s.metrics.streams.set(self.s.sessions.open_streams)
        self.s.metrics.contexts.set(len(self.s.sessions))
        self.s.metrics.decisions.labels("stream", "allow").inc()
        first = next((c["text"] for c in choices if c["index"] == 0), "")
        return JSONResponse({"context_id": context_id, "text": first, "choices": choices, "action": "allow",
                             "blocked": False, "violation": None})
