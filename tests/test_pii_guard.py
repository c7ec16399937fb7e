"""PIIGuard through the real engine: actions, presets, vault isolation, answers, no leaks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_guards import GuardEngine, Identity, parse_chat_request
from shared_guards.audit import JsonlAuditSink
from shared_guards.errors import ContentViolation, PolicyError
from shared_guards.guards.pii import STATE_KEY, PIIGuard
from shared_guards.policy import parse_policy
from shared_guards.types import Choice, GuardResponse, Stage

FINANCE = {"preset": "gdpr", "entities": {
    "US_SSN": {"action": "mask", "mask_style": "partial"}, "CREDIT_CARD": {"action": "mask", "mask_style": "partial"},
    "PERSON": "pseudonymize", "EMAIL_ADDRESS": "pseudonymize"}}

POLICY: dict[str, Any] = {
    "version": "test",
    "defaults": {"on_error": "fail_closed"},
    "departments": {
        "finance": {"models": ["*"], "guards": [{"name": "pii", "timeout_ms": 20000, "options": FINANCE}]},
        "strict": {"models": ["*"], "guards": [{"name": "pii", "timeout_ms": 20000, "options": {
            "preset": "none", "entities": {"US_SSN": "block", "SECRET": "block", "EMAIL_ADDRESS": "mask"}}}]},
        "tagging": {"models": ["*"], "guards": [{"name": "pii", "timeout_ms": 20000, "options": {"preset": "all"}}]},
        "health": {"models": ["*"], "guards": [{"name": "pii", "timeout_ms": 20000, "options": {"preset": "hipaa"}}]},
        "cards": {"models": ["*"], "guards": [{"name": "pii", "timeout_ms": 20000, "options": {
            "preset": "pci", "allow_list": ["4111 1111 1111 1111"]}}]},
    },
}

SSN, CARD, NAME, EMAIL = "123-45-6788", "5500 0000 0000 0004", "Johanna Lindqvist", "johanna.lindqvist@example.com"
SECRETS = (SSN, CARD, NAME, EMAIL, "Lindqvist", "6788".join(("555-", "")))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("pii_guard")
    path = d / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    audit = d / "audit.jsonl"
    eng = GuardEngine(path, audit=JsonlAuditSink(audit))
    yield eng, audit
    eng.close()


def chat(text: str, department: str, *extra: dict[str, Any]) -> Any:
    body = {"model": "general", "messages": [*extra, {"role": "user", "content": text}]}
    return parse_chat_request(body, Identity(department=department))


def answer(text: str) -> GuardResponse:
    return GuardResponse(choices=(Choice(text=text),))


async def test_finance_masks_pseudonymizes_and_restores(env: Any) -> None:
    eng, audit = env
    text = f"I am {NAME}, mail {EMAIL}. SSN {SSN}, card {CARD}. Regards, {NAME}"
    d, ctx = await eng.check_request(chat(text, "finance"))
    sent = d.request.messages[-1].text
    assert d.changed and not d.blocked
    assert sent == ("I am <PERSON_1>, mail <EMAIL_ADDRESS_1>. SSN ***-**-6788, card **** **** **** 0004. "
                    "Regards, <PERSON_1>")
    for v in (NAME, EMAIL, SSN, CARD):
        assert v not in sent
    assert {f.rule_id for f in d.findings} == {"pii.pseudonymize.PERSON", "pii.pseudonymize.EMAIL_ADDRESS",
                                               "pii.mask.US_SSN", "pii.mask.CREDIT_CARD"}
    assert d.headers["x-slg-pii"] == "CREDIT_CARD,EMAIL_ADDRESS,PERSON,US_SSN"
    r = await eng.check_response(ctx, answer(f"Echo: {sent}"))
    assert r.response is not None
    assert r.response.choices[0].text == (f"Echo: I am {NAME}, mail {EMAIL}. SSN ***-**-6788, card "
                                          f"**** **** **** 0004. Regards, {NAME}")
    await eng.finish(ctx, ok=True)
    assert STATE_KEY not in ctx.state  # the vault is gone with the request
    raw = audit.read_text()
    assert "pii.mask.US_SSN" in raw
    for v in (NAME, EMAIL, SSN, CARD, "Lindqvist"):
        assert v not in raw


async def test_findings_carry_offsets_not_values(env: Any) -> None:
    eng, _ = env
    text = f"SSN {SSN}"
    d, ctx = await eng.check_request(chat(text, "finance"))
    (f,) = d.findings
    assert (f.entity_type, f.start, f.end, f.message_index) == ("US_SSN", 4, 15, 0)
    assert SSN not in json.dumps(f.audit_view())
    await eng.finish(ctx, ok=True)


@pytest.mark.parametrize(("text", "entity"), [
    (f"my SSN is {SSN}", "US_SSN"),
    ("use key AKIAIOSFODNN7EXAMPLE please", "SECRET"),
])
async def test_block_names_types_only(env: Any, text: str, entity: str) -> None:
    eng, audit = env
    d, _ = await eng.check_request(chat(text, "strict"))
    assert d.blocked and isinstance(d.violation, ContentViolation)
    assert d.violation.http_status == 400 and d.violation.rule_id == f"pii.block.{entity}"
    body = json.dumps(d.violation.to_openai())
    assert entity in body and f"pii.block.{entity}" in body
    assert SSN not in body and "AKIAIOSFODNN7EXAMPLE" not in body
    assert "AKIAIOSFODNN7EXAMPLE" not in audit.read_text()


async def test_strict_masks_email_and_ignores_names(env: Any) -> None:
    eng, _ = env
    d, ctx = await eng.check_request(chat(f"{NAME} at {EMAIL}", "strict"))
    assert d.request.messages[0].text == f"{NAME} at [EMAIL_ADDRESS]"
    await eng.finish(ctx, ok=True)


async def test_tag_forwards_unchanged_and_marks(env: Any) -> None:
    eng, _ = env
    text = f"{NAME} called from +44 20 7946 0958"
    d, ctx = await eng.check_request(chat(text, "tagging"))
    assert not d.changed and d.request.messages[0].text == text
    assert {"PERSON", "PHONE_NUMBER"} <= set(d.headers["x-slg-pii"].split(","))
    assert {f.rule_id for f in d.findings} >= {"pii.tag.PERSON", "pii.tag.PHONE_NUMBER"}
    await eng.finish(ctx, ok=True)


async def test_hipaa_masks_dates_and_places(env: Any) -> None:
    eng, _ = env
    d, ctx = await eng.check_request(chat("Patient Maria Garcia, born 3/14/1962 in Boston, MRN: 00482913.", "health"))
    sent = d.request.messages[0].text
    assert "<PERSON_1>" in sent and "[DATE_TIME]" in sent and "[LOCATION]" in sent
    assert "[MEDICAL_RECORD_NUMBER]" in sent and "00482913" not in sent
    await eng.finish(ctx, ok=True)


async def test_hipaa_masks_postcodes_and_addresses_with_theirs(env: Any) -> None:
    """A postcode is a Safe Harbor identifier: after a cue it is masked as ZIP_CODE; on the line
    under an address's town it is masked with the address."""
    eng, _ = env
    text = "My zip code is 35350. Send the kit to:\n3482 Via Franscini 71 Suite 838\nTujetsch\nnan\n7188\nThanks"
    d, ctx = await eng.check_request(chat(text, "health"))
    sent = d.request.messages[0].text
    assert "[ZIP_CODE]" in sent and "[STREET_ADDRESS]" in sent
    assert "35350" not in sent and "7188" not in sent and "Franscini" not in sent
    await eng.finish(ctx, ok=True)


