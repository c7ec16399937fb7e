"""`slg quota status|reset` against real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_guards.cli import main
from tests.quota_helpers import engine_for, request, write_policy


@pytest.fixture(autouse=True)
def _no_env_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)


async def test_status_and_reset(tmp_path: Path, redis_url: str, redis_prefix: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path / "p.yaml", {"identity": {"requests_per_minute": 3, "tokens_per_day": 1000},
                                              "department": {"requests_per_hour": 50}},
                        redis_url=redis_url, prefix=redis_prefix)
    eng = engine_for(path)
    for _ in range(3):
        assert not (await eng.check_request(request("alice", max_tokens=10)))[0].blocked
    assert (await eng.check_request(request("alice")))[0].blocked
    args = [str(path), "--department", "rnd", "--user", "alice"]
    assert await _cli(["quota", "status", *args]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert rows["quota.identity.requests_per_minute"] == ["3", "0"]
    assert rows["quota.identity.tokens_per_day"] == ["1000", str(1000 - 3 * 16)]
    assert rows["quota.department.requests_per_hour"] == ["50", "47"]
    assert await _cli(["quota", "reset", *args, "--scope", "identity"]) == 0
    assert "reset 2 limit(s)" in capsys.readouterr().out
    assert not (await eng.check_request(request("alice")))[0].blocked  # budget is back
    assert await _cli(["quota", "status", *args]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["quota.department.requests_per_hour"] == ["50", "46"]  # department untouched


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--department", "nope"], "unknown department"), (["--department", "other"], "has no quota guard")],
)
async def test_clear_errors(tmp_path: Path, redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str],
                            extra: list[str], message: str) -> None:
    path = write_policy(tmp_path / "p.yaml", {"identity": {"requests_per_minute": 3}}, redis_url=redis_url,
                        prefix=redis_prefix)
    assert await _cli(["quota", "status", str(path), *extra]) == 2
    assert message in capsys.readouterr().out


async def test_without_redis_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_policy(tmp_path / "p.yaml", {"identity": {"requests_per_minute": 3}})
    assert await _cli(["quota", "reset", str(path), "--department", "rnd", "--user", "a"]) == 2
    assert "no Redis configured" in capsys.readouterr().out


async def _cli(argv: list[str]) -> int:
    """The CLI runs its own event loop: call it from a worker thread."""
    import asyncio

    return await asyncio.to_thread(main, argv)
