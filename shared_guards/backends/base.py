"""The limiter/KV contract shared by the in-memory and the Redis backend.

Rate limits use GCRA (the generic cell rate algorithm, as in redis-cell): a limit of ``L`` per
period ``P`` stores one number per key, the *theoretical arrival time* (TAT). A request of cost
``c`` is allowed when ``max(TAT, now) + c·P/L - now <= P``; it then moves TAT by ``c·P/L``. So
``L`` requests may come at once, after which capacity refills continuously (one unit every
``P/L``), which is what OpenAI's ``x-ratelimit-reset-*`` headers describe. Token budgets are the
same thing with a cost equal to the (estimated) tokens; reconciliation moves TAT by the
difference between the estimate and the usage the model reported.

Concurrency limits are a sorted set of slot ids scored by their expiry: a slot that is never
released (a crashed replica) disappears after its TTL.

One :meth:`LimiterBackend.check` is atomic and all-or-nothing: when any rule or slot denies,
nothing is consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

EPSILON_MS = 0.001


@dataclass(frozen=True, slots=True)
class Rule:
    """One GCRA limit: at most ``limit`` units of cost per ``period_ms`` on ``key``."""

    key: str
    limit: int
    period_ms: int
    cost: int = 1  # negative only in LimiterBackend.adjust (a refund)
    kind: str = "requests"  # requests | tokens (selects the x-ratelimit-*-<kind> headers)
    name: str = ""  # rule id, e.g. "quota.identity.requests_per_minute"

    def __post_init__(self) -> None:
        if self.limit <= 0 or self.period_ms <= 0:
            raise ValueError("rule limit and period must be positive")


@dataclass(frozen=True, slots=True)
class Slot:
    """One concurrency slot to acquire in the sorted set ``key`` (at most ``limit`` live slots)."""

    key: str
    limit: int
    ttl_ms: int
    slot_id: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class RuleState:
    rule: Rule
    allowed: bool
    remaining: int  # units left after this check (before it, when the check was denied)
    reset_ms: int  # until the bucket is full again
    retry_ms: int  # 0 when allowed; -1 when this cost can never be allowed (cost > limit)


@dataclass(frozen=True, slots=True)
class SlotState:
    slot: Slot
    allowed: bool
    in_use: int  # live slots after the check


@dataclass(frozen=True, slots=True)
class CheckResult:
    allowed: bool
    rules: tuple[RuleState, ...] = ()
    slots: tuple[SlotState, ...] = ()

    @property
    def denied_rules(self) -> tuple[RuleState, ...]:
        return tuple(r for r in self.rules if not r.allowed)

    @property
    def denied_slots(self) -> tuple[SlotState, ...]:
        return tuple(s for s in self.slots if not s.allowed)


@runtime_checkable
class LimiterBackend(Protocol):
    """What the quota guard and the verdict cache need from a store. Every method is safe to
    call concurrently from several tasks and threads."""

    name: str
    #: True when the state is shared between processes (Redis), False for per-process memory.
    shared: bool

    async def check(self, rules: Sequence[Rule], slots: Sequence[Slot] = ()) -> CheckResult:
        """Atomically test every rule and slot; consume all of them only if all allow."""
        ...

    async def adjust(self, rules: Sequence[Rule]) -> None:
        """Add ``rule.cost`` (may be negative: a refund) to each rule's usage, never denying."""
        ...

    async def release(self, slots: Sequence[Slot]) -> None:
        """Free concurrency slots (unknown ones are ignored)."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def gcra(tat: float | None, now: float, rule: Rule) -> tuple[float, RuleState]:
    """Pure GCRA step: ``(new_tat, state)``. ``new_tat`` is the value to store if every rule of
    the check allows. Mirrors the Lua script in :mod:`shared_guards.backends.redis`."""
    interval = rule.period_ms / rule.limit
    base = now if tat is None or tat < now else tat
    new_tat = base + rule.cost * interval
    if new_tat - now <= rule.period_ms + EPSILON_MS:
        return new_tat, RuleState(rule, True, _remaining(new_tat, now, rule, interval), _ceil(new_tat - now), 0)
    retry = -1 if rule.cost > rule.limit else _ceil(new_tat - rule.period_ms - now)
    return base, RuleState(rule, False, _remaining(base, now, rule, interval), _ceil(base - now), retry)


def denied_copy(state: RuleState, tat: float | None, now: float) -> RuleState:
    """The state of an allowing rule when another rule of the same check denied (nothing consumed)."""
    rule = state.rule
    base = now if tat is None or tat < now else tat
    return RuleState(rule, True, _remaining(base, now, rule, rule.period_ms / rule.limit), _ceil(base - now), 0)


def _remaining(tat: float, now: float, rule: Rule, interval: float) -> int:
    return max(0, int((rule.period_ms - (tat - now)) / interval + 1e-6))


def _ceil(ms: float) -> int:
    return max(0, int(ms + 0.999))
