"""Quotas through the real gateways: two LiteLLM proxy processes sharing one Redis enforce ONE
limit; a LiteLLM proxy and the Kong plugin server share a department limit; the demo's sk-rnd
gets 429 on its 11th request in a minute through LiteLLM and through Kong.

Processes are started through the session factories (``litellm_proxy_factory``,
``kong_harness_factory``). The demo checks use their own processes (an extra env entry) so other
tests' sk-rnd traffic against the shared demo proxy cannot eat into the budget."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_redis import delete_prefix

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SHARED_POLICY = REPO / "tests" / "policies" / "quota_shared.yaml"
DEMO_POLICY = REPO / "config" / "policy.yaml"
ISOLATED = {"SLG_TEST_ISOLATION": "quota"}


def chat(text: str = "hello", model: str = "general") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def shared_policy(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Path]:
    """The shared-quota policy with a key prefix unique to this run (deleted afterwards)."""
    prefix = f"slgtest-gw-{uuid.uuid4().hex[:10]}:"
    path = tmp_path_factory.mktemp("quota_policy") / "quota_shared.yaml"
    path.write_text(SHARED_POLICY.read_text().replace('key_prefix: "slgtest-shared:"', f'key_prefix: "{prefix}"'))
    assert prefix in path.read_text()
    yield path
    delete_prefix(redis_url, prefix)


def assert_openai_429(status: int, headers: Any, body: Any, rule: str) -> None:
    assert status == 429, body
    headers = {str(k).lower(): v for k, v in dict(headers).items()}
    assert int(headers["retry-after"]) >= 1
    err = body["error"]
    assert set(err) >= {"message", "type", "code", "param"}
    assert err["type"] == "rate_limit_error", err
    assert rule in err["message"]


def test_two_litellm_proxies_sharing_redis_enforce_one_limit(
    litellm_proxy_factory: Any, shared_policy: Path, redis_url: str
) -> None:
    a = litellm_proxy_factory(shared_policy, env={"REDIS_URL": redis_url, "SLG_REPLICA": "a"})
    b = litellm_proxy_factory(shared_policy, env={"REDIS_URL": redis_url, "SLG_REPLICA": "b"})
    assert a.port != b.port and a.proc.pid != b.proc.pid
    responses = [(a if i % 2 else b).post_chat(chat(f"request {i}"), "sk-q-shared") for i in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429], [r.text for r in responses]
    # Allowed answers carry the remaining budget (the guardrail's response-headers hook).
    assert [r.headers.get("x-ratelimit-remaining-requests") for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    last = responses[-1]
    assert_openai_429(last.status_code, last.headers, last.json(), "quota.identity.requests_per_minute")
    assert last.headers["x-ratelimit-limit-requests"] == "5"
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(last.headers["retry-after"]) <= 12  # 60 s / 5: one refill every 12 s after the 1st
    # The 6th went to replica a; replica b refuses too (the limit is global, not per process).
    assert b.post_chat(chat("again"), "sk-q-shared").status_code == 429


def test_token_budget_is_reconciled_from_usage_through_litellm(
    litellm_proxy_factory: Any, shared_policy: Path, redis_url: str
) -> None:
    proxy = litellm_proxy_factory(shared_policy, env={"REDIS_URL": redis_url, "SLG_REPLICA": "a"})
    client = proxy.client("sk-q-tokens")
    body = chat("count the tokens of this prompt, please") | {"max_tokens": 200}
    t0 = time.monotonic()
    r1 = proxy.post_chat(body, "sk-q-tokens")
    assert r1.status_code == 200, r1.text
    estimate = 100_000 - int(r1.headers["x-ratelimit-remaining-tokens"])
    assert estimate > 200  # prompt estimate + max_tokens
    used1 = r1.json()["usage"]["total_tokens"]
    assert 0 < used1 < estimate
    # A streamed answer with usage in its last chunk is reconciled too.
    stream = client.chat.completions.create(model="general", messages=body["messages"], max_tokens=200,
                                            stream=True, stream_options={"include_usage": True})
    used2 = [c.usage.total_tokens for c in stream if c.usage is not None][-1]
    r3 = proxy.post_chat(body, "sk-q-tokens")
    expected = 100_000 - used1 - used2 - estimate
    # GCRA refills continuously: 100,000 tokens a day is one token every 0.864 s.
    refilled = int((time.monotonic() - t0) / 0.864) + 1
    assert expected <= int(r3.headers["x-ratelimit-remaining-tokens"]) <= expected + refilled
    assert r3.headers["x-ratelimit-limit-tokens"] == "100000"


def test_litellm_and_kong_share_one_department_limit(
    litellm_proxy_factory: Any, kong_harness_factory: Any, shared_policy: Path, redis_url: str
) -> None:
    proxy = litellm_proxy_factory(shared_policy, env={"REDIS_URL": redis_url, "SLG_REPLICA": "a"})
    kong = kong_harness_factory(shared_policy, env={"REDIS_URL": redis_url})
    assert proxy.post_chat(chat(), "sk-q-mixed").status_code == 200
    first = kong.access(chat(), consumer="q-mixed")
    assert not first.exited
    assert first.fake.response_headers.get("x-ratelimit-remaining-requests") == "2"  # Kong exposes it too
    assert proxy.post_chat(chat(), "sk-q-mixed").status_code == 200
    assert not kong.access(chat(), consumer="q-mixed").exited  # 4 of 4 used across both gateways
    refused = kong.access(chat(), consumer="q-mixed")
    assert_openai_429(refused.exit_status or 0, refused.exit_headers, refused.exit_body,
                      "quota.department.requests_per_minute")
    assert proxy.post_chat(chat(), "sk-q-mixed").status_code == 429


def test_demo_sk_rnd_11th_request_in_a_minute_gets_429_litellm(litellm_proxy_factory: Any) -> None:
    proxy = litellm_proxy_factory(DEMO_POLICY, env=ISOLATED)
    client = proxy.client("sk-rnd")
    for i in range(10):
        out = client.chat.completions.create(model="coder", messages=[{"role": "user", "content": f"task {i}"}])
        assert out.choices[0].message.content
    import openai

    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="coder", messages=[{"role": "user", "content": "one more"}])
    r = exc.value.response
    assert_openai_429(r.status_code, r.headers, r.json(), "quota.identity.requests_per_minute")
    assert r.headers["x-ratelimit-limit-requests"] == "10"
    # Other departments are not limited.
    assert proxy.post_chat(chat(), "sk-finance").status_code == 200


def test_demo_rnd_11th_request_in_a_minute_gets_429_kong(kong_harness_factory: Any) -> None:
    h = kong_harness_factory(DEMO_POLICY, env=ISOLATED)
    results = [h.access(chat(f"task {i}", model="coder"), consumer="rnd") for i in range(11)]
    assert [r.exit_status for r in results] == [None] * 10 + [429]
    last = results[-1]
    assert_openai_429(last.exit_status or 0, last.exit_headers, last.exit_body, "quota.identity.requests_per_minute")
    assert last.exit_headers["x-ratelimit-limit-requests"] == "10"
    assert last.exit_headers["x-ratelimit-remaining-requests"] == "0"
