"""Guard ``injection_pattern``: the signed rule-pack pattern layer on every message.

Policy example::

    - name: injection_pattern
      action: block            # block | alert | log
      options:
        threshold: 0.5         # score at which the guard blocks
        rules_path: rules/core.yaml   # optional; default: the bundled, signed core pack
        trusted_keys: [keys/]  # optional extra trusted public-key dirs/files

Every message is scanned (system, user, assistant, tool and function results, documents, and
tool-call arguments). The rule pack is re-read when its file changes (checked at most once a
second); a pack that fails verification is refused and the current one kept. Findings carry the
rule id, category, layer ``pattern``, weight, message index and offsets, never the text.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources
from shared_guards.injection.context import DATA_ROLES
from shared_guards.injection.normalize import normalize
from shared_guards.injection.patterns import STRUCTURAL, PatternMatcher, PatternResult, get_matcher
from shared_guards.injection.rulepack import RuleStore, shared_store
from shared_guards.types import Finding, GuardRequest, GuardResult, Role

# Above this many characters in one request the scan runs on the shared executor, not the loop.
INLINE_LIMIT = 64 * 1024


def severity(weight: float) -> str:
    if weight >= 0.85:
        return "critical"
    if weight >= 0.6:
        return "high"
    if weight >= 0.35:
        return "medium"
    return "low"


def resolve_path(path: str | None, base: str) -> Path | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base) / p


class PatternConfig(GuardConfig):
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="Score at which the request is blocked.")
    rules_path: str | None = Field(None, description="Signed rule pack (relative to the policy file); "
                                                     "default: the bundled core pack.")
    trusted_keys: list[str] = Field(default_factory=list, description="Extra trusted public keys (dirs or *.pub).")
    roles: list[Role] = Field(default_factory=lambda: list(Role), description="Message roles to scan.")
    full_scan_roles: list[Role] = Field(
        default_factory=lambda: [Role.USER, Role.TOOL, Role.FUNCTION, Role.DOCUMENT],
        description="Roles judged on every rule. The others (by default the operator's system/developer "
                    "prompt and the assistant's own earlier turns, which legitimately say 'never reveal your "
                    "instructions') count only structural rules: delimiters, fake turns, obfuscation.")
    decode: bool = Field(True, description="Also scan base64/hex/URL/rot13/reversed decodings.")


def load_store(cfg: PatternConfig, policy_dir: str) -> RuleStore:
    keys = [str(resolve_path(k, policy_dir)) for k in cfg.trusted_keys]
    store = shared_store(resolve_path(cfg.rules_path, policy_dir), trusted_key_dirs=keys)
    return store


def scan_request(request: GuardRequest, matcher: PatternMatcher, roles: frozenset[Role],
                 *, decode: bool = True, full_scan_roles: frozenset[Role] = frozenset(Role),
                 ) -> list[tuple[int, Role, PatternResult]]:
    """Pattern results of every scanned message that matched anything."""
    out: list[tuple[int, Role, PatternResult]] = []
    for i, role, text, full in segments(request):
        if role not in roles or not text:
            continue
        res = matcher.scan(normalize(text, decode=decode), suffix=role not in DATA_ROLES)
        if not full and role not in full_scan_roles:
            res = matcher.restrict(res, STRUCTURAL)
        if res.matches:
            out.append((i, role, res))
    return out


def segments(request: GuardRequest) -> list[tuple[int, Role, str, bool]]:
    """``(message index, role, text, always_full_scan)``: each message's text, and its tool-call
    arguments as a segment of their own that is always judged on every rule (arguments carry data
    the model passes to tools: the place where an injected instruction turns into an action)."""
    out: list[tuple[int, Role, str, bool]] = []
    for i, m in enumerate(request.messages):
        if m.text:
            out.append((i, m.role, m.text, False))
        args = "\n".join(c.arguments for c in m.tool_calls if c.arguments)
        if args:
            out.append((i, m.role, args, True))
    return out


class PatternGuard(Guard):
    name: ClassVar[str] = "injection_pattern"
    Config: ClassVar[type[GuardConfig]] = PatternConfig

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        assert isinstance(config, PatternConfig)
        self.cfg = config
        self.roles = frozenset(config.roles)
        self.full_scan_roles = frozenset(config.full_scan_roles)
        # Process-wide: one store per pack file, one compiled matcher per pack hash.
        self.store = load_store(config, resources.policy_dir)

    @property
    def matcher(self) -> PatternMatcher:
        return get_matcher(self.store.get())

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        matcher = self.matcher
        size = sum(len(t) for _, _, t, _ in segments(request))
        if size > INLINE_LIMIT:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(
                self.resources.executor, lambda: scan_request(request, matcher, self.roles, decode=self.cfg.decode,
                                                              full_scan_roles=self.full_scan_roles))
        else:
            results = scan_request(request, matcher, self.roles, decode=self.cfg.decode,
                                   full_scan_roles=self.full_scan_roles)
        if not results:
            return GuardResult.allow()
        findings: list[Finding] = []
        best: tuple[float, int, str] = (0.0, -1, "")
        for i, _role, res in results:
            for m in res.matches:
                findings.append(Finding(
                    guard=self.name, rule_id=m.rule_id, layer="pattern", score=m.weight, category=m.category,
                    message_index=i, start=m.start, end=m.end, severity=severity(m.weight),
                ))
            top = res.top
            if top is not None and res.score > best[0]:
                best = (res.score, i, top.rule_id)
        score, index, rule = best
        ctx.state[self.name] = {"score": score, "pack": matcher.pack.ident}
        if score < self.cfg.threshold:
            return GuardResult.allow(tuple(findings), score)
        violation = ContentViolation(
            f"Request blocked: prompt injection detected (rule {rule}, layer pattern, "
            f"message {index}, score {score:.2f}).",
            rule_id=rule, code="prompt_injection", param=f"messages[{index}]",
        )
        return GuardResult.block(violation, tuple(findings), score)
