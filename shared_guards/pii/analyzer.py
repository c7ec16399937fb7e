"""The PII analyzer: Presidio's ``AnalyzerEngine`` with our recognizers, a windowed spaCy NER, cheap
pre-filters, overlap resolution and a small result cache.

Built once per process per :class:`AnalyzerSettings` (:func:`get_analyzer`). ``analyze`` is
CPU-bound and synchronous: guards call it in ``resources.executor``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # before presidio imports tldextract

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsLicenseRecognizer,
    UsPassportRecognizer,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator
from spacy.lang.en import English

from shared_guards.errors import ConfigError
from shared_guards.lru import LRU
from shared_guards.pii import recognizers as rec
from shared_guards.pii.entities import NER_ENTITIES, Entity
from shared_guards.pii.learned_ner import NerModel, load_model
from shared_guards.pii.ner_recognizer import NAME as LEARNED_NAME
from shared_guards.pii.ner_recognizer import LearnedNerRecognizer
from shared_guards.pii.nlp import DEFAULT_MODEL, WindowedSpacyNlpEngine

# Presidio can log analysis details (with text) at DEBUG: keep its loggers quiet.
for _name in ("presidio-analyzer", "presidio-anonymizer"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class NerBackend(StrEnum):
    """Which model finds names, places, organizations and NRP."""

    LEARNED = "learned"  # our small learned tagger only (fast; spaCy only tokenizes)
    SPACY = "spacy"  # the spaCy pipeline's NER (``spacy_model``), on windows
    BOTH = "both"  # both; their spans are merged


class AnalyzerSettings(BaseModel):
    """What the analyzer is built from; also its cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ner: NerBackend = Field(NerBackend.LEARNED, description="Name/place model: learned | spacy | both.")
    ner_model: str | None = Field(None, description="Path of a learned tagger model (.json.gz, from "
                                  "`python -m shared_guards.pii.train_ner`); default: the packaged one.")
    spacy_model: str = Field(DEFAULT_MODEL, description="spaCy package name or path of a pipeline with 'ner' "
                             "(used when ner is spacy or both).")
    ner_window: int = Field(3, ge=0, le=64, description="Tokens around capitalized words fed to NER; 0 = whole text.")
    mrn_patterns: tuple[str, ...] = Field(
        rec.DEFAULT_MRN_PATTERNS,
        description="Regexes for medical record numbers (group 1, if any, is the number).",
    )
    phonenumbers_regions: tuple[str, ...] = Field(
        (), description="Also run Presidio's phonenumbers-based PhoneRecognizer for these regions (slower; "
        "our own phone patterns run always).")
    prefilter: bool = Field(True, description="Skip recognizers whose trigger characters are absent.")
    cache_size: int = Field(2048, ge=0, le=1_000_000)

    @field_validator("mrn_patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regex {p!r}: {exc}") from None
        return v


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected span. Carries offsets, never the value."""

    entity: str
    start: int
    end: int
    score: float
    rule: str = ""


# Lower tier wins an overlap; within a tier the higher score, then the longer span.
_TIER: dict[str, int] = {
    Entity.SECRET: 0, Entity.CREDIT_CARD: 0, Entity.IBAN_CODE: 0, Entity.US_SSN: 0, Entity.CN_RESIDENT_ID: 0,
    Entity.UK_NINO: 0, Entity.EMAIL_ADDRESS: 0,
    Entity.IP_ADDRESS: 1, Entity.URL: 1, Entity.MEDICAL_RECORD_NUMBER: 1, Entity.US_PASSPORT: 1,
    Entity.PASSPORT: 1, Entity.PHONE_NUMBER: 1, Entity.ZIP_CODE: 1, Entity.US_DRIVER_LICENSE: 2, Entity.STREET_ADDRESS: 2,
    Entity.PERSON: 3, Entity.DATE_TIME: 3, Entity.AGE: 3, Entity.LOCATION: 4, Entity.NRP: 4, Entity.ORGANIZATION: 5,
}
_RAW_MIN_SCORE = 0.15
_STRONG = 0.4  # a pattern match scored at least this beats the NER spans inside it
_PASSPORT_HINT = re.compile(r"(?i)passport|travel doc")
_LICENSE_HINT = re.compile(r"(?i)licen[cs]e|driver|driving|\bDL\b|\bD\.L\.")
_IBANISH = re.compile(r"[A-Za-z]{2}\d{2}")
_SECRET_HINT = re.compile(
    r"(?i)sk-|akia|asia|gh[pousr]_|github_pat|xox|eyj|private key|aiza|hooks\.slack|_live_|_test_|key|token|secret|"
    r"passw|pwd|bearer|auth|credential"
)


_DIGIT = re.compile(r"\d")
_UPPER = re.compile(r"[^\W\d_a-zß-öø-ÿ]")  # a capital, or any letter outside Latin lower case


def _features(text: str) -> tuple[int, int]:
    """Digits and capitals (or caseless letters) in ``text``: counted by regex, not per character."""
    return len(_DIGIT.findall(text)), len(_UPPER.findall(text))


# Made-up values that reach every recognizer once (no real person, address or account).
_WARM_UP_TEXT = (
    "Dr. Jane Example (jane@example.com, +1 555 010 0199, http://www.example.com) lives at 12 Sample Road, "
    "Springfield, and flew to Oslo on Monday 3/4/2021. IP 192.0.2.1 and 2001:db8::1, card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789, passport X1234567, driver's license D1234567, age 42."
)


class _ContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer, given only the results of recognizers that have context words
    (it deep-copies every result it is given; ours score their own context)."""

    def enhance_using_context(self, text: str, raw_results: list[RecognizerResult], nlp_artifacts: NlpArtifacts,
                              recognizers: list[EntityRecognizer], context: list[str] | None = None
                              ) -> list[RecognizerResult]:
        with_context = {r.id for r in recognizers if r.context}
        key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
        need = [r for r in raw_results if (r.recognition_metadata or {}).get(key) in with_context]
        if not need and not context:
            return raw_results
        rest = [r for r in raw_results if (r.recognition_metadata or {}).get(key) not in with_context]
        enhanced: list[RecognizerResult] = super().enhance_using_context(text, need, nlp_artifacts, recognizers,
                                                                         context)
        return rest + enhanced


