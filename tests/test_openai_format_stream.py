"""Buffered SSE streams <-> core types (shared_guards.openai_format.parse_chat_stream / render_chat_stream)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared_guards.openai_format import parse_chat_stream, render_chat_stream
from shared_guards.types import Choice, GuardResponse, ToolCall, Usage


def sse(*chunks: dict[str, Any], done: bool = True) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")


def ch(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "general",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


CASES = [
    ("plain", sse(ch(role="assistant", content="Hel"), ch(content="lo"), ch(finish="stop")),
     GuardResponse((Choice(0, "Hello", (), "stop"),), None, "general")),
    ("usage-chunk", sse(ch(content="a"), {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
     GuardResponse((Choice(0, "a", (), None),), Usage(3, 1), "general")),
    ("two-choices", sse(ch(0, content="x"), ch(1, content="y"), ch(0, content="z", finish="stop")),
     GuardResponse((Choice(0, "xz", (), "stop"), Choice(1, "y", (), None)), None, "general")),
    ("tool-call-deltas", sse(
        ch(tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]),
        ch(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]), ch(finish="tool_calls")),
     GuardResponse((Choice(0, "", (ToolCall("call_1", "f", "{\"a\": 1}"),), "tool_calls"),), None, "general")),
    ("no-done-marker", sse(ch(content="cut"), done=False), GuardResponse((Choice(0, "cut", (), None),), None, "general")),
    ("crlf", sse(ch(content="ok")).replace("\n", "\r\n"), GuardResponse((Choice(0, "ok", (), None),), None, "general")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_assembles_the_answer(raw: str, expected: GuardResponse) -> None:
    parsed = parse_chat_stream(raw.encode())
    assert parsed is not None
    assert parsed[0] == expected
    assert parsed[1]["id"] == "c1"


@pytest.mark.parametrize("raw", [b"", b'{"choices": []}', b"data: not json\n\n", b"data: [1]\n\n", b"data: [DONE]\n\n",
                                 b"<html>502</html>", b"\xff\xfe"])
def test_not_a_stream(raw: bytes) -> None:
    assert parse_chat_stream(raw) is None


@pytest.mark.parametrize(("raw", "_"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_render_round_trips(raw: str, _: GuardResponse) -> None:
    parsed = parse_chat_stream(raw)
    assert parsed is not None
    response, meta = parsed
    out = render_chat_stream(meta, response)
    assert out.endswith("data: [DONE]\n\n")
    again = parse_chat_stream(out)
    assert again is not None
    assert [(c.index, c.text, c.tool_calls) for c in again[0].choices] == \
        [(c.index, c.text, c.tool_calls) for c in response.choices]
    assert again[0].usage == response.usage
    assert all(json.loads(line[6:])["id"] == "c1" for line in out.splitlines() if line.startswith("data: {"))
