"""Request contexts and open streams of the guard service: bounded and expiring.

The context itself lives in ``engine.contexts`` (the core's expiring store), keyed by the id the
service returned (or ``litellm:<call id>`` for the Generic Guardrail API). This table adds the
lifecycle: when an entry expires or ends, ``engine.finish`` runs once (quota reservations and
pseudonymization vaults are released). Stream state is whatever the guards' stream filters hold,
which they keep bounded; the number of open streams is capped and idle streams expire.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from shared_guards.engine import GuardEngine, StreamSession
from shared_guards.errors import QuotaExceeded
from shared_guards.guard import RequestContext

log = logging.getLogger("shared_guards.service")


@dataclass
class Entry:
    key: str
    ctx: RequestContext
    deadline: float
    stream: StreamSession | None = None
    choices: set[int] = field(default_factory=set)
    answered: bool = False  # an answer (or a round of it) was checked
    rounds: int = 0  # answer rounds seen (LiteLLM re-checks a growing streamed answer)
    seen: frozenset[tuple[str, str, str]] = frozenset()  # finding keys already audited


class Sessions:
    def __init__(self, engine: GuardEngine, *, ttl: float, stream_ttl: float, max_streams: int) -> None:
        self.engine = engine
        self.ttl = ttl
        self.stream_ttl = stream_ttl
        self.max_streams = max_streams
        self.max_entries = engine.contexts.max_entries
        engine.contexts.ttl = ttl
        self._entries: dict[str, Entry] = {}
        self._streams = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def open_streams(self) -> int:
        return self._streams

    async def put(self, key: str, ctx: RequestContext) -> Entry:
        old = self._entries.get(key)
        if old is not None:
            await self.close(key, ok=False)
        while len(self._entries) >= self.max_entries:  # oldest first (dicts keep insertion order)
            await self.close(next(iter(self._entries)), ok=False)
        self.engine.contexts.put(key, ctx)
        entry = self._entries[key] = Entry(key, ctx, time.monotonic() + self.ttl)
        return entry

    def get(self, key: str, *, touch: float | None = None) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.deadline < time.monotonic() or self.engine.contexts.get(key) is None:
            return None
        if touch is not None:
            entry.deadline = max(entry.deadline, time.monotonic() + touch)
        return entry

    def stream(self, entry: Entry) -> StreamSession:
        if entry.stream is None:
            if self._streams >= self.max_streams:
                raise QuotaExceeded("Too many open streams on this guard service (rule service.max_streams).",
                                    retry_after=5, rule_id="service.max_streams", code="too_many_streams")
            entry.stream = self.engine.open_stream(entry.ctx)
            self._streams += 1
        entry.deadline = time.monotonic() + self.stream_ttl
        return entry.stream

    async def close(self, key: str, *, ok: bool) -> None:
        entry = self._entries.pop(key, None)
        self.engine.contexts.pop(key)
        if entry is None:
            return
        if entry.stream is not None:
            self._streams -= 1
        try:
            await self.engine.finish(entry.ctx, ok=ok)
        except Exception as exc:  # finishing must never fail a caller
            log.error("finish failed: %s", type(exc).__name__)

    async def sweep(self) -> int:
        """Finish every expired entry; returns how many."""
        now = time.monotonic()
        expired = [e for e in self._entries.values() if e.deadline < now]
        for e in expired:
            await self.close(e.key, ok=e.answered)
        return len(expired)

    async def close_all(self) -> None:
        for key in list(self._entries):
            await self.close(key, ok=False)