class PIIAnalyzer:
    """Presidio analyzer with our registry and NLP engine. Thread-safe; use through an executor."""

    def __init__(self, settings: AnalyzerSettings | None = None, *, ner_model: NerModel | None = None) -> None:
        """``ner_model``: a learned tagger object to use instead of loading ``settings.ner_model``
        (cross-validation passes each fold's model)."""
        self.settings = settings or AnalyzerSettings()
        s = self.settings
        self.use_spacy_ner = s.ner in (NerBackend.SPACY, NerBackend.BOTH)
        self.learned: NerModel | None = None
        if s.ner in (NerBackend.LEARNED, NerBackend.BOTH):
            if ner_model is None:
                try:
                    ner_model = load_model(s.ner_model)
                except (OSError, ValueError, KeyError) as exc:
                    raise ConfigError(f"pii: cannot load the learned NER model {s.ner_model or '(packaged)'!r}: "
                                      f"{exc}") from None
            self.learned = ner_model
        self.nlp_engine = WindowedSpacyNlpEngine(s.spacy_model, window=s.ner_window, run_ner=self.use_spacy_ner)
        self.nlp_engine.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        for r in self._recognizers():
            registry.add_recognizer(r)
        self.engine = AnalyzerEngine(
            registry=registry,
            nlp_engine=self.nlp_engine,
            supported_languages=["en"],
            context_aware_enhancer=_ContextEnhancer(context_prefix_count=6, context_suffix_count=2),
        )
        self.supported: frozenset[str] = frozenset(registry.get_supported_entities(["en"]))
        self._cache: LRU[tuple[bytes, frozenset[str]], tuple[Detection, ...]] = LRU(s.cache_size)
        # Presidio compiles its big regexes (IPv6, URL, dates) on first use: pay that at start-up,
        # not in the first request that happens to contain an IP address.
        self._raw(_WARM_UP_TEXT, frozenset(self.supported))

    def _recognizers(self) -> list[EntityRecognizer]:
        s = self.settings
        extra: list[EntityRecognizer] = (
            [PhoneRecognizer(supported_regions=list(s.phonenumbers_regions))] if s.phonenumbers_regions else []
        )
        return extra + [
            CreditCardRecognizer(),
            IbanRecognizer(),
            EmailRecognizer(),
            IpRecognizer(),
            UrlRecognizer(),
            DateRecognizer(),
            UsLicenseRecognizer(),
            UsPassportRecognizer(),
            *([SpacyRecognizer(supported_entities=[e.value for e in NER_ENTITIES])] if self.use_spacy_ner else []),
            *([LearnedNerRecognizer(self.learned)] if self.learned is not None else []),
            rec.RuleRecognizer("slg_national_ids", rec.national_id_rules()),
            rec.RuleRecognizer("slg_secrets", rec.secret_rules()),
            rec.RuleRecognizer("slg_phones", rec.phone_rules()),
            rec.RuleRecognizer("slg_addresses", rec.address_rules()),
            rec.RuleRecognizer("slg_person_cues", rec.person_rules()),
            rec.RuleRecognizer("slg_mrn", rec.mrn_rules(s.mrn_patterns)),
            rec.RuleRecognizer("slg_cards", rec.card_rules()),
            rec.RuleRecognizer("slg_ages", rec.age_rules()),
            rec.RuleRecognizer("slg_postcodes", rec.postcode_rules()),
            rec.RuleRecognizer("slg_titles", rec.title_rules()),
            *([] if self.use_spacy_ner else [rec.RuleRecognizer("slg_dates", rec.date_rules())]),
            rec.RuleRecognizer("slg_countries", rec.country_rules() + rec.place_cue_rules()),
            rec.RuleRecognizer("slg_licenses", rec.license_rules()),
            rec.RuleRecognizer("slg_ibans", rec.iban_rules()),
        ]

    # -- pre-filter ------------------------------------------------------------------------------

    def candidates(self, text: str, entities: Collection[str]) -> set[str]:
        """The requested entities that could possibly occur in ``text`` (cheap character tests)."""
        want = set(entities) & self.supported
        if not self.settings.prefilter:
            return want
        digits, upper = _features(text)
        keep: set[str] = set()
        for e in want:
            if e == Entity.EMAIL_ADDRESS:
                ok = "@" in text
            elif e == Entity.CREDIT_CARD:
                ok = digits >= 12
            elif e == Entity.IBAN_CODE:
                ok = digits >= 8 and _IBANISH.search(text) is not None
            elif e == Entity.CN_RESIDENT_ID:
                ok = digits >= 17
            elif e in (Entity.US_SSN, Entity.UK_NINO):
                ok = digits >= 6
            elif e in (Entity.PASSPORT, Entity.US_PASSPORT):
                # below the threshold without the word: skip the recognizer when the word is absent
                ok = digits >= 6 and _PASSPORT_HINT.search(text) is not None
            elif e == Entity.US_DRIVER_LICENSE:
                ok = digits >= 4 and _LICENSE_HINT.search(text) is not None
            elif e == Entity.PHONE_NUMBER:
                ok = digits >= 5
            elif e == Entity.IP_ADDRESS:
                ok = (digits >= 4 and "." in text) or "::" in text or text.count(":") >= 3
            elif e == Entity.URL:
                low = text.lower()
                ok = "://" in low or "www." in low
            elif e == Entity.SECRET:
                ok = ("-----BEGIN" in text) or _SECRET_HINT.search(text) is not None
            elif e in (Entity.STREET_ADDRESS, Entity.MEDICAL_RECORD_NUMBER, Entity.AGE):
                ok = digits >= 1
            elif e == Entity.ZIP_CODE:
                ok = digits >= 2  # "M1 1AA"
            elif e == Entity.TITLE:
                ok = upper > 0 or _LOWER_PERSON_HINT.search(text) is not None
            elif e == Entity.DATE_TIME:
                ok = upper > 0 or digits >= 1 or _DATE_WORDS.search(text) is not None
            elif e in NER_ENTITIES:
                ok = upper > 0 or digits >= 4 or (e == Entity.PERSON and _LOWER_PERSON_HINT.search(text) is not None)
            else:
                ok = True
            if ok:
                keep.add(e)
        return keep

    # -- analysis --------------------------------------------------------------------------------

    def _raw(self, text: str, entities: frozenset[str]) -> tuple[Detection, ...]:
        cand = self.candidates(text, entities)
        if not cand or not text.strip():
            return ()
        ner_cand, other = cand & _NER, cand - _NER
        results: list[RecognizerResult] = []
        strong: list[tuple[int, int]] = []
        if not self.use_spacy_ner:
            # No spaCy NER: one pass over every recognizer on regex tokens (no spaCy Doc at all).
            light = self.nlp_engine.light_artifacts(text)
            words = light.words or ([], [])
            results += self.engine.analyze(text, language="en", entities=sorted(cand), nlp_artifacts=light,
                                           score_threshold=_RAW_MIN_SCORE)
            ner_cand = other = set()
        else:
            doc = self.nlp_engine.tokenize(text)
            words = ([t.text for t in doc], [t.idx for t in doc])
        if other:
            # Pattern entities first: NER spans inside a confident pattern match (an address, an
            # e-mail, an IBAN...) lose to it in resolve_overlaps, so NER need not look there.
            base = self.nlp_engine.artifacts(text, ner=False, doc=doc)
            found = self.engine.analyze(text, language="en", entities=sorted(other), nlp_artifacts=base,
                                        score_threshold=_RAW_MIN_SCORE)
            results += found
            strong = [(r.start, r.end) for r in found if r.score >= _STRONG]
        if ner_cand:
            artifacts = self.nlp_engine.artifacts(text, ner=True, doc=doc, skip=strong)
            results += self.engine.analyze(text, language="en", entities=sorted(ner_cand), nlp_artifacts=artifacts,
                                           score_threshold=_RAW_MIN_SCORE)
        dets = [_trim_tagged(text, d) for d in _to_detections(results)]
        dets = [d for d in dets if d.start < d.end and _plausible(text, d)]
        dets = resolve_overlaps(_cut_tagged(text, dets), text)
        if Entity.STREET_ADDRESS in cand:
            dets = attach_postcodes(text, dets, zip_codes=Entity.ZIP_CODE in cand)
        if Entity.PERSON in cand:
            if self.use_spacy_ner:
                # Shape heuristics for spaCy's misses; the learned tagger already weighs these cues
                # (with it they add far more false names than real ones: grouped CV on pii_dev).
                dets = name_candidates(text, words, dets)
                dets = coordinated_names(text, dets)
            if self.learned is not None:
                dets = split_name_lists(text, dets, self.learned.featurizer.lexicon_classes)
            dets = propagate_names(text, dets)
            if Entity.TITLE in cand:
                dets = job_title_lines(text, dets)
        return tuple(dets)

    def analyze(
        self,
        text: str,
        entities: Collection[str] | None = None,
        *,
        threshold: float = 0.4,
        thresholds: dict[str, float] | None = None,
        allow_list: Iterable[str] = (),
        allow_patterns: Iterable[re.Pattern[str]] = (),
    ) -> list[Detection]:
        """Detections in ``text`` for ``entities`` (default: all supported), scored at least the
        entity's threshold, minus allow-listed values. Sorted by start offset."""
        ents = frozenset(entities) if entities is not None else self.supported
        raw = self._cached(text, ents)
        allowed = {a.casefold() for a in allow_list}
        pats = tuple(allow_patterns)
        out = []
        for d in raw:
            if d.score < (thresholds or {}).get(d.entity, threshold):
                continue
            if allowed or pats:
                value = text[d.start:d.end]
                if value.casefold() in allowed or any(p.fullmatch(value) for p in pats):
                    continue
            out.append(d)
        return out

    def _cached(self, text: str, ents: frozenset[str]) -> tuple[Detection, ...]:
        if self._cache.size <= 0:
            return self._raw(text, ents)
        key = (hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(), ents)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._raw(text, ents)
            self._cache.put(key, hit)
        return hit

    def clear_cache(self) -> None:
        self._cache.clear()


