"""Translation between OpenAI chat-completions bodies (plain dicts) and the core's types.

Used by every adapter, so LiteLLM, Kong and the guard service read requests the same way.
Parsing is strict about shapes (a clear 400, never a crash) and lenient about extra keys.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from shared_guards.errors import MalformedRequest
from shared_guards.types import (
    Choice,
    ContentPart,
    GuardRequest,
    GuardResponse,
    Identity,
    Message,
    PartKind,
    Role,
    ToolCall,
    ToolSpec,
    Usage,
)

MAX_BODY_BYTES = 4 * 1024 * 1024

_PART_KINDS: dict[str, PartKind] = {
    "text": PartKind.TEXT,
    "input_text": PartKind.TEXT,
    "image_url": PartKind.IMAGE,
    "input_image": PartKind.IMAGE,
    "image": PartKind.IMAGE,
    "file": PartKind.FILE,
    "input_file": PartKind.FILE,
    "document": PartKind.FILE,
    "input_audio": PartKind.AUDIO,
    "audio": PartKind.AUDIO,
}


def _bad(message: str, param: str = "messages") -> MalformedRequest:
    return MalformedRequest(f"{message.rstrip('.')} (rule request.malformed).", rule_id="request.malformed",
                            param=param)


def parse_json_body(raw: bytes | str, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Decode a JSON request body; MalformedRequest for non-JSON, non-objects or oversized bodies."""
    if len(raw) > max_bytes:
        raise MalformedRequest(
            f"Request body of {len(raw)} bytes exceeds the limit of {max_bytes} bytes (rule request.too_large).",
            rule_id="request.too_large",
            code="request_too_large",
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("Request body is not valid JSON.", param="body") from None
    if not isinstance(data, dict):
        raise _bad("Request body must be a JSON object.", param="body")
    return data


def _part(raw: Any, mi: int, pi: int) -> ContentPart:
    if isinstance(raw, str):
        return ContentPart(PartKind.TEXT, raw)
    if not isinstance(raw, Mapping):
        raise _bad(f"messages[{mi}].content[{pi}] must be an object.")
    kind_name = raw.get("type")
    kind = _PART_KINDS.get(str(kind_name))
    if kind is None:
        raise _bad(f"messages[{mi}].content[{pi}].type is not supported "
                   f"(one of {', '.join(sorted(_PART_KINDS))}).")  # never echo the value: it may be prompt text
    if kind is PartKind.TEXT:
        text = raw.get("text")
        if not isinstance(text, str):
            raise _bad(f"messages[{mi}].content[{pi}].text must be a string.")
        return ContentPart(PartKind.TEXT, text)
    return ContentPart(kind, None)


def _role(value: Any, mi: int) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise _bad(f"messages[{mi}].role is not a valid role (one of {', '.join(r.value for r in Role)}).") from None


def _message(raw: Any, mi: int) -> Message:
    if not isinstance(raw, Mapping):
        raise _bad(f"messages[{mi}] must be an object.")
    role = _role(raw.get("role"), mi)
    content = raw.get("content")
    parts: tuple[ContentPart, ...]
    if content is None:
        parts = ()
    elif isinstance(content, str):
        parts = (ContentPart(PartKind.TEXT, content),)
    elif isinstance(content, list):
        parts = tuple(_part(p, mi, pi) for pi, p in enumerate(content))
    else:
        raise _bad(f"messages[{mi}].content must be a string or a list of parts.")
    calls: list[ToolCall] = []
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _bad(f"messages[{mi}].tool_calls must be a list.")
    for ci, c in enumerate(raw_calls):
        if not isinstance(c, Mapping):
            raise _bad(f"messages[{mi}].tool_calls[{ci}] must be an object.")
        fn = c.get("function") or {}
        if not isinstance(fn, Mapping):
            raise _bad(f"messages[{mi}].tool_calls[{ci}].function must be an object.")
        args = fn.get("arguments", "")
        calls.append(ToolCall(str(c.get("id", "")), str(fn.get("name", "")),
                              args if isinstance(args, str) else json.dumps(args)))
    fc = raw.get("function_call")
    if isinstance(fc, Mapping):
        args = fc.get("arguments", "")
        calls.append(ToolCall("", str(fc.get("name", "")), args if isinstance(args, str) else json.dumps(args)))
    name = raw.get("name")
    tcid = raw.get("tool_call_id")
    return Message(role, parts, name if isinstance(name, str) else None, tuple(calls),
                   tcid if isinstance(tcid, str) else None)


def _tools(body: Mapping[str, Any]) -> tuple[ToolSpec, ...]:
    out: list[ToolSpec] = []
    for key in ("tools", "functions"):
        raw = body.get(key)
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise _bad(f"{key} must be a list.", param=key)
        for t in raw:
            if not isinstance(t, Mapping):
                raise _bad(f"{key} entries must be objects.", param=key)
            fn = t.get("function", t)
            fn = fn if isinstance(fn, Mapping) else {}
            out.append(ToolSpec(str(fn.get("name", t.get("type", ""))), str(fn.get("description", ""))))
    return tuple(out)


def parse_chat_request(
    body: Mapping[str, Any], identity: Identity | None = None, request_id: str = ""
) -> GuardRequest:
    """A chat-completions body → :class:`GuardRequest`. MalformedRequest on bad shapes."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model must be a non-empty string.", param="model")
    raw_msgs = body.get("messages")
    if not isinstance(raw_msgs, list) or not raw_msgs:
        raise _bad("messages must be a non-empty list.")
    messages = tuple(_message(m, i) for i, m in enumerate(raw_msgs))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _bad("max_tokens must be a positive integer.", param="max_tokens")
    meta = body.get("metadata")
    return GuardRequest(
        messages=messages,
        model=model,
        identity=identity or Identity(),
        max_tokens=max_tokens,
        stream=bool(body.get("stream", False)),
        tools=_tools(body),
        request_id=request_id,
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
    )


def apply_request(body: Mapping[str, Any], request: GuardRequest) -> dict[str, Any]:
    """A copy of ``body`` whose message texts and tool-call arguments come from ``request``."""
    out = copy.deepcopy(dict(body))
    for raw, msg in zip(out.get("messages", []), request.messages, strict=False):
        content = raw.get("content")
        texts = [p.text for p in msg.parts if p.kind is PartKind.TEXT]
        if isinstance(content, str) and texts:
            raw["content"] = texts[0]
        elif isinstance(content, list):
            it = iter(texts)
            for i, part in enumerate(content):
                if isinstance(part, str):
                    content[i] = next(it, part)
                elif isinstance(part, dict) and _PART_KINDS.get(str(part.get("type"))) is PartKind.TEXT:
                    part["text"] = next(it, part.get("text"))
        calls = [c for c in msg.tool_calls]
        for rc, c in zip(raw.get("tool_calls") or [], calls, strict=False):
            if isinstance(rc, dict) and isinstance(rc.get("function"), dict):
                rc["function"]["arguments"] = c.arguments
    return out


def parse_chat_response(body: Mapping[str, Any]) -> GuardResponse:
    choices: list[Choice] = []
    for i, c in enumerate(body.get("choices") or []):
        if not isinstance(c, Mapping):
            continue
        msg = c.get("message") or {}
        text = msg.get("content") if isinstance(msg, Mapping) else None
        calls = []
        for tc in (msg.get("tool_calls") or []) if isinstance(msg, Mapping) else []:
            fn = tc.get("function") or {}
            calls.append(ToolCall(str(tc.get("id", "")), str(fn.get("name", "")), str(fn.get("arguments", ""))))
        choices.append(Choice(int(c.get("index", i)), text if isinstance(text, str) else "", tuple(calls),
                              c.get("finish_reason")))
    usage = body.get("usage")
    u = None
    if isinstance(usage, Mapping):
        u = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return GuardResponse(tuple(choices), u, str(body.get("model", "")))


def apply_response(body: Mapping[str, Any], response: GuardResponse) -> dict[str, Any]:
    out = copy.deepcopy(dict(body))
    by_index = {c.index: c for c in response.choices}
    for i, c in enumerate(out.get("choices") or []):
        new = by_index.get(int(c.get("index", i)))
        msg = c.get("message")
        if new is not None and isinstance(msg, dict) and isinstance(msg.get("content"), str):
            msg["content"] = new.text
    return out


# -- buffered streams (a gateway that holds the whole SSE answer, e.g. Kong's response phase) -------


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def parse_chat_stream(raw: bytes | str) -> tuple[GuardResponse, dict[str, Any]] | None:
    """A complete, buffered SSE chat-completions stream → ``(assembled answer, envelope)``.

    The envelope keeps what :func:`render_chat_stream` needs (``id``, ``created``, ``model``,
    ``usage``...). None when ``raw`` is not a stream of JSON chunks."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    calls: dict[int, dict[int, list[str]]] = {}  # choice -> tool-call index -> [id, name, arguments]
    meta: dict[str, Any] = {}
    chunks = 0
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            return None
        if not isinstance(chunk, dict):
            return None
        chunks += 1
        for key in ("id", "object", "created", "model", "system_fingerprint"):
            if key in chunk:
                meta.setdefault(key, chunk[key])
        if isinstance(chunk.get("usage"), Mapping):
            meta["usage"] = dict(chunk["usage"])
        for c in chunk.get("choices") or []:
            if not isinstance(c, Mapping):
                continue
            i = _int(c.get("index"))
            raw_delta = c.get("delta")
            delta: Mapping[str, Any] = raw_delta if isinstance(raw_delta, Mapping) else {}
            content = delta.get("content")
            texts.setdefault(i, []).append(content if isinstance(content, str) else "")
            for tc in delta.get("tool_calls") or []:
                if not isinstance(tc, Mapping):
                    continue
                slot = calls.setdefault(i, {}).setdefault(_int(tc.get("index")), ["", "", ""])
                raw_fn = tc.get("function")
                fn: Mapping[str, Any] = raw_fn if isinstance(raw_fn, Mapping) else {}
                slot[0] = str(tc.get("id") or slot[0])
                slot[1] = str(fn.get("name") or slot[1])
                slot[2] += str(fn.get("arguments") or "")
            if c.get("finish_reason"):
                finish[i] = str(c["finish_reason"])
    if not chunks:
        return None
    choices = tuple(
        Choice(i, "".join(texts[i]), tuple(ToolCall(*calls[i][n]) for n in sorted(calls.get(i, {}))), finish.get(i))
        for i in sorted(texts)
    )
    usage = meta.get("usage")
    u = Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))) if usage else None
    return GuardResponse(choices, u, str(meta.get("model", ""))), meta


def render_chat_stream(meta: Mapping[str, Any], response: GuardResponse) -> str:
    """An SSE stream carrying ``response`` (one content delta per choice), in ``meta``'s envelope."""
    base = {"id": meta.get("id", "chatcmpl-guarded"), "object": "chat.completion.chunk",
            "created": meta.get("created", 0), "model": meta.get("model", response.model)}
    events: list[dict[str, Any]] = []
    for c in response.choices:
        delta: dict[str, Any] = {"role": "assistant", "content": c.text}
        if c.tool_calls:
            delta["tool_calls"] = [{"index": n, "id": t.id, "type": "function",
                                    "function": {"name": t.name, "arguments": t.arguments}}
                                   for n, t in enumerate(c.tool_calls)]
        events.append({**base, "choices": [{"index": c.index, "delta": delta, "finish_reason": None}]})
        events.append({**base, "choices": [{"index": c.index, "delta": {}, "finish_reason": c.finish_reason or "stop"}]})
    if meta.get("usage") is not None:
        events.append({**base, "choices": [], "usage": meta["usage"]})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
