"""Recognizer tables: real values with valid and invalid check digits, secrets, and negatives."""

from __future__ import annotations

import time

import pytest

from shared_guards.pii import checksums
from shared_guards.pii.analyzer import AnalyzerSettings, PIIAnalyzer, get_analyzer
from shared_guards.pii.entities import Entity


@pytest.fixture(scope="module")
def analyzer() -> PIIAnalyzer:
    return get_analyzer()


def found(analyzer: PIIAnalyzer, text: str, entity: str) -> list[str]:
    return [text[d.start:d.end] for d in analyzer.analyze(text, [entity])]


@pytest.mark.parametrize(("number", "ok"), [
    ("4111 1111 1111 1111", True), ("4111111111111112", False), ("5500-0000-0000-0004", True),
    ("378282246310005", True), ("378282246310006", False), ("6011111111111117", True),
    ("3530111333300000", True), ("2223003122003222", True), ("6304000000000000", True), ("1234", False),
])
def test_luhn(number: str, ok: bool) -> None:
    assert checksums.luhn_ok(number) is ok


@pytest.mark.parametrize(("iban", "ok"), [
    ("GB82WEST12345698765432", True), ("GB82 WEST 1234 5698 7654 32", True), ("GB82WEST12345698765433", False),
    ("DE89370400440532013000", True), ("DE89370400440532013001", False), ("FR1420041010050500013M02606", True),
    ("XX00", False), ("GB82WEST1234569876543$", False),
])
def test_iban_checksum(iban: str, ok: bool) -> None:
    assert checksums.iban_ok(iban) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("11010519491231002X", True), ("11010519491231002x", True), ("110105194912310021", False),
    ("440524198001010013", True), ("440524198001010014", False),
    ("440524188001010014", False),  # born before 1900
    ("110105194913310028", False),  # month 13
    ("1101051949123100", False),  # too short
])
def test_cn_resident_id(value: str, ok: bool) -> None:
    assert checksums.cn_resident_id_ok(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("AB123456C", True), ("AB 12 34 56 C", True), ("ab123456d", True), ("GB123456A", False), ("NK123456A", False),
    ("DA123456A", False), ("AO123456A", False), ("QQ123456C", False), ("AB123456E", False), ("AB12345C", False),
])
def test_uk_nino(value: str, ok: bool) -> None:
    assert checksums.uk_nino_ok(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("123-45-6788", True), ("000-12-3456", False), ("666-12-3456", False), ("912-34-5678", False),
    ("123-00-4567", False), ("123-45-0000", False), ("111-11-1111", False),
    ("078-05-1120", True), ("123-45-6789", True),  # published samples are still masked
])
def test_us_ssn_rules(value: str, ok: bool) -> None:
    assert checksums.us_ssn_ok(value) is ok


