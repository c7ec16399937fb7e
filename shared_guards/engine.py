"""The engine: the one object adapters talk to.

It owns the policy store, builds a pipeline per (department, policy version), resolves identities,
runs the stages, writes one audit record per decision and offers a synchronous facade for
gateways whose handlers are not async (Kong's plugin server). Heavy assets are loaded once per
process: :meth:`GuardEngine.shared` returns one engine per policy path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from shared_guards.audit import AuditSink, build_audit_sink, decision_record
from shared_guards.backends import ensure_backends
from shared_guards.context_store import ContextStore
from shared_guards.errors import GuardViolation, Unauthenticated
from shared_guards.guard import RequestContext, Resources, StreamFilter
from shared_guards.guards.rbac import RBACGuard
from shared_guards.pipeline import BoundGuard, Pipeline
from shared_guards.policy import GuardSpec, LoadedPolicy, OnError, PolicyStore
from shared_guards.registry import get_guard_class
from shared_guards.types import Action, Decision, GuardRequest, GuardResponse, Identity, Stage

log = logging.getLogger("shared_guards.engine")
T = TypeVar("T")

_shared: dict[str, GuardEngine] = {}
_shared_lock = threading.Lock()


class _LoopThread:
    """One background event loop per process for synchronous callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="slg-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()  # the coroutine's own clean-up (finish) runs on cancellation
            raise


_loop_thread: _LoopThread | None = None


def _sync_loop() -> _LoopThread:
    global _loop_thread
    with _shared_lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
        return _loop_thread


class StreamSession:
    """Chains every guard's stream filter for one streamed answer."""

    def __init__(self, filters: list[StreamFilter]) -> None:
        self.filters = filters

    def feed(self, delta: str, choice_index: int = 0) -> str:
        for f in self.filters:
            delta = f.feed(delta, choice_index)
        return delta

    def flush(self, choice_index: int = 0) -> str:
        out = ""
        for f in self.filters:
            out = f.feed(out, choice_index) + f.flush(choice_index) if out else f.flush(choice_index)
        return out

    @property
    def active(self) -> bool:
        return bool(self.filters)


