"""The async guard pipeline.

Per stage: access guards (``tier == 0``: RBAC, quotas) run first, one after another, and a block
there stops everything. Then content guards run concurrently: every non-modifying guard is its own
task, and the modifying guards run in policy order as one more task (each sees the previous one's
output). The first enforced block cancels the rest. Every guard has a timeout and an ``on_error``
(fail_open records the failure and goes on; fail_closed blocks with 503). Timings are per guard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared_guards.errors import ContentViolation, GuardUnavailable
from shared_guards.guard import Guard, RequestContext
from shared_guards.policy import GuardAction, GuardSpec, Mode, OnError
from shared_guards.types import (
    Action,
    Decision,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    GuardTiming,
    Stage,
    stronger,
)

if TYPE_CHECKING:
    from shared_guards.cache import VerdictCache

log = logging.getLogger("shared_guards.pipeline")


@dataclass(frozen=True)
class BoundGuard:
    guard: Guard
    spec: GuardSpec
    on_error: OnError
    tier: int = 1  # 0 = access guards, run first and sequentially

    @property
    def id(self) -> str:
        return self.spec.guard_id


Subject = GuardRequest | GuardResponse


@dataclass
class _Outcome:
    bound: BoundGuard
    result: GuardResult
    timing: GuardTiming
    failed: bool = False


class Pipeline:
    def __init__(
        self,
        guards: Sequence[BoundGuard],
        *,
        department: str,
        mode: Mode,
        policy_version: str,
        cache: VerdictCache | None = None,
    ) -> None:
        self.guards = list(guards)
        self.department = department
        self.mode = mode
        self.policy_version = policy_version
        # Verdicts of ``cacheable`` content guards at the request stage (see shared_guards.cache).
        self.cache = cache

    def for_stage(self, stage: Stage) -> list[BoundGuard]:
        return [b for b in self.guards if stage in b.guard.stages]

    async def run_request(self, request: GuardRequest, ctx: RequestContext) -> Decision:
        return await self._run(Stage.REQUEST, request, None, ctx)

    async def run_response(self, response: GuardResponse, ctx: RequestContext) -> Decision:
        request = ctx.request or ctx.original_request
        assert request is not None, "run_request first"
        return await self._run(Stage.RESPONSE, request, response, ctx)

    # -- internals -------------------------------------------------------------------------------

    def _effective(self, b: BoundGuard, result: GuardResult) -> GuardResult:
        """Apply the spec's action and the department's mode to a guard's own result."""
        if result.action is not Action.BLOCK:
            return result
        if b.spec.action is GuardAction.ALERT or self.mode is Mode.MONITOR:
            return GuardResult(Action.ALERT, result.findings, result.score, result.sanitized, None, result.headers)
        if b.spec.action is GuardAction.LOG:
            return GuardResult(Action.ALLOW, result.findings, result.score, result.sanitized, None, result.headers)
        if result.violation is None:  # a guard said block without saying why: still a clean 400
            rule = result.findings[0].rule_id if result.findings else b.id
            return GuardResult(
                Action.BLOCK,
                result.findings,
                result.score,
                violation=ContentViolation(f"Request blocked by {b.id} (rule {rule}).", rule_id=rule),
            )
        return result

    async def _call(
        self, b: BoundGuard, stage: Stage, subject: Subject, ctx: RequestContext
    ) -> _Outcome:
        fn: Callable[[], Awaitable[GuardResult]]
        if stage is Stage.REQUEST:
            assert isinstance(subject, GuardRequest)
            req = subject

            def fn() -> Awaitable[GuardResult]:
                return b.guard.check_request(req, ctx)
        else:
            assert isinstance(subject, GuardResponse)
            resp = subject

            def fn() -> Awaitable[GuardResult]:
                return b.guard.check_response(resp, ctx)

        t0 = time.perf_counter()
        outcome = "ok"
        cache_key = self._cache_key(b, stage, subject, ctx)
        if cache_key is not None and self.cache is not None:
            try:
                hit = await self.cache.get(cache_key)
            except Exception as exc:  # a cache fault is a miss, never a failed request
                log.warning("verdict cache read failed: %s", type(exc).__name__)
                hit = None
            if hit is not None:
                ms = (time.perf_counter() - t0) * 1000
                return _Outcome(b, self._effective(b, hit), GuardTiming(b.id, ms, "cached"))
        try:
            result = await asyncio.wait_for(fn(), timeout=b.spec.timeout_ms / 1000)
        except TimeoutError:
            outcome, result = "timeout", None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a guard bug must never become a 500 or leak text
            log.error("guard %s failed: %s", b.id, type(exc).__name__)
            outcome, result = "error", None
        ms = (time.perf_counter() - t0) * 1000
        if result is not None and cache_key is not None and self.cache is not None:
            try:
                await self.cache.put(cache_key, result)
            except Exception as exc:  # the guard's verdict stands even when it cannot be cached
                log.warning("verdict cache write failed: %s", type(exc).__name__)
        if result is not None:
            return _Outcome(b, self._effective(b, result), GuardTiming(b.id, ms, outcome))
        finding = Finding(guard=b.id, rule_id=f"{b.id}.{outcome}", layer="runtime", severity="high")
        if b.on_error is OnError.FAIL_CLOSED and self.mode is Mode.ENFORCE:
            violation = GuardUnavailable(
                f"Guard {b.id} is unavailable ({outcome}) and its policy is fail_closed "
                f"(rule {finding.rule_id}).", rule_id=finding.rule_id
            )
            res = GuardResult.block(violation, (finding,))
        else:
            res = GuardResult(Action.ALERT, (finding,))
        return _Outcome(b, res, GuardTiming(b.id, ms, outcome), failed=True)

    def _cache_key(self, b: BoundGuard, stage: Stage, subject: Subject, ctx: RequestContext) -> str | None:
        """The verdict-cache key, or None when this call must not be cached."""
        if (
            self.cache is None
            or stage is not Stage.REQUEST
            or b.tier == 0
            or b.guard.modifies
            or not getattr(b.guard, "cacheable", False)
            or not isinstance(subject, GuardRequest)
        ):
            return None
        return self.cache.key(tenant=ctx.identity.tenant, department=ctx.department,
                              policy_version=self.policy_version, guard_id=b.id, request=subject)

    async def _chain(
        self, chain: list[BoundGuard], stage: Stage, subject: Subject, ctx: RequestContext
    ) -> list[_Outcome]:
        outs: list[_Outcome] = []
        for b in chain:
            out = await self._call(b, stage, subject, ctx)
            outs.append(out)
            if out.result.action is Action.BLOCK:
                break
            if out.result.action is Action.MODIFY and out.result.sanitized is not None:
                subject = out.result.sanitized
        return outs

    async def _run(
        self, stage: Stage, request: GuardRequest, response: GuardResponse | None, ctx: RequestContext
    ) -> Decision:
        subject: Subject = request if stage is Stage.REQUEST else response  # type: ignore[assignment]
        bound = self.for_stage(stage)
        access = [b for b in bound if b.tier == 0]
        content = [b for b in bound if b.tier != 0]
        outcomes: list[_Outcome] = []

        # Access tier: sequential, short-circuit.
        access_out = await self._chain(access, stage, subject, ctx)
        outcomes += access_out
        blocked = any(o.result.action is Action.BLOCK for o in access_out)

        if not blocked and content:
            modifiers = [b for b in content if b.guard.modifies]
            tasks: list[asyncio.Task[list[_Outcome]]] = []
            for b in content:
                if not b.guard.modifies:
                    tasks.append(asyncio.ensure_future(self._chain([b], stage, subject, ctx)))
            if modifiers:
                tasks.append(asyncio.ensure_future(self._chain(modifiers, stage, subject, ctx)))
            pending: set[asyncio.Task[list[_Outcome]]] = set(tasks)
            try:
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        outs = t.result()
                        outcomes += outs
                        if any(o.result.action is Action.BLOCK for o in outs):
                            blocked = True
                    if blocked:
                        break  # the rest are cancelled below and reported as skipped
            finally:
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
        return self._decide(stage, request, response, subject, outcomes, bound)

    def _decide(
        self,
        stage: Stage,
        request: GuardRequest,
        response: GuardResponse | None,
        original: Subject,
        outcomes: list[_Outcome],
        bound: list[BoundGuard],
    ) -> Decision:
        order = {b.id: i for i, b in enumerate(bound)}
        outcomes.sort(key=lambda o: order.get(o.bound.id, 0))
        action = Action.ALLOW
        findings: list[Finding] = []
        headers: dict[str, str] = {}
        violation = None
        errors: list[str] = []
        final: Subject = original
        ran = {o.bound.id for o in outcomes}
        timings = [o.timing for o in outcomes] + [
            GuardTiming(b.id, 0.0, "skipped") for b in bound if b.id not in ran
        ]
        for o in outcomes:
            r = o.result
            findings += r.findings
            headers.update(r.headers)
            if o.failed:
                errors.append(o.bound.id)
            if r.action is Action.BLOCK and violation is None:
                violation = r.violation
            if r.action is Action.MODIFY and r.sanitized is not None and o.bound.guard.modifies:
                final = r.sanitized  # modifiers are chained: the last one holds every change
            action = stronger(action, r.action)
        if stage is Stage.REQUEST:
            out_req = final if isinstance(final, GuardRequest) else request
            out_resp = response
        else:
            out_req = request
            out_resp = final if isinstance(final, GuardResponse) else response
        changed = final is not original
        if changed and action is Action.ALLOW:
            action = Action.MODIFY
        return Decision(
            stage=stage,
            action=action,
            request=out_req,
            response=out_resp,
            findings=tuple(findings),
            violation=violation if action is Action.BLOCK else None,
            timings=tuple(timings),
            headers=headers,
            department=self.department,
            mode=self.mode.value,
            policy_version=self.policy_version,
            errors=tuple(errors),
            changed=changed and action is not Action.BLOCK,
        )
