"""secure-llm-gateway's framework-free guard core.

    from shared_guards import GuardEngine, parse_chat_request, Identity
    engine = GuardEngine.shared("config/policy.yaml")
    decision, ctx = await engine.check_request(parse_chat_request(body, Identity(team="finance")))
"""

from shared_guards.engine import GuardEngine, StreamSession
from shared_guards.errors import (
    BackendUnavailable,
    ConfigError,
    ContentViolation,
    GuardError,
    GuardUnavailable,
    GuardViolation,
    MalformedRequest,
    PermissionDenied,
    PolicyError,
    QuotaExceeded,
    Unauthenticated,
)
from shared_guards.guard import Guard, GuardConfig, RequestContext, Resources, StreamFilter
from shared_guards.openai_format import apply_request, apply_response, parse_chat_request, parse_chat_response
from shared_guards.policy import load_policy
from shared_guards.types import (
    Action,
    Decision,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    Identity,
    Message,
    Stage,
)

__version__ = "0.1.0"

__all__ = [
    "Action",
    "BackendUnavailable",
    "ConfigError",
    "ContentViolation",
    "Decision",
    "Finding",
    "Guard",
    "GuardConfig",
    "GuardEngine",
    "GuardError",
    "GuardRequest",
    "GuardResponse",
    "GuardResult",
    "GuardUnavailable",
    "GuardViolation",
    "Identity",
    "MalformedRequest",
    "Message",
    "PermissionDenied",
    "PolicyError",
    "QuotaExceeded",
    "RequestContext",
    "Resources",
    "Stage",
    "StreamFilter",
    "StreamSession",
    "Unauthenticated",
    "apply_request",
    "apply_response",
    "load_policy",
    "parse_chat_request",
    "parse_chat_response",
]