def _to_detections(results: list[RecognizerResult]) -> list[Detection]:
    out = []
    for r in results:
        meta = r.recognition_metadata or {}
        rule = str(meta.get("rule") or meta.get(RecognizerResult.RECOGNIZER_NAME_KEY) or "")
        out.append(Detection(str(r.entity_type), r.start, r.end, round(float(r.score), 4), rule))
    return out


_DATE_WORDS = re.compile(
    r"(?i)\b(?:mon|tues|wednes|thurs|fri|satur|sun)day\b|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)"
    r"[a-z]*\b|\b(?:today|tomorrow|yesterday|tonight)\b"
)
_DATE_DIGITS = re.compile(r"\d{1,4}[/.\-:]\d{1,2}|\b(?:1[89]|20)\d{2}\b|\d(?:st|nd|rd|th)\b")
_DURATION = re.compile(r"(?i)\b\d+\+?\s?(?:years?|months?|weeks?|days?|hours?|minutes?|yrs?)\b(?:\s+old)?")


def _plausible(text: str, d: Detection) -> bool:
    """Drop NER dates that are durations or bare numbers (\"a year\", \"19 year old\", a zip code),
    names with digits in them and tagged names or places without a letter."""
    if d.entity in (Entity.PERSON, Entity.NRP) and any(c.isdigit() for c in text[d.start:d.end]):
        return False
    if d.rule == LEARNED_NAME and not any(c.isalpha() for c in text[d.start:d.end]):
        return False
    if d.entity != Entity.DATE_TIME or d.rule != "SpacyRecognizer":
        return True
    value = text[d.start:d.end]
    if _DURATION.search(value) and not _DATE_WORDS.search(value):
        return False
    return bool(_DATE_WORDS.search(value) or _DATE_DIGITS.search(value))


