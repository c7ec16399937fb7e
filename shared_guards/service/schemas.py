"""The guard service's wire types, as pydantic models.

They validate every body (strictly: no coercion, so the published schema is what is accepted)
and the OpenAPI document is generated from them, so the schema cannot drift from the code.
Chat bodies are validated for shape here and parsed by :mod:`shared_guards.openai_format`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def integral_floats(v: Any) -> Any:
    """JSON Schema's ``integer`` includes 2.0: the copy that is validated has integral floats as
    ints (input models have no float fields; the body forwarded is the original)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    if isinstance(v, dict):
        return {k: integral_floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [integral_floats(x) for x in v]
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    """Bodies written by other software (OpenAI, LiteLLM): unknown keys are kept, not refused."""

    model_config = ConfigDict(extra="allow", strict=True)


# -- OpenAI chat shapes (what openai_format accepts) ------------------------------------------------

RoleName = Literal["system", "developer", "user", "assistant", "tool", "function", "document"]
MediaType = Literal[
    "image_url", "input_image", "image", "file", "input_file", "document", "input_audio", "audio",
]


class TextPartIn(_Open):
    type: Literal["text", "input_text"]
    text: str


class MediaPartIn(_Open):
    """Images, files and audio are not scanned; their presence counts for ``deny_features``."""

    type: MediaType


ContentPartIn = Annotated[TextPartIn | MediaPartIn, Field(discriminator="type")]


class FunctionIn(_Open):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class ToolCallIn(_Open):
    id: str | None = None
    type: str | None = None
    function: FunctionIn | None = None


class ChatMessageIn(_Open):
    role: RoleName
    content: str | list[str | ContentPartIn] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class ChatBody(_Open):
    """An OpenAI chat-completions request body (other keys are kept and forwarded)."""

    model: str = Field(min_length=1)
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None


class AnswerMessageIn(_Open):
    role: str | None = None
    content: str | list[Any] | None = None
    tool_calls: list[ToolCallIn] | None = None


class AnswerChoiceIn(_Open):
    index: int = Field(0, ge=0, le=1024)
    message: AnswerMessageIn | None = None
    finish_reason: str | None = None


class UsageIn(_Open):
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)


class ChatCompletionBody(_Open):
    """An OpenAI chat-completions answer (non-streamed)."""

    choices: list[AnswerChoiceIn] = Field(default_factory=list)
    usage: UsageIn | None = None
    model: str | None = None


# -- identity -------------------------------------------------------------------------------------


class IdentityIn(_Strict):
    """Who the end user is, as the calling gateway knows it. Mapped to a department by the policy
    (``departments.*.match``). ``api_key`` is looked up in the policy's ``api_keys`` instead."""

    user: str | None = Field(None, max_length=256)
    team: str | None = Field(None, max_length=256)
    key_alias: str | None = Field(None, max_length=256)
    department: str | None = Field(None, max_length=256, description="Already resolved by the gateway.")
    tenant: str | None = Field(None, max_length=256)
    consumer: str | None = Field(None, max_length=256, description="Kong consumer username or custom_id.")
    groups: list[str] = Field(default_factory=list, max_length=64)
    api_key: str | None = Field(None, max_length=512, description="The end user's API key (policy api_keys).")


# -- guard API ------------------------------------------------------------------------------------


class GuardRequestIn(_Strict):
    body: ChatBody
    identity: IdentityIn | None = Field(
        None, description="Overrides the X-SLG-* identity headers field by field."
    )
    request_id: str | None = Field(None, max_length=128, description="The gateway's id, for the audit trail.")
    expect_response: bool = Field(
        True, description="false: only the request is checked; no context is kept for an answer."
    )


class OpenAIError(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


class ViolationOut(BaseModel):
    """What the gateway should answer the end user: ``status`` with ``body`` and ``headers``."""

    status: int
    rule_id: str
    body: OpenAIErrorBody
    headers: dict[str, str]


class FindingOut(BaseModel):
    """A finding (never the matched text)."""

    guard: str
    rule_id: str
    layer: str | None = None
    score: float | None = None
    category: str | None = None
    entity_type: str | None = None
    message_index: int | None = None
    start: int | None = None
    end: int | None = None
    severity: str | None = None


ActionName = Literal["allow", "modify", "alert", "block"]


class DecisionOut(BaseModel):
    action: ActionName
    blocked: bool
    changed: bool
    findings: list[FindingOut]
    violation: ViolationOut | None = None
    headers: dict[str, str]
    errors: list[str] = Field(description="Guards that failed or timed out (their on_error applied).")


class RequestDecisionOut(DecisionOut):
    context_id: str | None = Field(
        description="Pass it to /v1/guard/response and /v1/guard/stream/{context_id}/...; null when blocked."
    )
    request_id: str
    department: str | None = None
    policy_version: str
    body: dict[str, Any] | None = Field(description="The request to forward (sanitized); null when blocked.")
    expires_in: float | None = Field(None, description="Seconds the context is kept for the answer.")


class GuardResponseIn(_Strict):
    context_id: str = Field(min_length=1, max_length=128)
    body: ChatCompletionBody
    final: bool = Field(True, description="true: the request ends here and its context is released.")


class ResponseDecisionOut(DecisionOut):
    context_id: str
    body: dict[str, Any] | None = Field(description="The answer to send (placeholders restored); null when blocked.")


class ChunkIn(_Strict):
    delta: str = Field(max_length=262_144, description="The next text delta of one choice.")
    choice_index: int = Field(0, ge=0, le=127)


class ChunkOut(BaseModel):
    context_id: str
    text: str = Field(description="Text to emit now; a bounded tail may be held back.")
    action: ActionName
    blocked: bool
    violation: ViolationOut | None = None


class StreamEndIn(_Strict):
    pass


class ChoiceText(BaseModel):
    index: int
    text: str


class StreamEndOut(BaseModel):
    context_id: str
    text: str = Field(description="The held-back text of choice 0.")
    choices: list[ChoiceText]
    action: ActionName
    blocked: bool
    violation: ViolationOut | None = None


# -- LiteLLM Generic Guardrail API (litellm 1.108.7, types/proxy/guardrails/guardrail_hooks/
#    generic_guardrail_api.py) ------------------------------------------------------------------


class GenericMetadataIn(_Open):
    user_api_key_hash: str | None = None
    user_api_key_alias: str | None = None
    user_api_key_user_id: str | None = None
    user_api_key_user_email: str | None = None
    user_api_key_team_id: str | None = None
    user_api_key_team_alias: str | None = None
    user_api_key_end_user_id: str | None = None
    user_api_key_org_id: str | None = None


class GenericGuardrailRequestIn(_Open):
    input_type: Literal["request", "response"]
    litellm_call_id: str | None = Field(None, max_length=256)
    litellm_trace_id: str | None = None
    structured_messages: list[dict[str, Any]] | None = None
    images: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    texts: list[str] | None = None
    request_data: GenericMetadataIn = Field(default_factory=GenericMetadataIn)
    request_headers: dict[str, str] | None = None
    litellm_version: str | None = None
    additional_provider_specific_params: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    model: str | None = None


class GenericGuardrailResponseOut(BaseModel):
    action: Literal["BLOCKED", "NONE", "GUARDRAIL_INTERVENED"]
    blocked_reason: str | None = None
    texts: list[str] | None = None
    stream_holdback_chars: list[int] | None = None


# -- operations -----------------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: Literal["ok"]
    profile: str


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    profile: str
    policy_version: str | None = None
    checks: dict[str, str]
