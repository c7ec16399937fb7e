"""Audit records through the real engine: one per decision, no raw text by default, prompt capture
modes, the hub never blocking the request path, drops counted, flush on close."""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_guards import GuardEngine, Identity, parse_chat_request
from shared_guards.audit import AuditHub, JsonlAuditSink, verify_files
from shared_guards.errors import PolicyError
from shared_guards.metrics import GuardMetrics
from shared_guards.policy import parse_policy

SECRET = "the secret plan 078-05-1120"  # a fake SSN that must never reach the audit file raw
KEYS = [
    {"key": "sk-a", "department": "alpha", "user": "u-a", "key_alias": "alpha-key"},
    {"key": "sk-b", "department": "beta", "user": "u-b", "key_alias": "beta-key"},
]


def policy(tmp_path: Path, audit: dict[str, Any] | None = None, beta_guards: list[Any] | None = None) -> Path:
    doc = {
        "version": "t1",
        "api_keys": KEYS,
        "audit": {"path": str(tmp_path / "audit.jsonl"), "flush_interval_ms": 20, **(audit or {})},
        "departments": {
            "alpha": {"models": ["general"],
                      "guards": [{"name": "tests.guards_for_tests:ShoutingGuard", "id": "pii"}]},
            "beta": {"models": ["general"], "guards": beta_guards or []},
        },
    }
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture
def make_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("SLG_AUDIT_PATH", raising=False)
    monkeypatch.setenv("SLG_AUDIT_HASH_KEY", "test-hmac-key")
    engines: list[GuardEngine] = []

    def make(**kw: Any) -> GuardEngine:
        eng = GuardEngine(policy(tmp_path, **kw))
        engines.append(eng)
        return eng

    yield make
    for e in engines:
        e.close()


async def run(eng: GuardEngine, key: str, text: str, model: str = "general") -> Any:
    ident = eng.authenticate_key(key) or Identity(user="nobody")
    req = parse_chat_request({"model": model, "messages": [{"role": "user", "content": text}]}, ident)
    return await eng.check_request(req)


def records(eng: GuardEngine) -> list[dict[str, Any]]:
    assert isinstance(eng.audit, AuditHub)
    assert eng.audit.flush(5)
    path = Path(eng.loaded.policy.audit.path)
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_one_record_per_decision_without_text(make_engine: Any, tmp_path: Path) -> None:
    eng = make_engine(beta_guards=[{"name": "tests.guards_for_tests:ExplodingGuard", "id": "boom"}])
    d_allow, _ = await run(eng, "sk-a", "hello there")
    d_mask, _ = await run(eng, "sk-a", SECRET)
    d_fail, _ = await run(eng, "sk-b", SECRET)
    d_model, _ = await run(eng, "sk-a", SECRET, model="coder")
    d_unknown, _ = await run(eng, "sk-nope", SECRET)
    recs = records(eng)
    assert [r["decision"] for r in recs] == ["allow", "modify", "block", "block", "block"]
    assert [d.action.value for d in (d_allow, d_mask, d_fail, d_model, d_unknown)] == [r["decision"] for r in recs]
    allow, mask, fail, model, unknown = recs
    assert mask["rules"] == {"test.redact": 1} and mask["changed"] is True
    assert fail["errors"] == ["boom"] and fail["violation"]["status"] == 503 and fail["severity"] == "high"
    assert [g["outcome"] for g in fail["guards"] if g["guard"] == "boom"] == ["error"]
    assert model["violation"] == {"status": 403, "code": "model_not_allowed", "rule_id": "rbac.model"}
    assert unknown["violation"]["rule_id"] == "identity.unknown" and unknown["department"] == ""
    for r in recs:
        assert {"ts", "request_id", "identity", "department", "model", "gateway", "stage", "decision",
                "guards", "findings", "policy_version", "seq", "prev", "hash"} <= set(r)
        assert r["policy_version"].startswith("t1+")
        assert "capture" not in r
    raw = (tmp_path / "audit.jsonl").read_text()
    assert "secret" not in raw and "078-05-1120" not in raw and "hello there" not in raw
    assert verify_files([tmp_path / "audit.jsonl"]).ok


