"""Time-boxed backend calls behind a circuit breaker.

Every call gets a hard deadline (``asyncio.timeout``, on top of the socket timeouts). After
``failures`` consecutive failures the breaker opens: calls fail at once with
:class:`~shared_guards.errors.BackendUnavailable` (a dead Redis then costs nothing per request)
until the back-off has passed; then one probe call is let through (half-open). Success closes the
breaker, failure re-opens it with a doubled back-off (capped). The client library reconnects by
itself on the next call, so Redis coming back is picked up without restarting anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from shared_guards.backends.base import CheckResult, LimiterBackend, Rule, Slot
from shared_guards.errors import BackendUnavailable

log = logging.getLogger("shared_guards.backends")
T = TypeVar("T")


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 3,
        base_backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._trips = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._trips == 0:
                return "closed"
            return "half_open" if self._probing or self._clock() >= self._open_until else "open"

    def retry_after_s(self) -> float:
        with self._lock:
            return max(0.0, self._open_until - self._clock())

    def allow(self) -> bool:
        """May a call go to the backend now? In half-open state only one probe at a time."""
        with self._lock:
            if self._trips == 0:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            if self._trips:
                log.warning("backend recovered after %d failed probe(s)", self._trips)
            self._consecutive = 0
            self._trips = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            if self._trips and not self._probing and self._clock() < self._open_until:
                return  # a call started before the circuit opened: already counted
            self._consecutive += 1
            if self._probing or self._consecutive >= self.failures:
                backoff = min(self.max_backoff_s, self.base_backoff_s * (2 ** min(self._trips, 16)))
                if self._trips == 0:
                    log.error("backend failing: circuit open for %.2fs", backoff)
                self._trips += 1
                self._open_until = self._clock() + backoff
            self._probing = False


class ResilientBackend:
    """Wraps a remote backend: deadline per call, circuit breaker, BackendUnavailable on any
    failure (the message never carries keys or values)."""

    def __init__(self, inner: LimiterBackend, *, timeout_s: float, breaker: CircuitBreaker | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.shared = inner.shared
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker()

    async def _call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise BackendUnavailable(f"{self.name} backend unavailable (circuit open)")
        settled = False
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                result = await make()
        except asyncio.CancelledError:
            self.breaker.failure()
            settled = True
            raise
        except Exception as exc:  # timeouts, connection errors, script errors: all the same here
            self.breaker.failure()
            settled = True
            log.warning("%s backend %s failed: %s", self.name, op, type(exc).__name__)
            raise BackendUnavailable(f"{self.name} backend unavailable ({type(exc).__name__})") from None
        finally:
            if not settled:
                self.breaker.success()
        return result

    async def check(self, rules: Sequence[Rule], slots: Sequence[Slot] = ()) -> CheckResult:
        return await self._call("check", lambda: self.inner.check(rules, slots))

    async def adjust(self, rules: Sequence[Rule]) -> None:
        await self._call("adjust", lambda: self.inner.adjust(rules))

    async def release(self, slots: Sequence[Slot]) -> None:
        await self._call("release", lambda: self.inner.release(slots))

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", lambda: self.inner.get(key))

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._call("set", lambda: self.inner.set(key, value, ttl_ms))

    async def delete(self, keys: Sequence[str]) -> None:
        await self._call("delete", lambda: self.inner.delete(keys))

    async def ping(self) -> bool:
        try:
            return await self._call("ping", self.inner.ping)
        except BackendUnavailable:
            return False

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.inner.close(), timeout=self.timeout_s * 4)
        except Exception as exc:
            log.warning("%s backend close failed: %s", self.name, type(exc).__name__)
