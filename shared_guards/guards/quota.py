"""Quotas and rate limits per identity and per department (access tier, before content guards).

Requests per minute/hour/day, tokens per day/month (estimated before the call from the text
length and ``max_tokens``, reconciled from the answer's ``usage``) and concurrent requests. One
atomic backend check per request; when any limit is exhausted nothing is consumed and the
request gets :class:`~shared_guards.errors.QuotaExceeded` (429) with ``Retry-After`` and
OpenAI's ``x-ratelimit-*`` headers. Allowed requests carry the same headers (remaining budget).

Backend failures follow ``on_backend_error``: ``fail_open`` allows the request with an alert
finding and enforces the limits per process (in-memory fallback); ``fail_closed`` refuses with
503 (or 429) and a message that says the quota store is unavailable.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from shared_guards.backends import MemoryBackend, hash_tag
from shared_guards.backends.base import CheckResult, LimiterBackend, Rule, RuleState, Slot
from shared_guards.errors import BackendUnavailable, GuardUnavailable, QuotaExceeded
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources
from shared_guards.policy import OnError
from shared_guards.types import Action, Finding, GuardRequest, GuardResponse, GuardResult, Identity, Stage

log = logging.getLogger("shared_guards.guards.quota")

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MONTH_MS = 30 * DAY_MS

# (option name, kind, period, short key suffix)
DIMENSIONS: tuple[tuple[str, str, int, str], ...] = (
    ("requests_per_minute", "requests", MINUTE_MS, "r1m"),
    ("requests_per_hour", "requests", HOUR_MS, "r1h"),
    ("requests_per_day", "requests", DAY_MS, "r1d"),
    ("tokens_per_day", "tokens", DAY_MS, "t1d"),
    ("tokens_per_month", "tokens", MONTH_MS, "t30d"),
)

class Limits(GuardConfig):
    requests_per_minute: int | None = Field(None, gt=0)
    requests_per_hour: int | None = Field(None, gt=0)
    requests_per_day: int | None = Field(None, gt=0)
    tokens_per_day: int | None = Field(None, gt=0, description="Prompt + completion tokens.")
    tokens_per_month: int | None = Field(None, gt=0, description="A rolling 30 days.")
    max_concurrent: int | None = Field(None, gt=0, description="Requests in flight at once.")

    @property
    def empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


class QuotaConfig(GuardConfig):
    identity: Limits | None = Field(None, description="Per caller (user, else key alias, else consumer).")
    department: Limits | None = Field(None, description="Shared by everyone in the department.")
    on_backend_error: OnError = Field(OnError.FAIL_OPEN, description="When the quota store (Redis) fails.")
    fail_closed_status: Literal[429, 503] = 503
    concurrency_ttl_seconds: int = Field(600, gt=0, le=86_400, description="A slot never released expires then.")
    chars_per_token: float = Field(4.0, gt=0, le=100)
    default_completion_tokens: int = Field(256, ge=0, description="Estimate when max_tokens is not given.")
    expose_headers: bool = Field(True, description="x-ratelimit-* headers on allowed requests too.")

    @model_validator(mode="after")
    def _some_limit(self) -> QuotaConfig:
        if (self.identity is None or self.identity.empty) and (self.department is None or self.department.empty):
            raise ValueError("set at least one limit under identity or department")
        return self


def _identity_label(identity: Identity) -> str:
    for kind, value in (("u", identity.user), ("k", identity.key_alias), ("c", identity.consumer)):
        if value:
            return f"{kind}:{value}"
    return "anonymous"


def format_duration(ms: int) -> str:
    """OpenAI's reset format: ``120ms``, ``6s``, ``1m30s``, ``2h0m5s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    s = (ms + 999) // 1000
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def ratelimit_headers(states: tuple[RuleState, ...]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` from the binding rule of each kind:
    the denied one if any, else the one with the least remaining."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        group = [s for s in states if s.rule.kind == kind]
        if not group:
            continue
        st = min(group, key=lambda s: (s.allowed, s.remaining, -s.reset_ms))
        headers[f"x-ratelimit-limit-{kind}"] = str(st.rule.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(st.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(st.reset_ms)
    return headers


class QuotaGuard(Guard):
    name: ClassVar[str] = "quota"
    Config: ClassVar[type[GuardConfig]] = QuotaConfig
    tier: ClassVar[int] = 0
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST, Stage.RESPONSE})

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        assert isinstance(config, QuotaConfig)
        self.cfg = config
        # The engine fills these from the policy's ``backends`` (shared_guards.backends); a guard
        # built outside an engine gets a per-process store kept in its Resources.
        self.primary: LimiterBackend = resources.backends.setdefault("kv", MemoryBackend())
        self.fallback: LimiterBackend = resources.backends.setdefault("kv_fallback", MemoryBackend())
        self.prefix: str = str(resources.backends.get("kv_prefix", "slg:"))

    # -- rules -----------------------------------------------------------------------------------

    def estimate_tokens(self, request: GuardRequest) -> int:
        chars = sum(len(t) for _, _, t in request.texts())
        prompt = int(chars / self.cfg.chars_per_token + 0.999) + 4 * len(request.messages)
        completion = request.max_tokens if request.max_tokens is not None else self.cfg.default_completion_tokens
        return prompt + completion

    def _scopes(self, ctx: RequestContext) -> list[tuple[str, str, Limits]]:
        """``(scope name, key stem, limits)``; all stems share one hash tag (one cluster slot)."""
        tag = hash_tag(ctx.identity.tenant or "-", ctx.department)
        out: list[tuple[str, str, Limits]] = []
        if self.cfg.identity is not None and not self.cfg.identity.empty:
            who = hashlib.sha256(_identity_label(ctx.identity).encode()).hexdigest()[:20]
            out.append(("identity", f"{self.prefix}q:{tag}:i:{who}", self.cfg.identity))
        if self.cfg.department is not None and not self.cfg.department.empty:
            out.append(("department", f"{self.prefix}q:{tag}:d", self.cfg.department))
        return out

    def plan(self, ctx: RequestContext, tokens: int) -> tuple[list[Rule], list[Slot]]:
        rules: list[Rule] = []
        slots: list[Slot] = []
        slot_id = uuid.uuid4().hex
        for scope, stem, limits in self._scopes(ctx):
            for option, kind, period, suffix in DIMENSIONS:
                limit = getattr(limits, option)
                if limit is not None:
                    cost = 1 if kind == "requests" else tokens
                    rules.append(Rule(f"{stem}:{suffix}", limit, period, cost, kind, f"quota.{scope}.{option}"))
            if limits.max_concurrent is not None:
                slots.append(Slot(f"{stem}:conc", limits.max_concurrent, self.cfg.concurrency_ttl_seconds * 1000,
                                  slot_id, f"quota.{scope}.max_concurrent"))
        return rules, slots

    # -- stages ----------------------------------------------------------------------------------

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        tokens = self.estimate_tokens(request)
        rules, slots = self.plan(ctx, tokens)
        findings: tuple[Finding, ...] = ()
        backend = self.primary
        try:
            result = await backend.check(rules, slots)
        except BackendUnavailable as exc:
            finding = Finding(guard=self.name, rule_id="quota.backend_unavailable", layer="backend", severity="high")
            if self.cfg.on_backend_error is OnError.FAIL_CLOSED:
                return self._fail_closed(exc, finding)
            backend, findings = self.fallback, (finding,)
            result = await backend.check(rules, slots)
        if not result.allowed:
            return self._exceeded(result, ctx, findings)
        ctx.state[self.name] = {
            "backend": backend,
            "token_rules": [r for r in rules if r.kind == "tokens"],
            "estimate": tokens,
            "slots": slots,
            "settled": False,
        }
        headers = ratelimit_headers(result.rules) if self.cfg.expose_headers else {}
        return GuardResult(Action.ALERT if findings else Action.ALLOW, findings, headers=headers)

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        st = ctx.state.get(self.name)
        if not st or st["settled"] or response.usage is None or not st["token_rules"]:
            return GuardResult.allow()
        delta = response.usage.total_tokens - int(st["estimate"])
        st["settled"] = True
        if delta:
            await self._adjust(st, delta)
        return GuardResult.allow()

    async def on_complete(self, ctx: RequestContext, *, ok: bool) -> None:
        st = ctx.state.get(self.name)
        if not st:
            return
        backend: LimiterBackend = st["backend"]
        if not ok and not st["settled"] and st["token_rules"]:
            # No usage was reported and the call failed (or a later guard blocked it): the
            # model was not billed for the estimate, so give it back.
            st["settled"] = True
            await self._adjust(st, -int(st["estimate"]))
        if st["slots"]:
            slots, st["slots"] = st["slots"], []
            try:
                await backend.release(slots)
            except BackendUnavailable:
                log.warning("quota: concurrency slot not released (backend unavailable); it expires by TTL")

    # -- helpers ---------------------------------------------------------------------------------

    async def _adjust(self, st: dict[str, Any], delta: int) -> None:
        rules = [Rule(r.key, r.limit, r.period_ms, delta, r.kind, r.name) for r in st["token_rules"]]
        try:
            await st["backend"].adjust(rules)
        except BackendUnavailable:
            log.warning("quota: token reconciliation skipped (backend unavailable)")

    def _exceeded(self, result: CheckResult, ctx: RequestContext, extra: tuple[Finding, ...]) -> GuardResult:
        denied = result.denied_rules
        if denied:
            never = [s for s in denied if s.retry_ms < 0]
            st = never[0] if never else max(denied, key=lambda s: s.retry_ms)
            rule_id = st.rule.name
            if never:
                retry_s = st.rule.period_ms / 1000
                reason = f"this request's estimated {st.rule.cost} tokens exceed the {rule_id.rsplit('.', 1)[1]} limit of {st.rule.limit}"
            else:
                retry_s = st.retry_ms / 1000
                reason = f"{rule_id.rsplit('.', 1)[1]} limit of {st.rule.limit} reached"
        else:
            slot = result.denied_slots[0]
            rule_id, retry_s = slot.slot.name, 1.0
            reason = f"max_concurrent limit of {slot.slot.limit} requests in flight reached"
        scope = "this caller" if ".identity." in rule_id else f"department {ctx.department!r}"
        headers = ratelimit_headers(result.rules)
        retry_s = max(retry_s, 0.001)
        headers["retry-after-ms"] = str(int(retry_s * 1000 + 0.999))
        violation = QuotaExceeded(
            f"Rate limit exceeded for {scope}: {reason} (rule {rule_id}). Retry after {int(retry_s + 0.999)} s.",
            retry_after=retry_s, rule_id=rule_id, headers=headers,
        )
        finding = Finding(guard=self.name, rule_id=rule_id, layer="access", severity="low")
        return GuardResult.block(violation, (finding, *extra))

    def _fail_closed(self, exc: BackendUnavailable, finding: Finding) -> GuardResult:
        breaker = getattr(self.primary, "breaker", None)
        retry_s = max(1.0, breaker.retry_after_s() if breaker is not None else 1.0)
        message = ("Quota store unavailable and this department's quota policy is fail_closed "
                   "(rule quota.backend_unavailable); retry later.")
        headers = {"Retry-After": str(int(retry_s + 0.999))}
        violation: QuotaExceeded | GuardUnavailable
        if self.cfg.fail_closed_status == 429:
            violation = QuotaExceeded(message, retry_after=retry_s, rule_id=finding.rule_id,
                                      code="quota_backend_unavailable", headers=headers)
        else:
            violation = GuardUnavailable(message, rule_id=finding.rule_id, code="quota_backend_unavailable",
                                         headers=headers)
        return GuardResult.block(violation, (finding,))

