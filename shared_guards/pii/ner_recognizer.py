"""The learned tagger (:mod:`shared_guards.pii.learned_ner`) as a Presidio recognizer.

It reads the tokens Presidio's NLP engine already produced (``nlp_artifacts.tokens``), so it costs one
feature pass and one Viterbi decode per text, no spaCy model. Results of the last text are kept per
thread: the analyzer asks once for the pattern pass (street addresses) and once for the name pass.
"""

from __future__ import annotations

import re
import threading

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from shared_guards.pii.learned_ner import NerModel

_CAP_OR_DIGIT = re.compile(r"[^\W\d_a-zß-ÿ]|\d")  # an upper-case letter (any script with case) or a digit


def _worth_tagging(text: str) -> bool:
    """All-lower-case text without digits has no name the tagger would find (lower-case names come
    from cue patterns)."""
    return _CAP_OR_DIGIT.search(text) is not None


NAME = "slg_learned_ner"


class LearnedNerRecognizer(EntityRecognizer):
    """PERSON, LOCATION, STREET_ADDRESS, ORGANIZATION and NRP from the learned tagger."""

    def __init__(self, model: NerModel, score: float = 0.86, address_score: float = 0.5) -> None:
        self.model = model
        self.score = score
        self.address_score = address_score
        self._last = threading.local()
        super().__init__(supported_entities=list(model.labels), name=NAME, supported_language="en")

    def load(self) -> None:
        return None

    def spans(self, text: str, nlp_artifacts: NlpArtifacts) -> list[tuple[int, int, str]]:
        """Character spans ``(start, end, label)`` of ``text``. The tagger reads its own regex
        tokens (``nlp_artifacts.words`` when the analyzer already made them)."""
        last = getattr(self._last, "value", None)
        if last is not None and last[0] == text:
            cached: list[tuple[int, int, str]] = last[1]
            return cached
        words = getattr(nlp_artifacts, "words", None)
        out = self.model.spans(text, words) if _worth_tagging(text) else []
        self._last.value = (text, out)
        return out

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        if nlp_artifacts is None or nlp_artifacts.tokens is None:
            return []
        wanted = set(entities)
        out = []
        for start, end, lab in self.spans(text, nlp_artifacts):
            if lab not in wanted:
                continue
            score = self.address_score if lab == "STREET_ADDRESS" else self.score
            out.append(RecognizerResult(lab, start, end, score, recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                "rule": NAME,
            }))
        return out
