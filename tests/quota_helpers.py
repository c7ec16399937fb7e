"""Helpers shared by the quota test modules: a policy writer, requests and a null audit sink."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml

from shared_guards.engine import GuardEngine
from shared_guards.errors import ContentViolation
from shared_guards.guard import Guard, GuardConfig, RequestContext
from shared_guards.types import (
    ContentPart,
    Finding,
    GuardRequest,
    GuardResponse,
    GuardResult,
    Identity,
    Message,
    Role,
    Usage,
)


class NullAudit:
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def emit(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        return None


def write_policy(
    path: Path,
    quota: Mapping[str, Any],
    *,
    redis_url: str | None = None,
    prefix: str = "slg:",
    backends: Mapping[str, Any] | None = None,
    extra_guards: list[Mapping[str, Any]] | None = None,
    version: str = "quota-test",
) -> Path:
    policy: dict[str, Any] = {
        "version": version,
        "defaults": {"unknown_identity": "deny", "on_error": "fail_closed"},
        "departments": {
            "rnd": {
                "models": ["general"],
                "guards": [{"name": "quota", "options": dict(quota)}, *(extra_guards or [])],
            },
            "other": {"models": ["general"]},
        },
        "backends": {"redis_url": redis_url, "key_prefix": prefix, "redis_timeout_ms": 200, **(backends or {})},
    }
    path.write_text(yaml.safe_dump(policy))
    return path


def engine_for(path: Path) -> GuardEngine:
    return GuardEngine(path, audit=NullAudit())


def request(user: str = "alice", text: str = "hello", *, max_tokens: int | None = None,
            department: str = "rnd", tenant: str | None = None) -> GuardRequest:
    return GuardRequest(
        messages=(Message(Role.USER, (ContentPart(text=text),)),),
        model="general",
        identity=Identity(user=user, department=department, tenant=tenant),
        max_tokens=max_tokens,
    )


def answer(prompt_tokens: int, completion_tokens: int) -> GuardResponse:
    from shared_guards.types import Choice

    return GuardResponse((Choice(0, "ok"),), Usage(prompt_tokens, completion_tokens), "general")


class KeywordConfig(GuardConfig):
    word: str = "forbidden"


class KeywordGuard(Guard):
    """A deterministic, cacheable content guard for the tests: blocks a keyword, counts its calls."""

    name: ClassVar[str] = "test_keyword"
    Config: ClassVar[type[GuardConfig]] = KeywordConfig
    cacheable: ClassVar[bool] = True
    calls: ClassVar[list[str]] = []  # test instrumentation only: the department of each real call

    async def check_request(self, request: GuardRequest, ctx: RequestContext) -> GuardResult:
        KeywordGuard.calls.append(ctx.department)
        assert isinstance(self.config, KeywordConfig)
        if any(self.config.word in t for _, _, t in request.texts()):
            finding = Finding(guard=self.name, rule_id="test.keyword", layer="test", start=0, end=3)
            return GuardResult.block(ContentViolation("Blocked by test.keyword (rule test.keyword).",
                                                      rule_id="test.keyword"), (finding,), score=0.9)
        return GuardResult.allow(score=0.1)
