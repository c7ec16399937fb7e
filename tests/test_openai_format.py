"""OpenAI chat bodies <-> core types: strict shapes, clear errors, lossless write-back."""

from __future__ import annotations

import json

import pytest

from shared_guards.errors import MalformedRequest
from shared_guards.openai_format import (
    apply_request,
    apply_response,
    parse_chat_request,
    parse_chat_response,
    parse_json_body,
)
from shared_guards.types import Feature, Role


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"x" * 5_000_000, "exceeds the limit"),
    ],
)
def test_bad_bodies(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedRequest) as err:
        parse_json_body(raw)
    assert fragment in err.value.message
    assert err.value.http_status == 400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": 42}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {"a": 1}}, "tools"),
        ({"model": "m", "messages": [{"role": "assistant", "tool_calls": "x"}]}, "messages"),
    ],
)
def test_bad_shapes_name_the_param(body: dict, param: str) -> None:
    with pytest.raises(MalformedRequest) as err:
        parse_chat_request(body)
    assert err.value.param == param
    assert err.value.to_openai()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "my SSN is 078-05-1120", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "my SSN is 078-05-1120"}]}]},
    ],
)
def test_bad_values_are_not_echoed(body: dict) -> None:
    """Client values in a wrong field may be prompt text or PII: the error names the field only."""
    with pytest.raises(MalformedRequest) as err:
        parse_chat_request(body)
    assert "078-05-1120" not in json.dumps(err.value.to_openai())
    assert "078-05-1120" not in str(err.value)


def test_multimodal_tools_and_odd_unicode_round_trip() -> None:
    body = {
        "model": "general",
        "max_tokens": 10,
        "stream": True,
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d"}}],
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [
                {"type": "text", "text": "zero\u200bwidth \U0001F600 \u202eRTL"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
                {"type": "file", "file": {"file_id": "f1"}},
                {"type": "text", "text": "second"},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "tool output"},
        ],
    }
    req = parse_chat_request(body)
    assert req.features == {Feature.IMAGES, Feature.AUDIO, Feature.FILES, Feature.TOOLS}
    assert [m.role for m in req.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert req.messages[1].text == "zero\u200bwidth \U0001F600 \u202eRTL\nsecond"
    texts = req.texts()
    assert (2, Role.ASSISTANT, '{"q": "x"}') in texts and (3, Role.TOOL, "tool output") in texts
    assert req.stream and req.max_tokens == 10

    import dataclasses

    new_msgs = list(req.messages)
    new_msgs[1] = new_msgs[1].with_texts(["A", "B"])
    new_msgs[2] = dataclasses.replace(new_msgs[2], tool_calls=(dataclasses.replace(new_msgs[2].tool_calls[0], arguments="{}"),))
    out = apply_request(body, dataclasses.replace(req, messages=tuple(new_msgs)))
    parts = out["messages"][1]["content"]
    assert parts[0]["text"] == "A" and parts[4]["text"] == "B"
    assert parts[1] == body["messages"][1]["content"][1]
    assert out["messages"][2]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert body["messages"][1]["content"][0]["text"].startswith("zero"), "the input body is not mutated"
    json.dumps(out)


def test_response_round_trip() -> None:
    body = {"id": "x", "model": "general", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hello <PERSON_1>"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    resp = parse_chat_response(body)
    assert resp.choices[0].text == "hello <PERSON_1>" and resp.usage is not None and resp.usage.total_tokens == 7
    import dataclasses

    new = dataclasses.replace(resp, choices=(dataclasses.replace(resp.choices[0], text="hello Ada"),))
    assert apply_response(body, new)["choices"][0]["message"]["content"] == "hello Ada"
    assert body["choices"][0]["message"]["content"] == "hello <PERSON_1>"