async def test_response_decision_recorded(make_engine: Any) -> None:
    from shared_guards.openai_format import parse_chat_response

    eng = make_engine()
    decision, ctx = await run(eng, "sk-a", "hi")
    resp = parse_chat_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                             "finish_reason": "stop"}], "model": "general"})
    rd = await eng.check_response(ctx, resp)
    recs = records(eng)
    assert [r["stage"] for r in recs] == ["request", "response"]
    assert recs[1]["request_id"] == recs[0]["request_id"] == ctx.request_id
    assert recs[1]["decision"] == rd.action.value == "modify"


@pytest.mark.parametrize(
    ("capture", "text", "expect_mode", "must_have", "must_not_have"),
    [
        ("hashed", SECRET, "hashed", "hmac-sha256:", ["secret", "078-05"]),
        # the redaction guard ran and masked: the masked text is kept
        ("redacted", SECRET, "redacted", "[REDACTED] plan 078", ["the secret"]),
        # the redaction guard ran and found nothing: the text counts as clean
        ("redacted", "nothing to hide", "redacted", "nothing to hide", []),
    ],
)
async def test_prompt_capture_modes(make_engine: Any, capture: str, text: str, expect_mode: str,
                                    must_have: str, must_not_have: list[str]) -> None:
    eng = make_engine(audit={"capture_departments": {"alpha": capture}})
    await run(eng, "sk-a", text)
    rec = records(eng)[-1]
    assert rec["capture"]["mode"] == expect_mode
    blob = json.dumps(rec["capture"])
    assert must_have in blob
    for bad in must_not_have:
        assert bad not in blob


async def test_redacted_falls_back_to_hash_without_a_successful_redaction(make_engine: Any, tmp_path: Path) -> None:
    # beta has no redaction guard; its exploding guard fails the request: nothing raw may be kept
    eng = make_engine(audit={"capture": "redacted"},
                      beta_guards=[{"name": "tests.guards_for_tests:ExplodingGuard", "id": "boom",
                                    "on_error": "fail_open"}])
    await run(eng, "sk-b", SECRET)
    rec = records(eng)[-1]
    assert rec["capture"]["mode"] == "hashed" and "fallback" in rec["capture"]
    assert "secret" not in (tmp_path / "audit.jsonl").read_text()


async def test_hash_is_keyed_and_stable(make_engine: Any) -> None:
    import hashlib

    eng = make_engine(audit={"capture": "hashed"})
    await run(eng, "sk-b", SECRET)
    await run(eng, "sk-b", SECRET)
    a, b = (r["capture"]["texts"][0]["hash"] for r in records(eng))
    assert a == b  # correlation
    assert hashlib.sha256(SECRET.encode()).hexdigest() not in a  # not a plain (brute-forceable) digest


def test_full_capture_needs_explicit_permission(tmp_path: Path) -> None:
    doc = yaml.safe_load(policy(tmp_path, audit={"capture_departments": {"beta": "full"}}).read_text())
    with pytest.raises(PolicyError, match="full_capture_allowed"):
        parse_policy(doc)
    doc["audit"]["full_capture_allowed"] = ["beta"]
    assert parse_policy(doc).policy.audit.capture_for("beta").value == "full"
    doc["audit"]["full_capture_allowed"] = ["gamma"]
    with pytest.raises(PolicyError, match="unknown department 'gamma'"):
        parse_policy(doc)


async def test_full_capture_when_allowed(make_engine: Any) -> None:
    eng = make_engine(audit={"capture_departments": {"beta": "full"}, "full_capture_allowed": ["beta"]})
    await run(eng, "sk-b", "debug me please")
    await run(eng, "sk-a", "not me")
    beta, alpha = records(eng)
    assert beta["capture"] == {"mode": "full", "texts": [{"i": 0, "role": "user", "text": "debug me please"}]}
    assert "capture" not in alpha


