"""Guard-service lifecycle in-process: answer timeouts, the open-stream cap, expiring contexts
(finished once, with ``ok`` telling whether an answer was seen)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from shared_guards.service import ServiceSettings, TokenSet, create_app
from tests.fixtures_litellm import REPO
from tests.fixtures_service import SERVICE_POLICY

TOKEN = "sessions-test-token-0123456789"
H = {"authorization": f"Bearer {TOKEN}"}
CHAT = {"body": {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, "identity": {"team": "rnd"}}


@pytest.fixture
def client(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    monkeypatch.setenv("SLG_AUDIT_PATH", str(tmp_path / "audit.jsonl"))
    overrides = getattr(request, "param", {})
    settings = ServiceSettings(**{"policy_path": str(SERVICE_POLICY), "tokens": TokenSet.of(TOKEN), **overrides})
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("client", [{"policy_path": str(REPO / "tests" / "policies" / "service_slow.yaml"),
                                     "timeout": 0.5}], indirect=True)
def test_an_answer_past_the_timeout_is_503(client: TestClient) -> None:
    t0 = time.monotonic()
    r = client.post("/v1/guard/request", json=CHAT, headers=H)
    assert r.status_code == 503 and r.json()["error"]["code"] == "guard_timeout"
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("client", [{"max_streams": 2}], indirect=True)
def test_open_streams_are_capped(client: TestClient) -> None:
    ids = [client.post("/v1/guard/request", json=CHAT, headers=H).json()["context_id"] for _ in range(3)]
    for cid in ids[:2]:
        assert client.post(f"/v1/guard/stream/{cid}/chunk", json={"delta": "a"}, headers=H).status_code == 200
    r = client.post(f"/v1/guard/stream/{ids[2]}/chunk", json={"delta": "a"}, headers=H)
    assert r.status_code == 429 and r.headers["retry-after"] and r.json()["error"]["code"] == "too_many_streams"
    client.post(f"/v1/guard/stream/{ids[0]}/end", headers=H)  # ending one frees a slot
    assert client.post(f"/v1/guard/stream/{ids[2]}/chunk", json={"delta": "a"}, headers=H).status_code == 200


@pytest.mark.parametrize("client", [{"context_ttl": 0.2, "stream_ttl": 0.2, "sweep_interval": 0.05}],
                         indirect=True)
def test_contexts_expire_and_are_finished_once(client: TestClient) -> None:
    state = client.app.state.service  # type: ignore[attr-defined]
    finished: list[tuple[str, bool]] = []
    real_finish = state.engine.finish

    async def spy(ctx: Any, *, ok: bool) -> None:
        finished.append((ctx.request_id, ok))
        await real_finish(ctx, ok=ok)

    state.engine.finish = spy
    waiting = client.post("/v1/guard/request", json={**CHAT, "request_id": "never-answered"}, headers=H).json()
    streaming = client.post("/v1/guard/request", json={**CHAT, "request_id": "stream-abandoned"}, headers=H).json()
    client.post(f"/v1/guard/stream/{streaming['context_id']}/chunk", json={"delta": "x"}, headers=H)
    assert len(state.sessions) == 2 and state.sessions.open_streams == 1
    deadline = time.monotonic() + 5
    while len(state.sessions) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(state.sessions) == 0 and state.sessions.open_streams == 0
    assert sorted(finished) == [("never-answered", False), ("stream-abandoned", True)]
    for cid in (waiting["context_id"], streaming["context_id"]):
        assert client.post("/v1/guard/response", json={"context_id": cid, "body": {"choices": []}},
                           headers=H).status_code == 404
    metrics = client.get("/metrics").text
    assert "slg_service_open_contexts 0.0" in metrics


def test_token_file_rotation_and_minimum_length(tmp_path: Any) -> None:
    from shared_guards.errors import ConfigError

    f = tmp_path / "tokens"
    f.write_text("# current and next\nold-token-0123456789\n\nnew-token-0123456789\n")
    tokens = TokenSet.from_file(f)
    assert tokens.check("old-token-0123456789") and tokens.check("new-token-0123456789")
    assert not tokens.check("old-token-012345678") and not tokens.check(None)
    with pytest.raises(ConfigError, match="16 characters"):
        TokenSet.of("short")
    f.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no token"):
        TokenSet.from_file(f)


@pytest.mark.parametrize("redis_url, status, check", [
    ("redis://127.0.0.1:6379/0", 200, "ok"),
    ("redis://127.0.0.1:1/0", 503, "error: "),
])
def test_readyz_checks_the_backends(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str, status: int,
                                    check: str) -> None:
    monkeypatch.setenv("SLG_AUDIT_PATH", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    with TestClient(create_app(ServiceSettings(policy_path=str(SERVICE_POLICY), allow_anonymous=True))) as c:
        r = c.get("/readyz")
        assert r.status_code == status, r.text
        assert r.json()["checks"]["policy"] == "ok"
        assert r.json()["checks"]["backend:kv"].startswith(check)
        assert c.get("/healthz").status_code == 200  # alive either way


def test_ids_are_unique_and_context_ids_unguessable() -> None:
    from shared_guards.service.guard_api import Ids

    a, b = Ids(), Ids()
    ctx_ids = {a.context_id() for _ in range(2000)} | {b.context_id() for _ in range(2000)}
    assert len(ctx_ids) == 4000 and all(len(c) == 32 for c in ctx_ids)
    req_ids = {a.request_id() for _ in range(100)}
    assert len(req_ids) == 100 and not req_ids & {b.request_id() for _ in range(100)}


def test_a_department_that_cannot_be_built_fails_readiness(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLG_AUDIT_PATH", str(tmp_path / "audit.jsonl"))
    policy = REPO / "tests" / "policies" / "service_broken.yaml"
    with TestClient(create_app(ServiceSettings(policy_path=str(policy), allow_anonymous=True))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["pipeline:rnd"] == "error: ConfigError"
        assert "pipeline:finance" not in r.json()["checks"]
        chat = {"body": {"model": "general", "messages": [{"role": "user", "content": "hi"}]}}
        r = c.post("/v1/guard/request", json={**chat, "identity": {"team": "rnd"}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "guard_unavailable"
        assert "artifact" not in r.json()["error"]["message"]
        r = c.post("/v1/guard/request", json={**chat, "identity": {"team": "finance"}})
        assert r.status_code == 200 and r.json()["action"] == "allow"
