"""The pipeline and engine contract: concurrency, timeouts, on_error, short-circuit, modifiers,
action mapping, monitor mode, audit records and the synchronous facade."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from shared_guards import registry
from shared_guards.engine import GuardEngine
from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext, StreamFilter
from shared_guards.openai_format import parse_chat_request
from shared_guards.types import Action, Finding, GuardRequest, GuardResult, Identity


class SleepConfig(GuardConfig):
    seconds: float = 0.0
    verdict: str = "allow"  # allow | block | raise
    word: str = ""


class SleepGuard(Guard):
    name: ClassVar[str] = "test_sleep"
    Config = SleepConfig
    calls: ClassVar[list[str]] = []

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        cfg = self.config
        assert isinstance(cfg, SleepConfig)
        SleepGuard.calls.append(f"start:{cfg.verdict}:{cfg.seconds}")
        await asyncio.sleep(cfg.seconds)
        if cfg.verdict == "raise":
            raise RuntimeError("secret text must not leak")
        if cfg.verdict == "block":
            f = Finding(guard=self.name, rule_id="test.block")
            return GuardResult.block(ContentViolation("blocked by test.block", rule_id="test.block"), (f,))
        SleepGuard.calls.append(f"end:{cfg.verdict}:{cfg.seconds}")
        return GuardResult.allow()


class UpperGuard(Guard):
    """A modifier: uppercases (or appends to) every text."""

    name: ClassVar[str] = "test_upper"
    Config = SleepConfig
    modifies: ClassVar[bool] = True

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        cfg = self.config
        assert isinstance(cfg, SleepConfig)
        msgs = tuple(m.with_texts([(p.text or "") + cfg.word for p in m.parts if p.text is not None]) for m in request.messages)
        return GuardResult(Action.MODIFY, sanitized=dataclasses.replace(request, messages=msgs))

    def stream_filter(self, ctx: RequestContext) -> StreamFilter | None:
        word = self.config.word  # type: ignore[attr-defined]

        class Tag(StreamFilter):
            def feed(self, delta: str, choice_index: int = 0) -> str:
                return delta.replace("x", word)

            def flush(self, choice_index: int = 0) -> str:
                return "!"

        return Tag()


for cls in (SleepGuard, UpperGuard):
    registry.register(cls)


def make_engine(tmp_path: Path, guards: list[dict], mode: str = "enforce", on_error: str = "fail_closed") -> GuardEngine:
    policy = {
        "defaults": {"mode": mode, "on_error": on_error, "guards": guards},
        "departments": {"ops": {"models": ["general"], "match": {"teams": ["ops"]}, "deny_features": ["images"]}},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return GuardEngine(path)


def req(text: str = "hello", model: str = "general", team: str | None = "ops") -> GuardRequest:
    return parse_chat_request({"model": model, "messages": [{"role": "user", "content": text}]}, Identity(team=team))


def audit_lines(tmp_path: Path) -> list[dict]:
    from shared_guards.audit import flush_all

    flush_all()  # the audit file is written by a background thread
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_independent_guards_run_concurrently(tmp_path: Path) -> None:
    guards = [{"name": "test_sleep", "id": f"s{i}", "options": {"seconds": 0.2}} for i in range(4)]
    engine = make_engine(tmp_path, guards)
    t0 = time.perf_counter()
    decision, _ = await engine.check_request(req())
    elapsed = time.perf_counter() - t0
    assert decision.action is Action.ALLOW
    assert elapsed < 0.6, "four 0.2 s guards must overlap, not add up"
    assert [t.guard for t in decision.timings] == ["rbac", "s0", "s1", "s2", "s3"]


async def test_block_short_circuits_slow_guards(tmp_path: Path) -> None:
    guards = [
        {"name": "test_sleep", "id": "slow", "options": {"seconds": 5}},
        {"name": "test_sleep", "id": "fast", "options": {"verdict": "block"}},
    ]
    engine = make_engine(tmp_path, guards)
    t0 = time.perf_counter()
    decision, _ = await engine.check_request(req())
    assert time.perf_counter() - t0 < 1.0
    assert decision.blocked and decision.violation is not None
    assert decision.violation.rule_id == "test.block"
    outcomes = {t.guard: t.outcome for t in decision.timings}
    assert outcomes["slow"] == "skipped"


async def test_access_tier_blocks_before_content_guards(tmp_path: Path) -> None:
    SleepGuard.calls.clear()
    engine = make_engine(tmp_path, [{"name": "test_sleep", "options": {"seconds": 0}}])
    decision, _ = await engine.check_request(req(model="coder"))
    assert decision.blocked and decision.violation is not None
    assert decision.violation.http_status == 403 and decision.violation.rule_id == "rbac.model"
    assert SleepGuard.calls == [], "content guards must not run after an access block"


@pytest.mark.parametrize(
    ("on_error", "verdict", "seconds", "expected_action", "status"),
    [
        ("fail_closed", "raise", 0, Action.BLOCK, 503),
        ("fail_open", "raise", 0, Action.ALERT, None),
        ("fail_closed", "allow", 2, Action.BLOCK, 503),  # timeout
        ("fail_open", "allow", 2, Action.ALERT, None),
    ],
)
async def test_guard_errors_follow_on_error(tmp_path: Path, on_error: str, verdict: str, seconds: float,
                                            expected_action: Action, status: int | None) -> None:
    guards = [{"name": "test_sleep", "id": "flaky", "timeout_ms": 100, "on_error": on_error,
               "options": {"verdict": verdict, "seconds": seconds}}]
    engine = make_engine(tmp_path, guards)
    decision, _ = await engine.check_request(req())
    assert decision.action is expected_action
    assert decision.errors == ("flaky",)
    if status:
        assert decision.violation is not None and decision.violation.http_status == status
        body = decision.violation.to_openai()
        assert "secret text" not in json.dumps(body)
        assert body["error"]["code"] == "guard_unavailable"
    records = audit_lines(tmp_path)
    assert records[-1]["errors"] == ["flaky"]
    assert "secret text" not in (tmp_path / "audit.jsonl").read_text()


@pytest.mark.parametrize(
    ("action", "mode", "expected"),
    [("block", "enforce", Action.BLOCK), ("alert", "enforce", Action.ALERT), ("log", "enforce", Action.ALLOW),
     ("block", "monitor", Action.ALERT)],
)
async def test_action_and_mode_mapping(tmp_path: Path, action: str, mode: str, expected: Action) -> None:
    engine = make_engine(tmp_path, [{"name": "test_sleep", "action": action, "options": {"verdict": "block"}}], mode=mode)
    decision, _ = await engine.check_request(req())
    assert decision.action is expected
    assert [f.rule_id for f in decision.findings] == ["test.block"], "findings are kept whatever the action"
    assert decision.blocked == (expected is Action.BLOCK)


async def test_modifiers_chain_in_policy_order(tmp_path: Path) -> None:
    guards = [{"name": "test_upper", "id": "a", "options": {"word": "-A"}},
              {"name": "test_sleep", "id": "s"},
              {"name": "test_upper", "id": "b", "options": {"word": "-B"}}]
    engine = make_engine(tmp_path, guards)
    decision, ctx = await engine.check_request(req("hi"))
    assert decision.action is Action.MODIFY and decision.changed
    assert decision.request.messages[0].text == "hi-A-B"
    assert ctx is not None and ctx.request is decision.request
    stream = engine.open_stream(ctx)
    assert stream.feed("xyz") == "-Ayz"  # filter a runs first, b sees its output


async def test_stream_session_chains_filters(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [{"name": "test_upper", "id": "a", "options": {"word": "1"}}])
    _, ctx = await engine.check_request(req())
    assert ctx is not None
    stream = engine.open_stream(ctx)
    assert stream.feed("xox") == "1o1"
    assert stream.flush() == "!"


async def test_unknown_identity_is_refused_and_audited(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [])
    decision, ctx = await engine.check_request(req(team=None))
    assert ctx is None and decision.blocked
    assert decision.violation is not None and decision.violation.http_status == 401
    assert audit_lines(tmp_path)[-1]["violation"]["status"] == 401


async def test_features_and_max_tokens(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [])
    image = parse_chat_request(
        {"model": "general", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}]},
        Identity(team="ops"))
    decision, _ = await engine.check_request(image)
    assert decision.violation is not None and decision.violation.rule_id == "rbac.feature.images"


def test_sync_facade_from_a_plain_thread(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [{"name": "test_sleep", "options": {"seconds": 0.01}}])
    decision, ctx = engine.check_request_sync(req())
    assert decision.action is Action.ALLOW and ctx is not None
    engine.finish_sync(ctx, ok=True)
    assert ctx.state == {"_finished": True}


async def test_audit_chain_links_records(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [])
    for _ in range(3):
        await engine.check_request(req("my secret prompt"))
    recs = audit_lines(tmp_path)
    assert len(recs) == 3
    assert recs[1]["prev"] == recs[0]["hash"] and recs[2]["prev"] == recs[1]["hash"]
    assert "my secret prompt" not in (tmp_path / "audit.jsonl").read_text()


def test_module_class_guard_names(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, [{"name": "tests.test_pipeline:SleepGuard", "id": "direct"}])
    decision, _ = engine.check_request_sync(req())
    assert [t.guard for t in decision.timings] == ["rbac", "direct"]


class ReleaseGuard(Guard):
    """Reserves on request, releases on completion (like a concurrency slot)."""

    name: ClassVar[str] = "test_release"
    Config = SleepConfig
    released: ClassVar[list[str]] = []

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        await asyncio.sleep(self.config.seconds)  # type: ignore[attr-defined]
        return GuardResult.allow()

    async def on_complete(self, ctx: RequestContext, *, ok: bool) -> None:
        ReleaseGuard.released.append(ctx.request_id)


registry.register(ReleaseGuard)


def test_sync_timeout_cancels_and_releases(tmp_path: Path) -> None:
    import concurrent.futures

    ReleaseGuard.released.clear()
    engine = make_engine(tmp_path, [{"name": "test_release", "timeout_ms": 10_000, "options": {"seconds": 5}}])
    with pytest.raises(concurrent.futures.TimeoutError):
        engine.check_request_sync(dataclasses.replace(req(), request_id="r-timeout"), timeout=0.2)
    deadline = time.monotonic() + 3
    while not ReleaseGuard.released and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ReleaseGuard.released == ["r-timeout"]