def test_emit_never_blocks_while_the_file_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    metrics = GuardMetrics()
    hub = AuditHub(JsonlAuditSink(path), queue_size=500, flush_interval=0.01,
                   on_drop=metrics.dropped)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process holds the file
        t0 = time.perf_counter()
        for i in range(2000):
            hub.emit({"event": "decision", "ts": float(i), "n": i})
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5, elapsed  # 2000 emits, queue overflowing, never waiting on the lock
        time.sleep(0.1)
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    hub.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    kept = [r for r in lines if r["event"] == "decision"]
    dropped = sum(r["count"] for r in lines if r["event"] == "audit.dropped")
    assert kept and dropped and len(kept) + dropped == 2000  # every record written or accounted for
    assert hub.dropped_total == dropped
    assert metrics.registry.get_sample_value("slg_audit_dropped_records_total",
                                             {"sink": "jsonl", "reason": "queue_full"}) == dropped
    assert verify_files([path]).ok


def test_close_flushes_everything(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    hub = AuditHub(JsonlAuditSink(path), flush_interval=5.0)  # the timer would not fire in time
    for i in range(50):
        hub.emit({"event": "decision", "ts": float(i)})
    hub.close()
    assert len(path.read_text().splitlines()) == 50


def test_atexit_flush_in_a_subprocess(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    code = ("from shared_guards.audit import AuditHub, JsonlAuditSink\n"
            f"h = AuditHub(JsonlAuditSink({str(path)!r}), flush_interval=30)\n"
            "for i in range(20): h.emit({'event': 'decision', 'ts': float(i)})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert len(path.read_text().splitlines()) == 20


def test_write_errors_are_retried_then_counted(tmp_path: Path) -> None:
    class Flaky(JsonlAuditSink):
        fails = 2

        def write_batch(self, records: Any) -> Any:
            if self.fails:
                self.fails -= 1
                raise OSError("disk full")
            return super().write_batch(records)

    path = tmp_path / "audit.jsonl"
    hub = AuditHub(Flaky(path), flush_interval=0.01)
    hub.emit({"event": "decision", "ts": 1.0})
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    hub.close()
    assert len(path.read_text().splitlines()) == 1


def test_a_dead_disk_is_counted_never_silent(tmp_path: Path) -> None:
    class Dead(JsonlAuditSink):
        def write_batch(self, records: Any) -> Any:
            raise OSError("read-only file system")

    drops: list[tuple[str, str, int]] = []
    hub = AuditHub(Dead(tmp_path / "a.jsonl"), flush_interval=0.01, on_drop=lambda *a: drops.append(a))
    for i in range(7):
        hub.emit({"event": "decision", "ts": float(i)})
    hub.close()
    hub.emit({"event": "decision", "ts": 99.0})  # after close
    assert sum(n for _, _, n in drops) == 8, drops
    assert {reason for _, reason, _ in drops} <= {"write_failed", "shutdown", "closed"}


def test_forked_child_keeps_auditing(tmp_path: Path) -> None:
    import os

    path = tmp_path / "audit.jsonl"
    hub = AuditHub(JsonlAuditSink(path), flush_interval=0.01)
    hub.emit({"event": "decision", "ts": 1.0, "who": "parent"})
    assert hub.flush(5)
    pid = os.fork()
    if pid == 0:  # a pre-forking server's worker
        try:
            for i in range(5):
                hub.emit({"event": "decision", "ts": 2.0 + i, "who": "child"})
            os._exit(0 if hub.flush(5) else 1)
        except BaseException:
            os._exit(2)
    for i in range(5):
        hub.emit({"event": "decision", "ts": 3.0 + i, "who": "parent"})
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    hub.close()
    who = [json.loads(x)["who"] for x in path.read_text().splitlines()]
    assert who.count("child") == 5 and who.count("parent") == 6
    assert verify_files([path]).ok


def test_hash_key_file_is_created_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    from shared_guards.audit import record as record_mod
    from shared_guards.policy import AuditSettings

    monkeypatch.delenv("SLG_AUDIT_HASH_KEY", raising=False)
    monkeypatch.delenv("SLG_AUDIT_PATH", raising=False)
    monkeypatch.setattr(record_mod, "_keys", {})
    settings = AuditSettings(path=str(tmp_path / "a" / "audit.jsonl"))
    key = record_mod.hash_key(settings)
    keyfile = tmp_path / "a" / "audit.key"
    assert len(key) == 64 and keyfile.read_bytes() == key
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    monkeypatch.setattr(record_mod, "_keys", {})
    assert record_mod.hash_key(settings) == key  # another process reads the same key
    assert [p.name for p in keyfile.parent.iterdir()] == ["audit.key"]
