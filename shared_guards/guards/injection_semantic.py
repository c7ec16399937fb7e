"""Guard ``injection_semantic``: the semantic prompt-injection layer on its own.

Scores every text segment of the request (all roles, tool-call arguments included) with the
encoder + trained head (or a user-supplied sequence classifier) and blocks at ``threshold``.
Importing this module does not import torch; the model loads on the first request (or at guard
construction with ``preload: true``), once per process, and runs in the engine's bounded executor.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources
from shared_guards.injection.semantic import ModelKind, Runtime, SemanticDetector, SemanticSettings
from shared_guards.types import Finding, GuardRequest, GuardResult


class SemanticConfig(GuardConfig):
    model_path: str | None = Field(None, description="encoder or classifier directory (default: packaged MiniLM)")
    kind: ModelKind = ModelKind.ENCODER_HEAD
    runtime: Runtime = Field(Runtime.AUTO, description="encoder runtime: auto (onnx-int8 when onnxruntime is "
                             "installed, else torch) | onnx-int8 | onnx | torch; a sequence_classifier runs on torch")
    head_path: str | None = Field(None, description="trained head .npz (default: the packaged artifact)")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="on the calibrated score; 0.5 = trained operating point")
    classifier_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="sequence_classifier: P(injection) cut-off")
    max_chars: int = Field(100_000, ge=1, description="characters per segment given to the model")
    chunk_tokens: int = Field(256, ge=16, le=4096)
    chunk_overlap: int = Field(64, ge=0)
    max_chunks: int = Field(32, ge=1, description="windows per segment (evenly spaced beyond this)")
    batch_size: int = Field(32, ge=1)
    cache_size: int = Field(4096, ge=0, description="scores of recently seen texts reused (by SHA-256); 0: off")
    preload: bool = Field(True, description="load the model when the guard is built (not on the first request)")


def settings_from(cfg: SemanticConfig, base_dir: str = ".") -> SemanticSettings:
    """Detector settings; relative paths are resolved against the policy file's folder."""

    def resolve(p: str | None) -> str | None:
        if p is None:
            return None
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else Path(base_dir) / path)

    return SemanticSettings(
        model_path=resolve(cfg.model_path), kind=cfg.kind, head_path=resolve(cfg.head_path),
        max_chars=cfg.max_chars, chunk_tokens=cfg.chunk_tokens, chunk_overlap=cfg.chunk_overlap,
        max_chunks=cfg.max_chunks, batch_size=cfg.batch_size, classifier_threshold=cfg.classifier_threshold,
        cache_size=cfg.cache_size, runtime=cfg.runtime,
    )


def model_text(text: str) -> str:
    """What the encoder sees: the normalizer's cleaned text (homoglyphs folded, invisibles dropped)."""
    from shared_guards.injection.normalize import clean

    return clean(text)[0]


class SemanticGuard(Guard):
    name: ClassVar[str] = "injection_semantic"
    Config: ClassVar[type[GuardConfig]] = SemanticConfig

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        assert isinstance(config, SemanticConfig)
        self.cfg = config
        self.detector = SemanticDetector(settings_from(config, resources.policy_dir))
        if config.preload:
            self.detector.warm_up()

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        segments = request.texts()
        if not segments:
            return GuardResult.allow()
        texts = [model_text(t) for _, _, t in segments]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self.resources.executor, self.detector.score, texts)
        findings: list[Finding] = []
        top = 0.0
        for (msg_index, role, _), s in zip(segments, scores, strict=True):
            top = max(top, s.score)
            if s.score >= self.cfg.threshold:
                findings.append(Finding(
                    guard=self.name, rule_id="injection.semantic", layer="semantic", score=round(s.score, 4),
                    category="semantic", entity_type=role.value, message_index=msg_index, severity="high",
                ))
        if not findings:
            return GuardResult.allow(score=top)
        rule = "injection.semantic"
        violation = ContentViolation(
            f"Request blocked: possible prompt injection (rule {rule}, layer semantic).",
            rule_id=rule, code="prompt_injection", param="messages",
        )
        return GuardResult.block(violation, tuple(findings), score=top)
