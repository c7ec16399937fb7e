"""The LiteLLM guardrail end to end: the real proxy subprocess, the real ``openai`` client, the
embedded echo upstream. Every refusal must be the OpenAI error shape with the right status and
the rule id in the message; nothing may become a 500 or hang."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fixtures_litellm import ProxyProcess

pytestmark = pytest.mark.slow

TEST_POLICY = Path(__file__).parent / "policies" / "litellm_adapter.yaml"
ERROR_KEYS = {"message", "type", "code", "param"}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def error_body(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert ERROR_KEYS <= set(body["error"]), body
    return dict(body["error"])


@pytest.fixture(scope="module")
def adapter_proxy(litellm_proxy_factory: Any) -> ProxyProcess:
    return litellm_proxy_factory(TEST_POLICY)


# -- demo policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk-marketing", "sk-finance", "sk-rnd"])
def test_allowed_request_echoes(litellm_proxy: ProxyProcess, echo_upstream: Any, key: str) -> None:
    text = f"Write a tagline for {key}"
    out = litellm_proxy.client(key).chat.completions.create(model="general", messages=user(text))
    assert out.choices[0].message.content == text
    assert echo_upstream.received()[-1]["messages"][-1]["content"] == text


def test_rnd_may_use_coder(litellm_proxy: ProxyProcess) -> None:
    out = litellm_proxy.client("sk-rnd").chat.completions.create(model="coder", messages=user("def f(): pass"))
    assert out.choices[0].message.content == "def f(): pass"


@pytest.mark.parametrize(
    ("key", "body", "status", "rule", "etype"),
    [
        ("sk-marketing", {"model": "coder", "messages": user("hi")}, 403, "rbac.model", "permission_error"),
        ("sk-finance", {"model": "coder", "messages": user("hi")}, 403, "rbac.model", "permission_error"),
        ("sk-marketing", {"model": "general", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe this"}, IMAGE]}]}, 403, "rbac.feature.images", "permission_error"),
        ("sk-marketing", {"model": "general", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-123"}}]}]}, 403, "rbac.feature.files", "permission_error"),
        ("sk-marketing", {"model": "general", "max_tokens": 5000, "messages": user("hi")}, 403, "rbac.max_tokens",
         "permission_error"),
        ("sk-rnd", {"model": "general", "max_tokens": 9000, "messages": user("hi")}, 403, "rbac.max_tokens",
         "permission_error"),
        ("sk-nope", {"model": "general", "messages": user("hi")}, 401, "auth.api_key", "authentication_error"),
        (None, {"model": "general", "messages": user("hi")}, 401, "auth.api_key", "authentication_error"),
    ],
)
def test_refusals_are_openai_errors(litellm_proxy: ProxyProcess, echo_upstream: Any, key: str | None,
                                    body: dict[str, Any], status: int, rule: str, etype: str) -> None:
    echo_upstream.clear()
    r = litellm_proxy.post_chat(body, key)
    assert r.status_code == status, r.text
    err = error_body(r)
    assert rule in err["message"]
    assert err["type"] == etype
    assert echo_upstream.received() == []  # nothing reached the model


def test_marketing_image_refused_with_openai_client(litellm_proxy: ProxyProcess) -> None:
    client = litellm_proxy.client("sk-marketing")
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client.chat.completions.create(model="general", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"}, IMAGE]}])
    assert ei.value.status_code == 403
    assert "rbac.feature.images" in str(ei.value.message)


def test_forbidden_model_with_openai_client(litellm_proxy: ProxyProcess) -> None:
    with pytest.raises(openai.PermissionDeniedError) as ei:
        litellm_proxy.client("sk-marketing").chat.completions.create(model="coder", messages=user("hi"))
    assert "rbac.model" in str(ei.value.message)
    assert isinstance(ei.value.body, dict) and ERROR_KEYS <= set(ei.value.body)
    assert ei.value.body["type"] == "permission_error" and ei.value.body["param"] == "model"


@pytest.mark.parametrize("key", ["sk-unknown", "sk-marketing-but-longer"])
def test_unknown_key_with_openai_client(litellm_proxy: ProxyProcess, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as ei:
        litellm_proxy.client(key).chat.completions.create(model="general", messages=user("hi"))
    assert ei.value.status_code == 401


@pytest.mark.parametrize(
    "raw",
    [b'{"model": "general", "messages": [', b"not json at all", b'{"model": "general", "messages": [{"role": "user", '
     b'"content": "my ssn is 123-45-6789"', b"\xff\xfe\x00"],
)
def test_malformed_json_is_400(litellm_proxy: ProxyProcess, raw: bytes) -> None:
    r = litellm_proxy.post_chat(None, "sk-marketing", raw=raw)
    assert r.status_code == 400, r.text
    error_body(r)
    assert "123-45-6789" not in r.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "general", "messages": "hello"}, "messages"),
        ({"model": "general", "messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ],
)
def test_bad_shapes_are_4xx_not_500(litellm_proxy: ProxyProcess, body: dict[str, Any], param: str) -> None:
    r = litellm_proxy.post_chat(body, "sk-rnd")
    assert 400 <= r.status_code < 500, r.text
    assert error_body(r)["param"] == param


def test_streaming_passes_and_is_audited(litellm_proxy: ProxyProcess) -> None:
    text = "stream these words back to me please"
    before = len(litellm_proxy.audit_records())
    stream = litellm_proxy.client("sk-marketing").chat.completions.create(model="general", messages=user(text),
                                                                            stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([c for c in chunks if c]) >= 3
    assert "".join(chunks) == text
    recs = _wait_records(litellm_proxy, lambda r: r["department"] == "marketing", start=before, count=2)
    assert [r["stage"] for r in recs] == ["request", "response"], "no response-stage record from the stream hook"
    assert recs[0]["request_id"] == recs[1]["request_id"]


def test_finance_stream_through_the_pii_filter(litellm_proxy: ProxyProcess) -> None:
    text = "Summarise the quarterly numbers for the board. Revenue grew and costs fell, as planned."
    stream = litellm_proxy.client("sk-finance").chat.completions.create(model="general", messages=user(text),
                                                                        stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_one_audit_record_per_decision(litellm_proxy: ProxyProcess) -> None:
    earlier_records = litellm_proxy.audit_records()
    before = len(earlier_records)
    # an earlier test's stream may still be writing its response-stage record: not this test's
    earlier = {r["request_id"] for r in earlier_records}
    litellm_proxy.client("sk-finance").chat.completions.create(model="general", messages=user("count me"))
    r = litellm_proxy.post_chat({"model": "coder", "messages": user("no")}, "sk-finance")
    assert r.status_code == 403
    recs = _wait_records(litellm_proxy, lambda r: r["department"] == "finance" and r["request_id"] not in earlier,
                         start=before, count=3)
    new = recs[:3]
    assert [(x["stage"], x["decision"]) for x in new] == [("request", "allow"), ("response", "allow"),
                                                           ("request", "block")]
    assert new[0]["request_id"] == new[1]["request_id"] != new[2]["request_id"]
    assert new[2]["violation"] == {"status": 403, "code": "model_not_allowed", "rule_id": "rbac.model"}
    assert all(x["gateway"] == "litellm" and x["identity"]["key_alias"] == "finance-demo" for x in new)
    assert "count me" not in json.dumps(new)
    time.sleep(0.3)
    assert len([r for r in litellm_proxy.audit_records()[before:]
                if r["department"] == "finance" and r["request_id"] not in earlier]) == 3


def test_models_route_needs_a_key(litellm_proxy: ProxyProcess) -> None:
    r = httpx.get(f"{litellm_proxy.base_url}/models", timeout=10)
    assert r.status_code == 401
    ids = [m.id for m in litellm_proxy.client("sk-rnd").models.list()]
    assert set(ids) == {"general", "coder"}


# -- test policy: failing guards, rewriting guards, quotas, monitor mode --------------------------


@pytest.mark.parametrize(("key", "rule"), [("sk-t-closed", "boom.error"), ("sk-t-slow", "sleepy.timeout")])
def test_fail_closed_guard_gives_clean_503(adapter_proxy: ProxyProcess, echo_upstream: Any, key: str,
                                           rule: str) -> None:
    echo_upstream.clear()
    t0 = time.monotonic()
    r = adapter_proxy.post_chat({"model": "general", "messages": user("tell me a secret-ish thing")}, key,
                                timeout=30)
    assert time.monotonic() - t0 < 10  # the guard's timeout, not the upstream's
    assert r.status_code == 503, r.text
    err = error_body(r)
    assert rule in err["message"]
    assert "internal detail" not in r.text and "secret-ish" not in r.text
    assert echo_upstream.received() == []


@pytest.mark.parametrize("key", ["sk-t-open", "sk-t-slow-open"])
def test_fail_open_guard_lets_request_through(adapter_proxy: ProxyProcess, key: str) -> None:
    out = adapter_proxy.client(key).chat.completions.create(model="general", messages=user("go on"))
    assert out.choices[0].message.content == "go on"


def test_fail_closed_with_openai_client_raises_cleanly(adapter_proxy: ProxyProcess) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        adapter_proxy.client("sk-t-closed").chat.completions.create(model="general", messages=user("x"))
    assert ei.value.status_code == 503
    assert "internal detail" not in str(ei.value.body)
    assert "Traceback" not in adapter_proxy.log_text().split("internal detail")[0][-1:]  # sanity


def test_quota_429_carries_retry_after(adapter_proxy: ProxyProcess) -> None:
    r = adapter_proxy.post_chat({"model": "general", "messages": user("hi")}, "sk-t-quota")
    assert r.status_code == 429, r.text
    assert r.headers.get("retry-after") == "7"
    assert "test.quota" in error_body(r)["message"]


def test_request_rewrite_reaches_upstream(adapter_proxy: ProxyProcess, echo_upstream: Any) -> None:
    echo_upstream.clear()
    out = adapter_proxy.client("sk-t-shout").chat.completions.create(
        model="general", messages=user("the secret code is here"))
    sent = echo_upstream.received()[-1]["messages"][-1]["content"]
    assert sent == "the [REDACTED] code is here"
    # The echo answers with what it got; the response stage upper-cases it.
    assert out.choices[0].message.content == "THE [REDACTED] CODE IS HERE"


def test_stream_goes_through_stream_filters(adapter_proxy: ProxyProcess) -> None:
    stream = adapter_proxy.client("sk-t-shout").chat.completions.create(
        model="general", messages=user("quiet words in a stream"), stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(chunks) == "QUIET WORDS IN A STREAM"
    assert len([c for c in chunks if c]) >= 3


def test_stream_stopped_mid_way_names_rule(adapter_proxy: ProxyProcess) -> None:
    body = {"model": "general", "stream": True, "messages": user("one two forbidden three four five six")}
    with httpx.stream("POST", f"{adapter_proxy.base_url}/chat/completions", json=body, timeout=30,
                      headers={"authorization": "Bearer sk-t-shout"}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    payloads = [json.loads(e) for e in events if e != "[DONE]"]
    errors = [p for p in payloads if "error" in p]
    assert len(errors) == 1 and "test.stream_stop" in errors[0]["error"]["message"]
    assert set(errors[0]["error"]) == ERROR_KEYS
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in payloads if c.get("choices"))
    assert "FORBIDDEN" not in text and "SIX" not in text
    recs = _wait_records(adapter_proxy, lambda x: x.get("stream_stopped") is True)
    assert recs and recs[-1]["violation"]["rule_id"] == "test.stream_stop"


def test_stream_error_event_raises_in_openai_client(adapter_proxy: ProxyProcess) -> None:
    stream = adapter_proxy.client("sk-t-shout").chat.completions.create(
        model="general", messages=user("a forbidden b c d e f"), stream=True)
    with pytest.raises(openai.APIError) as ei:
        for _ in stream:
            pass
    assert "test.stream_stop" in str(ei.value)


def test_whole_answer_blocked_at_post_call(adapter_proxy: ProxyProcess) -> None:
    r = adapter_proxy.post_chat({"model": "general", "messages": user("please leak it")}, "sk-t-shout")
    assert r.status_code == 400, r.text
    err = error_body(r)
    assert "test.answer_leak" in err["message"]
    assert "please" not in r.text.lower()


def test_monitor_mode_records_but_never_blocks(adapter_proxy: ProxyProcess) -> None:
    out = adapter_proxy.client("sk-t-monitor").chat.completions.create(model="general", messages=[
        {"role": "user", "content": [{"type": "text", "text": "look"}, IMAGE]}])
    assert out.choices[0].message.content == "look"
    recs = _wait_records(adapter_proxy, lambda x: x["department"] == "monitored" and x["decision"] == "alert")
    assert recs and recs[-1]["findings"][0]["rule_id"] == "rbac.feature.images"


def test_no_500_in_proxy_log_for_guard_paths(adapter_proxy: ProxyProcess) -> None:
    adapter_proxy.post_chat({"model": "general", "messages": user("x")}, "sk-t-closed")
    assert '" 500' not in adapter_proxy.log_text()


def _wait_records(proxy: ProxyProcess, pred: Any, *, start: int = 0, count: int = 1,
                  timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in proxy.audit_records()[start:] if pred(r)]
        if len(recs) >= count or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


# -- during_call mode: the request check runs in parallel with the model call ---------------------

DURING_CALL_CONFIG = Path(__file__).parent / "policies" / "litellm_during_call.yaml"


@pytest.fixture(scope="module")
def during_call_proxy(litellm_proxy_factory: Any) -> ProxyProcess:
    return litellm_proxy_factory(TEST_POLICY, config=DURING_CALL_CONFIG)


def test_during_call_rejects(during_call_proxy: ProxyProcess) -> None:
    r = during_call_proxy.post_chat({"model": "general", "messages": user("hi")}, "sk-t-quota")
    assert r.status_code == 429, r.text
    assert "test.quota" in error_body(r)["message"]
    r = during_call_proxy.post_chat({"model": "coder", "messages": user("hi")}, "sk-t-closed")
    assert r.status_code == 403 and "rbac.model" in error_body(r)["message"]


def test_during_call_cannot_rewrite_but_post_call_still_runs(during_call_proxy: ProxyProcess,
                                                             echo_upstream: Any) -> None:
    echo_upstream.clear()
    out = during_call_proxy.client("sk-t-shout").chat.completions.create(
        model="general", messages=user("the secret stays"))
    # during_call can only reject: the upstream got the original text ...
    assert echo_upstream.received()[-1]["messages"][-1]["content"] == "the secret stays"
    # ... and the response stage (post_call) still rewrote the answer.
    assert out.choices[0].message.content == "THE SECRET STAYS"
    recs = _wait_records(during_call_proxy, lambda x: x["department"] == "shouting", count=2)
    assert [x["stage"] for x in recs[-2:]] == ["request", "response"]


# -- the hooks in-process: LiteLLM's contract details that are slow to reach through HTTP ---------


def _guardrail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modes: list[str], default_on: bool = True) -> Any:
    from litellm_hooks import SecureLLMGuardrail

    policy = tmp_path / "policy.yaml"
    policy.write_text(TEST_POLICY.read_text())
    monkeypatch.setenv("SLG_AUDIT_PATH", str(tmp_path / "audit.jsonl"))
    return SecureLLMGuardrail(guardrail_name="secure-llm-guard", event_hook=modes, default_on=default_on,
                              policy_path=str(policy))


def _auth(alias: str, dep: str) -> Any:
    from litellm.proxy._types import UserAPIKeyAuth

    return UserAPIKeyAuth(api_key="sk-x", key_alias=alias, team_id=dep, team_alias=dep, metadata={"department": dep})


def _data(call_id: str, model: str = "general") -> dict[str, Any]:
    return {"model": model, "messages": user("hello"), "litellm_call_id": call_id, "metadata": {}}


async def test_pre_call_only_request_is_closed_by_logging_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _guardrail(tmp_path, monkeypatch, ["pre_call"])
    data = _data("call-1")
    await g.async_pre_call_hook(_auth("t-shout", "shouting"), None, data, "completion")
    assert g.engine.contexts.get("call-1") is not None
    assert "slg" not in json.dumps(data["metadata"])  # nothing of ours rides in the metadata
    await g.async_log_success_event({"litellm_call_id": "call-1"}, None, None, None)
    assert g.engine.contexts.get("call-1") is None


async def test_with_post_call_the_logging_hook_leaves_the_context(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    g = _guardrail(tmp_path, monkeypatch, ["pre_call", "post_call"])
    await g.async_pre_call_hook(_auth("t-shout", "shouting"), None, _data("call-2"), "completion")
    await g.async_log_success_event({"litellm_call_id": "call-2"}, None, None, None)
    assert g.engine.contexts.get("call-2") is not None  # the post_call hook still needs it
    await g.async_post_call_failure_hook(_data("call-2"), RuntimeError("upstream down"), None)
    assert g.engine.contexts.get("call-2") is None


async def test_should_run_guardrail_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _guardrail(tmp_path, monkeypatch, ["pre_call", "post_call"], default_on=False)
    data = _data("call-3", model="not-allowed-anywhere")
    assert await g.async_pre_call_hook(_auth("t-shout", "shouting"), None, data, "completion") is data
    assert g.engine.contexts.get("call-3") is None
    # ... and runs when the request asks for it by name.
    data["metadata"]["guardrails"] = ["secure-llm-guard"]
    with pytest.raises(Exception) as ei:
        await g.async_pre_call_hook(_auth("t-shout", "shouting"), None, data, "completion")
    assert getattr(ei.value, "status_code", None) == 403


@pytest.mark.parametrize(("key", "raw", "expected"), [
    ("input", "the secret code", "the [REDACTED] code"),  # embeddings
    ("prompt", ["a secret", "nothing here"], ["a [REDACTED]", "nothing here"]),  # text completions
])
async def test_rewrites_reach_prompt_and_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str,
                                               raw: Any, expected: Any) -> None:
    """A sanitizing guard's rewrite is forwarded for /completions and /embeddings too, not only chat."""
    g = _guardrail(tmp_path, monkeypatch, ["pre_call"])
    data = {"model": "general", key: raw, "litellm_call_id": f"call-{key}", "metadata": {}}
    await g.async_pre_call_hook(_auth("t-shout", "shouting"), None, data, "completion")
    assert data[key] == expected


