"""Redis failing under the quota guard: the test's own redis-server is killed, hung (SIGSTOP) and
restarted on the same port. Behaviour follows on_backend_error, nothing raises, nothing hangs,
and enforcement resumes without restarting the engine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shared_guards.backends import CircuitBreaker, RedisBackend, ResilientBackend, Rule
from shared_guards.engine import GuardEngine
from shared_guards.errors import BackendUnavailable, GuardUnavailable, QuotaExceeded
from shared_guards.types import Action, Decision
from tests.fixtures_redis import RedisServer
from tests.quota_helpers import engine_for, request, write_policy

TIMEOUT_MS = 100
SLACK_S = 0.4  # scheduling noise on a busy 2-core machine


@pytest.fixture(autouse=True)
def _no_env_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


def make(tmp_path: Path, server: RedisServer, **options: object) -> GuardEngine:
    quota = {"identity": {"requests_per_minute": 3}, **options}
    path = write_policy(tmp_path / "policy.yaml", quota, redis_url=server.url, prefix="slgfault:",
                        backends={"redis_timeout_ms": TIMEOUT_MS, "breaker_max_backoff_ms": 300})
    return engine_for(path)


async def timed(eng: GuardEngine, user: str = "alice") -> tuple[Decision, float]:
    t0 = time.perf_counter()
    d, ctx = await eng.check_request(request(user))
    if ctx is not None and not d.blocked:
        await eng.finish(ctx, ok=True)
    return d, time.perf_counter() - t0


def alerted(d: Decision) -> bool:
    return any(f.rule_id == "quota.backend_unavailable" for f in d.findings)


async def wait_until_enforced_by_redis(eng: GuardEngine, user: str, deadline_s: float = 10.0) -> Decision:
    """Requests until one is decided by Redis again (no fallback alert)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        d, _ = await timed(eng, user)
        if not alerted(d):
            return d
        await asyncio.sleep(0.1)
    raise AssertionError("enforcement did not resume after Redis came back")


async def test_fail_open_kill_fallback_and_recovery(tmp_path: Path, own_redis: RedisServer) -> None:
    eng = make(tmp_path, own_redis, on_backend_error="fail_open")
    for _ in range(2):
        d, _ = await timed(eng)
        assert d.action is Action.ALLOW
    own_redis.kill()
    # Redis down: allowed with an alert finding, limits enforced per process (fresh fallback: 3/min).
    results = [await timed(eng) for _ in range(5)]
    assert all(s < TIMEOUT_MS / 1000 + SLACK_S for _, s in results)
    assert [d.action for d, _ in results[:3]] == [Action.ALERT] * 3
    assert all(alerted(d) for d, _ in results)
    assert [d.blocked for d, _ in results] == [False, False, False, True, True]
    assert isinstance(results[3][0].violation, QuotaExceeded)
    # The alert reaches the audit trail (and from there the alerting sinks).
    audit = eng.audit.records  # type: ignore[attr-defined]
    assert any(f.get("rule_id") == "quota.backend_unavailable" for r in audit for f in r.get("findings", []))
    # The breaker is open now: a dead Redis costs (almost) nothing per request.
    _, spent = await timed(eng, "bob")
    assert spent < 0.05
    own_redis.start()  # same port
    d = await wait_until_enforced_by_redis(eng, "carol")
    assert d.action is Action.ALLOW
    # Enforcement is global again: carol has 3 per minute in the (new, empty) Redis.
    outcomes = [(await timed(eng, "carol"))[0].blocked for _ in range(3)]
    assert outcomes == [False, False, True]


async def test_fail_closed_answers_503_and_recovers(tmp_path: Path, own_redis: RedisServer) -> None:
    eng = make(tmp_path, own_redis, on_backend_error="fail_closed")
    assert not (await timed(eng))[0].blocked
    own_redis.kill()
    for _ in range(4):
        d, spent = await timed(eng)
        assert spent < TIMEOUT_MS / 1000 + SLACK_S
        assert d.blocked and isinstance(d.violation, GuardUnavailable)
        assert d.violation.http_status == 503 and d.violation.code == "quota_backend_unavailable"
        assert "Quota store unavailable" in d.violation.message
        assert int(d.violation.headers["Retry-After"]) >= 1
    own_redis.start()
    end = time.monotonic() + 10
    while (await timed(eng, "dave"))[0].blocked:
        assert time.monotonic() < end, "fail_closed never recovered"
        await asyncio.sleep(0.1)


async def test_fail_closed_can_answer_429(tmp_path: Path, own_redis: RedisServer) -> None:
    eng = make(tmp_path, own_redis, on_backend_error="fail_closed", fail_closed_status=429)
    own_redis.kill()
    d, _ = await timed(eng)
    assert isinstance(d.violation, QuotaExceeded) and d.violation.http_status == 429
    assert d.violation.code == "quota_backend_unavailable" and "Retry-After" in d.violation.headers


async def test_hung_redis_costs_at_most_the_timeout(tmp_path: Path, own_redis: RedisServer) -> None:
    eng = make(tmp_path, own_redis, on_backend_error="fail_open")
    assert not (await timed(eng))[0].blocked  # connection pooled before the hang
    own_redis.pause()
    try:
        results = [await timed(eng) for _ in range(6)]
        assert all(s < TIMEOUT_MS / 1000 + SLACK_S for _, s in results), [round(s, 3) for _, s in results]
        assert all(alerted(d) for d, _ in results)
        # After a few timeouts the breaker is open and requests stop waiting for Redis at all.
        assert min(s for _, s in results[3:]) < 0.05
    finally:
        own_redis.resume()
    d = await wait_until_enforced_by_redis(eng, "erin")
    assert not d.blocked


async def test_breaker_backend_level(own_redis: RedisServer) -> None:
    breaker = CircuitBreaker(failures=2, base_backoff_s=0.1, max_backoff_s=0.2)
    b = ResilientBackend(RedisBackend(own_redis.url, timeout_s=0.1), timeout_s=0.1, breaker=breaker)
    rule = Rule("slgfault:{t}:k", 100, 60_000)
    assert (await b.check([rule])).allowed and breaker.state == "closed"
    own_redis.kill()
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await b.check([rule])
    assert breaker.state == "open"
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable, match="circuit open"):
        await b.check([rule])
    assert time.perf_counter() - t0 < 0.01
    assert not await b.ping()
    own_redis.start()
    await asyncio.sleep(0.25)
    assert (await b.check([rule])).allowed  # the half-open probe reconnects
    assert breaker.state == "closed"
    await b.close()


def test_breaker_backoff_doubles_and_caps() -> None:
    now = [0.0]
    br = CircuitBreaker(failures=1, base_backoff_s=1.0, max_backoff_s=3.0, clock=lambda: now[0])
    br.failure()
    assert br.state == "open" and br.retry_after_s() == 1.0
    assert not br.allow()
    now[0] = 1.0
    assert br.allow() and not br.allow()  # one probe at a time
    br.failure()
    assert br.retry_after_s() == 2.0
    now[0] = 3.0
    assert br.allow()
    br.failure()
    assert br.retry_after_s() == 3.0  # capped
    now[0] = 6.0
    assert br.allow()
    br.success()
    assert br.state == "closed" and br.allow() and br.allow()
