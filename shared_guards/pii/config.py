"""The PII guard's options (``guards: - name: pii, options: {...}`` in the policy)."""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import ConfigDict, Field, field_validator

from shared_guards.guard import GuardConfig
from shared_guards.pii.analyzer import AnalyzerSettings
from shared_guards.pii.entities import Entity
from shared_guards.pii.presets import DEFAULT_MASK_STYLE, PRESETS, MaskStyle, PIIAction, Preset


class EntityRule(GuardConfig):
    """Per-entity override; unset fields fall back to the preset and the guard-wide values."""

    action: PIIAction | None = None
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    mask_style: MaskStyle | None = None


class PIIConfig(GuardConfig):
    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    preset: Preset = Field(Preset.GDPR, description="Starting actions per entity: gdpr | hipaa | pci | all | none.")
    entities: dict[Entity, EntityRule | PIIAction] = Field(
        default_factory=dict, description="Per-entity overrides: an action, or {action, threshold, mask_style}."
    )
    threshold: float = Field(0.4, ge=0.0, le=1.0, description="Minimum detection score.")
    mask_style: MaskStyle | None = Field(None, description="Default mask style (else per-entity defaults).")
    allow_list: list[str] = Field(default_factory=list, description="Values never treated as PII (exact, case-insensitive).")
    allow_patterns: list[str] = Field(default_factory=list, description="Regexes (full match) never treated as PII.")
    scan_responses: bool = Field(True, description="Mask/block PII in answers that the vault did not produce.")
    stream_hold_chars: int = Field(96, ge=16, le=4096, description="Answer text held back for scanning in streams.")
    stream_batch_chars: int = Field(160, ge=16, le=8192, description="New text needed before a stream re-scan.")
    tag_header: str = Field("x-slg-pii", pattern=r"^[A-Za-z0-9-]{1,64}$")
    analyzer: AnalyzerSettings = Field(default_factory=AnalyzerSettings)

    @field_validator("allow_patterns")
    @classmethod
    def _compile(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regex {p!r}: {exc}") from None
        return v

    # -- derived (computed once per frozen config) ---------------------------------------------

    @cached_property
    def actions(self) -> dict[str, PIIAction]:
        acts: dict[str, PIIAction] = {e.value: a for e, a in PRESETS[self.preset].items()}
        for e, r in self.entities.items():
            a = r if isinstance(r, PIIAction) else r.action
            if a is not None:
                acts[e.value] = a
        return {e: a for e, a in acts.items() if a is not PIIAction.IGNORE}

    @cached_property
    def thresholds(self) -> dict[str, float]:
        out = {e.value: self.threshold for e in Entity}
        for e, r in self.entities.items():
            if isinstance(r, EntityRule) and r.threshold is not None:
                out[e.value] = r.threshold
        return out

    def mask_style_for(self, entity: str) -> MaskStyle:
        r = self.entities.get(Entity(entity)) if entity in Entity.__members__ else None
        if isinstance(r, EntityRule) and r.mask_style is not None:
            return r.mask_style
        if self.mask_style is not None:
            return self.mask_style
        return DEFAULT_MASK_STYLE.get(Entity(entity), MaskStyle.PLACEHOLDER) if entity in Entity.__members__ \
            else MaskStyle.PLACEHOLDER

    @cached_property
    def compiled_allow_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.allow_patterns)
