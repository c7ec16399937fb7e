"""The embedded per-process backend: same semantics as Redis, one lock, no I/O.

Used when no Redis is configured, and as the fail-open fallback when Redis is unreachable. Safe
from several threads (Kong's loop thread, LiteLLM's loop) and tasks: every operation is a short
critical section under one ``threading.Lock`` and never awaits inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from shared_guards.backends.base import CheckResult, Rule, RuleState, Slot, SlotState, denied_copy, gcra


def _now_ms() -> float:
    return time.monotonic() * 1000.0  # process-local state: immune to wall-clock jumps


class MemoryBackend:
    name = "memory"
    shared = False

    def __init__(self, *, max_keys: int = 200_000, clock: Callable[[], float] = _now_ms) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._tats: dict[str, tuple[float, float]] = {}  # key -> (tat_ms, expires_ms)
        self._slots: dict[str, dict[str, float]] = {}  # key -> {slot_id: expires_ms}
        self._kv: dict[str, tuple[bytes, float]] = {}
        self._ops = 0

    # -- limiter ---------------------------------------------------------------------------------

    def check_sync(self, rules: Sequence[Rule], slots: Sequence[Slot] = ()) -> CheckResult:
        with self._lock:
            now = self._clock()
            self._maybe_sweep(now)
            states: list[RuleState] = []
            new_tats: list[float] = []
            tats: list[float | None] = []
            for rule in rules:
                tat = self._tat(rule.key, now)
                tats.append(tat)
                new_tat, st = gcra(tat, now, rule)
                new_tats.append(new_tat)
                states.append(st)
            allowed = all(s.allowed for s in states)
            slot_states: list[SlotState] = []
            for slot in slots:
                live = self._live_slots(slot.key, now)
                ok = len(live) < slot.limit
                allowed = allowed and ok
                slot_states.append(SlotState(slot, ok, len(live)))
            if allowed:
                for rule, new_tat in zip(rules, new_tats, strict=True):
                    self._tats[rule.key] = (new_tat, new_tat)
                slot_states = []
                for slot in slots:
                    live = self._live_slots(slot.key, now)
                    live[slot.slot_id] = now + slot.ttl_ms
                    slot_states.append(SlotState(slot, True, len(live)))
            else:
                states = [denied_copy(s, t, now) if s.allowed else s for s, t in zip(states, tats, strict=True)]
            return CheckResult(allowed, tuple(states), tuple(slot_states))

    def adjust_sync(self, rules: Sequence[Rule]) -> None:
        with self._lock:
            now = self._clock()
            for rule in rules:
                tat = self._tat(rule.key, now)
                base = now if tat is None or tat < now else tat
                new_tat = base + rule.cost * rule.period_ms / rule.limit
                if new_tat <= now:
                    self._tats.pop(rule.key, None)
                else:
                    self._tats[rule.key] = (new_tat, new_tat)

    def release_sync(self, slots: Sequence[Slot]) -> None:
        with self._lock:
            for slot in slots:
                live = self._slots.get(slot.key)
                if live is not None:
                    live.pop(slot.slot_id, None)
                    if not live:
                        del self._slots[slot.key]

    async def check(self, rules: Sequence[Rule], slots: Sequence[Slot] = ()) -> CheckResult:
        return self.check_sync(rules, slots)

    async def adjust(self, rules: Sequence[Rule]) -> None:
        self.adjust_sync(rules)

    async def release(self, slots: Sequence[Slot]) -> None:
        self.release_sync(slots)

    # -- plain KV (verdict cache) ----------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._kv.get(key)
            if item is None:
                return None
            if item[1] <= self._clock():
                del self._kv[key]
                return None
            return item[0]

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        with self._lock:
            now = self._clock()
            self._maybe_sweep(now)
            self._kv[key] = (value, now + ttl_ms)

    async def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for k in keys:
                self._tats.pop(k, None)
                self._slots.pop(k, None)
                self._kv.pop(k, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._tats) + len(self._slots) + len(self._kv)

    # -- internals (lock held) -------------------------------------------------------------------

    def _tat(self, key: str, now: float) -> float | None:
        item = self._tats.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._tats[key]
            return None
        return item[0]

    def _live_slots(self, key: str, now: float) -> dict[str, float]:
        live = self._slots.setdefault(key, {})
        for sid in [s for s, exp in live.items() if exp <= now]:
            del live[sid]
        return live

    def _maybe_sweep(self, now: float) -> None:
        """Drop expired entries every 1024 writes, or whenever the map is over ``max_keys``."""
        self._ops += 1
        if self._ops % 1024 and len(self) < self.max_keys:
            return
        self._tats = {k: v for k, v in self._tats.items() if v[1] > now}
        self._kv = {k: v for k, v in self._kv.items() if v[1] > now}
        for key in list(self._slots):
            self._live_slots(key, now)
            if not self._slots[key]:
                del self._slots[key]
        if len(self) >= self.max_keys:  # still full of live entries: forget the oldest limits
            for k in list(self._tats)[: len(self._tats) // 4 + 1]:
                del self._tats[k]
            for k in list(self._kv)[: len(self._kv) // 4 + 1]:
                del self._kv[k]