async def test_pci_allow_list_and_untouched_email(env: Any) -> None:
    eng, _ = env
    text = f"test card 4111 1111 1111 1111, real card {CARD}, mail {EMAIL}"
    d, ctx = await eng.check_request(chat(text, "cards"))
    assert d.request.messages[0].text == f"test card 4111 1111 1111 1111, real card **** **** **** 0004, mail {EMAIL}"
    await eng.finish(ctx, ok=True)


async def test_consistent_placeholders_across_conversation(env: Any) -> None:
    eng, _ = env
    history = [{"role": "user", "content": f"Write to {NAME}."},
               {"role": "assistant", "content": f"Sure, writing to {NAME} and Peter Hansen."}]
    d, ctx = await eng.check_request(chat(f"Also cc Peter Hansen and {NAME.upper()}", "finance", *history))
    texts = [m.text for m in d.request.messages]
    assert texts == ["Write to <PERSON_1>.", "Sure, writing to <PERSON_1> and <PERSON_2>.",
                     "Also cc <PERSON_2> and <PERSON_1>"]
    await eng.finish(ctx, ok=True)


async def test_literal_placeholders_in_user_text_are_not_reused(env: Any) -> None:
    eng, _ = env
    d, ctx = await eng.check_request(chat(f"Template <PERSON_1> should be {NAME}", "finance"))
    assert d.request.messages[0].text == "Template <PERSON_1> should be <PERSON_2>"
    r = await eng.check_response(ctx, answer("<PERSON_1> -> <PERSON_2>"))
    assert r.response is not None and r.response.choices[0].text == f"<PERSON_1> -> {NAME}"
    await eng.finish(ctx, ok=True)


