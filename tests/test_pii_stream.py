"""Streamed answers: placeholders restored at every split point, new PII masked with a bounded buffer."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from shared_guards.errors import ContentViolation
from shared_guards.pii.config import PIIConfig
from shared_guards.pii.detector import PIIDetector
from shared_guards.pii.stream import PIIStreamFilter
from shared_guards.pii.vault import StreamRestorer, Vault, hold_point

ANSWER = "Dear <PERSON_1>, we wrote to <EMAIL_ADDRESS_1> about <PERSON_2>'s card <UNKNOWN_9>."
RESTORED = "Dear Ada Lovelace, we wrote to ada@example.org about Charles Babbage's card <UNKNOWN_9>."


def vault() -> Vault:
    v = Vault()
    assert v.pseudonym("PERSON", "Ada Lovelace") == "<PERSON_1>"
    assert v.pseudonym("EMAIL_ADDRESS", "ada@example.org") == "<EMAIL_ADDRESS_1>"
    assert v.pseudonym("PERSON", "Charles Babbage") == "<PERSON_2>"
    assert v.pseudonym("PERSON", "ada  LOVELACE") == "<PERSON_1>"  # same value, same placeholder
    return v


def run(f: Any, deltas: list[str]) -> str:
    out = "".join(f.feed(d) for d in deltas)
    return out + f.flush()


def test_vault_never_shows_values() -> None:
    v = vault()
    assert "Ada" not in repr(v) and "Ada" not in str(v) and len(v) == 3
    assert v.restore(ANSWER) == RESTORED


@pytest.mark.parametrize("i", range(len(ANSWER) + 1))
def test_restore_every_single_split(i: int) -> None:
    assert run(StreamRestorer(vault()), [ANSWER[:i], ANSWER[i:]]) == RESTORED


def test_restore_every_pair_of_splits() -> None:
    text = ANSWER[:40]
    expected = vault().restore(text)
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        assert run(StreamRestorer(vault()), [text[:i], text[i:j], text[j:]]) == expected, (i, j)


def test_restore_char_by_char_holds_only_a_placeholder() -> None:
    r = StreamRestorer(vault())
    out = ""
    for ch in ANSWER:
        out += r.feed(ch)
        assert len(r._pending.get(0, "")) <= 50
    assert out + r.flush() == RESTORED


def test_restore_keeps_choices_apart() -> None:
    r = StreamRestorer(vault())
    out = {0: r.feed("Hi <PER", 0), 1: r.feed("Hi <EMAIL_", 1)}
    out[0] += r.feed("SON_1>", 0) + r.flush(0)
    out[1] += r.feed("ADDRESS_1>", 1) + r.flush(1)
    assert out == {0: "Hi Ada Lovelace", 1: "Hi ada@example.org"}


@pytest.mark.parametrize(("text", "point"), [
    ("abc <", 4), ("abc <PERS", 4), ("abc <PERSON_1", 4), ("abc <PERSON_1>", 14), ("a < b", 5), ("x <lower", 8),
])
def test_hold_point(text: str, point: int) -> None:
    assert hold_point(text) == point


# -- scanning filter ------------------------------------------------------------------------------

CONFIG = PIIConfig(preset="gdpr", entities={"PERSON": "pseudonymize", "EMAIL_ADDRESS": "pseudonymize",
                                            "US_SSN": {"action": "mask", "mask_style": "partial"}})


@pytest.fixture(scope="module")
def detector() -> PIIDetector:
    return PIIDetector(CONFIG)


SCAN_TEXT = ("Thanks <PERSON_1>. Your SSN 123-45-6788 is on file, please call +44 20 7946 0958 if anything "
             "changes. I copied <EMAIL_ADDRESS_1> and will update the record today. ")
SCAN_EXPECTED = ("Thanks Ada Lovelace. Your SSN ***-**-6788 is on file, please call [PHONE_NUMBER] if anything "
                 "changes. I copied ada@example.org and will update the record today. ")


def test_scanning_stream_matches_the_whole_answer(detector: PIIDetector) -> None:
    assert run(PIIStreamFilter(detector, CONFIG, vault()), [SCAN_TEXT]) == SCAN_EXPECTED


@pytest.mark.parametrize("i", range(0, len(SCAN_TEXT) + 1, 3))
def test_scanning_stream_split_anywhere(detector: PIIDetector, i: int) -> None:
    text = SCAN_TEXT * 2
    out = run(PIIStreamFilter(detector, CONFIG, vault()), [text[:i], text[i:i + 7], text[i + 7:]])
    assert out == SCAN_EXPECTED * 2
    assert "123-45-6788" not in out and "7946" not in out


def test_scanning_stream_small_deltas_bounded_buffer(detector: PIIDetector) -> None:
    f = PIIStreamFilter(detector, CONFIG, vault())
    text = SCAN_TEXT * 12
    out, emitted_early = "", False
    for k in range(0, len(text), 5):
        out += f.feed(text[k:k + 5])
        assert len(f._pending.get(0, "")) <= CONFIG.stream_hold_chars + CONFIG.stream_batch_chars + 5
        emitted_early = emitted_early or (0 < len(out) and k < len(text) // 2)
    out += f.flush()
    assert emitted_early  # the stream flows; it is never held whole
    assert out == SCAN_EXPECTED * 12


def test_scanning_stream_blocks_secrets(detector: PIIDetector) -> None:
    f = PIIStreamFilter(detector, CONFIG, Vault())
    with pytest.raises(ContentViolation) as exc:
        run(f, ["Here is the key: AKIAIOSFO", "DNN7EXAMPLE and more text follows here."])
    assert exc.value.rule_id == "pii.block.SECRET" and "AKIA" not in exc.value.message


def test_private_key_split_over_many_chunks_never_leaks(detector: PIIDetector) -> None:
    f = PIIStreamFilter(detector, CONFIG, Vault())
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "qwertyuiopasdfghjklzxcvbnm\n" * 40 + "-----END RSA PRIVATE KEY-----"
    text = "Sure, here is the key you asked for. " * 8 + pem + " Keep it safe."
    out = ""
    with pytest.raises(ContentViolation):
        for k in range(0, len(text), 40):
            out += f.feed(text[k:k + 40])
        out += f.flush()
    assert "qwertyuiop" not in out and out.startswith("Sure, here is the key")
