"""``custom_auth`` for LiteLLM deployments without its database: API keys → policy identities.

``general_settings: {custom_auth: litellm_hooks.auth.custom_auth}``. Keys are looked up in the
policy's ``api_keys`` (constant-time digest comparison); unknown or missing keys get a clean 401
in OpenAI's error shape. The resolved department rides in the key's ``metadata`` and as team.
The policy is the guardrail's (its ``policy_path``), else ``$SLG_POLICY``, else config/policy.yaml.
"""

from __future__ import annotations

import logging

from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from litellm_hooks.common import engine
from shared_guards.errors import GuardViolation, Unauthenticated

log = logging.getLogger("litellm_hooks.auth")


def _proxy_exception(v: GuardViolation) -> ProxyException:
    return ProxyException(message=v.message, type=v.error_type, param=v.param, code=v.http_status,
                          headers=dict(v.headers) or None, openai_code=v.code)


def _strip_bearer(api_key: str | None) -> str:
    key = (api_key or "").strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    return key


async def custom_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    try:
        identity = engine().authenticate_key(_strip_bearer(api_key))
        if identity is None:
            raise Unauthenticated("Missing or unknown API key (rule auth.api_key).", rule_id="auth.api_key")
    except GuardViolation as v:
        raise _proxy_exception(v) from None
    except Exception as exc:  # policy unreadable etc.: never a raw 500 with text
        log.error("custom_auth failed: %s", type(exc).__name__)
        raise ProxyException(message="Authentication is unavailable.", type="service_unavailable_error",
                             param=None, code=503) from None
    dep = identity.department or ""
    return UserAPIKeyAuth(
        api_key=_strip_bearer(api_key),
        user_id=identity.user,
        key_alias=identity.key_alias,
        team_id=dep or None,
        team_alias=dep or None,
        metadata={"department": dep},
    )
