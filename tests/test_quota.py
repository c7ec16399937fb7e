"""QuotaGuard through the real engine: limits per identity and department, headers, token
reconciliation, concurrency slots; on the in-memory backend and on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_guards.engine import GuardEngine
from shared_guards.errors import PolicyError, QuotaExceeded
from shared_guards.guards.quota import format_duration
from shared_guards.policy import load_policy
from shared_guards.types import Action
from tests.quota_helpers import answer, engine_for, request, write_policy


@pytest.fixture(autouse=True)
def _no_env_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> Iterator[dict[str, str | None]]:
    """Where the policy under test keeps its counters."""
    yield {"redis_url": redis_url if request.param == "redis" else None, "prefix": redis_prefix}


def make(tmp_path: Path, store: dict[str, str | None], quota: dict[str, object], **kw: object) -> GuardEngine:
    path = write_policy(tmp_path / "policy.yaml", quota, redis_url=store["redis_url"],
                        prefix=str(store["prefix"]), **kw)  # type: ignore[arg-type]
    return engine_for(path)


async def test_requests_per_minute_429_with_headers_and_openai_body(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"requests_per_minute": 3}})
    remaining = []
    for _ in range(3):
        d, ctx = await eng.check_request(request("alice@example.com"))
        assert d.action is Action.ALLOW and ctx is not None
        remaining.append(d.headers["x-ratelimit-remaining-requests"])
        assert d.headers["x-ratelimit-limit-requests"] == "3"
        await eng.finish(ctx, ok=True)
    assert remaining == ["2", "1", "0"]
    d, ctx = await eng.check_request(request("alice@example.com"))
    assert d.blocked
    v = d.violation
    assert isinstance(v, QuotaExceeded) and v.http_status == 429
    assert v.rule_id == "quota.identity.requests_per_minute"
    assert 19 <= int(v.headers["Retry-After"]) <= 20  # one request refills every 20 s
    assert 18_000 <= int(v.headers["retry-after-ms"]) <= 20_000
    assert v.headers["x-ratelimit-limit-requests"] == "3"
    assert v.headers["x-ratelimit-remaining-requests"] == "0"
    assert v.headers["x-ratelimit-reset-requests"] in {"59s", "1m0s"}
    assert d.headers["Retry-After"] == v.headers["Retry-After"]  # adapters read decision.headers too
    body = v.to_openai()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    assert "quota.identity.requests_per_minute" in body["message"]
    assert "alice" not in body["message"]  # never echo the identity
    # Another caller of the same department has their own budget.
    d, ctx = await eng.check_request(request("bob"))
    assert not d.blocked


async def test_identity_and_department_scopes(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"requests_per_minute": 2}, "department": {"requests_per_minute": 3}})
    assert [not (await eng.check_request(request("alice")))[0].blocked for _ in range(3)] == [True, True, False]
    d, _ = await eng.check_request(request("alice"))
    assert d.violation is not None and d.violation.rule_id == "quota.identity.requests_per_minute"
    assert not (await eng.check_request(request("bob")))[0].blocked  # department: 3rd of 3
    d, _ = await eng.check_request(request("carol"))
    assert d.violation is not None and d.violation.rule_id == "quota.department.requests_per_minute"
    assert "department 'rnd'" in d.violation.message


async def test_tenants_do_not_share_counters(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"department": {"requests_per_hour": 1}})
    assert not (await eng.check_request(request(tenant="acme")))[0].blocked
    assert (await eng.check_request(request(tenant="acme")))[0].blocked
    assert not (await eng.check_request(request(tenant="globex")))[0].blocked


async def test_tokens_are_estimated_then_reconciled_from_usage(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"tokens_per_day": 1000}})
    # 400 characters ~ 100 tokens, +4 for the message, +100 max_tokens = 204 estimated.
    d, ctx = await eng.check_request(request(text="x" * 400, max_tokens=100))
    assert ctx is not None and d.headers["x-ratelimit-remaining-tokens"] == "796"
    await eng.check_response(ctx, answer(30, 20))  # the model reports 50 tokens: 154 go back
    await eng.finish(ctx, ok=True)
    d, ctx = await eng.check_request(request(text="y" * 400, max_tokens=100))
    assert ctx is not None and d.headers["x-ratelimit-remaining-tokens"] == str(1000 - 50 - 204)
    await eng.check_response(ctx, answer(500, 400))  # more than estimated: charged too
    await eng.finish(ctx, ok=True)
    d, _ = await eng.check_request(request(text="z", max_tokens=10))
    assert d.headers["x-ratelimit-remaining-tokens"] == str(1000 - 50 - 900 - 15)
    # A request whose estimate alone exceeds the limit can never pass.
    d, _ = await eng.check_request(request(text="z", max_tokens=5000))
    assert d.blocked and d.violation is not None
    assert d.violation.rule_id == "quota.identity.tokens_per_day"
    assert "exceed the tokens_per_day limit of 1000" in d.violation.message


async def test_failed_call_refunds_the_token_estimate(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"tokens_per_month": 10_000}})
    d, ctx = await eng.check_request(request(text="a" * 40, max_tokens=1000))
    assert ctx is not None and d.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 1014)
    await eng.finish(ctx, ok=False)  # upstream failed, no usage
    d, _ = await eng.check_request(request(text="a" * 40, max_tokens=1000))
    assert d.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 1014)


async def test_blocked_by_a_later_guard_refunds_tokens(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"tokens_per_day": 5000, "requests_per_day": 100}},
               extra_guards=[{"name": "tests.quota_helpers:KeywordGuard", "options": {"word": "forbidden"}}])
    d, _ = await eng.check_request(request(text="forbidden " * 10, max_tokens=100))
    assert d.blocked and d.violation is not None and d.violation.rule_id == "test.keyword"
    d, _ = await eng.check_request(request(text="fine", max_tokens=100))
    assert not d.blocked
    assert d.headers["x-ratelimit-remaining-tokens"] == str(5000 - 105)  # the blocked one was refunded
    assert d.headers["x-ratelimit-remaining-requests"] == "98"  # but it counted as a request


async def test_concurrency_slots_are_released_on_finish(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"max_concurrent": 2}})
    _, c1 = await eng.check_request(request())
    _, c2 = await eng.check_request(request())
    assert c1 is not None and c2 is not None
    d, _ = await eng.check_request(request())
    assert d.blocked and d.violation is not None
    assert d.violation.rule_id == "quota.identity.max_concurrent"
    assert d.violation.headers["Retry-After"] == "1"
    await eng.finish(c1, ok=True)
    d, c3 = await eng.check_request(request())
    assert not d.blocked and c3 is not None
    await eng.finish(c2, ok=False)
    await eng.finish(c3, ok=True)
    await eng.finish(c3, ok=True)  # twice is harmless


async def test_leaked_concurrency_slot_expires(tmp_path: Path, store: dict[str, str | None]) -> None:
    eng = make(tmp_path, store, {"identity": {"max_concurrent": 1}, "concurrency_ttl_seconds": 1})
    _, leaked = await eng.check_request(request())  # never finished: a crashed replica
    assert leaked is not None
    assert (await eng.check_request(request()))[0].blocked
    await asyncio.sleep(1.1)
    assert not (await eng.check_request(request()))[0].blocked


async def test_concurrent_requests_at_the_edge_never_exceed_the_limit(tmp_path: Path, store: dict[str, str | None]) -> None:
    # fail_closed: even a Redis timeout under load (a busy CI machine) cannot let an extra one through.
    eng = make(tmp_path, store, {"identity": {"requests_per_minute": 10}, "department": {"max_concurrent": 100},
                                 "on_backend_error": "fail_closed"}, backends={"redis_timeout_ms": 2000})
    results = await asyncio.gather(*(eng.check_request(request()) for _ in range(50)))
    allowed = sum(not d.blocked for d, _ in results)
    backend_errors = sum(any(f.rule_id == "quota.backend_unavailable" for f in d.findings) for d, _ in results)
    assert allowed <= 10
    if not backend_errors:
        assert allowed == 10
        assert all(isinstance(d.violation, QuotaExceeded) for d, _ in results if d.blocked)


async def test_two_engines_sharing_redis_enforce_one_limit(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """Two replicas (two engines, two connection pools) and one Redis: one global limit."""
    path = write_policy(tmp_path / "p.yaml", {"identity": {"requests_per_minute": 5}}, redis_url=redis_url,
                        prefix=redis_prefix)
    a, b = engine_for(path), engine_for(path)
    outcomes = []
    for i in range(8):
        d, _ = await (a if i % 2 else b).check_request(request())
        outcomes.append(not d.blocked)
    assert outcomes == [True] * 5 + [False] * 3


def test_demo_policy_limits_sk_rnd_to_10_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = GuardEngine("config/policy.yaml", audit=_Null())
    identity = eng.authenticate_key("sk-rnd")
    assert identity is not None
    import dataclasses

    identity = dataclasses.replace(identity, user="quota-demo-engine-test")  # its own counter
    req = dataclasses.replace(request(), identity=identity)
    results = [eng.check_request_sync(req)[0] for _ in range(11)]
    assert [d.blocked for d in results] == [False] * 10 + [True]
    assert results[-1].violation is not None and results[-1].violation.http_status == 429
    # Other departments have no quota.
    other = eng.authenticate_key("sk-marketing")
    assert other is not None
    assert not any(eng.check_request_sync(dataclasses.replace(req, identity=other))[0].blocked for _ in range(12))


class _Null:
    def emit(self, record: object) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"identity": {"requests_per_minute": 0}}, "options.identity.requests_per_minute"),
        ({"identity": {"rpm": 5}}, "options.identity.rpm"),
        ({"identity": {"requests_per_minute": 5}, "burst": 3}, "options.burst"),
        ({"identity": {"requests_per_minute": 5}, "on_backend_error": "ignore"}, "options.on_backend_error"),
        ({"identity": {"requests_per_minute": 5}, "fail_closed_status": 500}, "options.fail_closed_status"),
        ({}, "options"),
        ({"identity": {}, "department": {}}, "options"),
    ],
)
def test_bad_quota_options_fail_at_load_naming_the_field(tmp_path: Path, options: dict[str, object], where: str) -> None:
    path = write_policy(tmp_path / "bad.yaml", options)
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert any(where in p for p, _ in exc.value.problems), exc.value.problems


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (120, "120ms"), (1000, "1s"), (1001, "2s"), (6000, "6s"), (60_000, "1m0s"), (90_500, "1m31s"),
     (3_600_000, "1h0m0s"), (86_400_000, "24h0m0s")],
)
def test_reset_header_format(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_docs_example_is_a_valid_policy() -> None:
    """The configuration example in docs/quotas.md loads (so the doc cannot rot)."""
    import re

    import yaml

    from shared_guards.policy import parse_policy

    text = (Path(__file__).resolve().parent.parent / "docs" / "quotas.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    data = yaml.safe_load(block.group(1))
    data["departments"]["rnd"]["models"] = ["coder"]
    loaded = parse_policy(data, "docs/quotas.md")
    cfg = loaded.guard_config("rnd", "quota")
    assert cfg.model_dump()["identity"]["requests_per_minute"] == 10  # type: ignore[attr-defined]
    assert loaded.policy.backends.redis_url == "redis://redis.internal:6379/0"


async def test_monitor_mode_records_but_does_not_block(tmp_path: Path, store: dict[str, str | None]) -> None:
    path = write_policy(tmp_path / "m.yaml", {"identity": {"requests_per_minute": 1}}, redis_url=store["redis_url"],
                        prefix=str(store["prefix"]))
    path.write_text(path.read_text().replace("on_error: fail_closed", "on_error: fail_closed\n  mode: monitor"))
    eng = engine_for(path)
    assert (await eng.check_request(request()))[0].action is Action.ALLOW
    d, _ = await eng.check_request(request())
    assert d.action is Action.ALERT and not d.blocked
    assert [f.rule_id for f in d.findings] == ["quota.identity.requests_per_minute"]