_NER = frozenset(e.value for e in NER_ENTITIES)
_EDGE_JUNK = re.compile(r"^(?:[\W_]|\b(?:on|in|at|of|the|and|or|to|from|by|for)\b)+|(?:[\W_]|\b(?:on|in|at|of|the|and|"
                        r"or|to|from|by|for)\b)+$")


def _cut_tagged(text: str, dets: list[Detection]) -> list[Detection]:
    """A tagged name, place or address that runs into a pattern match of another kind ("LEPPEN on
    Tuesday" against the weekday; "Jane Roe, SSN 123-45-6789" read as an address) keeps its longer
    part outside the match, without edge words like "on": cut, never dropped, so the name in it
    stays covered."""
    pats = [d for d in dets if d.rule not in (LEARNED_NAME, "SpacyRecognizer") and d.score >= _STRONG]
    if not pats:
        return dets
    out = []
    for d in dets:
        if d.rule == LEARNED_NAME:
            for o in pats:
                if o.entity == d.entity or not (o.start < d.end and d.start < o.end) or \
                        (o.start <= d.start and d.end <= o.end):
                    continue
                left, right = (d.start, max(d.start, o.start)), (min(d.end, o.end), d.end)
                a, b = max(left, right, key=lambda r: sum(c.isalpha() for c in text[r[0]:r[1]]))
                piece = text[a:b]
                m = _EDGE_JUNK.search(piece)
                lead = len(piece) - len(_EDGE_JUNK.sub("", piece, count=1)) if m and m.start() == 0 else 0
                core = _EDGE_JUNK.sub("", piece[lead:])
                d = Detection(d.entity, a + lead, a + lead + len(core), d.score, d.rule)
                if d.start >= d.end:
                    break
        if d.start < d.end:
            out.append(d)
    return out


class SpanIndex:
    """Does ``[start, end)`` overlap any of a fixed set of spans? Sorted starts and a running maximum
    of the ends: O(log n) per question, so checks stay linear-logarithmic on texts with thousands of
    detections (a scan of all spans per candidate was quadratic)."""

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        items = sorted(spans)
        self._starts = [a for a, _ in items]
        self._max_end = list(itertools.accumulate((b for _, b in items), max))

    @classmethod
    def of(cls, dets: Iterable[Detection]) -> SpanIndex:
        return cls((d.start, d.end) for d in dets)

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)  # spans that start before ``end``
        return i > 0 and self._max_end[i - 1] > start

    def covers(self, start: int, end: int) -> bool:
        """Does one span contain ``[start, end)``?"""
        i = bisect.bisect_right(self._starts, start)  # spans that start at or before ``start``
        return i > 0 and self._max_end[i - 1] >= end


_MERGED = (Entity.STREET_ADDRESS, Entity.PERSON, Entity.LOCATION, Entity.PHONE_NUMBER)


def _merge_same(dets: list[Detection]) -> list[Detection]:
    """Overlapping matches of one entity (address, person, place, phone) become one span, the union,
    with the best score: "Pablo Ortega" from a cue and "Ortega" from NER is one name."""
    out = [d for d in dets if d.entity not in _MERGED]
    for ent in _MERGED:
        group = sorted((d for d in dets if d.entity == ent), key=lambda d: d.start)
        merged: list[Detection] = []
        for d in group:
            if merged and d.start < merged[-1].end:
                m = merged[-1]
                # the union keeps a pattern's rule over the tagger's (a confident pattern stays strong),
                # else the rule of the higher score
                if (m.rule == LEARNED_NAME) != (d.rule == LEARNED_NAME):
                    rule = d.rule if m.rule == LEARNED_NAME else m.rule
                else:
                    rule = m.rule if m.score >= d.score else d.rule
                merged[-1] = Detection(m.entity, m.start, max(m.end, d.end), max(m.score, d.score), rule)
            else:
                merged.append(d)
        out += merged
    return out


_ADDRESS_BREAK = re.compile(r"(?:,|\n)[\s>]*$")


def _cut_addresses(text: str, dets: list[Detection]) -> list[Detection]:
    """An address ends before a name found on its next line or after its next comma ("12 Main
    Street, Springfield\nJohn Smith will sign"): the lines after the street are optional, and a
    name there is the addressee, not a town."""
    names = [d for d in dets if d.entity == Entity.PERSON]
    if not names:
        return dets
    out = []
    for d in dets:
        if d.entity == Entity.STREET_ADDRESS:
            for p in sorted(names, key=lambda p: p.start):
                if d.start < p.start < d.end and _ADDRESS_BREAK.search(text, d.start, p.start):
                    end = d.start + len(text[d.start:p.start].rstrip(" ,\n\t>"))
                    d = Detection(d.entity, d.start, end, d.score, d.rule)
                    break
        out.append(d)
    return out


def resolve_overlaps(dets: list[Detection], text: str | None = None) -> list[Detection]:
    """Keep non-overlapping detections. A confident pattern match (address, phone, ID...) beats the
    NER spans inside it; otherwise higher score first, then lower tier, then longer. With ``text``,
    addresses are first cut before a name that follows them (:func:`_cut_addresses`)."""
    dets = _merge_same(dets)
    if text is not None:
        dets = _cut_addresses(text, dets)
    strong = [d for d in dets if d.entity not in _NER and d.score >= _STRONG and d.rule != LEARNED_NAME]
    if strong:
        strong_spans = SpanIndex.of(strong)
        dets = [d for d in dets if d.entity not in _NER or not strong_spans.overlaps(d.start, d.end)]
    # A place inside a street address is part of it ("..., Oulu, Finland 80896"), whatever the scores.
    addresses = [d for d in dets if d.entity == Entity.STREET_ADDRESS]
    if addresses:
        in_address = SpanIndex.of(addresses)
        dets = [d for d in dets if d.entity != Entity.LOCATION or not in_address.covers(d.start, d.end)]
    # An honorific only fills a gap: "Oak Dr Springfield" is an address before it is a title.
    order = sorted((d for d in dets if d.entity != Entity.TITLE),
                   key=lambda d: (-d.score, _TIER.get(d.entity, 2), -(d.end - d.start), d.start))
    order += [d for d in dets if d.entity == Entity.TITLE]
    # ``taken`` stays disjoint and sorted by start, so only the span starting just before ``d.end``
    # can overlap ``d``; where none does, ``d`` goes right there.
    taken: list[Detection] = []
    starts: list[int] = []
    for d in order:
        i = bisect.bisect_left(starts, d.end)
        if i > 0 and taken[i - 1].end > d.start:
            continue
        taken.insert(i, d)
        starts.insert(i, d.start)
    return taken


