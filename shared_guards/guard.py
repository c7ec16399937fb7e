"""The guard contract: one abstract class, one frozen result.

A guard is built once per (department, policy version) with its validated ``Config`` and the
process-wide :class:`Resources`. Per-request data never lives on the guard: it goes into the
:class:`RequestContext` (``ctx.state``), which the engine creates per request and carries from the
request stage to the response stage.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared_guards.types import GuardRequest, GuardResponse, GuardResult, Identity, Stage

if TYPE_CHECKING:
    from shared_guards.policy import DepartmentPolicy


class GuardConfig(BaseModel):
    """Base of every guard's own options model. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Resources:
    """Process-wide shared things a guard may use: never per-request data."""

    executor: Executor
    # Named backends (e.g. "kv" for the quota/cache store), filled by the engine.
    backends: dict[str, Any] = field(default_factory=dict)
    policy_version: str = ""
    policy_dir: str = "."


@dataclass
class RequestContext:
    """Everything about one request that outlives a single stage. Created by the engine."""

    request_id: str
    identity: Identity
    department: str
    policy: DepartmentPolicy
    gateway: str = "sdk"
    started: float = field(default_factory=time.monotonic)
    # Per-request scratch space, keyed by guard name (pseudonymization vault, reserved tokens...).
    state: dict[str, Any] = field(default_factory=dict)
    request: GuardRequest | None = None  # the request as forwarded (after sanitization)
    original_request: GuardRequest | None = None


class StreamFilter(ABC):
    """Incremental processing of one streamed answer (one per request and guard).

    ``feed`` gets a text delta of a choice and returns the text that may be emitted now; it may
    hold back a bounded tail (e.g. a possibly split placeholder). ``flush`` returns what was held.
    Either may raise a :class:`~shared_guards.errors.GuardViolation` to stop the stream.
    """

    @abstractmethod
    def feed(self, delta: str, choice_index: int = 0) -> str: ...

    @abstractmethod
    def flush(self, choice_index: int = 0) -> str: ...


class Guard(ABC):
    """Base of every guard. Subclasses set ``name`` and implement :meth:`check_request`."""

    name: ClassVar[str]
    Config: ClassVar[type[GuardConfig]] = GuardConfig
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.REQUEST})
    # A modifying guard may return a sanitized request/response; modifiers run in policy order.
    modifies: ClassVar[bool] = False
    # Opt-in verdict cache (shared_guards.cache): set True only for a non-modifying content guard
    # whose verdict is a deterministic function of the request's messages/tools and its config.
    cacheable: ClassVar[bool] = False
    # Pure-Python fast guards run inline; slow ones should offload to ``resources.executor``.

    def __init__(self, config: GuardConfig, resources: Resources) -> None:
        self.config = config
        self.resources = resources

    @abstractmethod
    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        """Inspect (and, for modifiers, sanitize) a request."""

    async def check_response(self, response: GuardResponse, ctx: RequestContext) -> GuardResult:
        """Inspect (and, for modifiers, rewrite) a complete answer. Default: allow."""
        return GuardResult.allow()

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        """A per-request filter for streamed answers, or None when the guard does not need one."""
        return None

    async def on_complete(self, ctx: RequestContext, *, ok: bool) -> None:  # noqa: B027
        """Called once when the request ends (answer sent, failed or blocked). Release resources."""
