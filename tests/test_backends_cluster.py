"""The Redis backend on a real 3-master Redis Cluster: one check's keys share a slot (hash tag),
so the Lua script runs; departments spread over the shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from shared_guards.backends import RedisBackend, ResilientBackend, Rule, Slot, hash_tag
from tests.fixtures_redis import RedisClusterServers
from tests.quota_helpers import engine_for, request, write_policy

pytestmark = pytest.mark.slow


async def test_checks_adjusts_and_slots_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    b = ResilientBackend(RedisBackend(redis_cluster.url, timeout_s=1.0, cluster=True), timeout_s=1.0)
    owners = set()
    client = redis.Redis(port=redis_cluster.servers[0].port)
    shards = client.execute_command("CLUSTER SLOTS")
    client.close()
    for dep in ("rnd", "finance", "marketing", "legal", "support", "sales"):
        tag = hash_tag("-", dep)
        rules = [Rule(f"slg:q:{tag}:i:abc:r1m", 3, 60_000),
                 Rule(f"slg:q:{tag}:d:t1d", 1000, 86_400_000, 100, "tokens")]
        slot = Slot(f"slg:q:{tag}:d:conc", 5, 60_000, "s1")
        assert [(await b.check(rules, [slot])).allowed for _ in range(4)] == [True, True, True, False]
        await b.release([slot])
        await b.adjust([Rule(rules[1].key, 1000, 86_400_000, -300, "tokens")])
        res = await b.check([Rule(rules[1].key, 1000, 86_400_000, 0, "tokens")])
        assert res.rules[0].remaining == 1000 - 300 + 300  # 3 x 100 taken, 300 refunded
        s = key_slot(rules[0].key.encode())
        owners.update(i for i, (lo, hi, *_rest) in enumerate(shards) if lo <= s <= hi)
    assert len(owners) >= 2  # the departments' tags really land on different shards
    await b.close()


async def test_engine_with_redis_cluster(redis_cluster: RedisClusterServers, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    path = write_policy(tmp_path / "c.yaml", {"identity": {"requests_per_minute": 2}, "department": {"max_concurrent": 9},
                                              "on_backend_error": "fail_closed"},
                        redis_url=redis_cluster.url, backends={"redis_cluster": True, "redis_timeout_ms": 1000})
    eng = engine_for(path)
    outcomes = [(await eng.check_request(request()))[0] for _ in range(3)]
    assert [d.blocked for d in outcomes] == [False, False, True]
    assert outcomes[-1].violation is not None and outcomes[-1].violation.http_status == 429