_NOT_NAME_WORDS = frozenset(
    """the a an and or of for to in on at by with from as is are was were be this that these those my your our
    his her their its we you he she they it i mr mrs ms dr prof sir madam dear hi hello thanks thank regards please
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
    september october november december street road avenue lane drive court place square suite apt box north south
    east west new inc ltd llc corp corporation company group bank university college school hospital orchestra
    band club hotel church museum airport station park river lake mount fort city county state republic kingdom
    united america american european english french german spanish chinese customer client patient user team
    department office service services support account card number phone email address name note subject re fw
    yes no ok okay ai api id usa uk eu un rua rue via viale calle strasse straße str gasse platz route crossroad
    bypass turnpike extension extensions union highway parkway boulevard plaza alley terrace close crescent way
    partners investments insurance software markets solutions systems technologies holdings capital consulting
    labs media health energy foods motors airlines global international industries enterprises associates
    foundation institute agency council ministry committee association society act day weekly daily times news
    info information statement royal princess prince king queen lord lady big great good best top first last
    next old little love personal private public general national federal civil rights law incorporated research
    finance financial bioscience biosciences power insight insights explorer data analytics technology tech
    networks network digital cloud ventures studios entertainment pharma therapeutics trust credit resources
    logistics realty properties communications telecom brands life sciences science medical care learning""".split()
)
_ORG_SUFFIXES = ("soft", "ware", "group", "corp", "tech", "data", "ability", "ify", "works", "labs", "bank",
                 "metrics", "logic", "media", "point", "force", "hub")


_STOP: frozenset[str] = frozenset(English.Defaults.stop_words)


_PLACE_WORDS = frozenset(
    """port station cite cité country club bridge valley beach island isle bay harbor harbour village town
    district county city park river lake mount mountain fort springs falls heights hills creek point cape
    saint san santa sankt sint""".split()
)


def _like_num(t: str) -> bool:
    return t.replace(",", "").replace(".", "").isdigit()


def name_candidates(text: str, words: tuple[list[str], list[int]], dets: list[Detection]) -> list[Detection]:
    """Runs of two or three Title-case words that nothing else claimed (or that spaCy's NER called an
    organization) are likely a person's name: "Customer Margarethe Okonkwo disputes ...".
    Scored below NER (0.5) so a policy can raise PERSON's threshold to drop them.
    ``words``: token texts and start offsets."""
    out: list[Detection] = []
    toks, starts = words
    i, n = 0, len(toks)
    while i < n:
        j = i
        place = False
        while j < n and j - i < 4:
            w = toks[j]
            if _name_like(w):
                j += 1
            elif w[:1].isupper() and w.casefold() in _PLACE_WORDS:
                place = True
                j += 1
            else:
                break
        followed_by_number = j < n and _like_num(toks[j])
        preceded_by_number = i > 0 and _like_num(toks[i - 1])
        if j - i >= 2 and not followed_by_number and not preceded_by_number:
            a, b = starts[i], starts[j - 1] + len(toks[j - 1])
            clash = [d for d in dets if d.start < b and a < d.end]
            if place and all(d.entity in (Entity.ORGANIZATION, Entity.PERSON, Entity.LOCATION) for d in clash):
                out.append(Detection(Entity.LOCATION.value, a, b, 0.55, "place_shape"))
            elif not place and all(d.entity == Entity.ORGANIZATION and d.rule == "SpacyRecognizer" for d in clash):
                out.append(Detection(Entity.PERSON.value, a, b, 0.5, "name_shape"))
        i = max(j, i + 1)
    taken = {(d.start, d.end) for d in out}
    out += _org_names(text, [d for d in dets if d.rule == "SpacyRecognizer"], taken)
    taken = {(d.start, d.end) for d in out}
    placed = [(d.start, d.end) for d in out if d.entity == Entity.LOCATION]
    keep = [d for d in dets
            if not (d.entity == Entity.ORGANIZATION and d.rule == "SpacyRecognizer"
                    and any(s < d.end and d.start < e for s, e in taken))
            and not (d.rule == "SpacyRecognizer" and any(s < d.end and d.start < e for s, e in placed))]
    return sorted([*keep, *out], key=lambda d: (d.start, d.end))


def _org_names(text: str, dets: list[Detection], taken: set[tuple[int, int]]) -> list[Detection]:
    """spaCy ``sm`` often calls an unfamiliar personal name an ORG. An ORG span of one to three
    name-shaped words (no company word, not all capitals) is taken as a PERSON at a lower score;
    a wrongly pseudonymized company name is restored in the answer anyway."""
    out = []
    for d in dets:
        if d.entity != Entity.ORGANIZATION or any(a < d.end and d.start < b for a, b in taken):
            continue
        words = text[d.start:d.end].split()
        if any(w.casefold().endswith(_ORG_SUFFIXES) for w in words):
            continue
        if 1 <= len(words) <= 3 and all(_name_like(w) or (len(w) == 2 and w[0].isupper() and w[1] == ".")
                                        for w in words) and _name_like(words[0]):
            out.append(Detection(Entity.PERSON.value, d.start, d.end, 0.45, "org_shaped_name"))
    return out


def _name_like(word: str) -> bool:
    if len(word) < 2 or not word[0].isupper() or word.casefold() in _NOT_NAME_WORDS or word.casefold() in _STOP:
        return False
    rest = word[1:]
    if not all(c.isalpha() or c in "'’-" for c in rest):
        return False
    return rest == rest.lower()


_EDGE_WORD = re.compile(r"[^\W\d_]+\.?")


_GOES_ON = re.compile(r"[ \t]{0,3}[a-zß-öø-ÿ]")


