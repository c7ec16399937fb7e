"""Limiter backends: GCRA, all-or-nothing checks, refunds, concurrency slots; memory and real Redis
must behave the same."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
import redis
from redis.crc import key_slot

from shared_guards.backends import MemoryBackend, RedisBackend, ResilientBackend, Rule, Slot, hash_tag
from shared_guards.backends.base import LimiterBackend

MIN = 60_000


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[LimiterBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    # Generous timeouts: these tests are about semantics, and CI machines are busy.
    b = ResilientBackend(RedisBackend(redis_url, timeout_s=3.0), timeout_s=3.0)
    yield b
    await b.close()


@pytest.fixture
def key(redis_prefix: str) -> str:
    return redis_prefix + hash_tag("t", "dep") + ":k"


def r(key: str, limit: int, cost: int = 1, period: int = MIN, kind: str = "requests") -> Rule:
    return Rule(key, limit, period, cost, kind, f"quota.test.{kind}")


async def test_burst_then_deny_with_retry_hint(backend: LimiterBackend, key: str) -> None:
    results = [await backend.check([r(key, 5)]) for _ in range(7)]
    assert [x.allowed for x in results] == [True] * 5 + [False] * 2
    assert [x.rules[0].remaining for x in results[:5]] == [4, 3, 2, 1, 0]
    denied = results[5].rules[0]
    assert denied.remaining == 0
    # One unit refills every 60 s / 5 = 12 s.
    assert 10_000 <= denied.retry_ms <= 12_000
    assert 58_000 <= denied.reset_ms <= 60_000


async def test_denied_check_consumes_nothing(backend: LimiterBackend, key: str) -> None:
    a, b = r(key + "a", 10), r(key + "b", 1)
    assert (await backend.check([a, b])).allowed
    res = await backend.check([a, b])
    assert not res.allowed
    assert [s.allowed for s in res.rules] == [True, False]
    assert res.rules[0].remaining == 9  # the allowing rule reports its state without this request
    # Rule a alone still has 9 units: the denied check did not take one.
    assert (await backend.check([a])).rules[0].remaining == 8


async def test_cost_larger_than_limit_never_allowed(backend: LimiterBackend, key: str) -> None:
    res = await backend.check([r(key, 100, cost=101, kind="tokens")])
    assert not res.allowed and res.rules[0].retry_ms == -1
    res = await backend.check([r(key, 100, cost=100, kind="tokens")])
    assert res.allowed and res.rules[0].remaining == 0


async def test_adjust_refunds_and_charges(backend: LimiterBackend, key: str) -> None:
    rule = r(key, 1000, cost=600, kind="tokens")
    assert (await backend.check([rule])).rules[0].remaining == 400
    await backend.adjust([r(key, 1000, cost=-500, kind="tokens")])  # the answer used 100, not 600
    assert (await backend.check([r(key, 1000, cost=0, kind="tokens")])).rules[0].remaining == 900
    await backend.adjust([r(key, 1000, cost=950, kind="tokens")])  # more than was left: debt
    res = await backend.check([r(key, 1000, cost=1, kind="tokens")])
    assert not res.allowed and res.rules[0].remaining == 0


async def test_concurrency_slots_acquire_release(backend: LimiterBackend, key: str) -> None:
    slots = [Slot(key + ":conc", 2, MIN, f"s{i}") for i in range(3)]
    assert (await backend.check([], [slots[0]])).slots[0].in_use == 1
    assert (await backend.check([], [slots[1]])).slots[0].in_use == 2
    res = await backend.check([r(key, 10)], [slots[2]])
    assert not res.allowed and not res.slots[0].allowed
    assert (await backend.check([r(key, 10)])).rules[0].remaining == 9  # the denied check took nothing
    await backend.release([slots[0]])
    await backend.release([slots[0]])  # twice is harmless
    assert (await backend.check([], [slots[2]])).allowed


async def test_leaked_slot_expires(backend: LimiterBackend, key: str) -> None:
    assert (await backend.check([], [Slot(key + ":conc", 1, 300, "leaked")])).allowed
    assert not (await backend.check([], [Slot(key + ":conc", 1, 300, "next")])).allowed
    await asyncio.sleep(0.4)
    assert (await backend.check([], [Slot(key + ":conc", 1, 300, "next")])).allowed


async def test_concurrent_checks_at_the_edge_never_overshoot(backend: LimiterBackend, key: str) -> None:
    limit, n = 10, 60
    results = await asyncio.gather(*(backend.check([r(key, limit)], [Slot(key + ":c", 100, MIN, f"s{i}")])
                                     for i in range(n)))
    assert sum(x.allowed for x in results) == limit


async def test_threads_with_their_own_loops_share_one_limit(backend: LimiterBackend, key: str) -> None:
    """Kong's loop thread and LiteLLM's loop use one backend object at once."""
    limit, per_thread, threads = 7, 10, 4
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        async def run() -> list[bool]:
            return [(await backend.check([r(key, limit)])).allowed for _ in range(per_thread)]

        got = asyncio.run(run())
        with lock:
            allowed.extend(got)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert len(allowed) == per_thread * threads
    assert sum(allowed) == limit


async def test_refill_is_continuous_memory_clock() -> None:
    now = [1_000_000.0]
    b = MemoryBackend(clock=lambda: now[0])
    rule = r("k", 5)
    assert all([(await b.check([rule])).allowed for _ in range(5)])
    assert not (await b.check([rule])).allowed
    now[0] += 11_999
    assert not (await b.check([rule])).allowed
    now[0] += 2
    res = await b.check([rule])
    assert res.allowed and res.rules[0].remaining == 0
    now[0] += 60_000
    assert (await b.check([rule])).rules[0].remaining == 4


async def test_memory_and_redis_agree_on_a_sequence(redis_url: str, redis_prefix: str) -> None:
    mem = MemoryBackend()
    red = RedisBackend(redis_url, timeout_s=0.5)
    tag = hash_tag("x", "y")
    ops: list[tuple[str, int]] = [("c", 300), ("c", 300), ("c", 500), ("a", -250), ("c", 500), ("c", 1), ("a", 2000),
                                  ("c", 0), ("c", 1)]
    seen: dict[str, list[tuple[bool, int]]] = {}
    for name, b in (("memory", mem), ("redis", red)):
        k = f"{redis_prefix}{tag}:{name}"
        out: list[tuple[bool, int]] = []
        for op, cost in ops:
            rules = [r(k, 1000, cost=cost, period=86_400_000, kind="tokens"), r(k + "2", 4)]
            if op == "c":
                res = await b.check(rules)
                out.append((res.allowed, res.rules[0].remaining))
            else:
                await b.adjust(rules[:1])
        seen[name] = out
    await red.close()
    assert seen["memory"] == seen["redis"]


async def test_redis_keys_expire_and_hold_no_raw_identity(redis_url: str, redis_prefix: str) -> None:
    b = RedisBackend(redis_url, timeout_s=0.5)
    k = redis_prefix + hash_tag("t", "d") + ":r1m"
    await b.check([r(k, 10)])
    client = redis.Redis.from_url(redis_url)
    ttl = client.pttl(k)
    client.close()
    await b.close()
    assert 0 < ttl <= 6_000  # one request of 10/min occupies 6 s of the window


def test_hash_tag_puts_a_checks_keys_in_one_cluster_slot() -> None:
    tag = hash_tag("acme", "rnd")
    keys = [f"slg:q:{tag}:i:abc:r1m", f"slg:q:{tag}:i:abc:t1d", f"slg:q:{tag}:d:r1m", f"slg:q:{tag}:d:conc"]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    # Names with braces or odd characters are hashed so they cannot break the tag.
    odd = hash_tag("a}b", "{c")
    assert odd.count("{") == 1 and odd.count("}") == 1
    assert hash_tag("t", "x") != hash_tag("t", "y")
