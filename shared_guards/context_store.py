"""A bounded, expiring map from a gateway's request key to the request's :class:`RequestContext`.

Gateways split a request into phases (LiteLLM pre/post-call hooks, Kong access/response) that
may not share Python objects safely; the context (with its pseudonymization vault) must not ride
in request metadata that loggers serialize. Adapters keep it here, keyed by the gateway's call id,
and ``pop`` it when the request ends. Entries expire, so an abandoned request cannot leak memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from shared_guards.guard import RequestContext


class ContextStore:
    def __init__(self, ttl_seconds: float = 900.0, max_entries: int = 50_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, RequestContext]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, ctx: RequestContext) -> None:
        now = time.monotonic()
        with self._lock:
            self._items[key] = (now + self.ttl, ctx)
            self._items.move_to_end(key)
            self._evict(now)

    def get(self, key: str) -> RequestContext | None:
        now = time.monotonic()
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < now:
                self._items.pop(key, None)
                return None
            return item[1]

    def pop(self, key: str) -> RequestContext | None:
        with self._lock:
            item = self._items.pop(key, None)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def _evict(self, now: float) -> None:
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires >= now and len(self._items) <= self.max_entries:
                break
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
