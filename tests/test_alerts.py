"""Alerts to a Slack-compatible webhook received by a local HTTP server: severity threshold,
repeated attacks, guard failures, dedup, rate limit, no PII in the text, never on the request path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_guards import GuardEngine, parse_chat_request
from shared_guards.alerts import AlertManager, subject_of
from shared_guards.metrics import GuardMetrics
from shared_guards.policy import AlertSettings
from tests.audit_collector import Collector


def rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event": "decision", "request_id": "req-1", "gateway": "kong", "department": "finance",
        "identity": {"user": "jane.doe@example.com", "consumer": "finance"}, "decision": "block",
        "severity": "high", "errors": [], "guards": [],
        "violation": {"status": 400, "rule_id": "inj.ignore_previous", "code": "content_policy_violation"},
    }
    base.update(kw)
    return base


@pytest.fixture
def hook() -> Iterator[Collector]:
    c = Collector().start()
    yield c
    c.stop()


def manager(hook: Collector, **kw: Any) -> AlertManager:
    return AlertManager(AlertSettings.model_validate({"webhook_url": hook.url + "/slack", **kw}), GuardMetrics())


def texts(hook: Collector) -> list[str]:
    return [json.loads(b)["text"] for b in hook.bodies()]


@pytest.mark.parametrize(
    ("min_severity", "severity", "alerted"),
    [("high", "high", True), ("high", "critical", True), ("high", "medium", False),
     ("medium", "medium", True), ("critical", "high", False)],
)
def test_block_severity_threshold(hook: Collector, min_severity: str, severity: str, alerted: bool) -> None:
    am = manager(hook, min_severity=min_severity, repeat_threshold=0)
    am.observe(rec(severity=severity))
    am.observe(rec(decision="allow", severity=severity, violation=None))
    am.flush()
    am.close()
    assert len(hook.posts) == (1 if alerted else 0)
    if alerted:
        (text,) = texts(hook)
        assert "inj.ignore_previous" in text and "finance" in text and "req-1" in text
        assert hook.posts[0][0] == "/slack"


def test_repeated_attacks_by_one_identity(hook: Collector) -> None:
    am = manager(hook, min_severity="critical", repeat_threshold=3, repeat_window_s=60)
    for _ in range(2):
        am.observe(rec(severity="medium"))
    am.observe(rec(severity="medium", identity={"consumer": "marketing"}))  # someone else
    am.observe(rec(severity="low", violation={"status": 429, "rule_id": "quota.rpm"}))  # quota: not an attack
    am.flush()
    assert hook.posts == []
    am.observe(rec(severity="medium"))
    am.flush()
    am.close()
    (text,) = texts(hook)
    assert "consumer:finance" in text and "blocked 3 times" in text


def test_guard_failures_alert(hook: Collector) -> None:
    am = manager(hook)
    am.observe(rec(decision="allow", violation=None, errors=["pii"],
                   guards=[{"guard": "pii", "outcome": "timeout", "ms": 2000}]))
    am.flush()
    am.close()
    (text,) = texts(hook)
    assert "guard failure" in text and "pii (timeout)" in text


def test_dedup_and_rate_limit(hook: Collector) -> None:
    am = manager(hook, max_per_minute=3, repeat_threshold=0)
    for _ in range(5):
        am.observe(rec())  # identical: one alert
    for i in range(6):
        am.observe(rec(violation={"status": 400, "rule_id": f"inj.r{i}"}))  # distinct: rate limited
    am.flush()
    am.close()
    assert len(hook.posts) == 3
    assert am.metrics is not None
    sample = am.metrics.registry.get_sample_value
    assert sample("slg_alerts_total", {"kind": "block", "result": "deduplicated"}) == 4
    assert sample("slg_alerts_total", {"kind": "block", "result": "rate_limited"}) == 4
    assert sample("slg_alerts_total", {"kind": "block", "result": "sent"}) == 3


def test_no_pii_in_alert_text(hook: Collector) -> None:
    am = manager(hook, min_severity="low")
    am.observe(rec(identity={"user": "jane.doe@example.com"}))
    am.flush()
    am.close()
    (text,) = texts(hook)
    assert "jane" not in text and "example.com" not in text
    assert subject_of({"identity": {"user": "jane.doe@example.com"}}) in text


def test_webhook_down_is_counted_not_raised() -> None:
    from tests.audit_collector import free_port

    am = AlertManager(AlertSettings(webhook_url=f"http://127.0.0.1:{free_port()}/x", timeout_ms=200), GuardMetrics())
    am.observe(rec())
    assert am.flush(5)
    am.close()
    assert am.metrics is not None
    assert am.metrics.registry.get_sample_value("slg_alerts_total", {"kind": "block", "result": "failed"}) == 1


def test_no_webhook_no_thread() -> None:
    am = AlertManager(AlertSettings())
    assert not am.enabled
    am.observe(rec())  # no-op
    am.close()


async def test_engine_alerts_on_injection_block_and_guard_failure(tmp_path: Path, hook: Collector) -> None:
    doc = {"version": "a1", "api_keys": [{"key": "sk-a", "department": "alpha", "key_alias": "alpha-key"}],
           "audit": {"path": str(tmp_path / "audit.jsonl"), "flush_interval_ms": 20},
           "alerts": {"webhook_url": hook.url + "/hook", "min_severity": "high", "repeat_threshold": 0},
           "departments": {"alpha": {"models": ["general"], "guards": [
               {"name": "tests.guards_for_tests:ExplodingGuard", "id": "boom", "on_error": "fail_open"}]}}}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    eng = GuardEngine(policy)
    ident = eng.authenticate_key("sk-a")
    assert ident is not None
    try:
        for _ in range(3):
            req = parse_chat_request({"model": "general", "messages": [
                {"role": "user", "content": "my SSN is 078-05-1120"}]}, ident)
            d, _ = await eng.check_request(req)
            assert d.action.value == "alert"  # fail_open: the request goes on
        assert hook.wait_for(lambda: len(hook.posts) >= 1, 10)
        eng.audit.close()
        (text,) = texts(hook)  # deduplicated: one alert for three identical failures
        assert "boom (error)" in text and "078-05" not in text
    finally:
        eng.close()
