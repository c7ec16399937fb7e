"""secure-llm-guard: the Kong adapter of secure-llm-gateway (Kong Python PDK, kong-pdk 0.36).

It only translates. ``access``: the authenticated consumer (username or custom_id) and its
consumer groups become an :class:`~shared_guards.types.Identity`, the body (read once) becomes a
:class:`~shared_guards.types.GuardRequest`; the core decides; a block becomes
``kong.response.exit(status, openai_error_json, headers)`` and a sanitized request is forwarded
with ``kong.service.request.set_raw_body``. ``response``: the buffered upstream answer (a JSON chat
completion, or a whole SSE stream for ``stream: true``) is checked (and, e.g., pseudonyms restored)
and replaced through ``kong.response.exit`` when it changed or is refused; Python plugins have no
``body_filter``, so Kong holds a streamed answer until it is complete. ``log``: releases what a
request left behind when a later plugin cut it short.

Per-request state (the :class:`RequestContext`, with any pseudonymization vault) stays in this
process, in ``engine.contexts``; only an opaque random key travels through ``kong.ctx.shared``.

Every phase handler catches everything: if a handler raises, the plugin server never answers and
the request hangs inside Kong.

Run as a dedicated plugin server: ``python kong_plugins/secure_llm_guard.py -p /usr/local/kong``
listens on ``/usr/local/kong/secure-llm-guard.sock``; ``--dump`` prints the plugin info Kong reads.
With ``SLG_POLICY=/path/policy.yaml`` in its environment the server loads that policy and its models
before it starts listening.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import uuid
import zlib
from typing import Any

from kong_pdk.exception import PDKException  # raised for PDK errors under --no-lua-style

from shared_guards import openai_format
from shared_guards.engine import GuardEngine
from shared_guards.errors import ConfigError, GuardUnavailable, GuardViolation, MalformedRequest, Unauthenticated
from shared_guards.guard import RequestContext
from shared_guards.types import Identity

version = "0.1.0"
# Below every bundled authentication plugin (jwt 1450, oauth2 1400, key-auth 1250, ldap-auth 1200,
# basic-auth 1100, hmac-auth 1030) so the consumer is known; above Kong's AI plugins
# (ai-request-transformer 777, ai-sanitizer 776, ai-prompt-guard 771, ai-proxy 770) so the guard sees the
# client's request before they rewrite or send it. See docs/kong.md.
priority = 1010

Schema = (
    {"policy_path": {"type": "string", "required": True}},
    {"timeout_seconds": {"type": "number", "default": 30, "gt": 0}},
    {"guard_responses": {"type": "boolean", "default": True}},
)

CTX_KEY = "secure_llm_guard.request_key"
JSON_HEADERS = {"Content-Type": "application/json"}

logger = logging.getLogger("secure_llm_guard")


class PdkCallFailed(Exception):
    """Kong answered a PDK call with an error. The message is Kong's, never request content."""


def _pdk(fn: Any, *args: Any) -> Any:
    """Call a PDK function; handle kong-pdk's lua-style ``(value, err)`` tuples and exceptions."""
    try:
        out = fn(*args)
    except PDKException as exc:  # --no-lua-style
        raise PdkCallFailed(str(exc)) from None
    if isinstance(out, tuple) and len(out) == 2:  # lua-style (default): msgpack gives lists, never tuples
        value, err = out
        if err:
            raise PdkCallFailed(str(err))
        return value
    return out


def _error_body(status: int, code: str, message: str) -> dict[str, Any]:
    kind = "service_unavailable_error" if status == 503 else "server_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def _exit(kong: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    # A JSON string, not a table: Kong's cjson would drop null fields and turn [] into {}.
    kong.response.exit(status, json.dumps(body), {**JSON_HEADERS, **(headers or {})})


def _exit_violation(kong: Any, exc: GuardViolation) -> None:
    _exit(kong, exc.http_status, exc.to_openai(), exc.headers)


def _identity(consumer: Any, groups: Any) -> Identity:
    if not isinstance(consumer, dict):
        raise Unauthenticated(
            "No authenticated Kong consumer: put an authentication plugin (e.g. key-auth) before "
            "secure-llm-guard on this route (rule identity.missing).",
            rule_id="identity.missing",
        )
    name = consumer.get("username") or consumer.get("custom_id")
    if not isinstance(name, str) or not name:
        raise Unauthenticated("The Kong consumer has neither username nor custom_id (rule identity.missing).",
                              rule_id="identity.missing")
    # Lua encodes an empty array as an empty map; a group is an entity with a name.
    items = groups if isinstance(groups, list) else []
    names = tuple(str(g["name"]) for g in items if isinstance(g, dict) and g.get("name"))
    return Identity(consumer=name, groups=names, gateway="kong")


