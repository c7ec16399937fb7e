"""PII desensitization through the real LiteLLM proxy and the Kong plugin server (demo policy,
department finance): the upstream only ever sees placeholders and masks, the client gets its values
back, plain and streamed, and no value reaches a log line or an audit record."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

NAME, EMAIL, SSN, CARD = "Margarethe Okonkwo", "m.okonkwo@example.net", "219-09-9998", "4012 8888 8888 1881"
PROMPT = f"Customer {NAME} ({EMAIL}) disputes a charge. SSN {SSN}, card {CARD}. Reply to {NAME}."
SENT = ("Customer <PERSON_1> (<EMAIL_ADDRESS_1>) disputes a charge. SSN ***-**-9998, card **** **** **** 1881. "
        "Reply to <PERSON_1>.")
RESTORED = (f"Customer {NAME} ({EMAIL}) disputes a charge. SSN ***-**-9998, card **** **** **** 1881. "
            f"Reply to {NAME}.")
VALUES = (NAME, EMAIL, SSN, CARD, "Okonkwo", "4012888888881881", "219099998")


def assert_no_values(text: str, values: tuple[str, ...] = VALUES) -> None:
    for v in values:
        assert v not in text, f"a PII value leaked ({len(v)} chars)"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- LiteLLM proxy ----------------------------------------------------------------------------------


def test_litellm_plain_answer_is_restored(litellm_proxy: Any, echo_upstream: Any) -> None:
    echo_upstream.clear()
    r = litellm_proxy.client("sk-finance").chat.completions.create(model="general", messages=user(PROMPT))
    assert r.choices[0].message.content == RESTORED
    (got,) = echo_upstream.received()
    assert got["messages"][-1]["content"] == SENT
    assert_no_values(json.dumps(got))


def test_litellm_streamed_answer_is_restored(litellm_proxy: Any, echo_upstream: Any) -> None:
    echo_upstream.clear()
    # Long enough (> stream_hold_chars + stream_batch_chars) that the filter emits before the end.
    stream = litellm_proxy.client("sk-finance").chat.completions.create(
        model="general", messages=user(" ".join([PROMPT] * 3)), stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(chunks) == " ".join([RESTORED] * 3)
    assert len([c for c in chunks if c]) >= 2  # still a stream, not one buffered blob
    assert_no_values(json.dumps(echo_upstream.received()))


def test_litellm_concurrent_requests_keep_their_own_values(litellm_proxy: Any) -> None:
    people = [("Astrid Lindholm", "astrid@example.se"), ("Kwame Mensah", "kwame@example.gh"),
              ("Yuki Matsumoto", "yuki@example.jp"), ("Pablo Ortega", "pablo@example.es")]
    client = litellm_proxy.client("sk-finance")

    def ask(p: tuple[str, str]) -> tuple[tuple[str, str], str]:
        text = f"Dear {p[0]}, we will write to {p[1]} tomorrow."
        r = client.chat.completions.create(model="general", messages=user(text))
        return p, r.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        for (name, email), answer in pool.map(ask, people * 2):
            assert answer == f"Dear {name}, we will write to {email} tomorrow."


def test_litellm_logs_and_audit_hold_no_values(litellm_proxy: Any) -> None:
    litellm_proxy.client("sk-finance").chat.completions.create(model="general", messages=user(PROMPT))
    assert_no_values(litellm_proxy.log_text())
    recs = litellm_proxy.audit_records()
    assert any(f.get("rule_id") == "pii.mask.US_SSN" for r in recs for f in r.get("findings", []))
    assert_no_values(json.dumps(recs))


def test_litellm_marketing_is_not_desensitized(litellm_proxy: Any, echo_upstream: Any) -> None:
    echo_upstream.clear()
    text = f"Draft a note to {NAME}."
    litellm_proxy.client("sk-marketing").chat.completions.create(model="general", messages=user(text))
    assert echo_upstream.received()[-1]["messages"][-1]["content"] == text


# -- Kong plugin server -----------------------------------------------------------------------------


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "general", "messages": [{"role": "user", "content": content}], **extra}


def sse(*deltas: str) -> str:
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "general",
               "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    chunks.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "general",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def sse_text(raw: Any) -> str:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out = ""
    for line in text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices", []):
                out += c["delta"].get("content") or ""
    return out


def test_kong_forwards_placeholders_and_restores_the_answer(kong_harness: Any) -> None:
    acc = kong_harness.access(chat(PROMPT), "finance")
    assert not acc.exited, acc.exit_body
    assert acc.forwarded_body["messages"][0]["content"] == SENT
    assert_no_values(acc.forwarded_raw.decode())
    resp = kong_harness.response(acc)  # the harness echoes the forwarded user message
    assert resp.exit_status == 200
    assert resp.exit_body["choices"][0]["message"]["content"] == RESTORED


@pytest.mark.parametrize("cut", [1, 5, 9, 10, 11, 14, 17, 18])
def test_kong_stream_restores_placeholders_split_across_chunks(kong_harness: Any, cut: int) -> None:
    acc = kong_harness.access(chat(f"Write to {NAME} at {EMAIL}", stream=True), "finance")
    assert acc.forwarded_body["messages"][0]["content"] == "Write to <PERSON_1> at <EMAIL_ADDRESS_1>"
    answer = "Hello <PERSON_1>, mailed <EMAIL_ADDRESS_1>."
    deltas = [answer[:cut], answer[cut:cut + 9], answer[cut + 9:]]
    resp = kong_harness.response(acc, body=sse(*deltas), headers={"Content-Type": "text/event-stream"})
    assert resp.exit_status == 200
    assert sse_text(resp.exit_raw) == f"Hello {NAME}, mailed {EMAIL}."


def test_kong_logs_and_audit_hold_no_values(kong_harness: Any) -> None:
    acc = kong_harness.access(chat(PROMPT), "finance")
    kong_harness.response(acc)
    kong_harness.wait_for_audit(lambda r: any(f.get("rule_id") == "pii.mask.CREDIT_CARD"
                                              for f in r.get("findings", [])))
    assert_no_values(kong_harness.log_text())
    assert_no_values(kong_harness.audit_path.read_text())
    assert_no_values(json.dumps(acc.fake.ctx_shared, default=str))  # the vault never leaves the process
