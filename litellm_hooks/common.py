"""Small translations shared by the guardrail and the custom auth: policy path, identity, errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException

from shared_guards.engine import GuardEngine
from shared_guards.errors import GuardViolation
from shared_guards.types import Identity

DEFAULT_POLICY = "config/policy.yaml"

# The policy the guardrail was configured with, so ``custom_auth`` reads the same file.
_configured: list[str] = []


def policy_path(explicit: str | None = None) -> str:
    """The policy file: the guardrail's ``policy_path`` param, else ``$SLG_POLICY``, else the default."""
    return explicit or os.environ.get("SLG_POLICY") or DEFAULT_POLICY


def configure(path: str) -> None:
    """Remember the guardrail's policy (the first one configured wins)."""
    if not _configured:
        _configured.append(path)


def engine(explicit: str | None = None) -> GuardEngine:
    return GuardEngine.shared(policy_path(explicit or (_configured[0] if _configured else None)))


def identity_from_auth(auth: Any) -> Identity:
    """Identity from LiteLLM's ``UserAPIKeyAuth`` (team, user, key alias, metadata.department)."""
    if auth is None:
        return Identity(gateway="litellm")
    meta = getattr(auth, "metadata", None)
    meta = meta if isinstance(meta, Mapping) else {}
    department = meta.get("department")

    def s(name: str) -> str | None:
        v = getattr(auth, name, None)
        return v if isinstance(v, str) and v else None

    return Identity(
        user=s("user_id"),
        team=s("team_alias") or s("team_id"),
        key_alias=s("key_alias"),
        department=department if isinstance(department, str) and department else None,
        tenant=s("org_id"),
        gateway="litellm",
    )


class GuardHTTPException(HTTPException):
    """An HTTPException that also carries the OpenAI ``type`` and ``param`` LiteLLM copies into
    the client's error body (it reads them as attributes of the exception)."""

    def __init__(self, violation: GuardViolation) -> None:
        super().__init__(status_code=violation.http_status, detail=violation.message,
                         headers=dict(violation.headers) or None)
        self.type = violation.error_type
        self.param = violation.param


def http_error(violation: GuardViolation) -> HTTPException:
    """The exception LiteLLM turns into ``{"error": {message, type, code, param}}`` with the status.

    LiteLLM's proxy maps ``detail`` to ``message``, our ``type``/``param`` attributes to theirs,
    and the status to ``code``; the rule id is in the message. Headers (``Retry-After``) pass."""
    return GuardHTTPException(violation)
