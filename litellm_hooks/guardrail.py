"""The LiteLLM guardrail: translates LiteLLM's hooks into the guard engine's stages. No security
logic lives here: the engine decides, this class only maps requests in and decisions out.

Hooks (each checks ``should_run_guardrail`` first, as LiteLLM's contract asks):

- ``pre_call``: the request stage; blocks, or forwards the sanitized messages.
- ``during_call``: the request stage in parallel with the model call; can only reject.
- ``post_call``: the response stage for whole answers; the streaming iterator hook (defined on
  this class itself, LiteLLM skips inherited ones) runs each guard's stream filter on the deltas
  and the response stage on the assembled text at the end.

The per-request :class:`RequestContext` lives in ``engine.contexts`` keyed by LiteLLM's call id,
never in ``data["metadata"]`` (loggers serialize it). Anything that is not a violation is caught
here and answered per the policy's ``on_error`` (503 when fail_closed), never a raw 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.guardrails import GuardrailEventHooks

from litellm_hooks.common import configure, http_error, identity_from_auth
from litellm_hooks.common import engine as get_engine
from litellm_hooks.common import policy_path as resolve_policy_path
from shared_guards.engine import GuardEngine
from shared_guards.errors import GuardUnavailable, GuardViolation, MalformedRequest
from shared_guards.guard import RequestContext
from shared_guards.openai_format import apply_request, parse_chat_request, parse_chat_response
from shared_guards.policy import OnError
from shared_guards.types import Action, Choice, Decision, GuardRequest, GuardResponse, Role, Stage, Usage

log = logging.getLogger("litellm_hooks.guardrail")

MAX_STREAM_TEXT = 1_000_000  # characters kept per choice for the end-of-stream response check


def _call_id(data: Mapping[str, Any]) -> str:
    cid = data.get("litellm_call_id")
    if isinstance(cid, str) and cid:
        return cid
    meta = data.get("metadata")
    if isinstance(meta, Mapping) and isinstance(meta.get("litellm_call_id"), str):
        return str(meta["litellm_call_id"])
    return ""


def _chat_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of LiteLLM's ``data`` the core reads, as a chat-completions body.

    Text completions (``prompt``) and embeddings/responses (``input``) become one user message so
    RBAC and content guards see them too."""
    body: dict[str, Any] = {k: data[k] for k in ("model", "messages", "max_tokens", "max_completion_tokens",
                                                 "stream", "tools", "functions") if k in data}
    if "messages" not in body:
        raw = data.get("prompt", data.get("input"))
        if isinstance(raw, str):
            body["messages"] = [{"role": "user", "content": raw}]
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            body["messages"] = [{"role": "user", "content": x} for x in raw] or [{"role": "user", "content": ""}]
    return body