def _trim_tagged(text: str, d: Detection) -> Detection:
    """A tagged address whose last line goes on as a sentence ("..., Springfield\nJohn Smith will
    sign") ends before that line; a tagged name loses the greeting or role word in front of it
    ("Dear Alice Johnson" -> "Alice Johnson", "Customer Margarethe Okonkwo" -> "Margarethe Okonkwo")."""
    if d.rule != LEARNED_NAME:
        return d
    if d.entity == Entity.STREET_ADDRESS:
        if _GOES_ON.match(text, d.end):
            k = max(text.rfind(",", d.start, d.end), text.rfind("\n", d.start, d.end))
            if k > d.start:
                return Detection(d.entity, d.start, d.start + len(text[d.start:k].rstrip()), d.score, d.rule)
        return d
    if d.entity != Entity.PERSON:
        return d
    start, end = d.start, d.end
    while True:
        m = _EDGE_WORD.match(text, start, end)
        if not m or m.group().rstrip(".").casefold() not in _NOT_NAME_WORDS:
            break
        if m.end() >= end:  # nothing but a greeting or role word ("Dear <PERSON_1>")
            return Detection(d.entity, d.start, d.start, d.score, d.rule)
        start = m.end()
        while start < end and text[start].isspace():
            start += 1
    if (start, end) == (d.start, d.end):
        return d
    return Detection(d.entity, start, end, d.score, d.rule)


_NAME_TOKEN = re.compile(r"[^\W\d_][\w'’\-]{2,}")


_COORD_AFTER = re.compile(r"(?:,\s{0,2}|\s{1,2}and\s{1,2}|\s{0,2}&\s{0,2})([A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’\-]{1,30})(?![\w'’\-])")
_COORD_BEFORE = re.compile(r"(?<![\w'’\-])([A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’\-]{1,30})(?:,\s{0,2}|\s{1,2}and\s{1,2}|\s{0,2}&\s{0,2})$")


def coordinated_names(text: str, dets: list[Detection]) -> list[Detection]:
    """Single name-shaped words listed with a detected name are names too:
    "Marrero and Murphy", "Gaetane, Hannah, Anthony, Derek and Anna"."""
    added: list[Detection] = []
    frontier = [d for d in dets if d.entity == Entity.PERSON]
    spans = [(d.start, d.end) for d in dets]
    for _ in range(12):
        new: list[Detection] = []
        for d in frontier:
            m = _COORD_AFTER.match(text, d.end)
            if m and _name_like(m.group(1)):
                new.append(Detection(Entity.PERSON.value, m.start(1), m.end(1), 0.45, "name_list"))
            m = _COORD_BEFORE.search(text, max(0, d.start - 40), d.start)
            if m and _name_like(m.group(1)):
                new.append(Detection(Entity.PERSON.value, m.start(1), m.end(1), 0.45, "name_list"))
        new = [x for x in new if not any(x.start < e and s < x.end for s, e in spans)]
        if not new:
            break
        spans += [(x.start, x.end) for x in new]
        added += new
        frontier = new
    if not added:
        return dets
    return sorted([*dets, *added], key=lambda d: (d.start, d.end))


_RELABEL = frozenset({Entity.LOCATION.value, Entity.ORGANIZATION.value, Entity.NRP.value})
# Lower-case text can still hold a name behind a cue ("my name is lena", "mr. elliott").
_LOWER_PERSON_HINT = re.compile(r"(?i:name)|" + rec.LOWER_HONORIFIC)
_LIST_SEP = re.compile(r"\s*(?:,\s*(?:and\s+|&\s*)?|\s+and\s+|\s*&\s*)")
_LIST_ITEM = re.compile(r"[^\W\d_][^\W\d_'’\-]*(?:[\-'’][^\W\d_]+)?")
_PLACE_CLASSES = frozenset({"city", "country", "region"})
# A word for people right before a list (earlier items of the list may sit in between).
_PEOPLE_CUE = re.compile(
    r"\b(?:co-?founders|founders|authors|speakers|attendees|participants|winners|members|guests|students|"
    r"employees|colleagues|co-?workers|friends|siblings|children|sons|daughters|brothers|sisters|parents|"
    r"grandparents|patients|tenants|residents|witnesses|defendants|plaintiffs|candidates|nominees|volunteers|"
    r"players|teammates|classmates|roommates|cousins|nephews|nieces|doctors|nurses|teachers|owners)"
    r"(?:\s+(?:are|were|include|included|including|is|was))?\s*:?\s*"
    r"(?:" + _LIST_ITEM.pattern + r"\s*,\s*)*$", re.IGNORECASE)
_COMMA_GAP = re.compile(r"\s*,\s*")
_LIST_ENTITIES = frozenset({Entity.LOCATION.value, Entity.STREET_ADDRESS.value, Entity.ORGANIZATION.value})


def split_name_lists(text: str, dets: list[Detection], classes: Callable[[str], tuple[str, ...]]) -> list[Detection]:
    """A tagged place or organization that is a list of single given names ("Gaetane, Hannah,
    Anthony, Derek and Anna") is that many people: each item capitalized, at least half of them
    given names of the lexicon, none only a place (Brittany and Chad are names too). After a word
    for people ("our 3 founders: Kónya, Becker and Vasquez") any such list is people. Lists of
    surnames with no such word ("Barnett, Melton and Garcia", a firm) or of places ("Paris, Lyon and
    Nice") stay as they are."""
    out: list[Detection] = []
    changed = False
    for d in sorted(dets, key=lambda x: (x.start, x.end)):
        if d.rule != LEARNED_NAME or d.entity not in _LIST_ENTITIES:
            out.append(d)
            continue
        span = text[d.start:d.end].rstrip(".")
        items: list[tuple[int, int]] = []
        pos = 0
        for m in _LIST_SEP.finditer(span):
            items.append((pos, m.start()))
            pos = m.end()
        items.append((pos, len(span)))
        words = [span[a:b] for a, b in items]
        people_cue = _PEOPLE_CUE.search(text, max(0, d.start - 120), d.start) is not None
        if (len(words) < (2 if people_cue else 3)
                or not all(w[:1].isupper() and _LIST_ITEM.fullmatch(w) for w in words)
                or any(_PLACE_CLASSES.intersection(cs) and "given" not in cs for cs in map(classes, words))
                or not (people_cue or 2 * sum("given" in classes(w) for w in words) >= len(words))):
            out.append(d)
            continue
        changed = True
        # the list's first item may have been tagged on its own ("Efimiya, Mary, Ariana and Jodi")
        prev = out[-1] if out else None
        if (prev is not None and prev.rule == LEARNED_NAME and prev.entity in _LIST_ENTITIES
                and _LIST_ITEM.fullmatch(text[prev.start:prev.end]) and text[prev.start].isupper()
                and _COMMA_GAP.fullmatch(text, prev.end, d.start)):
            out[-1] = Detection(Entity.PERSON.value, prev.start, prev.end, prev.score, "name_list")
        out += [Detection(Entity.PERSON.value, d.start + a, d.start + b, d.score, "name_list") for a, b in items]
    return out if changed else dets


