"""Typed, frozen request/response/result types shared by every guard and adapter.

Nothing here knows LiteLLM or Kong. Adapters build a :class:`GuardRequest` (usually through
:mod:`shared_guards.openai_format`) and get a :class:`Decision` back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared_guards.errors import GuardViolation


class Role(StrEnum):
    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    FUNCTION = "function"
    DOCUMENT = "document"  # RAG / retrieved content supplied as its own segment


class PartKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    FILE = "file"
    AUDIO = "audio"


class Feature(StrEnum):
    """Request features a department may be denied."""

    IMAGES = "images"
    FILES = "files"
    AUDIO = "audio"
    TOOLS = "tools"


class Stage(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class Action(StrEnum):
    """What a guard (or the whole pipeline) decided."""

    ALLOW = "allow"
    MODIFY = "modify"
    ALERT = "alert"
    BLOCK = "block"


_ACTION_RANK = {Action.ALLOW: 0, Action.MODIFY: 1, Action.ALERT: 2, Action.BLOCK: 3}


def stronger(a: Action, b: Action) -> Action:
    """The more severe of two actions (block > alert > modify > allow)."""
    return a if _ACTION_RANK[a] >= _ACTION_RANK[b] else b


@dataclass(frozen=True, slots=True)
class ContentPart:
    kind: PartKind = PartKind.TEXT
    # Content never shows in a repr (tracebacks, debug logs).
    text: str | None = field(default=None, repr=False)
    # A non-scanned reference (image URL, file id); never logged.
    ref: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[ContentPart, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """All text parts joined with newlines (tool-call arguments not included)."""
        return "\n".join(p.text for p in self.parts if p.kind is PartKind.TEXT and p.text)

    def with_texts(self, texts: list[str]) -> Message:
        """Replace the text parts, in order, with ``texts`` (one per text part)."""
        it = iter(texts)
        parts = tuple(
            dataclasses.replace(p, text=next(it)) if p.kind is PartKind.TEXT and p.text is not None else p
            for p in self.parts
        )
        return dataclasses.replace(self, parts=parts)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling. Adapters fill what their gateway knows; the policy maps it to a department."""

    user: str | None = None
    team: str | None = None
    key_alias: str | None = None
    department: str | None = None  # set when an authenticator already resolved it
    tenant: str | None = None
    consumer: str | None = None  # Kong consumer username or custom_id
    groups: tuple[str, ...] = ()  # Kong consumer groups or IdP groups
    gateway: str = "sdk"  # litellm | kong | service | sdk

    @property
    def is_empty(self) -> bool:
        return not any((self.user, self.team, self.key_alias, self.department, self.consumer, self.groups))

    def audit_view(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, (), [])}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class GuardRequest:
    messages: tuple[Message, ...]
    model: str
    identity: Identity = field(default_factory=Identity)
    max_tokens: int | None = None
    stream: bool = False
    tools: tuple[ToolSpec, ...] = ()
    request_id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> frozenset[Feature]:
        used: set[Feature] = set()
        if self.tools or any(m.tool_calls for m in self.messages):
            used.add(Feature.TOOLS)
        for m in self.messages:
            for p in m.parts:
                if p.kind is PartKind.IMAGE:
                    used.add(Feature.IMAGES)
                elif p.kind is PartKind.FILE:
                    used.add(Feature.FILES)
                elif p.kind is PartKind.AUDIO:
                    used.add(Feature.AUDIO)
        return frozenset(used)

    def texts(self) -> list[tuple[int, Role, str]]:
        """``(message_index, role, text)`` for every message with text, tool-call arguments included."""
        out: list[tuple[int, Role, str]] = []
        for i, m in enumerate(self.messages):
            t = m.text
            if m.tool_calls:
                t = "\n".join([t, *(c.arguments for c in m.tool_calls if c.arguments)]).strip("\n")
            if t:
                out.append((i, m.role, t))
        return out


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Choice:
    index: int = 0
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class GuardResponse:
    choices: tuple[Choice, ...] = ()
    usage: Usage | None = None
    model: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a guard noticed. Never carries the sensitive text itself."""

    guard: str
    rule_id: str
    layer: str = ""
    score: float = 1.0
    category: str = ""
    entity_type: str = ""
    message_index: int = -1
    start: int = -1
    end: int = -1
    severity: str = "medium"  # low | medium | high | critical

    def audit_view(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", -1)}


@dataclass(frozen=True, slots=True)
class GuardResult:
    """What one guard returns. ``sanitized`` replaces the request/response when action is MODIFY."""

    action: Action = Action.ALLOW
    findings: tuple[Finding, ...] = ()
    score: float = 0.0
    sanitized: GuardRequest | GuardResponse | None = None
    violation: GuardViolation | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def allow(cls, findings: tuple[Finding, ...] = (), score: float = 0.0) -> GuardResult:
        return cls(Action.ALLOW, findings, score)

    @classmethod
    def block(cls, violation: GuardViolation, findings: tuple[Finding, ...] = (), score: float = 1.0) -> GuardResult:
        return cls(Action.BLOCK, findings, score, violation=violation, headers=violation.headers)


@dataclass(frozen=True, slots=True)
class GuardTiming:
    guard: str
    ms: float
    outcome: str = "ok"  # ok | error | timeout | skipped


@dataclass(frozen=True, slots=True)
class Decision:
    """The pipeline's verdict for one stage of one request."""

    stage: Stage
    action: Action
    request: GuardRequest
    response: GuardResponse | None = None
    findings: tuple[Finding, ...] = ()
    violation: GuardViolation | None = None
    timings: tuple[GuardTiming, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    department: str = ""
    mode: str = "enforce"
    policy_version: str = ""
    errors: tuple[str, ...] = ()  # guard names that failed (error or timeout)
    # True when a guard rewrote the content: adapters forward ``request``/``response`` whenever
    # the decision is not a block (an ALERT may carry sanitized content too).
    changed: bool = False

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK and self.violation is not None