# (text, entity, expected detected substrings)
POSITIVE = [
    ("Card: 4111 1111 1111 1111, thanks", Entity.CREDIT_CARD, ["4111 1111 1111 1111"]),
    ("my card 2223003122003222 expired", Entity.CREDIT_CARD, ["2223003122003222"]),
    ("my card 4111111111111112 expired", Entity.CREDIT_CARD, []),  # fails Luhn
    ("Wire it to GB82 WEST 1234 5698 7654 32 today", Entity.IBAN_CODE, ["GB82 WEST 1234 5698 7654 32"]),
    ("Wire it to GB82WEST12345698765433 today", Entity.IBAN_CODE, []),  # bad checksum
    ("身份证 11010519491231002X 已登记", Entity.CN_RESIDENT_ID, ["11010519491231002X"]),
    ("resident id 110105194912310021", Entity.CN_RESIDENT_ID, []),
    ("NI number AB 12 34 56 C on file", Entity.UK_NINO, ["AB 12 34 56 C"]),
    ("NI number GB 12 34 56 A on file", Entity.UK_NINO, []),
    ("SSN 123-45-6788.", Entity.US_SSN, ["123-45-6788"]),
    ("SSN 666-45-6788.", Entity.US_SSN, []),
    ("my ssn is 123456788", Entity.US_SSN, ["123456788"]),
    ("order 123456788 shipped", Entity.US_SSN, []),  # a bare 9-digit number needs a cue
    ("Mail alice.smith@example.co.uk now", Entity.EMAIL_ADDRESS, ["alice.smith@example.co.uk"]),
    ("from 192.168.10.24 and 2001:db8::8a2e:370:7334", Entity.IP_ADDRESS, ["192.168.10.24", "2001:db8::8a2e:370:7334"]),
    ("Call me at +44 20 7946 0958 tonight", Entity.PHONE_NUMBER, ["+44 20 7946 0958"]),
    ("Reach me on (415) 555-0100 x23.", Entity.PHONE_NUMBER, ["(415) 555-0100 x23"]),
    ("Mobile: 0490 39 07 81", Entity.PHONE_NUMBER, ["0490 39 07 81"]),
    ("passport number X12345678 issued", Entity.PASSPORT, ["X12345678"]),
    ("MRN: 00123456 admitted", Entity.MEDICAL_RECORD_NUMBER, ["00123456"]),
    ("I live at 90 Whitchurch Road, Cardiff.", Entity.STREET_ADDRESS, ["90 Whitchurch Road, Cardiff"]),
    ("Ship to PSC 3294, Box 9168\nAPO AA 61487", Entity.STREET_ADDRESS, ["PSC 3294, Box 9168\nAPO AA 61487"]),
    ("Please ask Dr. Maria Kowalski about it", Entity.PERSON, ["Maria Kowalski"]),
    ("She was born on 2/8/1935.", Entity.DATE_TIME, ["2/8/1935"]),
    ("Mr. Leiva flew to LEPPEN on Tuesday morning.", Entity.LOCATION, ["LEPPEN"]),
    ("Mr. Leiva flew to LEPPEN on Tuesday morning.", Entity.DATE_TIME, ["Tuesday"]),
    ("Ship it to Norway or Portugal", Entity.LOCATION, ["Norway", "Portugal"]),
    ("The delegation arrived at Veldhoven this morning.", Entity.LOCATION, ["Veldhoven"]),
    ("Her parents emigrated from Szekszárd in 1988.", Entity.LOCATION, ["Szekszárd"]),
    ("please block my card asap, my name is lena andersson.", Entity.PERSON, ["lena andersson"]),
    ("Customer Margarethe Okonkwo disputes a charge", Entity.PERSON, ["Margarethe Okonkwo"]),
    ("They had 3: Gaetane, Hannah and Derek Walcott.", Entity.PERSON, ["Gaetane", "Hannah", "Derek Walcott"]),
    ("My brother just turned 47", Entity.AGE, ["47"]),
    ("see https://www.example.com/path?q=1 for details", Entity.URL, ["https://www.example.com/path?q=1"]),
]


@pytest.mark.parametrize(("text", "entity", "expected"), POSITIVE)
def test_detects(analyzer: PIIAnalyzer, text: str, entity: Entity, expected: list[str]) -> None:
    assert found(analyzer, text, entity) == expected