def propagate_names(text: str, dets: list[Detection]) -> list[Detection]:
    """Other occurrences of a detected name's capitalized parts are the same person
    ("Faina D. Yefremova ... early Yefremova"); a tagged place, organization or group with exactly
    the text of a found name is that name ("Customer Jo Ode ... Reply to Jo Ode" read once as a place)."""
    names = {text[d.start:d.end] for d in dets if d.entity == Entity.PERSON}
    if names:
        dets = [Detection(Entity.PERSON.value, d.start, d.end, d.score, d.rule)
                if d.entity in _RELABEL and d.rule == LEARNED_NAME and text[d.start:d.end] in names else d
                for d in dets]
    parts = {m.group(0) for d in dets if d.entity == Entity.PERSON
             for m in _NAME_TOKEN.finditer(text, d.start, d.end) if m.group(0)[0].isupper()}
    if not parts:
        return dets
    rx = re.compile(r"(?<![\w'’\-])(?:" + "|".join(re.escape(p) for p in sorted(parts, key=len, reverse=True))
                    + r")(?![\w'’\-])")
    found = SpanIndex.of(dets)
    extra: list[Detection] = []
    for m in rx.finditer(text):  # matches come in order and never overlap each other
        s, e = m.span()
        if not found.overlaps(s, e):
            extra.append(Detection(Entity.PERSON.value, s, e, 0.6, "name_propagation"))
    if not extra:
        return dets
    return sorted([*dets, *extra], key=lambda d: (d.start, d.end))


_POSTCODE = re.compile(r"(?<![\w\-.,/:])" + rec.POSTCODE)
_YEAR_ONLY = re.compile(r"(?:1[89]|20)\d{2}")
_UNIT_WORD = re.compile(r"(?i)\b(?:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|box|building|bldg)\b|"
                        r"(?i:\b(?:no|nr)\.)|#")
_AFTER_PLACE = re.compile(r"[ \t]{0,3},?[ \t]{0,3}(?:[A-Z]{2,3}[ \t]{1,3})?(?<![\w\-.,/:])(" + rec.POSTCODE + ")")
_CITY_AFTER = re.compile(r"[ \t]{1,3}(?:[^\W\d_a-z][\w'’\-]{1,30}(?:[ \-][^\W\d_][\w'’\-]{0,30}){0,3})[ \t]*(?:[,;.]|\n|$)")
_JOINED = re.compile(r"[ \t]*,[ \t]*|[ \t]*\n[ \t]*")
_COMMA_NEXT = re.compile(r"[ \t]*,")
_CLAUSE_END = re.compile(r"[.?!;](?:\s|$)|\n")
_SHORT_LINES = 3  # lines after an address that may still hold its postcode ("City\nRegion\n12345")
_LOOK = 200  # how far the postcode rules look for a line or part start (bounded: linear time)
_PART_END = re.compile(r"[ \t]*(?:[,;.?!]|\n|$)")  # a postcode that ends its part
_LINE_END = re.compile(r"[ \t]*[.?!;]?[ \t]*(?:\n|$)")  # ... or, alone in its part, its line
_BEFORE_PLACE = re.compile(r"[ \t]*(" + rec.POSTCODE + r")[ \t]{1,3}")


def _postcode_ok(value: str, *, strict: bool) -> bool:
    """``strict`` (a number next to a place name, outside an address): 4+ characters, not a year."""
    return not strict or (len(value) >= 4 and not _YEAR_ONLY.fullmatch(value))


def _part_start(text: str, pos: int) -> int:
    """Start of the line or comma-separated part that ``pos`` is in (looking back at most ``_LOOK``)."""
    lo = max(0, pos - _LOOK)
    return max(text.rfind("\n", lo, pos), text.rfind(",", lo, pos), lo - 1) + 1


def _prose_postcode(text: str, a: int, b: int) -> bool:
    """A number next to a place in prose is no postcode in a table row or a timeline ("Salm 1499:")."""
    lo, hi = max(0, a - _LOOK), min(len(text), b + _LOOK)
    line_start, line_end = text.rfind("\n", lo, a) + 1 or lo, text.find("\n", b, hi)
    return not text.startswith(":", b) and "|" not in text[line_start:line_end if line_end >= 0 else hi]


def _address_region(text: str, d: Detection) -> int:
    """Where an address block may still go on after ``d``: its comma-separated continuation on the
    same line and up to three short lines below it, each up to the end of its sentence (the address
    patterns stop before a lower-case region, a country or a lone postcode line)."""
    hi = d.end
    if _COMMA_NEXT.match(text, hi):
        end = _CLAUSE_END.search(text, hi, hi + 80)
        hi = end.start() if end else min(len(text), hi + 80)
    for _ in range(_SHORT_LINES):
        nl = text.find("\n", hi, hi + _LOOK)
        if nl < 0 or text[hi:nl].strip():
            break
        nxt = text.find("\n", nl + 1)
        line_end = nxt if nxt >= 0 else len(text)
        end = _CLAUSE_END.search(text, nl + 1, line_end)
        stop = end.start() if end else line_end
        if not text[nl + 1:stop].strip() or len(text[nl + 1:stop].strip()) > 40:
            break
        hi = stop
    return hi


