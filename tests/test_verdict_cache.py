"""Verdict cache: keyed by (tenant, department, policy version, guard id, content) hashes; reused
only for opt-in deterministic content guards at the request stage; expires; never raw text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from shared_guards.backends import RedisBackend, ResilientBackend
from shared_guards.cache import VerdictCache, cache_key, cacheable, dump_result, load_result
from shared_guards.errors import ContentViolation, QuotaExceeded
from shared_guards.types import Action, Finding, GuardRequest, GuardResult, ToolSpec
from tests.quota_helpers import KeywordGuard, engine_for, request, write_policy

SECRET = "my SSN is 078-05-1120 forbidden"


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    KeywordGuard.calls.clear()


def key(req: GuardRequest, *, tenant: str | None = None, department: str = "rnd", version: str = "v1",
        guard: str = "kw") -> str:
    return cache_key(tenant=tenant, department=department, policy_version=version, guard_id=guard, request=req)


def test_key_is_a_hash_and_separates_every_dimension() -> None:
    base = request(text=SECRET)
    k = key(base)
    assert len(k) == 64 and int(k, 16) >= 0 and "078" not in k
    variants = [
        key(base, tenant="acme"), key(base, department="finance"), key(base, version="v2"), key(base, guard="other"),
        key(request(text=SECRET + " ")), key(dataclasses.replace(base, tools=(ToolSpec("t"),))),
    ]
    assert len({k, *variants}) == len(variants) + 1
    # What a content guard does not read does not split the cache.
    same = dataclasses.replace(base, request_id="r2", model="coder", max_tokens=5, stream=True,
                               identity=dataclasses.replace(base.identity, user="someone-else"))
    assert key(same) == k


def test_lru_ttl_and_size() -> None:
    now = [0.0]
    cache = VerdictCache(max_entries=2, ttl_seconds=10, clock=lambda: now[0])
    r = GuardResult.allow(score=0.2)
    cache.put_local("a", r)
    cache.put_local("b", r)
    assert cache.get_local("a") is r  # "a" is now the most recent
    cache.put_local("c", r)
    assert cache.get_local("b") is None and cache.get_local("a") is r and len(cache) == 2
    now[0] = 10.5
    assert cache.get_local("a") is None


@pytest.mark.parametrize(
    ("result", "ok"),
    [
        (GuardResult.allow(score=0.1), True),
        (GuardResult(Action.ALERT, (Finding("g", "r"),), 0.5), True),
        (GuardResult.block(ContentViolation("Blocked (rule x).", rule_id="x")), True),
        (GuardResult(Action.MODIFY, sanitized=request()), False),
        (GuardResult.block(QuotaExceeded("slow down", retry_after=3)), False),
    ],
)
def test_only_non_modifying_rebuildable_results_are_cached(result: GuardResult, ok: bool) -> None:
    assert cacheable(result) is ok


def test_serialized_result_round_trips_without_text() -> None:
    finding = Finding("kw", "test.keyword", layer="test", start=3, end=9, entity_type="US_SSN", score=0.9)
    res = GuardResult.block(ContentViolation("Blocked by kw (rule test.keyword).", rule_id="test.keyword",
                                             headers={"x-a": "1"}), (finding,), score=0.9)
    raw = dump_result(res)
    back = load_result(raw)
    assert back is not None and back.action is Action.BLOCK and back.findings == (finding,)
    assert isinstance(back.violation, ContentViolation) and back.violation.rule_id == "test.keyword"
    assert back.violation.to_openai() == res.violation.to_openai()  # type: ignore[union-attr]
    for bad in (b"not json", b'{"a": "nope"}', b'{"a":"block","s":1,"f":[],"h":{},"v":{"cls":"QuotaExceeded"}}'):
        assert load_result(bad) is None


def policy(tmp_path: Path, name: str = "p.yaml", version: str = "vc-test", **backends: object) -> Path:
    return write_policy(tmp_path / name, {"identity": {"requests_per_day": 10_000}}, version=version,
                        extra_guards=[{"name": "tests.quota_helpers:KeywordGuard", "id": "kw"}],
                        backends=backends)


async def test_pipeline_reuses_verdicts_for_repeated_prompts(tmp_path: Path) -> None:
    eng = engine_for(policy(tmp_path))
    for _ in range(3):
        d, _ = await eng.check_request(request("alice", "hello there"))
        assert d.action is Action.ALLOW
    for _ in range(3):
        d, _ = await eng.check_request(request("bob", SECRET))  # other caller, same department
        assert d.blocked and d.violation is not None and d.violation.rule_id == "test.keyword"
    assert KeywordGuard.calls == ["rnd", "rnd"]  # one real call per distinct content
    timing = {t.guard: t.outcome for t in d.timings}
    assert timing["kw"] == "cached" and timing["quota"] == "ok"


async def test_cache_never_crosses_departments_tenants_or_policy_versions(tmp_path: Path) -> None:
    path = policy(tmp_path)
    text = path.read_text().replace("other:\n    models:\n    - general",
                                    "other:\n    models:\n    - general\n    guards:\n"
                                    "    - {name: 'tests.quota_helpers:KeywordGuard', id: kw}")
    path.write_text(text)
    eng = engine_for(path)
    await eng.check_request(request(text="same words"))
    await eng.check_request(request(text="same words", department="other"))
    await eng.check_request(request(text="same words", tenant="acme"))
    await eng.check_request(request(text="same words", tenant="acme"))
    assert KeywordGuard.calls == ["rnd", "other", "rnd"]
    eng2 = engine_for(policy(tmp_path, "p2.yaml", version="vc-test-2"))
    eng2.resources.backends["verdict_cache"] = eng.resources.backends["verdict_cache"]  # even a shared cache
    eng2._pipelines.clear()
    await eng2.check_request(request(text="same words"))
    assert KeywordGuard.calls == ["rnd", "other", "rnd", "rnd"]


async def test_cache_can_be_disabled(tmp_path: Path) -> None:
    eng = engine_for(policy(tmp_path, verdict_cache={"enabled": False}))
    for _ in range(2):
        await eng.check_request(request(text="hello"))
    assert KeywordGuard.calls == ["rnd", "rnd"]


async def test_redis_layer_shares_verdicts_between_replicas_without_raw_text(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    path = write_policy(tmp_path / "r.yaml", {"identity": {"requests_per_day": 100}}, redis_url=redis_url,
                        prefix=redis_prefix, extra_guards=[{"name": "tests.quota_helpers:KeywordGuard", "id": "kw"}],
                        backends={"verdict_cache": {"redis": True}})
    a, b = engine_for(path), engine_for(path)
    d, _ = await a.check_request(request(text=SECRET))
    assert d.blocked
    cache = a.resources.backends["verdict_cache"]
    for t in list(cache._pending):
        await t
    d, _ = await b.check_request(request(text=SECRET))  # another replica: its LRU is empty
    assert d.blocked and d.violation is not None and d.violation.rule_id == "test.keyword"
    assert KeywordGuard.calls == ["rnd"]
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=redis_prefix + "vc:*"))
        assert len(keys) == 1
        value = client.get(keys[0])
        ttl = client.pttl(keys[0])
    finally:
        client.close()
    assert value is not None and b"078-05" not in value and b"forbidden" not in value and b"078-05" not in keys[0]
    assert 0 < ttl <= 300_000


async def test_redis_layer_down_is_a_miss_not_an_error(tmp_path: Path) -> None:
    dead = ResilientBackend(RedisBackend("redis://127.0.0.1:1/0", timeout_s=0.05), timeout_s=0.05)
    cache = VerdictCache(max_entries=0, remote=dead)
    k = key(request())
    await cache.put(k, GuardResult.allow())
    for t in list(cache._pending):
        await t
    assert await cache.get(k) is None and cache.misses == 1


class _BrokenCache(VerdictCache):
    """A verdict cache whose store fails in an unexpected way (a bug, a corrupt entry...)."""

    async def get(self, key: str) -> GuardResult | None:
        raise RuntimeError("cache read broke")

    async def put(self, key: str, result: GuardResult) -> None:
        raise RuntimeError("cache write broke")


async def test_a_failing_cache_never_fails_the_request(tmp_path: Path) -> None:
    eng = engine_for(policy(tmp_path))
    eng.pipeline("rnd")  # backends built; now swap the cache in and rebuild
    eng.resources.backends["verdict_cache"] = _BrokenCache()
    eng._pipelines.clear()
    assert isinstance(eng.pipeline("rnd").cache, _BrokenCache)
    d, _ = await eng.check_request(request(text="hello there"))
    assert d.action is Action.ALLOW and not d.errors
    d, _ = await eng.check_request(request(text=SECRET))
    assert d.blocked and d.violation is not None and d.violation.rule_id == "test.keyword"
    assert KeywordGuard.calls == ["rnd", "rnd"]
