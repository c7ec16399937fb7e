"""Redis backend: every check is ONE round trip (EVALSHA of a Lua script), atomic on the server.

* The server's clock (``TIME``) is used, so replicas with skewed clocks agree.
* All keys of one check carry the same hash tag (``{...}``, see :func:`hash_tag`), so the script
  runs on Redis Cluster (a script may only touch keys of one slot).
* Connections are pooled per event loop (``redis.asyncio`` pools are bound to the loop that
  created them; the LiteLLM proxy and the Kong facade run different loops). Every call has a
  socket timeout and redis-py's own retries are switched off: the caller
  (:class:`~shared_guards.backends.breaker.ResilientBackend`) decides what a failure means.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared_guards.backends.base import CheckResult, Rule, RuleState, Slot, SlotState

# KEYS: n GCRA keys, then m slot keys.  ARGV: n, m, then (limit, period_ms, cost) per rule,
# then (limit, ttl_ms, slot_id) per slot.  Returns {allowed, then per rule: ok, remaining,
# reset_ms, retry_ms; then per slot: ok, in_use}.
CHECK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local allowed = 1
local rows = {}
for i = 1, n do
  local b = 3 + (i - 1) * 3
  local limit = tonumber(ARGV[b])
  local period = tonumber(ARGV[b + 1])
  local cost = tonumber(ARGV[b + 2])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local ok = 1
  local retry = 0
  if new_tat - now > period + 0.001 then
    ok = 0
    allowed = 0
    if cost > limit then retry = -1 else retry = math.ceil(new_tat - period - now - 0.001) end
  end
  rows[i] = {tat, new_tat, ok, retry, period, interval}
end
local slot_rows = {}
for j = 1, m do
  local key = KEYS[n + j]
  local b = 3 + n * 3 + (j - 1) * 3
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local live = redis.call('ZCARD', key)
  local ok = 1
  if live >= tonumber(ARGV[b]) then ok = 0; allowed = 0 end
  slot_rows[j] = {ok, live, tonumber(ARGV[b + 1]), ARGV[b + 2]}
end
local out = {allowed}
for i = 1, n do
  local r = rows[i]
  local at = r[1]
  if allowed == 1 then
    at = r[2]
    redis.call('SET', KEYS[i], string.format('%.3f', at), 'PX', math.max(1, math.ceil(at - now)))
  end
  local rem = math.floor((r[5] - (at - now)) / r[6] + 0.000001)
  if rem < 0 then rem = 0 end
  table.insert(out, r[3])
  table.insert(out, rem)
  table.insert(out, math.max(0, math.ceil(at - now - 0.001)))
  table.insert(out, r[4])
end
for j = 1, m do
  local s = slot_rows[j]
  local live = s[2]
  if allowed == 1 then
    redis.call('ZADD', KEYS[n + j], now + s[3], s[4])
    redis.call('PEXPIRE', KEYS[n + j], s[3])
    live = live + 1
  end
  table.insert(out, s[1])
  table.insert(out, live)
end
return out
"""

# KEYS: n GCRA keys. ARGV: (limit, period_ms, delta) per rule. Moves TAT by delta * interval.
ADJUST_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local b = (i - 1) * 3 + 1
  local interval = tonumber(ARGV[b + 1]) / tonumber(ARGV[b])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[b + 2]) * interval
  if new_tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
  end
end
return 1
"""

_TAG_SAFE = re.compile(r"^[A-Za-z0-9_.:/@=-]{1,64}$")


def hash_tag(*parts: str) -> str:
    """The ``{...}`` hash tag grouping one check's keys into one Redis Cluster slot."""
    import hashlib

    text = "/".join(parts)
    if not _TAG_SAFE.match(text):
        text = hashlib.sha256(text.encode()).hexdigest()[:16]
    return "{" + text + "}"


@dataclass
class _LoopClient:
    loop: weakref.ref[asyncio.AbstractEventLoop]
    client: Any
    check: Any
    adjust: Any


class RedisBackend:
    name = "redis"
    shared = True

    def __init__(self, url: str, *, timeout_s: float = 0.05, pool_size: int = 64, cluster: bool = False) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self.cluster = cluster
        self._clients: dict[int, _LoopClient] = {}
        self._lock = threading.Lock()  # loops of several threads (Kong facade, LiteLLM) create clients

    def _new_client(self) -> Any:
        no_retry = Retry(NoBackoff(), 0)
        common: dict[str, Any] = {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry": no_retry,
        }
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.url, max_connections=self.pool_size, **common)
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.pool_size, timeout=self.timeout_s, **common
        )
        return aioredis.Redis(connection_pool=pool, retry=no_retry)

    def _client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry.loop() is loop:
            return entry
        with self._lock:
            entry = self._clients.get(id(loop))
            if entry is None or entry.loop() is not loop:
                # Forget clients of loops that are gone (a closed test loop, a restarted thread).
                self._clients = {k: v for k, v in self._clients.items() if v.loop() is not None}
                client = self._new_client()
                entry = _LoopClient(weakref.ref(loop), client, client.register_script(CHECK_LUA),
                                    client.register_script(ADJUST_LUA))
                self._clients[id(loop)] = entry
            return entry

    async def check(self, rules: Sequence[Rule], slots: Sequence[Slot] = ()) -> CheckResult:
        c = self._client()
        keys = [r.key for r in rules] + [s.key for s in slots]
        args: list[Any] = [len(rules), len(slots)]
        for r in rules:
            args += [r.limit, r.period_ms, r.cost]
        for s in slots:
            args += [s.limit, s.ttl_ms, s.slot_id]
        raw = await c.check(keys=keys, args=args)
        out = [int(x) for x in raw]
        states: list[RuleState] = []
        pos = 1
        for r in rules:
            ok, rem, reset, retry = out[pos : pos + 4]
            states.append(RuleState(r, bool(ok), rem, reset, retry))
            pos += 4
        slot_states: list[SlotState] = []
        for s in slots:
            ok, live = out[pos : pos + 2]
            slot_states.append(SlotState(s, bool(ok), live))
            pos += 2
        return CheckResult(bool(out[0]), tuple(states), tuple(slot_states))

    async def adjust(self, rules: Sequence[Rule]) -> None:
        rules = [r for r in rules if r.cost]
        if not rules:
            return
        c = self._client()
        args: list[Any] = []
        for r in rules:
            args += [r.limit, r.period_ms, r.cost]
        await c.adjust(keys=[r.key for r in rules], args=args)

    async def release(self, slots: Sequence[Slot]) -> None:
        if not slots:
            return
        client = self._client().client
        if len(slots) == 1:
            await client.zrem(slots[0].key, slots[0].slot_id)
            return
        pipe = client.pipeline(transaction=False)
        for s in slots:
            pipe.zrem(s.key, s.slot_id)
        await pipe.execute()

    async def get(self, key: str) -> bytes | None:
        value = await self._client().client.get(key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._client().client.set(key, value, px=max(1, ttl_ms))

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._client().client.delete(*keys)

    async def ping(self) -> bool:
        return bool(await self._client().client.ping())

    async def close(self) -> None:
        entry = self._clients.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            await entry.client.aclose()
