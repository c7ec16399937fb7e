"""The combined injection detector: pattern, context and semantic layers, one score with evidence.

For every text segment of a request (each message, every role, tool-call arguments included) the
text is normalized ONCE; the pattern layer scans the normalized views and the context layer looks
at where each segment came from (role changes, imperatives to the assistant inside data segments,
fake turns and delimiters). When those cheap layers are already conclusive (combined score >=
``short_circuit``) the model is skipped; otherwise the semantic layer scores all segments in one
batched call. Per segment, the layer scores are merged by a weighted noisy-OR::

    s = 1 - (1 - w_p * pattern) * (1 - w_s * semantic) * (1 - w_c * context)

then multiplied by the weight of the segment's role; the request's score is the maximum over its
segments. Every layer reports its scores on the same scale, where 0.5 is that layer's own
operating point, so the default ``threshold`` of 0.5 means "any layer is sure, or two are half
sure". Findings carry the layer, rule id, score and message index, never the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shared_guards.injection.context import DATA_ROLES
from shared_guards.injection.normalize import Normalized, normalize
from shared_guards.injection.patterns import PatternMatcher, PatternResult
from shared_guards.injection.semantic import SemanticDetector, SemanticScore
from shared_guards.types import Finding, Role

GUARD = "injection"


class Layer(StrEnum):
    PATTERN = "pattern"
    SEMANTIC = "semantic"
    CONTEXT = "context"


DEFAULT_ROLE_WEIGHTS: dict[Role, float] = {
    Role.SYSTEM: 0.6,  # the operator's own prompt: personas and rules are normal there
    Role.DEVELOPER: 0.6,
    Role.USER: 1.0,
    Role.ASSISTANT: 0.8,
    Role.TOOL: 1.0,  # data segments: indirect injection lives here
    Role.FUNCTION: 1.0,
    Role.DOCUMENT: 1.0,
}


@dataclass(frozen=True, slots=True)
class Segment:
    message_index: int
    role: Role
    text: str


@dataclass(frozen=True)
class ContextSignal:
    """One context-layer observation, on the detector's 0..1 scale (0.5 = conclusive on its own)."""

    rule_id: str
    score: float
    message_index: int = -1
    category: str = "context"


@dataclass(frozen=True)
class Verdict:
    score: float
    findings: tuple[Finding, ...]
    layer_scores: Mapping[str, float]
    timings_ms: Mapping[str, float]
    skipped: frozenset[str] = frozenset()
    top_rule: str = ""
    top_layer: str = ""


@dataclass(frozen=True)
class CombinedSettings:
    layers: frozenset[Layer] = frozenset(Layer)
    weights: Mapping[Layer, float] = field(
        default_factory=lambda: {Layer.PATTERN: 1.0, Layer.SEMANTIC: 1.0, Layer.CONTEXT: 1.0}
    )
    role_weights: Mapping[Role, float] = field(default_factory=lambda: dict(DEFAULT_ROLE_WEIGHTS))
    short_circuit: float = 0.9
    min_finding_score: float = 0.25  # semantic scores below this are not reported as findings


def noisy_or(values: Sequence[float]) -> float:
    p = 1.0
    for v in values:
        p *= 1.0 - min(max(v, 0.0), 1.0)
    return 1.0 - p


ContextFn = Callable[[Sequence["Segment"], Sequence[Normalized]], Sequence[ContextSignal]]


