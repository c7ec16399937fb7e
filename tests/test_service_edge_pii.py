"""The edge profile's pattern-only PII guard: a table of real inputs, answers and streams."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared_guards.errors import GuardViolation
from shared_guards.guard import RequestContext, Resources
from shared_guards.guards.pii_patterns import PatternPIIConfig, PatternPIIGuard
from shared_guards.policy import DepartmentPolicy
from shared_guards.types import (
    Action,
    Choice,
    ContentPart,
    GuardRequest,
    GuardResponse,
    Identity,
    Message,
    PartKind,
    Role,
)

GDPR = {"preset": "gdpr", "entities": {"US_SSN": {"action": "mask", "mask_style": "partial"},
                                       "EMAIL_ADDRESS": "pseudonymize"}}


def _guard(options: dict[str, Any] | None = None) -> PatternPIIGuard:
    return PatternPIIGuard(PatternPIIConfig.model_validate(options or GDPR), Resources(ThreadPoolExecutor(1)))


def _ctx() -> RequestContext:
    return RequestContext("r1", Identity(team="finance"), "finance", DepartmentPolicy(models=["general"]))


def _req(text: str) -> GuardRequest:
    return GuardRequest((Message(Role.USER, (ContentPart(PartKind.TEXT, text),)),), "general")


@pytest.mark.parametrize("text, entities", [
    ("mail me at jane.doe+x@mail.example.co.uk today", ["EMAIL_ADDRESS"]),
    ("card 4111 1111 1111 1111 expires", ["CREDIT_CARD"]),
    ("card 4111-1111-1111-1112 is not a card (Luhn)", []),
    ("SSN 536-22-8417.", ["US_SSN"]),
    ("SSN 000-12-3456 is never issued", []),
    ("IBAN DE89 3704 0044 0532 0130 00 please", ["IBAN_CODE"]),
    ("IBAN DE00 3704 0044 0532 0130 00 fails mod-97", []),
    ("NINO AB 12 34 56 C", ["UK_NINO"]),
    ("from 192.168.10.254 to 10.0.0.1", ["IP_ADDRESS", "IP_ADDRESS"]),
    ("version 1.2.3.4567 is not an address", []),
    ("call +1 415-555-0132 or (030) 1234 5678", ["PHONE_NUMBER", "PHONE_NUMBER"]),
    ("plain words and 2026 numbers only", []),
])
def test_detections(text: str, entities: list[str]) -> None:
    g = _guard({"preset": "all"})
    assert [h.entity for h in g.detector.hits(text)] == entities


def test_request_masks_pseudonymizes_and_restores() -> None:
    g, ctx = _guard(), _ctx()
    r = asyncio.run(g.check_request(_req("Mail jane@example.com and jane@example.com, SSN 536-22-8417."), ctx))
    assert r.action is Action.MODIFY and isinstance(r.sanitized, GuardRequest)
    sent = r.sanitized.messages[0].text
    assert sent == "Mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>, SSN ***-**-8417."
    assert {f.entity_type for f in r.findings} == {"EMAIL_ADDRESS", "US_SSN"}
    assert r.headers == {"x-slg-pii": "EMAIL_ADDRESS,US_SSN"}
    answer = GuardResponse((Choice(0, f"{sent} New: bob@example.org"),))
    out = asyncio.run(g.check_response(answer, ctx))
    assert isinstance(out.sanitized, GuardResponse)
    assert out.sanitized.choices[0].text == ("Mail jane@example.com and jane@example.com, SSN ***-**-8417. "
                                             "New: [EMAIL_ADDRESS]")


def test_secrets_block_and_allow_list() -> None:
    g = _guard()
    r = asyncio.run(g.check_request(_req("key sk-live_9fJ2kQ8zX1mN4bV7cR0tY6wP"), _ctx()))
    assert r.action is Action.BLOCK and r.violation is not None and r.violation.rule_id == "pii.block.SECRET"
    assert "sk-live" not in r.violation.message
    g = _guard({**GDPR, "allow_list": ["help@example.com"]})
    r = asyncio.run(g.check_request(_req("write help@example.com"), _ctx()))
    assert r.action is Action.ALLOW


@pytest.mark.parametrize("size", [1, 3, 7, 40])
def test_stream_split_values_are_restored_and_masked_whole(size: int) -> None:
    g, ctx = _guard(), _ctx()
    sent = asyncio.run(g.check_request(_req("Mail jane@example.com"), ctx)).sanitized
    assert isinstance(sent, GuardRequest)
    answer = ("Sure. " * 40) + "I wrote to <EMAIL_ADDRESS_1> about 536-22-8417 and bob@example.org. " + "Bye. " * 40
    f = g.stream_filter(ctx)
    assert f is not None
    pieces = [f.feed(answer[i:i + size]) for i in range(0, len(answer), size)]
    text = "".join(pieces) + f.flush()
    assert text == answer.replace("<EMAIL_ADDRESS_1>", "jane@example.com").replace(
        "536-22-8417", "***-**-8417").replace("bob@example.org", "[EMAIL_ADDRESS]")
    assert not any("536-22" in p or "<EMAIL" in p or "bob@" in p for p in pieces)


def test_stream_stops_on_a_secret() -> None:
    f = _guard().stream_filter(_ctx())
    assert f is not None
    with pytest.raises(GuardViolation):
        f.feed("x " * 200 + "token sk-live_9fJ2kQ8zX1mN4bV7cR0tY6wP " + "y " * 200)
        f.flush()
