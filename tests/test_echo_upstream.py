"""The embedded echo upstream: OpenAI-compatible answers, plain and streamed, and its record."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from shared_guards.demo.echo import EchoUpstream, last_user_text, split_chunks


@pytest.fixture()
def echo() -> Iterator[EchoUpstream]:
    e = EchoUpstream(port=0).start()
    try:
        yield e
    finally:
        e.stop()


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "hello"}], "hello"),
        ([{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
          {"role": "user", "content": "second"}], "second"),
        ([{"role": "system", "content": "sys"}, {"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "http://x/i.png"}},
            {"type": "text", "text": "b"}]}], "a\nb"),
        ([{"role": "system", "content": "only system"}], ""),
        ([{"role": "user", "content": None}], ""),
    ],
)
def test_last_user_text(messages: list[dict[str, object]], expected: str) -> None:
    assert last_user_text({"messages": messages}) == expected


@pytest.mark.parametrize("text", ["", "one", "one two three four five six seven", "a b c d e f g h i j"])
def test_split_chunks_rejoins(text: str) -> None:
    pieces = split_chunks(text)
    assert "".join(pieces) == text
    assert len(pieces) <= 4


def test_plain_completion_echoes_and_records(echo: EchoUpstream) -> None:
    body = {"model": "general", "messages": [{"role": "user", "content": "echo me please"}]}
    r = httpx.post(f"{echo.base_url}/chat/completions", json=body, timeout=5)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "echo me please"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 3
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 3
    assert echo.received() == [body]
    got = httpx.get(f"{echo.base_url}/echo/received", timeout=5).json()
    assert got == [body]
    assert httpx.delete(f"{echo.base_url}/echo/received", timeout=5).status_code == 200
    assert echo.received() == []


def test_stream_sends_several_chunks_then_done(echo: EchoUpstream) -> None:
    body = {"model": "coder", "stream": True,
            "messages": [{"role": "user", "content": "alpha beta gamma delta epsilon"}]}
    with httpx.stream("POST", f"{echo.base_url}/chat/completions", json=body, timeout=5) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    text_chunks = [c for c in contents if c]
    assert len(text_chunks) >= 3
    assert "".join(text_chunks) == "alpha beta gamma delta epsilon"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert "usage" in chunks[-1]


def test_openai_client_against_echo(echo: EchoUpstream) -> None:
    import openai

    client = openai.OpenAI(base_url=echo.base_url, api_key="x", max_retries=0)
    out = client.chat.completions.create(model="general", messages=[{"role": "user", "content": "hi there"}])
    assert out.choices[0].message.content == "hi there"
    stream = client.chat.completions.create(model="general", stream=True,
                                            messages=[{"role": "user", "content": "s t r e a m"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "s t r e a m"
    assert [m.id for m in client.models.list()] == ["general", "coder"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"model": "general"}', 400),
        (b"\xff\xfe", 400),
    ],
)
def test_bad_bodies_get_400(echo: EchoUpstream, raw: bytes, status: int) -> None:
    r = httpx.post(f"{echo.base_url}/chat/completions", content=raw,
                   headers={"content-type": "application/json"}, timeout=5)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert echo.received() == []


def test_unknown_route_404(echo: EchoUpstream) -> None:
    assert httpx.get(f"{echo.base_url}/nope", timeout=5).status_code == 404
    assert httpx.post(f"{echo.base_url}/embeddings", json={}, timeout=5).status_code == 404


def test_keeps_only_last_n() -> None:
    with EchoUpstream(port=0, keep=3) as e:
        for i in range(5):
            httpx.post(f"{e.base_url}/chat/completions", timeout=5,
                       json={"model": "m", "messages": [{"role": "user", "content": str(i)}]})
        assert [b["messages"][0]["content"] for b in e.received()] == ["2", "3", "4"]
