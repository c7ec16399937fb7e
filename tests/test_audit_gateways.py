"""The audit trail end to end through the real LiteLLM proxy and the real kong-pdk plugin server:
records for allowed, blocked, masked and failed requests; a SIEM that is down while requests flow
and receives everything once it is back; alerts on a local webhook; Prometheus metrics scraped
from the gateway process; no test PII value in any log, audit, SIEM, alert or metrics output;
`slg audit verify` and `slg report` on what the gateway wrote."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared_guards.cli import main
from tests.audit_collector import Collector, free_port

pytestmark = pytest.mark.slow

SSN, EMAIL, CARD = "536-90-4821", "jane.roe@example.com", "4111 1111 1111 1111"
PII_VALUES = [SSN, EMAIL, "4111111111111111", CARD, "Jane Roe"]
PII_TEXT = f"Customer Jane Roe, SSN {SSN}, email {EMAIL}, card {CARD}: draft a reply."
DEMO = Path(__file__).resolve().parents[1] / "config" / "policy.yaml"


@dataclass
class Setup:
    policy: Path
    siem: Collector
    webhook: Collector
    metrics_port: int


def _setup(tmp: Path) -> Setup:
    """The demo policy plus a failing department, an HTTP SIEM sink (down at first), alerts, and
    redacted prompt capture for finance (so the masked text is checked for leaks too)."""
    siem, webhook = Collector(), Collector().start()
    doc = yaml.safe_load(DEMO.read_text())
    doc["api_keys"].append({"key": "sk-audit-boom", "department": "boom", "key_alias": "boom-key"})
    doc["departments"]["boom"] = {"match": {"consumers": ["boom"]}, "models": ["general"], "guards": [
        {"name": "tests.guards_for_tests:ExplodingGuard", "id": "boom", "on_error": "fail_closed"}]}
    doc["audit"] = {"flush_interval_ms": 50, "capture_departments": {"finance": "redacted"},
                    "sinks": [{"type": "http", "name": "siem", "url": siem.url + "/ingest", "format": "json",
                               "flush_interval_ms": 50, "backoff_initial_ms": 100, "backoff_max_ms": 300,
                               "max_attempts": 0, "timeout_ms": 500}]}
    doc["alerts"] = {"webhook_url": webhook.url + "/hook", "min_severity": "medium", "repeat_threshold": 0}
    policy = tmp / "audit_policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return Setup(policy, siem, webhook, free_port())


def wait_records(read: Callable[[], list[dict[str, Any]]], pred: Callable[[list[dict[str, Any]]], bool],
                 timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        recs = read()
        if pred(recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def by_request(recs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["department"], r["stage"]): r for r in recs if r.get("event") == "decision"}


def assert_no_pii(*blobs: str) -> None:
    for blob in blobs:
        for value in PII_VALUES:
            assert value not in blob, f"test PII {value!r} leaked"


def check_trail(recs: list[dict[str, Any]], gateway: str) -> None:
    got = by_request(recs)
    allow = [r for r in recs if r.get("department") == "marketing" and r.get("stage") == "request"]
    assert [r["decision"] for r in allow] == ["allow", "block"] and allow[0]["gateway"] == gateway
    blocked = [r for r in recs if r.get("violation", {}).get("rule_id") == "rbac.model"]
    assert blocked and blocked[-1]["decision"] == "block" and blocked[-1]["violation"]["status"] == 403
    masked = got[("finance", "request")]
    assert masked["decision"] == "modify" and masked["changed"] is True
    assert {"US_SSN", "EMAIL_ADDRESS"} <= set(masked["entities"])
    assert [g["outcome"] for g in masked["guards"] if g["guard"] == "pii"] == ["ok"]
    assert masked["capture"]["mode"] == "redacted"  # the PII guard's output, not the raw prompt
    failed = got[("boom", "request")]
    assert failed["decision"] == "block" and failed["errors"] == ["boom"]
    assert failed["violation"]["status"] == 503 and failed["severity"] == "high"
    for r in recs:
        assert r["policy_version"].startswith("2026-") if r.get("event") == "decision" else True


def check_outputs(s: Setup, audit_path: Path, log_text: str, recs: list[dict[str, Any]], tmp: Path) -> None:
    # the SIEM was down during the requests: it gets every record once it is back
    s.siem.start()
    assert s.siem.wait_for(lambda: len(s.siem.json_items()) >= len(recs), 20), (len(s.siem.json_items()), len(recs))
    assert [r["hash"] for r in s.siem.json_items()][: len(recs)] == [r["hash"] for r in recs]
    # alerts: the guard failure and the 403 block
    assert s.webhook.wait_for(lambda: len(s.webhook.posts) >= 2, 10)
    alerts = [json.loads(b)["text"] for b in s.webhook.bodies()]
    assert any("guard failure" in a and "boom (error)" in a for a in alerts), alerts
    assert any("rbac.model" in a for a in alerts), alerts
    # metrics from the gateway process
    metrics = httpx.get(f"http://127.0.0.1:{s.metrics_port}/metrics", timeout=5).text
    assert 'slg_decisions_total{action="modify",department="finance"' in metrics
    assert 'slg_backend_errors_total{department="boom",guard="boom"}' in metrics
    assert 'slg_pii_entities_total{department="finance",entity_type="US_SSN"}' in metrics
    assert "slg_guard_latency_seconds_bucket" in metrics
    # nothing anywhere carries the test PII
    assert_no_pii(log_text, audit_path.read_text(), *(b.decode() for b in s.siem.bodies()), *alerts, metrics)
    # the chain verifies and a report can be built from it
    assert main(["audit", "verify", str(audit_path)]) == 0
    out = tmp / "report.html"
    assert main(["report", "--audit", str(audit_path), "--out", str(out), "--csv", str(tmp / "r.csv")]) == 0
    assert_no_pii(out.read_text(), (tmp / "r.csv").read_text())


@pytest.fixture(scope="module")
def litellm_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = _setup(tmp_path_factory.mktemp("audit_litellm"))
    yield s
    s.siem.stop()
    s.webhook.stop()


@pytest.fixture(scope="module")
def kong_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = _setup(tmp_path_factory.mktemp("audit_kong"))
    yield s
    s.siem.stop()
    s.webhook.stop()


def test_litellm_proxy_audit_trail(litellm_proxy_factory: Any, litellm_setup: Setup, tmp_path: Path) -> None:
    s = litellm_setup
    proxy = litellm_proxy_factory(s.policy, env={"SLG_METRICS_PORT": str(s.metrics_port)})
    ok = proxy.post_chat({"model": "general", "messages": [{"role": "user", "content": "a tagline"}]}, "sk-marketing")
    assert ok.status_code == 200
    t0 = time.monotonic()
    denied = proxy.post_chat({"model": "coder", "messages": [{"role": "user", "content": "x"}]}, "sk-marketing")
    assert denied.status_code == 403
    masked = proxy.post_chat({"model": "general", "messages": [{"role": "user", "content": PII_TEXT}]}, "sk-finance")
    assert masked.status_code == 200
    failed = proxy.post_chat({"model": "general", "messages": [{"role": "user", "content": PII_TEXT}]},
                             "sk-audit-boom")
    assert failed.status_code == 503
    assert time.monotonic() - t0 < 30  # the SIEM is down all along: no request waited for it
    recs = wait_records(proxy.audit_records, lambda rs: {("boom", "request"), ("finance", "response")}
                        <= set(by_request(rs)))
    check_trail(recs, "litellm")
    assert by_request(recs)[("finance", "response")]["decision"] in ("allow", "modify")
    check_outputs(s, proxy.audit_path, proxy.log_text(), recs, tmp_path)


def test_kong_plugin_server_audit_trail(kong_harness_factory: Any, kong_setup: Setup, tmp_path: Path) -> None:
    s = kong_setup
    h = kong_harness_factory(s.policy, env={"SLG_METRICS_PORT": str(s.metrics_port)})

    def chat(model: str, text: str) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": text}]}

    ok = h.access(chat("general", "a tagline"), "marketing")
    assert ok.exit_status is None
    assert h.access(chat("coder", "x"), "marketing").exit_status == 403
    masked = h.access(chat("general", PII_TEXT), "finance")
    assert masked.exit_status is None
    assert_no_pii(json.dumps(masked.forwarded_body))
    assert h.access(chat("general", PII_TEXT), "boom").exit_status == 503
    recs = wait_records(h.audit_records, lambda rs: ("boom", "request") in by_request(rs))
    check_trail(recs, "kong")
    check_outputs(s, h.audit_path, h.log_text(), recs, tmp_path)