def _address_postcodes(text: str, d: Detection, hi: int) -> list[tuple[int, int]]:
    """Postcodes where an address block puts them, up to ``hi``: ending a line or a comma-separated
    part after the street ("..., Springfield, IL 62704", "Aalborg NO 9100", a line "53650" below the
    town), or starting a later part before the town ("..., 10115 Berlin"). Never on the street part
    itself ("28245 Puruntie 82", "Koskikatu 125": house numbers)."""
    first_break = min((i for i in (text.find("\n", d.start, d.end), text.find(",", d.start, d.end)) if i >= 0),
                      default=d.end)
    out = []
    for m in _POSTCODE.finditer(text, d.start, hi):
        a, b = m.span()
        if a < first_break:
            continue
        before = text[_part_start(text, a):a]
        if any(c.isdigit() or c in ":(|" for c in before) or _UNIT_WORD.search(before):
            continue  # a house number, a unit, a labelled field ("Desk: (602)..."), a table cell
        # ends its part; a postcode alone in its part must end its line ("91020, Sowing" is a list)
        ends = (_PART_END if before.strip() else _LINE_END).match(text, b, hi) is not None
        if ends or (not before.strip() and _CITY_AFTER.match(text, b, hi) and _postcode_ok(m.group(0), strict=True)):
            out.append((a, b))
    return out


def attach_postcodes(text: str, dets: list[Detection], *, zip_codes: bool) -> list[Detection]:
    """Postcodes the patterns leave out. In or below an address ("Tujetsch / region / 7188", "...,
    IL 62704", "..., Poland 52096") they are part of the address (STREET_ADDRESS, masked with it);
    with ``zip_codes``, one next to a place name in prose ("in Bjert 6091", "75008 Paris") is a
    ZIP_CODE."""
    blocks: list[Detection] = []  # addresses found in parts ("12 Main Street, Springfield" + "IL 62704") as one
    for d in sorted((d for d in dets if d.entity == Entity.STREET_ADDRESS), key=lambda d: d.start):
        if blocks and _JOINED.fullmatch(text, blocks[-1].end, d.start):
            blocks[-1] = Detection(d.entity, blocks[-1].start, d.end, d.score, d.rule)
        else:
            blocks.append(d)
    regions = [(d.start, _address_region(text, d)) for d in blocks]
    in_regions = SpanIndex(regions)
    spans: list[tuple[int, int, str]] = []
    for d, (_, hi) in zip(blocks, regions, strict=True):
        spans += [(a, b, Entity.STREET_ADDRESS.value) for a, b in _address_postcodes(text, d, hi)]
        m = _AFTER_PLACE.match(text, d.end)
        if m and "," in text[d.end:m.start(1)] and not _YEAR_ONLY.fullmatch(m.group(1)):  # "March 30, 1985"
            spans.append((*m.span(1), Entity.STREET_ADDRESS.value))
    for d in dets:
        if d.entity != Entity.LOCATION:
            continue
        near: list[tuple[int, int]] = []
        m = _AFTER_PLACE.match(text, d.end)
        if m and _postcode_ok(m.group(1), strict=True):
            near.append(m.span(1))
        m2 = _BEFORE_PLACE.fullmatch(text, _part_start(text, d.start), d.start)
        if m2 and _postcode_ok(m2.group(1), strict=True):
            near.append(m2.span(1))
        for a, b in near:
            in_address = in_regions.overlaps(a, a + 1)
            if not in_address and not _prose_postcode(text, a, b):
                continue
            if in_address or zip_codes:
                spans.append((a, b, Entity.STREET_ADDRESS.value if in_address else Entity.ZIP_CODE.value))
    out = list(dets)
    taken, added_end = SpanIndex.of(dets), -1
    for a, b, entity in sorted(spans):  # by start: an added span can only overlap the latest ones
        if not taken.overlaps(a, b) and a >= added_end:
            rule = "address_postcode" if entity == Entity.STREET_ADDRESS else "zip_place"
            out.append(Detection(entity, a, b, 0.7, rule))
            added_end = max(added_end, b)
    return sorted(out, key=lambda d: (d.start, d.end)) if len(out) > len(dets) else dets


_TITLE_LINE = re.compile(r"(?m)^[ \t>]*(" + rec.TITLE_PHRASE + r")[ \t]*$")


def job_title_lines(text: str, dets: list[Detection]) -> list[Detection]:
    """A line that is only a job title right below a line that is a found name (a signature, a CV
    header: "Jamie Pratt\n\nTalking-books clerk") is that person's TITLE."""
    names = [d for d in dets if d.entity == Entity.PERSON]
    if not names:
        return dets
    found = SpanIndex.of(dets)
    extra = []
    for m in _TITLE_LINE.finditer(text):
        a, b = m.span(1)
        if found.overlaps(a, b):
            continue
        # the previous non-empty line (up to two blank lines skipped), looked for in a bounded window
        lo = max(0, m.start() - _LOOK)
        above_end = lo + len(text[lo:m.start()].rstrip("\n \t"))
        if above_end == lo or text.count("\n", above_end, m.start()) > 2:
            continue
        line_start = text.rfind("\n", lo, above_end) + 1 or lo
        line = text[line_start:above_end]
        covered = sum(d.end - d.start for d in names if line_start <= d.start and d.end <= above_end)
        if covered and covered >= len(line.strip(" \t>,")) - 3:
            extra.append(Detection(Entity.TITLE.value, a, b, 0.5, "title_job_line"))
    return sorted([*dets, *extra], key=lambda d: (d.start, d.end)) if extra else dets


_analyzers: dict[AnalyzerSettings, PIIAnalyzer] = {}
_analyzers_lock = threading.Lock()


def get_analyzer(settings: AnalyzerSettings | None = None) -> PIIAnalyzer:
    """One analyzer per settings per process."""
    key = settings or AnalyzerSettings()
    with _analyzers_lock:
        a = _analyzers.get(key)
        if a is None:
            a = _analyzers[key] = PIIAnalyzer(key)
        return a