class SecureLLMGuardrail(CustomGuardrail):
    """One guardrail for every mode; the policy path comes from ``litellm_params.policy_path``."""

    def __init__(self, policy_path: str | None = None, **kwargs: Any) -> None:
        self.policy_path = resolve_policy_path(policy_path)
        kwargs.setdefault("supported_event_hooks", [GuardrailEventHooks.pre_call, GuardrailEventHooks.during_call,
                                                    GuardrailEventHooks.post_call])
        super().__init__(**kwargs)
        # Load (and validate) the policy now: a bad policy fails the proxy's start-up, loudly.
        self.engine: GuardEngine = get_engine(self.policy_path)
        configure(self.policy_path)
        # Build every department's pipeline (models, rule packs) now, not inside the proxy's event
        # loop on the first request, where it would stall every other request.
        self.engine.warm_up()
        # x-ratelimit-* headers of allowed requests (quota guard) by call id, until LiteLLM asks
        # for them in async_post_call_response_headers_hook. Bounded; values are numbers only.
        self._response_headers: dict[str, dict[str, str]] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def _fail(self, ctx: RequestContext | None, exc: BaseException, stage: str) -> GuardViolation | None:
        """An unexpected adapter error: the violation to answer with (fail_closed) or None (fail_open)."""
        log.error("secure-llm-guard %s hook failed: %s", stage, type(exc).__name__)
        loaded = self.engine.loaded.policy
        on_error = loaded.defaults.on_error
        if ctx is not None:
            on_error = ctx.policy.on_error or on_error
        if on_error is OnError.FAIL_OPEN:
            return None
        return GuardUnavailable(f"The guard is unavailable during {stage} and the policy is fail_closed "
                                "(rule adapter.error).", rule_id="adapter.error")

    async def _request_stage(self, data: dict[str, Any], user_api_key_dict: Any, *, modify: bool) -> None:
        key = _call_id(data)
        if key and self.engine.contexts.get(key) is not None:
            return  # already checked by another mode of this guardrail for this call
        ctx: RequestContext | None = None
        try:
            identity = identity_from_auth(user_api_key_dict)
            request = parse_chat_request(_chat_body(data), identity, request_id=key)
            decision, ctx = await self.engine.check_request(request)
        except MalformedRequest as v:
            raise http_error(v) from None
        except Exception as exc:
            violation = self._fail(ctx, exc, "the request check")
            if violation is not None:
                raise http_error(violation) from None
            return
        if decision.blocked:
            assert decision.violation is not None
            raise http_error(decision.violation)
        if ctx is None:
            return
        if key:
            self.engine.contexts.put(key, ctx)
            if decision.headers:
                self._response_headers[key] = dict(decision.headers)
                while len(self._response_headers) > 10_000:
                    self._response_headers.pop(next(iter(self._response_headers)))
        if modify and decision.changed:
            if isinstance(data.get("messages"), list):
                data["messages"] = apply_request({"messages": data["messages"]}, decision.request)["messages"]
            else:  # text completions / embeddings: the sanitized text goes back where it came from
                _write_back_prompt(data, decision.request)

    # -- LiteLLM hooks ---------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: Any) -> dict[str, Any] | None:
        if not self.should_run_guardrail(data=data, event_type=GuardrailEventHooks.pre_call):
            return data
        await self._request_stage(data, user_api_key_dict, modify=True)
        return data

    async def async_moderation_hook(self, data: dict[str, Any], user_api_key_dict: Any, call_type: Any) -> Any:
        if not self.should_run_guardrail(data=data, event_type=GuardrailEventHooks.during_call):
            return None
        await self._request_stage(data, user_api_key_dict, modify=False)
        return None

    async def async_post_call_success_hook(self, data: dict[str, Any], user_api_key_dict: Any, response: Any) -> Any:
        if not self.should_run_guardrail(data=data, event_type=GuardrailEventHooks.post_call):
            return response
        ctx = self.engine.contexts.pop(_call_id(data))
        if ctx is None:
            return response
        ok = False
        try:
            body = response.model_dump() if hasattr(response, "model_dump") else response
            if not isinstance(body, Mapping) or "choices" not in body:
                ok = True
                return response  # not a chat answer (embeddings...): nothing to check
            decision = await self.engine.check_response(ctx, parse_chat_response(body))
            if decision.blocked:
                assert decision.violation is not None
                raise http_error(decision.violation)
            if decision.changed and decision.response is not None:
                _write_back(response, decision.response)
            ok = True
            return response
        except HTTPException:
            raise
        except GuardViolation as v:
            raise http_error(v) from None
        except Exception as exc:
            violation = self._fail(ctx, exc, "the response check")
            if violation is not None:
                raise http_error(violation) from None
            ok = True
            return response
        finally:
            await self._finish(ctx, ok)

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> Any:
        try:
            ctx = self.engine.contexts.pop(_call_id(request_data)) if isinstance(request_data, Mapping) else None
            if ctx is not None:
                await self._finish(ctx, False)
        except Exception as exc:  # never turn a failure into another failure
            log.error("secure-llm-guard failure hook: %s", type(exc).__name__)
        return None

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict: Any, response: Any,
                                                      request_data: dict[str, Any]) -> AsyncGenerator[Any, None]:
        if not self.should_run_guardrail(data=request_data, event_type=GuardrailEventHooks.post_call):
            async for chunk in response:
                yield chunk
            return
        ctx = self.engine.contexts.pop(_call_id(request_data))
        if ctx is None:
            async for chunk in response:
                yield chunk
            return
        ok = False
        texts: dict[int, list[str]] = {}
        sizes: dict[int, int] = {}
        last: Any = None
        usage: Usage | None = None
        try:
            session = self.engine.open_stream(ctx)
            flushed: set[int] = set()

            def keep(idx: int, text: str) -> None:
                if text and sizes.get(idx, 0) < MAX_STREAM_TEXT:
                    texts.setdefault(idx, []).append(text)
                    sizes[idx] = sizes.get(idx, 0) + len(text)

            async for chunk in response:
                last = chunk
                for choice in getattr(chunk, "choices", None) or []:
                    delta = getattr(choice, "delta", None)
                    if delta is None:
                        continue
                    idx = int(getattr(choice, "index", 0) or 0)
                    raw = getattr(delta, "content", None)
                    content = raw if isinstance(raw, str) else ""
                    has_text = bool(content)
                    out = (session.feed(content, idx) if session.active else content) if has_text else ""
                    if session.active and getattr(choice, "finish_reason", None) and idx not in flushed:
                        out += session.flush(idx)  # held-back text goes out with the choice's last chunk
                        flushed.add(idx)
                    if has_text or out:
                        delta.content = out
                        keep(idx, out)
                u = getattr(chunk, "usage", None)
                if u is not None and getattr(u, "completion_tokens", None) is not None:
                    usage = Usage(int(u.prompt_tokens or 0), int(u.completion_tokens or 0))
                yield chunk
            if session.active:  # a stream that ended without finish_reason
                for idx in sorted((set(texts) | {0}) - flushed):
                    tail = session.flush(idx)
                    if tail and last is not None:
                        keep(idx, tail)
                        yield _tail_chunk(last, idx, tail)
            answer = GuardResponse(tuple(Choice(i, "".join(t)) for i, t in sorted(texts.items())), usage,
                                   str(request_data.get("model", "")))
            decision = await self.engine.check_response(ctx, answer)
            if decision.blocked:
                assert decision.violation is not None
                raise decision.violation
            ok = True
        except GuardViolation as v:
            self._record_stream_stop(ctx, v)
            yield _sse_error(v)
        except Exception as exc:
            violation = self._fail(ctx, exc, "the streamed answer")
            if violation is not None:
                yield _sse_error(violation)
            else:
                ok = True
        finally:
            await self._finish(ctx, ok)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Without ``post_call`` in the mode no response hook ends the request: end it here."""
        await self._finish_unhooked(kwargs, ok=True)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        await self._finish_unhooked(kwargs, ok=False)

    async def async_post_call_response_headers_hook(self, data: dict[str, Any], user_api_key_dict: Any,
                                                    response: Any, request_headers: dict[str, str] | None = None,
                                                    litellm_call_info: dict[str, object] | None = None,
                                                    ) -> dict[str, str] | None:
        """Expose the request stage's headers (remaining quota) on allowed answers."""
        return self._response_headers.pop(_call_id(data), None) if isinstance(data, Mapping) else None

    # -- internals -------------------------------------------------------------------------------

    async def _finish_unhooked(self, kwargs: Any, *, ok: bool) -> None:
        try:
            if self._event_hook_is_event_type(GuardrailEventHooks.post_call) or not isinstance(kwargs, Mapping):
                return  # the post_call hooks own the end of the request (logging may run before them)
            ctx = self.engine.contexts.pop(_call_id(kwargs))
            if ctx is not None:
                await self._finish(ctx, ok)
        except Exception as exc:
            log.error("secure-llm-guard logging hook: %s", type(exc).__name__)

    def _record_stream_stop(self, ctx: RequestContext, v: GuardViolation) -> None:
        request = ctx.request or ctx.original_request
        if request is None:
            return
        decision = Decision(Stage.RESPONSE, Action.BLOCK, request, violation=v, department=ctx.department,
                            policy_version=self.engine.loaded.version)
        self.engine.record(decision, ctx, stream_stopped=True)

    async def _finish(self, ctx: RequestContext, ok: bool) -> None:
        try:
            await self.engine.finish(ctx, ok=ok)
        except Exception as exc:
            log.error("secure-llm-guard finish failed: %s", type(exc).__name__)