class GuardEngine:
    def __init__(
        self,
        policy_path: str | os.PathLike[str],
        *,
        audit: AuditSink | None = None,
        backends: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        policy_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        # ``policy_transform`` rewrites the parsed policy before validation (deployment profiles).
        self.store = PolicyStore(policy_path, transform=policy_transform)
        self.executor = ThreadPoolExecutor(max_workers=max_workers or min(4, (os.cpu_count() or 2)),
                                           thread_name_prefix="slg-guard")
        self.resources = Resources(executor=self.executor, backends=dict(backends or {}),
                                   policy_dir=str(self.store.path.parent))
        self.audit = audit if audit is not None else build_audit_sink(self.store.get().policy)
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._lock = threading.Lock()
        # Request contexts between a gateway's phases, keyed by the gateway's request id.
        self.contexts = ContextStore()

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def shared(cls, policy_path: str | os.PathLike[str]) -> GuardEngine:
        """One engine per policy path per process (Kong builds a Plugin per configuration)."""
        key = os.path.abspath(policy_path)
        with _shared_lock:
            eng = _shared.get(key)
            if eng is None:
                eng = _shared[key] = cls(key)
            return eng

    @property
    def loaded(self) -> LoadedPolicy:
        return self.store.get()

    def _build_pipeline(self, loaded: LoadedPolicy, department: str) -> Pipeline:
        policy = loaded.policy
        self.resources.policy_version = loaded.version
        ensure_backends(self.resources.backends, policy.backends)  # quota store, verdict cache
        rbac_spec = GuardSpec(name="rbac")
        bound = [BoundGuard(RBACGuard(RBACGuard.Config(), self.resources), rbac_spec, OnError.FAIL_CLOSED, tier=0)]
        for spec in policy.guards_for(department):
            cls = get_guard_class(spec.name)
            guard = cls(loaded.guard_config(department, spec.guard_id), self.resources)
            tier = int(getattr(cls, "tier", 1))
            bound.append(BoundGuard(guard, spec, policy.on_error_for(department, spec), tier=tier))
        return Pipeline(bound, department=department, mode=policy.mode_for(department),
                        policy_version=loaded.version, cache=self.resources.backends.get("verdict_cache"))

    def pipeline(self, department: str) -> Pipeline:
        loaded = self.loaded
        key = (loaded.version, department)
        p = self._pipelines.get(key)
        if p is None:
            with self._lock:
                p = self._pipelines.get(key)
                if p is None:
                    p = self._build_pipeline(loaded, department)
                    # Drop pipelines of older policy versions.
                    self._pipelines = {k: v for k, v in self._pipelines.items() if k[0] == loaded.version}
                    self._pipelines[key] = p
        return p

    def warm_up(self) -> dict[str, str]:
        """Build every department's pipeline now (models, rule packs), before traffic arrives.
        Returns ``{department: error type}`` for departments whose guards could not be built."""
        errors: dict[str, str] = {}
        for department in self.loaded.policy.departments:
            try:
                self.pipeline(department)
            except Exception as exc:
                log.error("department %s: pipeline not built: %s", department, type(exc).__name__)
                errors[department] = type(exc).__name__
        return errors

    # -- identity --------------------------------------------------------------------------------

    def authenticate_key(self, api_key: str | None) -> Identity | None:
        """Map an API key to an identity through the policy's ``api_keys`` (custom auth)."""
        if not api_key:
            return None
        entry = self.loaded.policy.lookup_key(api_key)
        if entry is None:
            return None
        return Identity(user=entry.user, key_alias=entry.key_alias, department=entry.department, team=entry.department)

    def resolve(self, identity: Identity) -> str:
        dep = self.loaded.policy.resolve(identity)
        if dep is None:
            raise Unauthenticated(
                "Unknown or missing identity: no department of the policy matches this caller "
                "(rule identity.unknown).",
                rule_id="identity.unknown",
            )
        return dep

    # -- stages ----------------------------------------------------------------------------------

    def new_context(self, request: GuardRequest) -> RequestContext:
        identity = request.identity
        department = self.resolve(identity)
        return RequestContext(
            request_id=request.request_id or uuid.uuid4().hex,
            identity=identity,
            department=department,
            policy=self.loaded.policy.departments[department],
            gateway=identity.gateway,
            original_request=request,
        )

    async def check_request(self, request: GuardRequest) -> tuple[Decision, RequestContext | None]:
        """Run the request stage. Never raises for content: the violation is in the decision.
        Returns ``(decision, ctx)``; ``ctx`` is None when the identity was refused."""
        try:
            ctx = self.new_context(request)
        except GuardViolation as exc:
            decision = Decision(Stage.REQUEST, Action.BLOCK, request, violation=exc,
                                policy_version=self.loaded.version)
            self._audit(decision, None)
            return decision, None
        try:
            decision = await self.pipeline(ctx.department).run_request(request, ctx)
        except asyncio.CancelledError:
            # The caller gave up (sync timeout, client gone): release what guards reserved.
            await asyncio.shield(self.finish(ctx, ok=False))
            raise
        ctx.request = decision.request
        self._audit(decision, ctx)
        if decision.blocked:
            await self.finish(ctx, ok=False)
        return decision, ctx

    async def check_response(self, ctx: RequestContext, response: GuardResponse) -> Decision:
        decision = await self.pipeline(ctx.department).run_response(response, ctx)
        self._audit(decision, ctx)
        return decision

    def open_stream(self, ctx: RequestContext) -> StreamSession:
        filters = []
        for b in self.pipeline(ctx.department).guards:
            f = b.guard.stream_filter(ctx)
            if f is not None:
                filters.append(f)
        return StreamSession(filters)

    async def finish(self, ctx: RequestContext, *, ok: bool) -> None:
        """Release per-request resources (quota reservations, vaults). Safe to call twice."""
        if ctx.state.get("_finished"):
            return
        ctx.state["_finished"] = True
        for b in self.pipeline(ctx.department).guards:
            try:
                await b.guard.on_complete(ctx, ok=ok)
            except Exception as exc:
                log.error("guard %s on_complete failed: %s", b.id, type(exc).__name__)
        ctx.state.clear()
        ctx.state["_finished"] = True

    def record(self, decision: Decision, ctx: RequestContext | None, **extra: Any) -> None:
        """Write an extra audit record (e.g. a stream stopped mid-way)."""
        self._audit(decision, ctx, **extra)

    def _audit(self, decision: Decision, ctx: RequestContext | None, **extra: Any) -> None:
        try:
            self.audit.emit(decision_record(decision, ctx, self.loaded.policy.audit, **extra))
        except Exception as exc:  # the audit path must never fail a request
            log.error("audit emit failed: %s", type(exc).__name__)

    # -- synchronous facade ----------------------------------------------------------------------

    def check_request_sync(self, request: GuardRequest, timeout: float = 30.0) -> tuple[Decision, RequestContext | None]:
        return _sync_loop().run(self.check_request(request), timeout)

    def check_response_sync(self, ctx: RequestContext, response: GuardResponse, timeout: float = 30.0) -> Decision:
        return _sync_loop().run(self.check_response(ctx, response), timeout)

    def finish_sync(self, ctx: RequestContext, *, ok: bool, timeout: float = 10.0) -> None:
        _sync_loop().run(self.finish(ctx, ok=ok), timeout)

    def close(self) -> None:
        try:
            self.audit.close()
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)