async def test_tool_call_arguments_are_desensitized(env: Any) -> None:
    eng, _ = env
    body = {"model": "general", "messages": [
        {"role": "user", "content": "send it"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "send_mail", "arguments": json.dumps({"to": EMAIL, "ssn": SSN})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"sent to {EMAIL}"}]}
    d, ctx = await eng.check_request(parse_chat_request(body, Identity(department="finance")))
    args = json.loads(d.request.messages[1].tool_calls[0].arguments)
    assert args == {"to": "<EMAIL_ADDRESS_1>", "ssn": "***-**-6788"}
    assert d.request.messages[2].text == "sent to <EMAIL_ADDRESS_1>"
    await eng.finish(ctx, ok=True)


async def test_answer_pii_not_from_vault_is_masked(env: Any) -> None:
    eng, _ = env
    d, ctx = await eng.check_request(chat(f"Summarize the file of {NAME}", "finance"))
    text = ("Summary for <PERSON_1>: contact Peter Hansen at peter@example.org or +44 20 7946 0958, "
            f"card 4111 1111 1111 1111. Also {NAME}.")
    r = await eng.check_response(ctx, answer(text))
    assert r.response is not None
    out = r.response.choices[0].text
    assert out == (f"Summary for {NAME}: contact [PERSON] at [EMAIL_ADDRESS] or [PHONE_NUMBER], "
                   f"card **** **** **** 1111. Also {NAME}.")
    assert {f.entity_type for f in r.findings} == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"}
    await eng.finish(ctx, ok=True)


async def test_secret_in_answer_blocks(env: Any) -> None:
    eng, _ = env
    d, ctx = await eng.check_request(chat("hello", "strict"))
    r = await eng.check_response(ctx, answer("here: AKIAIOSFODNN7EXAMPLE"))
    assert r.blocked and r.violation is not None and r.violation.rule_id == "pii.block.SECRET"
    assert "AKIA" not in r.violation.message
    await eng.finish(ctx, ok=False)


async def test_concurrent_requests_never_share_vaults(env: Any) -> None:
    eng, _ = env
    names = ["Alice Johnson", "Bruno Martins", "Chen Wei", "Dmitri Volkov", "Elena Rossi", "Farah Haddad",
             "Gustav Berg", "Hiro Tanaka", "Ines Duarte", "Jonas Weber", "Karin Olsen", "Luca Bianchi"]

    async def one(name: str) -> tuple[str, str, str]:
        email = name.lower().replace(" ", ".") + "@example.com"
        d, ctx = await eng.check_request(chat(f"Dear {name}, your mail {email} is verified.", "finance"))
        assert ctx is not None
        sent = d.request.messages[0].text
        await asyncio.sleep(0)  # interleave with the other requests
        r = await eng.check_response(ctx, answer(sent))
        assert r.response is not None
        await eng.finish(ctx, ok=True)
        return name, sent, r.response.choices[0].text

    results = await asyncio.gather(*(one(n) for n in names))
    for name, sent, restored in results:
        email = name.lower().replace(" ", ".") + "@example.com"
        assert sent == "Dear <PERSON_1>, your mail <EMAIL_ADDRESS_1> is verified."
        assert restored == f"Dear {name}, your mail {email} is verified."
        for other in names:
            if other != name:
                assert other not in restored
    # nothing per-request stays on the shared guard objects
    for b in eng.pipeline("finance").guards:
        if isinstance(b.guard, PIIGuard):
            dump = repr(vars(b.guard))
            assert not any(n in dump for n in names)


def test_guard_declares_its_contract() -> None:
    assert PIIGuard.name == "pii" and PIIGuard.modifies
    assert PIIGuard.stages == frozenset({Stage.REQUEST, Stage.RESPONSE})


@pytest.mark.parametrize(("options", "where"), [
    ({"preset": "sox"}, "options.preset"),
    ({"entities": {"SHOE_SIZE": "mask"}}, "options.entities.SHOE_SIZE"),
    ({"entities": {"PERSON": "obliterate"}}, "options.entities.PERSON"),
    ({"threshold": 2}, "options.threshold"),
    ({"colour": "red"}, "options.colour"),
    ({"allow_patterns": ["(x"]}, "options.allow_patterns"),
])
def test_bad_options_fail_at_load(options: dict[str, Any], where: str) -> None:
    data = {"departments": {"d": {"models": ["*"], "guards": [{"name": "pii", "options": options}]}}}
    with pytest.raises(PolicyError) as exc:
        parse_policy(data)
    assert any(where in path for path, _ in exc.value.problems), exc.value.problems


def test_demo_policy_finance_uses_pii() -> None:
    from shared_guards.policy import load_policy

    loaded = load_policy(Path(__file__).resolve().parent.parent / "config" / "policy.yaml")
    names = [s.name for s in loaded.policy.guards_for("finance")]
    assert "pii" in names
