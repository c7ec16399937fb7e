"""Guard ``injection``: the combined prompt-injection detector (pattern + context + semantic).

One guard, one score in [0, 1], evidence per layer. Policy example::

    - name: injection
      action: block            # block | alert | log
      options:
        threshold: 0.5
        layers: [pattern, semantic, context]
        weights: {pattern: 1.0, semantic: 1.0, context: 1.0}
        semantic: {model_path: /models/my-deberta, kind: sequence_classifier}

The block message names the rule and layer that decided, never the text. The model is skipped
when the cheap layers are already conclusive (``short_circuit``); it loads lazily (first request)
unless ``semantic.preload`` is set, once per process, and runs in the engine's bounded executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field

from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources
from shared_guards.guards.injection_semantic import SemanticConfig, settings_from
from shared_guards.injection.combined import (
    DEFAULT_ROLE_WEIGHTS,
    CombinedDetector,
    CombinedSettings,
    ContextSignal,
    Layer,
    Segment,
    Verdict,
)
from shared_guards.types import GuardRequest, GuardResult, Role


class LayerWeights(GuardConfig):
    pattern: float = Field(1.0, ge=0.0, le=1.0)
    semantic: float = Field(0.7, ge=0.0, le=1.0)
    context: float = Field(1.0, ge=0.0, le=1.0)


class PatternOptions(GuardConfig):
    rules_path: str | None = Field(None, description="rule pack file (default: the bundled signed core pack)")
    trusted_key_dirs: list[str] = Field(default_factory=list)
    require_signature: bool = True


class ContextOptions(GuardConfig):
    data_roles: list[Role] = Field(
        default_factory=lambda: [Role.TOOL, Role.FUNCTION, Role.DOCUMENT],
        description="roles whose content is data: imperatives to the assistant there are indirect injection",
    )


class InjectionConfig(GuardConfig):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="block at or above this combined score")
    layers: list[Layer] = Field(default_factory=lambda: [Layer.PATTERN, Layer.SEMANTIC, Layer.CONTEXT])
    weights: LayerWeights = Field(default_factory=LayerWeights)
    role_weights: dict[Role, float] = Field(default_factory=dict, description="multiplier per message role")
    short_circuit: float = Field(0.9, ge=0.0, le=1.0, description="skip the model when cheap layers reach this")
    pattern: PatternOptions = Field(default_factory=PatternOptions)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)
    context: ContextOptions = Field(default_factory=ContextOptions)


def build_detector(cfg: InjectionConfig, policy_dir: str = ".") -> CombinedDetector:
    """The detector a config describes (shared assets come from the process-wide caches)."""
    layers = frozenset(cfg.layers)
    settings = CombinedSettings(
        layers=layers,
        weights={Layer.PATTERN: cfg.weights.pattern, Layer.SEMANTIC: cfg.weights.semantic,
                 Layer.CONTEXT: cfg.weights.context},
        role_weights={**DEFAULT_ROLE_WEIGHTS, **cfg.role_weights},
        short_circuit=cfg.short_circuit,
    )
    matcher: Callable[[], Any] | None = None
    if Layer.PATTERN in layers:
        matcher = _pattern_source(cfg.pattern, policy_dir)
    semantic = None
    if Layer.SEMANTIC in layers:
        from shared_guards.injection.semantic import SemanticDetector

        semantic = SemanticDetector(settings_from(cfg.semantic, policy_dir))
    context = _context_layer(cfg.context) if Layer.CONTEXT in layers else None
    return CombinedDetector(settings, matcher=matcher, semantic=semantic, context=context)


def _pattern_source(opts: PatternOptions, policy_dir: str) -> Callable[[], Any]:
    from pathlib import Path

    from shared_guards.injection.patterns import get_matcher
    from shared_guards.injection.rulepack import shared_store

    path = None
    if opts.rules_path:
        p = Path(opts.rules_path).expanduser()
        path = p if p.is_absolute() else Path(policy_dir) / p
    store = shared_store(path, trusted_key_dirs=opts.trusted_key_dirs, require_signature=opts.require_signature)
    store.get()  # the first load must succeed: a bad pack fails at policy load

    def current() -> Any:
        return get_matcher(store.get())

    return current


def _context_layer(opts: ContextOptions) -> Callable[[Sequence[Segment], Sequence[Any]], list[ContextSignal]]:
    from shared_guards.injection.context import analyze_segments

    data_roles = frozenset(opts.data_roles)

    def run(segments: Sequence[Segment], norms: Sequence[Any]) -> list[ContextSignal]:
        res = analyze_segments(segments, norms, data_roles=data_roles)
        return [ContextSignal(f"injection.{f.rule_id}", f.score, f.message_index, f.category) for f in res.findings]

    return run


class InjectionGuard(Guard):
    name: ClassVar[str] = "injection"
    Config: ClassVar[type[GuardConfig]] = InjectionConfig

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        assert isinstance(config, InjectionConfig)
        self.cfg = config
        self.detector = build_detector(config, resources.policy_dir)
        if config.semantic.preload and self.detector.semantic is not None:
            self.detector.semantic.warm_up()

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        segments = [Segment(i, role, text) for i, role, text in request.texts()]
        if not segments:
            return GuardResult.allow()
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(self.resources.executor, self.detector.analyze, segments)
        ctx.state[self.name] = {"score": verdict.score, "layers": dict(verdict.layer_scores)}
        return self.result(verdict)

    def result(self, verdict: Verdict) -> GuardResult:
        if verdict.score < self.cfg.threshold:
            return GuardResult.allow(verdict.findings, verdict.score)
        rule = verdict.top_rule or "injection"
        layer = verdict.top_layer or "combined"
        violation = ContentViolation(
            f"Request blocked: prompt injection detected (rule {rule}, layer {layer}, score {verdict.score:.2f}).",
            rule_id=rule, code="prompt_injection", param="messages",
        )
        return GuardResult.block(violation, verdict.findings, verdict.score)