SECRETS = [
    ("key sk-proj-4fJk2LmN9pQrS7tUvWxYz1AbCdEfGh", "sk-proj-4fJk2LmN9pQrS7tUvWxYz1AbCdEfGh"),
    ("AWS AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"),
    ("slack xoxb-1234567890-abcdefghijKLMN", "xoxb-1234567890-abcdefghijKLMN"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"),
    ('config: api_key = "Zx8fK2pQ9rT4vW7yB1nM3sL6"', "Zx8fK2pQ9rT4vW7yB1nM3sL6"),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secrets(analyzer: PIIAnalyzer, text: str, secret: str) -> None:
    assert found(analyzer, text, Entity.SECRET) == [secret]


@pytest.mark.parametrize("text", [
    "Use the key sk-finance for the demo",  # short demo key, not a secret
    "The key is to be consistent and patient.",
    "token count was 1234 tokens",
    "password must be at least sixteen characters long",
    "AKIA is a prefix, not a key",
])
def test_secret_negatives(analyzer: PIIAnalyzer, text: str) -> None:
    assert found(analyzer, text, Entity.SECRET) == []


def test_custom_mrn_pattern() -> None:
    a = PIIAnalyzer(AnalyzerSettings(mrn_patterns=(r"\bHOSP-(\d{6})\b",), cache_size=0))
    assert [d.entity for d in a.analyze("see HOSP-123456 today", [Entity.MEDICAL_RECORD_NUMBER])] == [
        "MEDICAL_RECORD_NUMBER"]


def test_bad_mrn_regex_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="bad regex"):
        AnalyzerSettings(mrn_patterns=("(unclosed",))


def test_allow_list_and_threshold(analyzer: PIIAnalyzer) -> None:
    text = "Mail support@example.com or alice@example.com"
    got = analyzer.analyze(text, [Entity.EMAIL_ADDRESS], allow_list=["SUPPORT@example.com"])
    assert [text[d.start:d.end] for d in got] == ["alice@example.com"]
    assert analyzer.analyze(text, [Entity.EMAIL_ADDRESS], threshold=1.01) == []


def test_results_are_cached_by_text(analyzer: PIIAnalyzer) -> None:
    text = "Jane Doe wrote from jane@example.org " * 20
    first = analyzer.analyze(text)
    t0 = time.perf_counter()
    again = analyzer.analyze(text)
    assert again == first and (time.perf_counter() - t0) < 0.005


@pytest.mark.parametrize("text", [
    "1 " * 5000,  # many short numbers
    "a" * 20000,
    ("Street " * 3000) + "1",
    "key=" + "A1" * 5000,
    "<" * 5000 + "PERSON_1",
])
def test_pathological_inputs_stay_fast(analyzer: PIIAnalyzer, text: str) -> None:
    t0 = time.perf_counter()
    analyzer.analyze(text)
    assert time.perf_counter() - t0 < 5.0


def _anchor_words(analyzer: PIIAnalyzer, text: str, skip: list[tuple[int, int]]) -> list[str]:
    eng = analyzer.nlp_engine
    doc = eng.tokenize(text)
    return [doc[i].text for a, b in eng.windows(doc, skip) for i in range(a, b) if doc[i].text[:1].isupper()]


@pytest.mark.parametrize(
    ("text", "skipped", "kept"),
    [
        # codes and short acronyms are not NER anchors; names in capitals still are
        ("my IBAN DE89370400440532013000 was sent", ["DE89370400440532013000"], []),
        ("the SSN field is empty today", ["SSN"], []),
        ("PATIENT NAME: JOHN SMITH admitted", [], ["JOHN", "SMITH"]),
    ],
)
def test_ner_windows_skip_codes_and_acronyms(analyzer: PIIAnalyzer, text: str, skipped: list[str],
                                            kept: list[str]) -> None:
    words = _anchor_words(analyzer, text, [])
    assert not set(skipped) & set(words)
    assert set(kept) <= set(words)


def test_ner_skips_anchors_inside_confident_pattern_matches(analyzer: PIIAnalyzer) -> None:
    text = "Maria Lindqvist asked us to ship it to 6750 Koskikatu 25 Apt. 864, Helsinki."
    addr = (text.index("6750"), text.index(", Helsinki"))
    words = _anchor_words(analyzer, text, [addr])
    assert "Koskikatu" not in words and "Apt" not in words
    assert "Maria" in words and "Lindqvist" in words
    # end to end with every entity (pattern pass, then NER): one address, the name still found
    dets = [(d.entity, text[d.start:d.end]) for d in analyzer.analyze(text)]
    assert (Entity.PERSON, "Maria Lindqvist") in dets
    assert any(e == Entity.STREET_ADDRESS and "Koskikatu" in v for e, v in dets)


# An address match used to run on into the next line or comma part and swallow a name there.
ADDRESS_THEN_NAME = [
    ("Ship to 12 Main Street, Springfield\nJohn Smith will sign for it.", "12 Main Street, Springfield",
     "John Smith"),
    ("Send it to 90 Whitchurch Road, Maria Lopez will pick it up.", "90 Whitchurch Road", "Maria Lopez"),
    ("Deliver to 45 Elm Road\nPeter Novak signs for the parcel.", "45 Elm Road", "Peter Novak"),
]


@pytest.mark.parametrize("ner", ["learned", "spacy"])
@pytest.mark.parametrize(("text", "address", "name"), ADDRESS_THEN_NAME)
def test_address_does_not_swallow_the_next_name(ner: str, text: str, address: str, name: str) -> None:
    dets = [(d.entity, text[d.start:d.end]) for d in get_analyzer(AnalyzerSettings(ner=ner)).analyze(text)]
    assert (Entity.STREET_ADDRESS, address) in dets
    assert (Entity.PERSON, name) in dets


def test_address_is_cut_before_a_name_found_after_its_comma() -> None:
    from shared_guards.pii.analyzer import Detection, resolve_overlaps

    text = "Meet at 7 Harbour Road, Ingrid Solberg will wait there."
    addr = Detection(Entity.STREET_ADDRESS, 8, text.index(" will"), 0.85, "address_suffix")
    name = Detection(Entity.PERSON, text.index("Ingrid"), text.index(" will"), 0.86, "slg_learned_ner")
    got = {(d.entity, text[d.start:d.end]) for d in resolve_overlaps([addr, name], text)}
    assert got == {(Entity.STREET_ADDRESS, "7 Harbour Road"), (Entity.PERSON, "Ingrid Solberg")}


def test_a_repeated_name_tagged_as_a_place_is_the_name() -> None:
    """The tagger may read a name differently in two places ("Reply to X" like "flew to X"); the
    same text as a found name is that name, so a policy that only tags places cannot leak it."""
    from shared_guards.pii.analyzer import Detection, propagate_names

    text = "Customer Edda Mbeki disputes a charge. Reply to Edda Mbeki. Ship to Edda Lane."
    a, b = text.index("Edda"), text.index("Edda", 20)
    c = text.index("Edda Lane")
    dets = [Detection(Entity.PERSON, a, a + 10, 0.86, "slg_learned_ner"),
            Detection(Entity.LOCATION, b, b + 10, 0.86, "slg_learned_ner"),
            Detection(Entity.LOCATION, c, c + 9, 0.86, "slg_learned_ner")]
    got = {(d.entity, d.start, text[d.start:d.end]) for d in propagate_names(text, dets)}
    assert (Entity.PERSON, b, "Edda Mbeki") in got
    assert (Entity.LOCATION, c, "Edda Lane") in got  # only the exact text of the name


@pytest.mark.parametrize("text", [
    "Customer Jane Roe, SSN 123-45-6789, email jane@example.org: draft a reply.",
    "Please write to Jane Roe, SSN 123-45-6789.",
    "Refund Jane Roe, card 4111 1111 1111 1111, today.",
])
def test_a_name_next_to_an_id_is_never_dropped(analyzer: PIIAnalyzer, text: str) -> None:
    """The tagger can read "Jane Roe, SSN 123" as an address; a confident pattern match inside
    it must cut that span, not discard it: every character of the name stays covered."""
    start = text.index("Jane Roe")
    covered: set[int] = set()
    for d in analyzer.analyze(text):
        covered.update(range(d.start, d.end))
    assert set(range(start, start + len("Jane Roe"))) <= covered


@pytest.mark.parametrize("text, phone", [
    ("+33 1 42 68 53 00 is the office", "+33 1 42 68 53 00"),
    ("+44 20 7946 0958 is the office", "+44 20 7946 0958"),
])
def test_an_international_number_is_masked_whole_when_a_cue_boosts_its_local_part(text: str, phone: str) -> None:
    # the local part ("42 68 53 00") gets a cue boost the "+CC" match does not; the two overlapping
    # phone matches are one number, so nothing of it ("+33 1") may stay unmasked
    dets = [d for d in get_analyzer().analyze(text) if d.entity == Entity.PHONE_NUMBER]
    assert [text[d.start:d.end] for d in dets] == [phone]


@pytest.mark.parametrize("text, split", [
    ("Gaetane, Hannah, Anthony, Derek, Anna and Andrew.", True),   # given names: six people
    ("Mary, Ariana, Isabel & Teresa", True),
    ("Barnett, Melton and Garcia", False),                          # surnames: a firm's name
    ("Paris, Lyon, Marseille and Nice", False),                     # places
    ("Hannah and Derek", False),                                    # two items: left to the tagger
])
def test_a_tagged_list_of_given_names_is_that_many_people(text: str, split: bool) -> None:
    from shared_guards.pii.analyzer import Detection, split_name_lists
    from shared_guards.pii.learned_ner import load_model
    from shared_guards.pii.ner_recognizer import NAME

    classes = load_model().featurizer.lexicon_classes
    for entity in (Entity.LOCATION, Entity.STREET_ADDRESS, Entity.ORGANIZATION):
        out = split_name_lists(text, [Detection(entity.value, 0, len(text), 0.8, NAME)], classes)
        if split:
            names = [n.strip() for n in text.rstrip(".").replace(" and ", ",").replace("&", ",").split(",")]
            assert [text[d.start:d.end] for d in out] == names
            assert {d.entity for d in out} == {Entity.PERSON.value}
        else:
            assert [(d.entity, d.start, d.end) for d in out] == [(entity.value, 0, len(text))]


@pytest.mark.parametrize("text, listed, split", [
    ("It is the brainchild of our 3 founders: Kónya, Becker and Vasquez.", "Becker and Vasquez", True),
    ("The co-founders were Eklund, Moreau and Hodge.", "Eklund, Moreau and Hodge", True),
    ("The case went to Barnett, Melton and Garcia last week.", "Barnett, Melton and Garcia", False),
    ("Our partners: Acme, Globex and Initech.", "Acme, Globex and Initech", False),  # companies
])
def test_a_list_after_a_word_for_people_is_people(text: str, listed: str, split: bool) -> None:
    from shared_guards.pii.analyzer import Detection, split_name_lists
    from shared_guards.pii.learned_ner import load_model
    from shared_guards.pii.ner_recognizer import NAME

    start = text.index(listed)
    d = Detection(Entity.ORGANIZATION.value, start, start + len(listed), 0.8, NAME)
    out = split_name_lists(text, [d], load_model().featurizer.lexicon_classes)
    if split:
        assert {x.entity for x in out} == {Entity.PERSON.value}
        assert [text[x.start:x.end] for x in out] == listed.replace(" and ", ", ").split(", ")
    else:
        assert out == [d]


def test_a_name_list_takes_its_separately_tagged_first_item_and_names_that_are_places_too() -> None:
    from shared_guards.pii.analyzer import Detection, split_name_lists
    from shared_guards.pii.learned_ner import load_model
    from shared_guards.pii.ner_recognizer import NAME

    text = "They had 6: Efimiya, Mary, Ariana, Brittany, Teresa and Jodi."
    first = Detection(Entity.ORGANIZATION.value, 12, 19, 0.7, NAME)          # "Efimiya" alone
    rest = Detection(Entity.LOCATION.value, 21, len(text) - 1, 0.8, NAME)    # "Mary, ... and Jodi"
    out = split_name_lists(text, [first, rest], load_model().featurizer.lexicon_classes)
    assert [text[d.start:d.end] for d in out] == ["Efimiya", "Mary", "Ariana", "Brittany", "Teresa", "Jodi"]
    assert {d.entity for d in out} == {Entity.PERSON.value}


@pytest.mark.parametrize("text, name", [
    ("Dexter lives on Ziegelgasse 19 street.", "Dexter"),
    ("Ciset Ortega resides in a flat on Rua Mina 50.", "Ciset Ortega"),
    ("mr. elliott flew to finnbogastaðir on friday", "elliott"),   # lower-case text, honorific cue
])
def test_person_cues_that_work_without_a_trained_name(text: str, name: str) -> None:
    found = [text[d.start:d.end] for d in get_analyzer().analyze(text) if d.entity == Entity.PERSON]
    assert name in found


@pytest.mark.parametrize("prefix", ["> ", "• ", "- ", "??? "])
def test_an_address_block_goes_on_across_quote_and_bullet_marks(prefix: str) -> None:
    lines = ["66029 138 Consul Place", "Apt. 050", "Broomfield", "New Zealand 57006"]
    text = "\n".join(prefix + line for line in lines)
    spans = [text[d.start:d.end] for d in get_analyzer().analyze(text) if d.entity == Entity.STREET_ADDRESS]
    assert len(spans) == 1 and spans[0].startswith(lines[0]) and spans[0].endswith(lines[-1])


# --- postal codes and titles ---------------------------------------------------------------------


def spans(analyzer: PIIAnalyzer, text: str) -> list[tuple[str, str]]:
    return [(d.entity, text[d.start:d.end]) for d in analyzer.analyze(text)]


@pytest.mark.parametrize(("text", "value"), [
    ("My zip code is 35350, thanks.", "35350"),
    ("ZIP: 394 13", "394 13"),
    ("Postal code: SW1A 1AA", "SW1A 1AA"),
    ("postcode B0J 2H0 please", "B0J 2H0"),
    ("PLZ 10115", "10115"),
    ("zip code 7412 SL", "7412 SL"),
    ("Our new office will be in Bjert 6091 from May.", "6091"),
])
def test_postcode_with_a_cue_or_next_to_a_place(analyzer: PIIAnalyzer, text: str, value: str) -> None:
    assert (Entity.ZIP_CODE.value, value) in spans(analyzer, text)


@pytest.mark.parametrize("text", [
    "The Tokyo 2020 games were postponed.",
    "Nidwalden and Obwalden 1173: to the Counts of Habsburg",  # a timeline, not a postcode
    "| Salm 1499 | raised to county |",
    "Order 35350 shipped yesterday.",  # a number without a cue
    "We counted 500 people in Oslo.",
])
def test_no_postcode_without_a_postcode_context(analyzer: PIIAnalyzer, text: str) -> None:
    assert Entity.ZIP_CODE.value not in {e for e, _ in spans(analyzer, text)}


def test_postcode_below_an_address_is_part_of_it(analyzer: PIIAnalyzer) -> None:
    """A postcode on its own line under the town (where the address patterns stop) is masked with
    the address; a house number on the street line never is a postcode."""
    text = "Please ship it to:\n3482 Via Franscini 71 Suite 838\nTujetsch\nnan\n7188\nThanks!"
    got = spans(analyzer, text)
    addressed = "".join(v for e, v in got if e == Entity.STREET_ADDRESS)
    assert "7188" in addressed and "3482 Via Franscini 71" in addressed
    assert Entity.ZIP_CODE.value not in {e for e, _ in got}
    one_line = "Send it to 12 Main Street, Springfield, IL 62704 please."
    assert "62704" in "".join(v for e, v in spans(analyzer, one_line) if e == Entity.STREET_ADDRESS)


def test_a_list_after_an_address_is_not_its_postcode() -> None:
    """Numbered list lines below an address ("91020, Sowing Mycospawn") are not its postcode; a
    postcode line is."""
    from shared_guards.pii.analyzer import Detection, attach_postcodes

    text = "Ship to 12 Main Street\n91020, Sowing Mycospawn\n91021, Springheart Nantuko"
    address = Detection(Entity.STREET_ADDRESS.value, 8, 22, 0.85, "address_suffix")
    assert attach_postcodes(text, [address], zip_codes=True) == [address]
    text = "Ship to 12 Main Street\nSpringfield\n62704\nThanks"
    got = attach_postcodes(text, [address], zip_codes=True)
    assert [(d.entity, text[d.start:d.end]) for d in got] == [
        (Entity.STREET_ADDRESS.value, "12 Main Street"), (Entity.STREET_ADDRESS.value, "62704")]


@pytest.mark.parametrize(("text", "titles"), [
    ("Mr. Leiva flew to Lisbon.", ["Mr."]),
    ("Please ask Dr Jane Roe and mrs. labrie.", ["Dr", "mrs."]),
    ("I used to work for Acme Group as Rolling machine operator, but quit.", ["Rolling machine operator"]),
    ('Marie Langrova, the Packager, said: "I am glad."', ["Packager"]),
    ("Jamie Pratt\n\nTalking-books clerk\n\nPersonal Info:", ["Talking-books clerk"]),
])
def test_titles(analyzer: PIIAnalyzer, text: str, titles: list[str]) -> None:
    got = spans(analyzer, text)
    assert [v for e, v in got if e == Entity.TITLE] == titles
    assert any(e == Entity.PERSON for e, _ in got) or "work for" in text  # the name stays a PERSON


@pytest.mark.parametrize("text", [
    "Use the driver as a fallback, the manager said nothing.",
    "The doctor is in. Mr. the end.",
    "She is a driver.",  # no title context
])
def test_no_title_without_a_name_or_job_context(analyzer: PIIAnalyzer, text: str) -> None:
    assert Entity.TITLE.value not in {e for e, _ in spans(analyzer, text)}


def test_span_index_answers_like_a_scan_over_all_spans() -> None:
    """The overlap index behind overlap resolution and the postcode/title rules gives the same
    answers as checking every span, also for spans that overlap each other."""
    import random

    from shared_guards.pii.analyzer import SpanIndex

    rng = random.Random(3)
    for _ in range(200):
        spans = [(a, a + rng.randint(1, 15)) for a in (rng.randint(0, 60) for _ in range(rng.randint(0, 8)))]
        index = SpanIndex(spans)
        for s in range(0, 70, 3):
            for e in (s, s + 1, s + 7):
                assert index.overlaps(s, e) == any(s < b and a < e for a, b in spans)
                assert index.covers(s, e) == any(a <= s and e <= b for a, b in spans)
