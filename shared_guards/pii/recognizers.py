"""Our own Presidio recognizers: checksummed IDs, secrets, addresses, phone formats, name cues.

Every rule is a bounded regex (no nested unbounded quantifiers), an optional validator (a check
digit) and an optional context cue searched in a small window around the match. One
:class:`RuleRecognizer` runs a group of rules for one or more entities; Presidio's
``AnalyzerEngine`` runs it next to its own recognizers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from shared_guards.pii import checksums
from shared_guards.pii.entities import Entity


@dataclass(frozen=True)
class Rule:
    entity: str
    name: str
    regex: re.Pattern[str]
    score: float
    group: int = 0
    validator: Callable[[str], bool] | None = None
    # Context cue searched in ``window`` characters before (and ``after`` characters after) the match.
    context: re.Pattern[str] | None = None
    context_boost: float = 0.35
    requires_context: bool = False
    window: int = 48
    after: int = 0


def _cue(*words: str) -> re.Pattern[str]:
    return re.compile(r"(?i)(?<![a-z])(?:" + "|".join(words) + r")(?![a-z])")


class RuleRecognizer(LocalRecognizer):
    """Runs a list of :class:`Rule` for the entities they cover."""

    def __init__(self, name: str, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.rule_group = name
        entities = sorted({r.entity for r in rules})
        super().__init__(supported_entities=entities, name=name, supported_language="en")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        wanted = set(entities)
        out: list[RecognizerResult] = []
        for rule in self.rules:
            if rule.entity not in wanted:
                continue
            for m in rule.regex.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                value = text[start:end]
                if rule.validator is not None and not rule.validator(value):
                    continue
                score = rule.score
                if rule.context is not None:
                    lo = max(0, start - rule.window)
                    hit = rule.context.search(text, lo, start) is not None
                    if not hit and rule.after:
                        hit = rule.context.search(text, end, min(len(text), end + rule.after)) is not None
                    if hit:
                        score = min(1.0, score + rule.context_boost)
                    elif rule.requires_context:
                        continue
                out.append(
                    RecognizerResult(str(rule.entity), start, end, score, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.rule_group,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        "rule": rule.name,
                    })
                )
        return out


# --- national IDs --------------------------------------------------------------------------------

_ID_CUE = _cue("id", "identity", "identification", "national", "resident", "citizen", "card", "no", "number",
               "身份证", "身份證", "证件")


def national_id_rules() -> list[Rule]:
    return [
        Rule(Entity.CN_RESIDENT_ID, "cn_resident_id", re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])"),
             0.6, validator=checksums.cn_resident_id_ok, context=_ID_CUE, context_boost=0.3),
        Rule(Entity.UK_NINO, "uk_nino",
             re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d](?![0-9A-Za-z])"),
             0.5, validator=checksums.uk_nino_ok,
             context=_cue("ni", "nino", "national insurance", "insurance number", "ni number"), context_boost=0.4),
        Rule(Entity.US_SSN, "us_ssn_dashed", re.compile(r"(?<![\d-])\d{3}([- .])\d{2}\1\d{4}(?![\d-])"),
             0.6, validator=checksums.us_ssn_ok, context=_cue("ssn", "social security", "social", "ss#", "ss #"),
             context_boost=0.3),
        Rule(Entity.US_SSN, "us_ssn_plain", re.compile(r"(?<![\d-])\d{9}(?![\d-])"), 0.05,
             validator=checksums.us_ssn_ok, context=_cue("ssn", "social security", "ss#"), context_boost=0.6,
             requires_context=True, window=32),
        Rule(Entity.PASSPORT, "passport", re.compile(r"(?<![0-9A-Za-z])[A-Z0-9]{1,2}\d{6,8}[A-Z0-9]?(?![0-9A-Za-z])"),
             0.3, context=_cue("passport", "passport no", "passport number", "travel document"), context_boost=0.5,
             requires_context=True, window=40),
    ]


_DL_CUE = re.compile(r"(?i)(?:driver'?s?|driving)\s{0,2}licen[cs]e(?:\s{0,2}(?:number|no\.?|#|id))?\s{0,3}"
                     r"(?:is|:|=|#)?\s{0,3}$")


def license_rules() -> list[Rule]:
    return [
        Rule(Entity.US_DRIVER_LICENSE, "driver_license_cue",
             re.compile(r"(?<![\w\-])[A-Za-z]{0,2}\d[\d\-]{3,16}\d[A-Za-z]?(?![\w\-])"), 0.2,
             context=_DL_CUE, context_boost=0.7, requires_context=True, window=40),
    ]


def iban_rules() -> list[Rule]:
    # Presidio's IbanRecognizer wants upper case; this one takes any case, same mod-97 check.
    return [Rule(Entity.IBAN_CODE, "iban_any_case",
                 re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?(?![\w])"),
                 0.9, validator=checksums.iban_ok)]


# --- secrets -------------------------------------------------------------------------------------

_KEY_CUE = r"(?:api[_ -]?key|access[_ -]?key|secret(?:[_ -]?key)?|token|password|passwd|pwd|bearer|auth(?:orization)?|credential|key)"


def secret_rules() -> list[Rule]:
    s = Entity.SECRET
    return [
        Rule(s, "openai_key", re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}(?![\w-])"), 0.95),
        Rule(s, "anthropic_key", re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,200}(?![\w-])"), 0.95),
        Rule(s, "aws_access_key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![A-Z0-9])"), 0.95),
        Rule(s, "aws_secret_key",
             re.compile(r"(?i)aws.{0,20}?secret.{0,20}?[=:]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"),
             0.9, group=1),
        Rule(s, "github_token", re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"), 0.95),
        Rule(s, "slack_token", re.compile(r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,200}"), 0.95),
        Rule(s, "slack_webhook",
             re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]{6,12}/B[A-Za-z0-9_]{6,12}/[A-Za-z0-9_]{16,40}"), 0.95),
        Rule(s, "google_api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0.9),
        Rule(s, "stripe_key", re.compile(r"(?<![\w-])(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,99}(?![\w-])"), 0.95),
        Rule(s, "jwt", re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}"), 0.9),
        Rule(s, "private_key_pem",
             re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,16000}?"
                        r"-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"), 1.0),
        Rule(s, "generic_secret",
             re.compile(r"(?i)" + _KEY_CUE + r"[\w-]{0,20}[\"']?\s{0,3}(?:is|=|:|:=|=>)?\s{0,3}[\"']?"
                        r"([A-Za-z0-9+/_\-.=]{16,256})"),
             0.7, group=1, validator=checksums.looks_like_secret),
    ]


# --- payment cards (all IIN ranges, 12-19 digits, Luhn) -------------------------------------------

_CARD_CUE = _cue("card", "credit", "debit", "visa", "mastercard", "amex", "maestro", "jcb", "discover", "cc", "pan",
                 "diners", "unionpay", "payment")


def card_rules() -> list[Rule]:
    c = Entity.CREDIT_CARD
    return [
        Rule(c, "card_luhn", re.compile(r"(?<![\d\-])\d{4}(?:[ \-]?\d{2,4}){2,4}(?:[ \-]?\d{1,3})?(?![\d]|-\d)"),
             0.3, validator=checksums.luhn_ok, context=_CARD_CUE, context_boost=0.55, window=48),
    ]


# --- phone numbers -------------------------------------------------------------------------------

_PHONE_CUE = _cue("phone", "tel", "telephone", "mobile", "cell", "cellphone", "call", "calling", "called", "fax",
                  "office", "desk", "contact", "reach", "text", "sms", "whatsapp", "number", "dial", "ring", "home",
                  "work", "landline", "hotline", "registered", "answering", "ext", "messages?", "texting", "voicemail",
                  "mob", "tlf", "telefon", "tél", "phone number")
_DATEISH = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./](?:\d{2}|\d{4})$")
_IPISH = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def _phone_ok(value: str) -> bool:
    n = len(checksums.digits_only(value))
    if not 6 <= n <= 15:
        return False
    v = value.strip()
    return not (_DATEISH.match(v) or _IPISH.match(v))


def phone_rules() -> list[Rule]:
    p = Entity.PHONE_NUMBER
    ext = r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,5})?"
    end = r"(?![\w]|[\-.]\d)"
    return [
        # +CC (0)AA NNN NN NN and friends
        Rule(p, "phone_intl",
             re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,6}" + ext + end),
             0.6, validator=_phone_ok, context=_PHONE_CUE, context_boost=0.3),
        # (AAA) NNN-NNNN, AAA-NNN-NNNN, AAA.NNN.NNNN
        Rule(p, "phone_nanp",
             re.compile(r"(?<![\w\-.])(?:\(\d{2,4}\)\s?|\d{3}[ .\-])\d{3}[ .\-]\d{3,4}" + ext + end),
             0.5, validator=_phone_ok, context=_PHONE_CUE, context_boost=0.3, after=24),
        # Grouped local formats: 0490 39 07 81, 60-56-85-91, 079 0442 1744, 03.93.92.16.85, 99 668472, (37) 788-063
        Rule(p, "phone_grouped",
             re.compile(r"(?<![\w\-.+/:])(?:\(\d{1,5}\)|\d{2,5})(?:[ .\-]\d{2,8}){1,4}" + ext + r"(?![\w/]|[\-.:]\d)"),
             0.25, validator=_phone_ok, context=_PHONE_CUE, context_boost=0.4, window=40, after=16),
        # National format with a trunk 0 and 3+ groups: 0688 872 49 99, 079 0442 1744 (phone-shaped on its own)
        Rule(p, "phone_trunk",
             re.compile(r"(?<![\w\-.+/:])\(?0\d{1,4}\)?(?:[ .\-]\d{2,4}){2,4}(?![\w/]|[\-.:]\d)"),
             0.45, validator=lambda v: _phone_ok(v) and len(checksums.digits_only(v)) >= 9,
             context=_PHONE_CUE, context_boost=0.3, window=40),
        # A bare digit run next to a phone cue: 07700900123, 3660170548-Fax
        Rule(p, "phone_plain", re.compile(r"(?<![\w\-.+])\d{7,13}(?![\w]|[\-.]\d)"), 0.1, validator=_phone_ok,
             context=_PHONE_CUE, context_boost=0.45, window=24, after=8, requires_context=True),
    ]


# --- street addresses ----------------------------------------------------------------------------

_SUFFIX = (
    r"(?:street|st|road|rd|avenue|ave|av|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|square|sq|"
    r"terrace|ter|highway|hwy|parkway|pkwy|circle|cir|trail|trl|close|crescent|cres|row|alley|plaza|"
    r"gardens|grove|hill|mews|park|walk|green|strasse|straße|str|gasse|weg|platz|allee|vej|gade|gata|"
    r"gatan|vägen|veien|vegen|katu|tie|laan|straat|plein|utca|tér|út|u|gate|vei|gränd|kuja|polku|tanav|"
    r"iela|gatve|ulica|utca|str|odos|odós)"
)
_W = r"[^\W\d_][\w'’.\-]{0,30}"
_UNIT_BODY = r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|#)\.?\s{0,2}#?\d{1,6}[A-Za-z]?"
_UNIT = r"(?:,?\s{1,3}" + _UNIT_BODY + r")?"
# Lines that follow a street line: unit, city (any case), "REGION 12345", "Country (Greek) 51034", a postcode.
_WT = r"[^\W\d_][\w'’\-]{0,30}"
# A place-name word starts with a capital (or a letter of a script without case); lower-case words
# only join two of them ("Ostrov nad Ohrí", "Soto del Barco"): a line of ordinary words after an
# address ("..., Springfield\nwe will sign for it") is not part of it.
_WC = r"(?![a-zß-öø-ÿ])[^\W\d_][\w'’\-]{0,30}"
# A new line may start with a quote mark or a bullet ("> ", "• ", "- ", or "???" where a bullet
# was mangled by a wrong character set).
_SEP = r"(?:,\s{0,3}|\s{0,3}\n[\s>•·*?|\-]{0,6})"
_LINE = (r"(?:" + _UNIT_BODY + r"|" + _WC + r"(?:[ \-](?:[a-zà-ÿ]{1,4}[ \-])?" + _WC + r"){0,3}(?:\s\(" + _WT + r"\))?"
         r"(?:,?\s{1,3}(?:[A-Z]{2,3}\b|\d{4,6}(?:-\d{3,4})?)){0,2}|\d{4,6}(?:-\d{3,4})?)")
# Each tail line ends the line, the sentence or the list ("..., Springfield\nJohn Smith will sign": the
# name line goes on as a sentence, so it is not an address line).
_TAIL = r"(?:" + _SEP + _LINE + r"(?=[ \t]*(?:[,;.)\n]|$))){0,5}"
_PREFIX_TYPE = (r"(?i:via|viale|vicolo|piazza|corso|rua|rue|avenida|avenue|av\.|calle|c/|carrer|praça|plaza|plac|"
                r"ul\.|ulica|chemin|boulevard|bd\.|allée|quai|place|strada|leof\.|λεωφόρος|οδός)")
_ADDR_CUE = _cue("address", "addr", "lives at", "live at", "living at", "located at", "located", "moved to",
                 "moved", "send", "sent to", "ship", "shipping", "deliver", "delivery", "billing", "mailing",
                 "residence", "resides", "reside", "office is at", "visit", "street", "headquarters", "meet you at",
                 "drops you off at", "situated", "post", "mail")


def address_rules() -> list[Rule]:
    a = Entity.STREET_ADDRESS
    return [
        # 90 Whitchurch Road, 1668 Glyn St, 12 N. Main Street Apt. 4
        Rule(a, "address_suffix",
             re.compile(r"(?<![\w\-.])(?:\d{3,6}\s{1,3})?\d{1,6}[A-Za-z]?\s{1,3}(?:" + _W + r"\s{1,3}){0,3}(?i:" + _SUFFIX + r")\b\.?"
                        + _UNIT + _TAIL),
             0.55, context=_ADDR_CUE, context_boost=0.3),
        # Street type first: Via delle Coste 41, Rua do Arenque 1634, 3482 Via Franscini 71 Suite 838
        Rule(a, "address_type_first",
             re.compile(r"(?<![\w\-.])(?:\d{1,6}\s{1,3})?" + _PREFIX_TYPE + r"\s{1,3}" + _W + r"(?:\s{1,3}" + _W
                        + r"){0,4}\s{1,3}\d{1,5}[A-Za-z]?\b" + _UNIT + _TAIL),
             0.6, context=_ADDR_CUE, context_boost=0.25),
        # Street name then house number: Via delle Coste 41, 6750 Koskikatu 25 Apt. 864, Erzsébet tér 19.
        Rule(a, "address_number_after",
             re.compile(r"(?<![\w\-.])(?:\d{3,6}\s{1,3})?" + _W + r"(?:\s{1,3}" + _W + r"){0,3}\s{1,3}\d{1,5}[A-Za-z]?\b"
                        + _UNIT + _TAIL),
             0.2, context=_ADDR_CUE, context_boost=0.4, requires_context=True, window=40),
        # Zip-first then street with number: 27534 Þorsteinsgata 63
        Rule(a, "address_zip_street",
             re.compile(r"(?<![\w\-.])\d{3,6}\s{1,3}" + _W + r"(?:\s{1,3}" + _W + r"){0,3}\s{1,3}\d{1,5}[A-Za-z]?\b"
                        + _UNIT + _TAIL),
             0.45, context=_ADDR_CUE, context_boost=0.3),
        # US military addresses
        Rule(a, "address_military",
             re.compile(r"\b(?:PSC|Unit|USNS|USS|USCGC)\s{1,3}\d{3,5},?\s{1,3}Box\s{1,3}\d{3,5}(?:\s{0,3}\n?\s{0,3}"
                        r"(?:APO|FPO|DPO)\s{1,3}(?:AA|AE|AP)\s{1,3}\d{5})?"),
             0.8),
        # P.O. Box 123
        Rule(a, "address_po_box", re.compile(r"(?i)\bP\.?\s?O\.?\s{0,2}Box\s{1,3}\d{1,6}\b"), 0.6),
    ]


# --- countries (names from the phonenumbers package Presidio already depends on) -------------------

_AMBIGUOUS_COUNTRIES = {"Chad", "Jordan", "Georgia", "Jersey", "Turkey", "Israel", "Guinea", "Dominica", "Guernsey",
                        "Isle of Man", "Niger", "Mali", "Peru", "Cuba", "Oman"}


def _country_names() -> list[str]:
    from phonenumbers import SUPPORTED_REGIONS, geocoder

    names = {geocoder._region_display_name(r, "en") for r in SUPPORTED_REGIONS}
    names |= {"United States of America", "USA", "U.S.A.", "Great Britain", "England", "Scotland", "Wales",
              "Northern Ireland", "Holland", "Czech Republic", "South Korea", "North Korea", "Russia"}
    return sorted((n for n in names if n and "," not in n and n not in _AMBIGUOUS_COUNTRIES), key=len, reverse=True)


_PLACE_NAME = (r"(?!(?i:(?:mon|tues|wednes|thurs|fri|satur|sun)day|january|february|march|april|may|june|july|"
               r"august|september|october|november|december|today|tomorrow|yesterday)\b)"
               r"(?:[A-ZÀ-ÖØ-Þ][\w'’\-]{1,30}|[A-ZÀ-ÖØ-Þ]{2,30})")


def place_cue_rules() -> list[Rule]:
    """A capitalized name after a place cue: "flew to LEPPEN", "lives in Tobel", "I am in ΛΕΥΚΩΣΙΑ"."""
    return [Rule(Entity.LOCATION, "place_cue",
                 re.compile(r"(?i:\b(?:flew|fly|flying|moved|move|moving|travel(?:l?ed|l?ing)?|trip|drive|drove|"
                            r"relocat(?:e|ed|ing)|return(?:ed|ing)?)\s(?:back\s)?to|\b(?:lives?|living|lived|born|"
                            r"located|based|stationed|stay(?:s|ed|ing)?|arrived|raised|grew up|i am|i'm|we are|"
                            r"he is|she is|they are)\s(?:here\s)?in|\boriginally from|\bcomes? from|\bvisit(?:ed|ing)?|"
                            r"\barriv(?:e|es|ed|ing)\sat|\b(?:moved|moving|came|emigrated|immigrated|fled)\s(?:here\s)?from)"
                            r"\s{1,3}(" + _PLACE_NAME + r"(?:[ \-](?:(?:de|del|la|le|di|da|do|upon|sur|im)\s)?" + _PLACE_NAME
                            + r"){0,3})"),
                 0.9, group=1)]


def country_rules() -> list[Rule]:
    names = _country_names()
    alts = "|".join(re.escape(n) for n in names) + "|" + "|".join(re.escape(n.upper()) for n in names if len(n) > 4)
    # every name starts with a capital: the lookahead skips the long alternation at other positions
    return [Rule(Entity.LOCATION, "country", re.compile(r"(?<![\w\-])(?=[^\W\d_a-z])(?:" + alts + r")(?![\w\-])"), 0.6)]


# --- names with a cue ----------------------------------------------------------------------------

_NAME = r"[A-ZÀ-ÖØ-ÞĀ-ſ][\w'’\-]{1,30}"


_LOWER_NAME = r"[a-zà-öø-ÿ][a-zà-öø-ÿ'’\-]{1,30}"
_NOT_A_NAME = frozenset(
    "a an the not no is was very so too just also really my your his her their our it this that here there what "
    "unknown private secret confidential irrelevant important same different long short".split()
)


# An honorific before a capitalized name ("Mr. Leiva", "Dr Jane Roe"): the PERSON cue and the TITLE.
_HONORIFIC = r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra)\.?"
# An honorific with its dot: it marks a name even in lower-case text ("mr. elliott").
LOWER_HONORIFIC = r"(?i:\b(?:mr|mrs|ms|dr|prof)\.)"


def _lower_name_ok(value: str) -> bool:
    return all(w.casefold() not in _NOT_A_NAME for w in value.split())


def person_rules() -> list[Rule]:
    p = Entity.PERSON
    full = _NAME + r"(?:\s{1,2}(?:[A-Z]\.?\s{1,2})?" + _NAME + r"){0,2}"
    return [
        Rule(p, "person_honorific",
             re.compile(_HONORIFIC + r"\s{1,3}(" + full + ")"),
             0.7, group=1),
        Rule(p, "person_cue",
             re.compile(r"(?i:\bmy name is|\bname\s{0,2}:|\bname is|\bi am|\bi'm|\bthis is|\bsigned|\bregards,|"
                        r"\bsincerely,|\bpatient\s{0,2}:|\bcontact\s{0,2}:|\bdear|\bcalled|\bnamed)\s{1,8}(" + full + ")"),
             0.5, group=1),
        # "Dexter lives on Ziegelgasse 19": someone who lives somewhere is a person.
        Rule(p, "person_lives",
             re.compile(r"(?<![\w.])(" + full + r")\s{1,3}(?:lives|lived|resides|resided)\s(?:on|in|at)\b"),
             0.5, group=1),
        # A lower-case name after an honorific with its dot: "mr. elliott flew to ..." (one word: the
        # next one may as well be a verb).
        Rule(p, "person_honorific_lower",
             re.compile(LOWER_HONORIFIC + r"\s{1,3}(" + _LOWER_NAME + r")\b"),
             0.5, group=1, validator=_lower_name_ok),
        # Lower-case names after an explicit name cue: "my name is lena andersson", "maiden name is nyberg".
        Rule(p, "person_cue_lower",
             re.compile(r"(?i:\b(?:my|her|his|their|your)\s(?:maiden\s|last\s|first\s|full\s|sur)?name\s(?:is|was)|"
                        r"\bname\s{0,2}:)\s{1,8}(" + _LOWER_NAME + r"(?:\s(?:[a-z]\s)?" + _LOWER_NAME + r"){0,2})\b"),
             0.5, group=1, validator=_lower_name_ok),
    ]


# --- postal codes and honorifics ---------------------------------------------------------------

# A postal code: digits (3-6, with an optional second group: "394 13", "53-320", "12345-6789"), the
# Dutch "7412 SL", British "SW1A 1AA" and Canadian "B0J 2H0" shapes. Only counted next to a cue
# ("zip code", "postal code", "PLZ") here, or at a postcode's place in an address or after a place
# name (``analyzer.attach_postcodes``): a bare number is not a postcode.
POSTCODE = (r"(?:\d{4}\s?[A-Z]{2}(?![\w\-])|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d|"
            r"\d{3,6}(?:[ \-]\d{2,4})?)(?![\w\-/]|[.,:]\d)")
_ZIP_CUE = (r"(?i:\b(?:zip(?:\s?code)?|postal\s?code|post\s?code|postleitzahl|plz|code\s?postal|c[oó]digo\s?postal|"
            r"cep|pin\s?code)\b)")


def postcode_rules() -> list[Rule]:
    return [Rule(Entity.ZIP_CODE, "zip_cue",
                 re.compile(_ZIP_CUE + r"[^\w\n]{0,3}(?:(?:is|was|of|number|no)\b[^\w\n]{0,3}){0,2}"
                            r"(?<![\w\-.,/:])(" + POSTCODE + ")"),
                 0.85, group=1)]


# Head nouns of job titles (written for this project): "Local transit bus driver", "X-ray technician".
_OCCUPATIONS = (
    "accountant actor actress administrator agent analyst apprentice architect archivist assistant associate "
    "attendant auditor baker banker barber bartender broker builder buyer captain caregiver carpenter cashier "
    "ceo cfo chef chemist cleaner clerk coach consultant controller cook coordinator counselor counsellor courier "
    "curator dancer dentist designer developer dietitian director dispatcher distributor doctor driver economist "
    "editor electrician engineer estimator examiner executive farmer firefighter fitter founder gardener guard "
    "hairdresser handler historian hygienist illustrator inspector installer instructor intern interpreter "
    "investigator janitor journalist judge laborer labourer lawyer lecturer librarian machinist manager mechanic "
    "midwife miner musician nanny nurse officer operator optician packager painter paralegal paramedic pharmacist "
    "physician physicist pilot planner plumber poet producer professor programmer receptionist recruiter repairer "
    "reporter representative researcher salesman saleswoman scientist secretary singer soldier specialist "
    "statistician steward stewardess supervisor surgeon surveyor tailor teacher technician technologist teller "
    "therapist trader trainer translator tutor underwriter veterinarian waiter waitress welder worker writer"
).split()
# ...and the endings of many more: echocardiographer, cardiologist, pediatrician, psychiatrist.
_OCCUPATION_HEAD = (r"(?i:(?:" + "|".join(_OCCUPATIONS) + r")s?|[a-z]{3,20}(?:grapher|ologist|ician|iatrist)s?)")
_TITLE_WORD = r"(?:[^\W\d_][\w'’\-]{0,25},?|and|of)"
TITLE_PHRASE = r"(?:" + _TITLE_WORD + r"\s){0,5}?" + _OCCUPATION_HEAD + r"\b"
_TITLE_END = r"(?=\s{0,3}(?:[,.;:!?)\n]|$)|\s(?:at|for|in|with|and|but|since|until|from|who)\b)"


def title_rules() -> list[Rule]:
    """An honorific right before a name ("Mr. Leiva", "Dr Jane Roe", "mrs. labrie"): it tells gender
    or profession. Without its dot only before a capitalized word. A job title where a sentence
    gives one: "I worked for X as a bus driver", "Marie Roe, the packager, said"."""
    return [
        Rule(Entity.TITLE, "title_job_as",
             re.compile(r"(?i:\b(?:work(?:s|ed|ing)?|employed|job|position|role|career|hired|served|serving|started|"
                        r"promoted)\b[^.\n]{0,60}?\bas\s(?:an?\s|the\s)?)(" + TITLE_PHRASE + ")" + _TITLE_END), 0.5, group=1),
        Rule(Entity.TITLE, "title_job_apposition",
             re.compile(r"(?<=[^\W\d_]),\s(?i:the|our|their|a|an)\s(" + TITLE_PHRASE + r"),"), 0.5, group=1),
        Rule(Entity.TITLE, "title_honorific",
             re.compile(_HONORIFIC + r"(?=\s{1,3}" + _NAME + ")"), 0.6),
        Rule(Entity.TITLE, "title_honorific_lower",
             re.compile(LOWER_HONORIFIC + r"(?=\s{1,3}(?!(?:" + "|".join(sorted(_NOT_A_NAME)) + r")\b)"
                        + _LOWER_NAME + r"\b)"), 0.5),
    ]


# --- ages --------------------------------------------------------------------------------------


def age_rules() -> list[Rule]:
    return [
        Rule(Entity.AGE, "age_years_old",
             re.compile(r"(?i)\b(\d{1,3})(?:\s?|-)(?:years?[\s-]old|y/o|yrs?[\s-]old|year-old|yo\b)"), 0.6, group=1),
        Rule(Entity.AGE, "age_cue", re.compile(r"(?i)\b(?:aged?|age\s?:|age of|turned|turn|turning|turns|"
                                               r"when (?:he|she|i|they|we) (?:was|were))\s{1,2}(\d{1,3})\b(?![.,:/]\d)"),
             0.5, group=1),
    ]


# --- dates (spaCy's DATE when its NER runs; these rules when it does not) --------------------------

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
          r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_YEAR = r"(?:1[89]|20)\d{2}"


def date_rules() -> list[Rule]:
    d = Entity.DATE_TIME
    return [
        Rule(d, "weekday", re.compile(r"(?i)\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b"), 0.6),
        # 12 March 2020, March 12th, 2020, March 2020 (a month name alone is too often a word: May, March)
        Rule(d, "month_day", re.compile(r"\b(?:\d{1,2}(?:st|nd|rd|th)?\s(?:of\s)?" + _MONTH + r"\.?(?:,?\s" + _YEAR
                                        + r")?|" + _MONTH + r"\.?\s(?:\d{1,2}(?:st|nd|rd|th)?\b(?:,?\s" + _YEAR + r")?|"
                                        + _YEAR + r"))\b"), 0.6),
        # a year on its own, not a group of a longer number (cards, phones: "4111 2004 ...")
        Rule(d, "year", re.compile(r"(?<![\d\-./:,])(?<!\d\s)" + _YEAR + r"(?![\d\-/:]|\s\d|,\d|\.\d)"), 0.45,
             context=_cue("in", "since", "during", "until", "till", "of", "from", "by", "year", "founded", "born",
                          "before", "after", "circa", "around", "early", "late", "mid"), context_boost=0.3, window=12),
    ]


# --- configurable medical record numbers ---------------------------------------------------------


def mrn_rules(patterns: Sequence[str], score: float = 0.6) -> list[Rule]:
    out = []
    for i, pat in enumerate(patterns):
        rx = re.compile(pat)
        out.append(Rule(Entity.MEDICAL_RECORD_NUMBER, f"mrn_{i}", rx, score, group=1 if rx.groups else 0,
                        context=_cue("mrn", "medical record", "record number", "patient id", "chart"),
                        context_boost=0.3))
    return out


DEFAULT_MRN_PATTERNS: tuple[str, ...] = (
    r"(?i)\b(?:MRN|medical record(?: number| no\.?| #)?)\s{0,3}[:#]?\s{0,3}([A-Z]{0,3}\d{5,12})\b",
)