class CombinedDetector:
    """Stateless per call; holds only shared, process-wide assets (matcher, model, settings)."""

    def __init__(
        self,
        settings: CombinedSettings,
        *,
        matcher: Callable[[], PatternMatcher] | None = None,
        semantic: SemanticDetector | None = None,
        context: ContextFn | None = None,
    ) -> None:
        self.settings = settings
        self.matcher = matcher
        self.semantic = semantic
        self.context = context

    def _on(self, layer: Layer) -> bool:
        if layer not in self.settings.layers:
            return False
        return {Layer.PATTERN: self.matcher, Layer.SEMANTIC: self.semantic, Layer.CONTEXT: self.context}[
            layer] is not None

    # -- stage 1: cheap layers -----------------------------------------------------------------

    def cheap(self, segments: Sequence[Segment]) -> _Partial:
        t0 = time.perf_counter()
        norms = [normalize(s.text) for s in segments]
        t1 = time.perf_counter()
        patterns: list[PatternResult | None] = [None] * len(segments)
        if self._on(Layer.PATTERN):
            assert self.matcher is not None
            matcher = self.matcher()
            patterns = [matcher.scan(n, suffix=s.role not in DATA_ROLES)
                        for s, n in zip(segments, norms, strict=True)]
        t2 = time.perf_counter()
        signals: list[ContextSignal] = []
        if self._on(Layer.CONTEXT):
            assert self.context is not None
            signals = list(self.context(segments, norms))
        t3 = time.perf_counter()
        timings = {"normalize": (t1 - t0) * 1000, "pattern": (t2 - t1) * 1000, "context": (t3 - t2) * 1000}
        return _Partial(list(segments), norms, patterns, signals, timings)

    def needs_model(self, part: _Partial) -> bool:
        if not self._on(Layer.SEMANTIC) or not part.segments:
            return False
        return self._score(part, None)[0] < self.settings.short_circuit

    def model_inputs(self, part: _Partial) -> list[str]:
        """The texts the semantic layer scores for one request: cleaned segments (+ decoded views)."""
        return [n.cleaned for n in part.norms]

    # -- stage 2: the model, batched over segments (and over requests in evaluation) -----------

    def run_semantic(self, texts: Sequence[str]) -> list[SemanticScore]:
        assert self.semantic is not None
        return self.semantic.score(texts)

    def finish(self, part: _Partial, semantic: Sequence[SemanticScore] | None, semantic_ms: float = 0.0) -> Verdict:
        score, findings, layer_scores, top = self._score(part, semantic)
        timings = dict(part.timings)
        skipped: set[str] = set()
        if self._on(Layer.SEMANTIC):
            if semantic is None:
                skipped.add(Layer.SEMANTIC.value)
            else:
                timings["semantic"] = semantic_ms
        return Verdict(round(score, 4), tuple(findings), layer_scores, timings, frozenset(skipped),
                       top[0], top[1])

    def analyze(self, segments: Sequence[Segment]) -> Verdict:
        """All layers for one request, synchronously (call it in an executor from async code)."""
        part = self.cheap(segments)
        if not self.needs_model(part):
            return self.finish(part, None)
        t0 = time.perf_counter()
        sem = self.run_semantic(self.model_inputs(part))
        return self.finish(part, sem, (time.perf_counter() - t0) * 1000)

    # -- scoring ---------------------------------------------------------------------------------

    def _score(
        self, part: _Partial, semantic: Sequence[SemanticScore] | None
    ) -> tuple[float, list[Finding], dict[str, float], tuple[str, str]]:
        w = self.settings.weights
        best = 0.0
        top: tuple[str, str] = ("", "")
        top_contrib = -1.0
        findings: list[Finding] = []
        layer_max = {Layer.PATTERN.value: 0.0, Layer.SEMANTIC.value: 0.0, Layer.CONTEXT.value: 0.0}
        ctx_by_msg: dict[int, list[ContextSignal]] = {}
        for sig in part.signals:
            ctx_by_msg.setdefault(sig.message_index, []).append(sig)
        request_ctx = ctx_by_msg.pop(-1, [])
        for i, seg in enumerate(part.segments):
            rw = self.settings.role_weights.get(seg.role, 1.0)
            contribs: list[tuple[float, str, str]] = []
            pr = part.patterns[i]
            if pr is not None and pr.score > 0:
                contribs.append((w.get(Layer.PATTERN, 1.0) * pr.score, Layer.PATTERN.value, _pattern_rule(pr)))
                layer_max[Layer.PATTERN.value] = max(layer_max[Layer.PATTERN.value], pr.score)
                for m in pr.matches:
                    findings.append(Finding(
                        guard=GUARD, rule_id=f"injection.pattern.{m.rule_id}", layer=Layer.PATTERN.value,
                        score=round(m.weight, 4), category=m.category, entity_type=seg.role.value,
                        message_index=seg.message_index, start=m.start, end=m.end,
                        severity="high" if m.weight >= 0.7 else "medium",
                    ))
            sigs = [*ctx_by_msg.get(seg.message_index, []), *request_ctx]
            if sigs:
                cs = noisy_or([s.score for s in sigs])
                contribs.append((w.get(Layer.CONTEXT, 1.0) * cs, Layer.CONTEXT.value,
                                 max(sigs, key=lambda s: s.score).rule_id))
                layer_max[Layer.CONTEXT.value] = max(layer_max[Layer.CONTEXT.value], cs)
            if semantic is not None:
                ss = semantic[i].score
                contribs.append((w.get(Layer.SEMANTIC, 1.0) * ss, Layer.SEMANTIC.value, "injection.semantic"))
                layer_max[Layer.SEMANTIC.value] = max(layer_max[Layer.SEMANTIC.value], ss)
                if ss >= self.settings.min_finding_score:
                    findings.append(Finding(
                        guard=GUARD, rule_id="injection.semantic", layer=Layer.SEMANTIC.value, score=round(ss, 4),
                        category="semantic", entity_type=seg.role.value, message_index=seg.message_index,
                        severity="high" if ss >= 0.5 else "low",
                    ))
            seg_score = rw * noisy_or([c[0] for c in contribs])
            if seg_score > best:
                best = seg_score
            for c, layer, rule in contribs:
                if c * rw > top_contrib:
                    top_contrib, top = c * rw, (rule, layer)
        for sig in part.signals:
            findings.append(Finding(
                guard=GUARD, rule_id=sig.rule_id, layer=Layer.CONTEXT.value, score=round(sig.score, 4),
                category=sig.category, message_index=sig.message_index,
                severity="high" if sig.score >= 0.5 else "medium",
            ))
        return min(best, 1.0), findings, layer_max, top


def _pattern_rule(pr: PatternResult) -> str:
    m = pr.top
    return f"injection.pattern.{m.rule_id}" if m is not None else "injection.pattern"


@dataclass
class _Partial:
    segments: list[Segment]
    norms: list[Normalized]
    patterns: list[PatternResult | None]
    signals: list[ContextSignal]
    timings: dict[str, float]
