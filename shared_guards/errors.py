"""One exception tree for the whole core.

Adapters map a :class:`GuardViolation` to an HTTP status and an OpenAI-style error body with
:meth:`GuardViolation.to_openai`. Messages name the rule that fired and never carry the scanned
text: raise ``... from None`` where a cause could carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class GuardError(Exception):
    """Root of every error the core raises on purpose."""


class ConfigError(GuardError):
    """A policy, rule pack or guard configuration is invalid."""


class PolicyError(ConfigError):
    """The policy file failed validation; ``problems`` lists ``(field_path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid policy {source}:\n{lines}")


class BackendUnavailable(GuardError):
    """A backend (Redis, a model, a sink) could not be reached in time."""


class GuardViolation(GuardError):
    """A request or answer is refused. Carries everything an adapter needs to answer."""

    http_status: int = 400
    error_type: str = "invalid_request_error"
    default_code: str = "content_policy_violation"

    def __init__(
        self,
        message: str,
        *,
        rule_id: str = "",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule_id = rule_id
        self.code = code or self.default_code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "code", "param"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class ContentViolation(GuardViolation):
    """400: injection, PII block, canary leak and other content rules."""


class MalformedRequest(GuardViolation):
    """400: the body is not a valid chat request (bad JSON, wrong shapes, too large)."""

    default_code = "invalid_request"


class Unauthenticated(GuardViolation):
    """401: missing or unknown identity."""

    http_status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GuardViolation):
    """403: the identity may not use this model or feature."""

    http_status = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class QuotaExceeded(GuardViolation):
    """429: a quota or rate limit is exhausted; ``retry_after`` in seconds."""

    http_status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        self.headers.setdefault("Retry-After", str(max(1, int(retry_after + 0.999))))


class GuardUnavailable(GuardViolation):
    """503: a guard failed or timed out and its policy says ``fail_closed``."""

    http_status = 503
    error_type = "service_unavailable_error"
    default_code = "guard_unavailable"


__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "ContentViolation",
    "GuardError",
    "GuardUnavailable",
    "GuardViolation",
    "MalformedRequest",
    "PermissionDenied",
    "PolicyError",
    "QuotaExceeded",
    "Unauthenticated",
]