def _write_back_prompt(data: dict[str, Any], request: GuardRequest) -> None:
    """Put the sanitized texts back into ``prompt`` / ``input`` (``_chat_body`` made one user
    message per string). Never forward the original when the shapes do not line up."""
    key = "prompt" if "prompt" in data else "input"
    raw = data.get(key)
    texts = [m.text for m in request.messages if m.role is Role.USER]  # a guard may add a system message
    if isinstance(raw, str) and len(texts) == 1:
        data[key] = texts[0]
    elif isinstance(raw, list) and raw and len(texts) == len(raw):
        data[key] = texts
    else:
        raise http_error(GuardUnavailable("The sanitized request could not be written back "
                                          "(rule adapter.unmappable).", rule_id="adapter.unmappable"))


def _write_back(response: Any, answer: GuardResponse) -> None:
    by_index = {c.index: c for c in answer.choices}
    for i, choice in enumerate(getattr(response, "choices", None) or []):
        new = by_index.get(int(getattr(choice, "index", i) or 0))
        msg = getattr(choice, "message", None)
        if new is not None and msg is not None and isinstance(getattr(msg, "content", None), str):
            msg.content = new.text


def _tail_chunk(last: Any, idx: int, text: str) -> Any:
    """A copy of the last chunk carrying only the held-back tail of choice ``idx``."""
    chunk = last.model_copy(deep=True)
    keep = [c for c in chunk.choices if int(getattr(c, "index", 0) or 0) == idx][:1]
    if not keep:
        return chunk
    keep[0].delta.content = text
    keep[0].finish_reason = None
    chunk.choices = keep
    return chunk


def _sse_error(v: GuardViolation) -> str:
    """An SSE error event; LiteLLM's stream generator forwards a ``data: `` string and ends the stream."""
    body = v.to_openai()
    return f"data: {json.dumps(body)}\n\n"
