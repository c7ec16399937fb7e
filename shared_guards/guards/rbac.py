"""RBAC: model allow-list, denied features and the max_tokens cap of the caller's department.

Always the first guard of every pipeline (access tier). Pure Python, microseconds.
"""

from __future__ import annotations

from typing import ClassVar

from shared_guards.errors import PermissionDenied
from shared_guards.guard import Guard, RequestContext
from shared_guards.types import Finding, GuardRequest, GuardResult


class RBACGuard(Guard):
    name: ClassVar[str] = "rbac"
    tier: ClassVar[int] = 0

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        dep = ctx.policy
        if not dep.allows_model(request.model):
            return self._deny(
                "rbac.model",
                f"Department {ctx.department!r} may not use model {request.model[:64]!r} (rule rbac.model).",
                code="model_not_allowed",
                param="model",
            )
        denied = sorted(f.value for f in request.features if f in dep.deny_features)
        if denied:
            return self._deny(
                f"rbac.feature.{denied[0]}",
                f"Department {ctx.department!r} may not use {', '.join(denied)} "
                f"(rule rbac.feature.{denied[0]}).",
                code="feature_not_allowed",
                param="messages",
            )
        if dep.max_tokens is not None and request.max_tokens is not None and request.max_tokens > dep.max_tokens:
            return self._deny(
                "rbac.max_tokens",
                f"max_tokens {request.max_tokens} exceeds the department's cap of {dep.max_tokens} "
                "(rule rbac.max_tokens).",
                code="max_tokens_exceeded",
                param="max_tokens",
            )
        return GuardResult.allow()

    def _deny(self, rule: str, message: str, *, code: str, param: str) -> GuardResult:
        finding = Finding(guard=self.name, rule_id=rule, layer="access", severity="medium")
        return GuardResult.block(PermissionDenied(message, rule_id=rule, code=code, param=param), (finding,))