def _body_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8")
    return b""


def _gunzip(raw: bytes) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(raw, openai_format.MAX_BODY_BYTES)
    return b"" if d.unconsumed_tail else out  # b"" (not JSON): withheld as unchecked


class Plugin:
    """One instance per Kong plugin configuration; the engine (heavy assets) is shared per policy."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.policy_path = str(config.get("policy_path") or "")
        self.timeout = float(config.get("timeout_seconds") or 30)
        self.guard_responses = config.get("guard_responses") is not False
        self._engine: GuardEngine | None = None
        try:
            self.engine()
        except Exception as exc:  # kept for the first request: it answers 503 and logs why
            logger.error("secure-llm-guard: policy %s could not be loaded: %s", self.policy_path, exc)

    def engine(self) -> GuardEngine:
        if self._engine is None:
            if not self.policy_path:
                raise ConfigError("secure-llm-guard: config.policy_path is not set")
            self._engine = GuardEngine.shared(self.policy_path)
        return self._engine

    # -- phases: each one catches everything --------------------------------------------------------

    def access(self, kong: Any) -> None:
        try:
            self._access(kong)
        except GuardViolation as exc:
            _exit_violation(kong, exc)
        except Exception as exc:
            self._fail(kong, exc, "access")

    def response(self, kong: Any) -> None:
        try:
            self._response(kong)
        except GuardViolation as exc:
            _exit_violation(kong, exc)
        except Exception as exc:
            self._fail(kong, exc, "response")

    def log(self, kong: Any) -> None:
        """Safety net: finish a request whose response phase did not run (a later plugin exited)."""
        try:
            key = _pdk(kong.ctx.shared.get, CTX_KEY)
            ctx = self._engine.contexts.pop(key) if key and self._engine is not None else None
            if ctx is not None and self._engine is not None:
                self._finish(self._engine, ctx, False)
        except Exception as exc:
            logger.error("secure-llm-guard log phase failed: %s", type(exc).__name__)

    # -- access ------------------------------------------------------------------------------------

    def _access(self, kong: Any) -> None:
        engine = self.engine_or_unavailable()
        consumer = _pdk(kong.client.get_consumer)
        groups = None
        if isinstance(consumer, dict) and self._policy_uses_groups(engine):  # one round trip less when not
            groups = _pdk(kong.client.get_consumer_groups)
        identity = _identity(consumer, groups)
        try:
            raw = _body_bytes(_pdk(kong.request.get_raw_body))
        except PdkCallFailed:  # Kong buffered the body to disk: larger than client_body_buffer_size
            raise MalformedRequest("Request body could not be read: larger than Kong's client_body_buffer_size "
                                   "(rule request.too_large).", rule_id="request.too_large",
                                   code="request_too_large") from None
        body = openai_format.parse_json_body(raw)
        key = uuid.uuid4().hex
        request = openai_format.parse_chat_request(body, identity, request_id=key)
        decision, ctx = engine.check_request_sync(request, timeout=self.timeout)
        if decision.blocked:
            assert decision.violation is not None
            _exit(kong, decision.violation.http_status, decision.violation.to_openai(),
                  {**decision.violation.headers, **decision.headers})
            return
        if ctx is None:  # not blocked and no context cannot happen; refuse rather than guess
            raise GuardUnavailable("The guard produced no request context (rule guard.internal).",
                                   rule_id="guard.internal")
        try:
            if self.guard_responses:
                engine.contexts.put(key, ctx)
                _pdk(kong.ctx.shared.set, CTX_KEY, key)
                # The response phase reads the answer: ask the upstream for an uncompressed one.
                _pdk(kong.service.request.set_header, "Accept-Encoding", "identity")
            if decision.changed:
                new_body = openai_format.apply_request(body, decision.request)
                _pdk(kong.service.request.set_raw_body, json.dumps(new_body))
            if decision.headers:
                _pdk(kong.response.set_headers, dict(decision.headers))
        except Exception:  # the request will not be proxied: release it now (quota reservations...)
            engine.contexts.pop(key)
            self._finish(engine, ctx, False)
            raise
        if not self.guard_responses:
            self._finish(engine, ctx, True)

    @staticmethod
    def _policy_uses_groups(engine: GuardEngine) -> bool:
        return any(d.match.consumer_groups for d in engine.loaded.policy.departments.values())

    # -- response ----------------------------------------------------------------------------------

    def _response(self, kong: Any) -> None:
        key = _pdk(kong.ctx.shared.get, CTX_KEY)
        if not key:
            return  # access did not keep a context (guard_responses off, or not our request)
        engine = self.engine_or_unavailable()
        ctx = engine.contexts.pop(key)
        if ctx is None:  # expired, or the plugin server restarted between the phases
            raise GuardUnavailable("The guard lost this request's state; the answer is withheld "
                                   "(rule guard.state_lost).", rule_id="guard.state_lost")
        ok = False
        try:
            ok = self._check_answer(kong, engine, ctx)
        finally:
            self._finish(engine, ctx, ok)

    def _check_answer(self, kong: Any, engine: GuardEngine, ctx: RequestContext) -> bool:
        status = _pdk(kong.service.response.get_status)
        if not isinstance(status, int) or not 200 <= status < 300:
            return False  # upstream errors pass through untouched
        raw = _body_bytes(_pdk(kong.service.response.get_raw_body))
        if raw[:2] == b"\x1f\x8b":  # the upstream ignored Accept-Encoding: identity
            raw = _gunzip(raw)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        stream = None if isinstance(body, dict) else openai_format.parse_chat_stream(raw)
        if isinstance(body, dict):
            answer = openai_format.parse_chat_response(body)
        elif stream is not None:  # stream=true: Kong buffered the whole SSE answer
            answer = stream[0]
        else:
            _exit(kong, 502, _error_body(502, "unchecked_response",
                                         "The upstream answer is not a chat completion and cannot be checked "
                                         "(rule guard.unchecked_response)."))
            return False
        decision = engine.check_response_sync(ctx, answer, timeout=self.timeout)
        if decision.blocked:
            assert decision.violation is not None
            _exit_violation(kong, decision.violation)
            return False
        if decision.changed and decision.response is not None:
            if isinstance(body, dict):
                _exit(kong, status, openai_format.apply_response(body, decision.response))
            elif stream is not None:
                kong.response.exit(status, openai_format.render_chat_stream(stream[1], decision.response),
                                   {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        return True

    def _finish(self, engine: GuardEngine, ctx: RequestContext, ok: bool) -> None:
        """Release the request's resources; never raises (an answer may already be on its way)."""
        try:
            engine.finish_sync(ctx, ok=ok, timeout=self.timeout)
        except Exception as exc:
            logger.error("secure-llm-guard finish failed: %s", type(exc).__name__)

    # -- errors ------------------------------------------------------------------------------------

    def engine_or_unavailable(self) -> GuardEngine:
        try:
            return self.engine()
        except Exception as exc:
            logger.error("secure-llm-guard: policy %s could not be loaded: %s", self.policy_path, type(exc).__name__)
            raise GuardUnavailable("The guard's policy could not be loaded (rule guard.config).",
                                   rule_id="guard.config") from None

    def _fail(self, kong: Any, exc: Exception, phase: str) -> None:
        """Anything unexpected: a clean OpenAI error, never a hang; the log names only the type."""
        if isinstance(exc, concurrent.futures.TimeoutError | TimeoutError):
            status, code, message = 503, "guard_timeout", "The guard did not decide in time (rule guard.timeout)."
        else:
            status, code, message = 500, "guard_internal_error", "The guard failed on this request (rule guard.internal)."
        logger.error("secure-llm-guard %s phase failed: %s", phase, type(exc).__name__)
        try:
            kong.log.err("secure-llm-guard ", phase, " failed: ", type(exc).__name__)
        except Exception:
            pass
        _exit(kong, status, _error_body(status, code, message))


def preload(policy_path: str) -> None:
    """Load the policy and build every department's pipeline (models included) before serving, so
    the first requests don't wait for imports. The server's socket appears once this is done."""
    try:
        GuardEngine.shared(policy_path).warm_up()
    except Exception as exc:  # the instance will answer 503 guard.config and log why
        logger.error("secure-llm-guard: preloading %s failed: %s", policy_path, exc)


if __name__ == "__main__":
    import os
    import sys

    from kong_pdk.cli import start_dedicated_server

    if "--dump" not in sys.argv and "-dump" not in sys.argv and os.environ.get("SLG_POLICY"):
        preload(os.environ["SLG_POLICY"])
    start_dedicated_server("secure-llm-guard", Plugin, version, priority, Schema)
