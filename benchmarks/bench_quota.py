"""Quota check latency (loopback Redis and in-memory) and the verdict-cache hit path.

    python benchmarks/bench_quota.py [--n 3000] [--redis redis://127.0.0.1:6379/0]

A "quota check" is one atomic backend call for a typical policy: requests per minute and tokens
per day for the caller, plus a concurrency slot for the department (3 keys, one Lua round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import percentiles, write_section
from shared_guards.backends import MemoryBackend, RedisBackend, ResilientBackend, Rule, Slot, hash_tag
from shared_guards.backends.base import LimiterBackend
from shared_guards.cache import VerdictCache, cache_key
from shared_guards.guard import RequestContext, Resources
from shared_guards.guards.quota import QuotaConfig, QuotaGuard
from shared_guards.policy import DepartmentPolicy
from shared_guards.types import ContentPart, GuardRequest, GuardResult, Identity, Message, Role

PROMPT = ("Refactor this function to remove the duplicated branches and add type hints; keep the public "
          "signature unchanged and explain the change in two sentences. ") * 8


async def measure(n: int, fn: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    for i in range(min(200, n)):
        await fn(i)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await fn(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return percentiles(samples)


def backend_op(b: LimiterBackend, prefix: str) -> Callable[[int], Awaitable[object]]:
    tag = hash_tag("-", "rnd")

    async def op(i: int) -> object:
        user = f"user{i % 50}"
        rules = [Rule(f"{prefix}q:{tag}:i:{user}:r1m", 1_000_000, 60_000, 1, "requests"),
                 Rule(f"{prefix}q:{tag}:i:{user}:t1d", 10**12, 86_400_000, 700, "tokens")]
        slot = Slot(f"{prefix}q:{tag}:d:conc", 1_000_000, 600_000, f"s{i}")
        res = await b.check(rules, [slot])
        await b.release([slot]) if i % 100 == 0 else None
        return res

    return op


def guard_op(guard: QuotaGuard) -> Callable[[int], Awaitable[object]]:
    dep = DepartmentPolicy(models=["*"])

    async def op(i: int) -> object:
        req = GuardRequest((Message(Role.USER, (ContentPart(text=PROMPT),)),), "coder",
                           Identity(user=f"user{i % 50}", department="rnd"), max_tokens=256)
        ctx = RequestContext(str(i), req.identity, "rnd", dep)
        res = await guard.check_request(req, ctx)
        await guard.on_complete(ctx, ok=True)
        return res

    return op


async def run(n: int, redis_url: str) -> str:
    prefix = f"slgbench:{uuid.uuid4().hex[:8]}:"
    rows: list[tuple[str, dict[str, float]]] = []
    mem = MemoryBackend()
    red = ResilientBackend(RedisBackend(redis_url, timeout_s=0.05), timeout_s=0.05)
    raw_red = RedisBackend(redis_url, timeout_s=0.05)
    try:
        rows.append(("quota check, Redis loopback (Lua, 2 limits + 1 slot, breaker + timeout)",
                     await measure(n, backend_op(red, prefix))))
        rows.append(("quota check, Redis loopback, raw client (no breaker/timeout wrapper)",
                     await measure(n, backend_op(raw_red, prefix))))
        rows.append(("quota check, in-memory backend", await measure(n, backend_op(mem, prefix))))
        limits = {"identity": {"requests_per_minute": 1_000_000, "tokens_per_day": 10**12}}
        with_slot = {**limits, "department": {"max_concurrent": 1_000_000}}
        for label, b in (("Redis", red), ("in-memory", mem)):
            res = Resources(executor=None, backends={"kv": b, "kv_fallback": mem, "kv_prefix": prefix})  # type: ignore[arg-type]
            rows.append((f"QuotaGuard request stage (rpm + tokens/day: 1 round trip), {label}",
                         await measure(n, guard_op(QuotaGuard(QuotaConfig.model_validate(limits), res)))))
            rows.append((f"QuotaGuard request stage + on_complete with a concurrency slot (2 round trips), {label}",
                         await measure(n, guard_op(QuotaGuard(QuotaConfig.model_validate(with_slot), res)))))
        # Verdict cache.
        req = GuardRequest((Message(Role.USER, (ContentPart(text=PROMPT[:1024]),)),), "general", Identity(user="u"))
        cache = VerdictCache(max_entries=10_000)
        verdict = GuardResult.allow(score=0.02)

        def key() -> str:
            return cache_key(tenant=None, department="rnd", policy_version="v1", guard_id="injection", request=req)

        await cache.put(key(), verdict)

        async def local_hit(i: int) -> object:
            return await cache.get(key())

        rows.append(("verdict cache hit, in-process (key of a 1 KB prompt + LRU lookup)", await measure(n, local_hit)))
        remote = VerdictCache(max_entries=0, remote=red, prefix=prefix)
        k = key()
        await remote._put_remote(k, verdict)

        async def remote_hit(i: int) -> object:
            return await remote.get(k)

        rows.append(("verdict cache hit, Redis layer (LRU off)", await measure(n, remote_hit)))
    finally:
        from tests.fixtures_redis import delete_prefix

        delete_prefix(redis_url, prefix)
        await red.close()
        await raw_red.close()
    lines = ["| what | p50 ms | p99 ms | mean ms |", "|---|---|---|---|"]
    lines += [f"| {label} | {p['p50']:.3f} | {p['p99']:.3f} | {p['mean']:.3f} |" for label, p in rows]
    lines.append("")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines.append(f"{n} sequential calls each after 200 warm-up calls; Redis {redis_url} (loopback), "
                 "one client and pool per event loop. Target: quota check p50 <= 0.5 ms on loopback Redis. "
                 f"Load average during the run: {load} (the machine is shared; p99 reflects CPU contention).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    write_section("Quotas and verdict cache", asyncio.run(run(args.n, args.redis)))


if __name__ == "__main__":
    main()