class _BrokenAuth:
    @property
    def user_id(self) -> str:
        raise RuntimeError("adapter bug")


async def test_adapter_errors_follow_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import HTTPException

    g = _guardrail(tmp_path, monkeypatch, ["pre_call"])
    with pytest.raises(HTTPException) as ei:
        await g.async_pre_call_hook(_BrokenAuth(), None, _data("call-4"), "completion")
    assert ei.value.status_code == 503
    assert "adapter.error" in str(ei.value.detail)


def test_bad_policy_fails_construction(tmp_path: Path) -> None:
    from litellm_hooks import SecureLLMGuardrail
    from shared_guards.errors import PolicyError

    bad = tmp_path / "bad.yaml"
    bad.write_text("departments: {a: {models: [general], colour: blue}}\n")
    with pytest.raises(PolicyError, match="departments.a.colour"):
        SecureLLMGuardrail(guardrail_name="g", event_hook=["pre_call"], default_on=True, policy_path=str(bad))


def test_docs_snippet_matches_shipped_config() -> None:
    import yaml

    doc = (Path(__file__).parents[1] / "docs" / "litellm.md").read_text()
    snippet = doc.split("```yaml\nguardrails:", 1)[1].split("```", 1)[0]
    documented = yaml.safe_load("guardrails:" + snippet)["guardrails"][0]
    shipped = yaml.safe_load((Path(__file__).parents[1] / "config" / "litellm.yaml").read_text())
    entry = shipped["guardrails"][0]
    assert documented["litellm_params"]["guardrail"] == entry["litellm_params"]["guardrail"]
    assert documented["litellm_params"]["mode"] == entry["litellm_params"]["mode"]
    assert shipped["general_settings"]["custom_auth"] == "litellm_hooks.auth.custom_auth"
    import importlib

    module, _, attr = entry["litellm_params"]["guardrail"].rpartition(".")
    assert getattr(importlib.import_module(module), attr).__name__ == "SecureLLMGuardrail"


def test_held_back_stream_text_is_flushed_with_the_last_chunk(adapter_proxy: ProxyProcess) -> None:
    body = {"model": "general", "stream": True, "messages": user("all of this is held")}
    with httpx.stream("POST", f"{adapter_proxy.base_url}/chat/completions", json=body, timeout=30,
                      headers={"authorization": "Bearer sk-t-hold"}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    with_text = [c for c in chunks if c.get("choices") and c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["delta"]["content"] for c in with_text] == ["<all of this is held>"]
    assert with_text[0]["choices"][0]["finish_reason"] == "stop"  # flushed into the choice's last chunk
