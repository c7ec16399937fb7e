"""Verdict cache: identical content under the same policy version reuses a content guard's verdict.

Only guards that opt in (class attribute ``cacheable = True``) are cached, only at the request
stage, and only results that do not rewrite content (no ``sanitized``): the guard must be a
deterministic function of the request's messages and tools and of its configuration.

The key is ``SHA-256(tenant, department, policy version, guard id, content)``, so

* a verdict never crosses tenants or departments (each has its own key space),
* editing the policy (a new version hash) makes every old entry unreachable,
* neither keys nor values carry raw text: values hold the action, score, findings (rule ids,
  offsets, entity types) and the violation's message and code, which never contain the text.

"Normalized content" is the request with everything a content guard does not look at removed:
identity, request id, metadata, model, stream flag and max_tokens. Roles, message texts, names,
tool calls and tool specs are kept exactly.

Layer 1 is an in-process LRU with TTL (a hit costs a few microseconds). Layer 2, optional, is the
shared Redis store: a miss there costs one round trip, so enable it for slow guards (models).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from shared_guards import errors
from shared_guards.backends.base import LimiterBackend
from shared_guards.types import Action, Finding, GuardRequest, GuardResult

log = logging.getLogger("shared_guards.cache")

_CACHEABLE_ACTIONS = (Action.ALLOW, Action.ALERT, Action.BLOCK)


def content_digest(request: GuardRequest) -> bytes:
    """SHA-256 of the normalized content of a request (messages and tools only)."""
    msgs = [
        [
            m.role.value,
            m.name,
            m.tool_call_id is not None,
            [[p.kind.value, p.text, p.ref] for p in m.parts],
            [[c.name, c.arguments] for c in m.tool_calls],
        ]
        for m in request.messages
    ]
    tools = [[t.name, t.description] for t in request.tools]
    blob = json.dumps([msgs, tools], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).digest()


def cache_key(*, tenant: str | None, department: str, policy_version: str, guard_id: str, request: GuardRequest) -> str:
    h = hashlib.sha256()
    for part in (tenant or "", department, policy_version, guard_id):
        b = part.encode()
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    h.update(content_digest(request))
    return h.hexdigest()


def cacheable(result: GuardResult) -> bool:
    return result.action in _CACHEABLE_ACTIONS and result.sanitized is None and _violation_ok(result.violation)


def _violation_ok(v: errors.GuardViolation | None) -> bool:
    # Only violations rebuildable from (message, rule_id, code, param, headers).
    return v is None or type(v).__init__ is errors.GuardViolation.__init__


def dump_result(result: GuardResult) -> bytes:
    v = result.violation
    data: dict[str, Any] = {
        "a": result.action.value,
        "s": result.score,
        "f": [asdict(f) for f in result.findings],
        "h": dict(result.headers),
    }
    if v is not None:
        data["v"] = {"cls": type(v).__name__, "message": v.message, "rule_id": v.rule_id, "code": v.code,
                     "param": v.param, "headers": v.headers}
    return json.dumps(data, separators=(",", ":")).encode()


def load_result(raw: bytes) -> GuardResult | None:
    """Rebuild a cached result; None for anything unexpected (treated as a miss)."""
    try:
        data = json.loads(raw)
        violation = None
        if data.get("v"):
            v = data["v"]
            cls = getattr(errors, str(v["cls"]), None)
            if not (isinstance(cls, type) and issubclass(cls, errors.GuardViolation)) or not _violation_ok_cls(cls):
                return None
            violation = cls(str(v["message"]), rule_id=str(v["rule_id"]), code=v["code"], param=v["param"],
                            headers=v["headers"])
        findings = tuple(Finding(**f) for f in data["f"])
        return GuardResult(Action(data["a"]), findings, float(data["s"]), None, violation, dict(data["h"]))
    except (ValueError, KeyError, TypeError):
        return None


def _violation_ok_cls(cls: type[errors.GuardViolation]) -> bool:
    return cls.__init__ is errors.GuardViolation.__init__


class VerdictCache:
    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_seconds: float = 300.0,
        remote: LimiterBackend | None = None,
        prefix: str = "slg:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.remote = remote
        self.prefix = prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, GuardResult]] = OrderedDict()
        self._pending: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0

    key = staticmethod(cache_key)

    def get_local(self, key: str) -> GuardResult | None:
        now = self._clock()
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= now:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put_local(self, key: str, result: GuardResult) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self.ttl, result)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    async def get(self, key: str) -> GuardResult | None:
        hit = self.get_local(key)
        if hit is None and self.remote is not None:
            try:
                raw = await self.remote.get(self._remote_key(key))
            except errors.BackendUnavailable:
                raw = None
            if raw is not None:
                hit = load_result(raw)
                if hit is not None:
                    self.put_local(key, hit)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    async def put(self, key: str, result: GuardResult) -> None:
        """Store a verdict (ignored when not cacheable). The remote write runs in the background."""
        if not cacheable(result):
            return
        self.put_local(key, result)
        if self.remote is not None:
            task = asyncio.ensure_future(self._put_remote(key, result))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _put_remote(self, key: str, result: GuardResult) -> None:
        assert self.remote is not None
        try:
            await self.remote.set(self._remote_key(key), dump_result(result), int(self.ttl * 1000))
        except errors.BackendUnavailable:
            pass
        except Exception as exc:  # never let a background write surface
            log.warning("verdict cache write failed: %s", type(exc).__name__)

    def _remote_key(self, key: str) -> str:
        return f"{self.prefix}vc:{key}"

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
