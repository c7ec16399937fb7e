"""Prometheus metrics: counting from audit records, the exposition endpoint, port fallback for
several worker processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from shared_guards.metrics import GuardMetrics
from tests.audit_collector import free_port


def rec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event": "decision", "department": "rnd", "gateway": "litellm", "stage": "request",
                            "decision": "allow", "guards": [{"guard": "rbac", "ms": 0.2, "outcome": "ok"}],
                            "findings": [], "errors": [], "entities": {}}
    base.update(kw)
    return base


def test_counts_from_records() -> None:
    m = GuardMetrics()
    m.observe(rec())
    m.observe(rec(decision="block", violation={"rule_id": "quota.rpm", "status": 429},
                  findings=[{"guard": "quota", "rule_id": "quota.rpm"}],
                  guards=[{"guard": "rbac", "ms": 0.1, "outcome": "ok"}, {"guard": "quota", "ms": 1.5, "outcome": "ok"}]))
    m.observe(rec(department="finance", decision="modify", entities={"US_SSN": 2, "EMAIL_ADDRESS": 1},
                  findings=[{"guard": "pii", "rule_id": "pii.US_SSN"}] * 3,
                  guards=[{"guard": "pii", "ms": 7.0, "outcome": "ok"}]))
    m.observe(rec(decision="alert", errors=["pii"], guards=[{"guard": "pii", "ms": 2000.0, "outcome": "timeout"},
                                                             {"guard": "inj", "ms": 0.0, "outcome": "skipped"}]))
    m.observe({"event": "audit.rotate"})  # not a decision: ignored
    v = m.registry.get_sample_value
    assert v("slg_decisions_total", {"stage": "request", "action": "allow", "department": "rnd",
                                     "gateway": "litellm"}) == 1
    assert v("slg_decisions_total", {"stage": "request", "action": "block", "department": "rnd",
                                     "gateway": "litellm"}) == 1
    assert v("slg_quota_rejections_total", {"rule_id": "quota.rpm", "department": "rnd"}) == 1
    assert v("slg_blocks_total", {"rule_id": "quota.rpm", "status": "429", "department": "rnd"}) == 1
    assert v("slg_guard_actions_total", {"guard": "quota", "action": "block", "department": "rnd"}) == 1
    assert v("slg_pii_entities_total", {"entity_type": "US_SSN", "department": "finance"}) == 2
    assert v("slg_backend_errors_total", {"guard": "pii", "department": "rnd"}) == 1
    assert v("slg_guard_runs_total", {"guard": "pii", "outcome": "timeout", "department": "rnd"}) == 1
    assert v("slg_guard_runs_total", {"guard": "inj", "outcome": "skipped", "department": "rnd"}) == 1
    assert v("slg_guard_latency_seconds_count", {"guard": "rbac", "stage": "request"}) == 2
    assert v("slg_guard_latency_seconds_bucket", {"guard": "pii", "stage": "request", "le": "0.01"}) == 1
    assert v("slg_guard_latency_seconds_count", {"guard": "inj", "stage": "request"}) is None  # skipped: no latency
    m.dropped("siem", "queue_full", 4)
    assert v("slg_audit_dropped_records_total", {"sink": "siem", "reason": "queue_full"}) == 4


_SERVER = textwrap.dedent("""
    import sys, time, httpx
    from shared_guards.metrics import start_metrics_server, default_metrics
    from shared_guards.policy import MetricsSettings
    port = start_metrics_server(MetricsSettings(port=int(sys.argv[1]), port_span=4))
    assert start_metrics_server(MetricsSettings(port=int(sys.argv[1]))) == port  # once per process
    default_metrics().observe({"event": "decision", "department": "rnd", "gateway": "kong", "stage": "request",
                               "decision": "block", "violation": {"rule_id": "quota.rpm", "status": 429}})
    print(port, flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_metrics_server_and_port_fallback() -> None:
    base = free_port()
    first = subprocess.Popen([sys.executable, "-c", _SERVER, str(base), "20"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        port1 = int(first.stdout.readline())
        assert port1 == base
        body = httpx.get(f"http://127.0.0.1:{port1}/metrics", timeout=5).text
        assert 'slg_quota_rejections_total{department="rnd",rule_id="quota.rpm"} 1.0' in body
        # a second worker process with the same setting gets the next free port
        second = subprocess.run([sys.executable, "-c", _SERVER, str(base), "0"], capture_output=True, text=True,
                                timeout=60)
        port2 = int(second.stdout.split()[0])
        assert port2 != port1 and base < port2 < base + 4
    finally:
        first.kill()
        first.wait()


def test_env_port_wins_and_bad_env_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    import shared_guards.metrics as metrics_mod
    from shared_guards.policy import MetricsSettings

    monkeypatch.setenv("SLG_METRICS_PORT", "not-a-port")
    assert metrics_mod.start_metrics_server(MetricsSettings(port=9999), GuardMetrics()) is None
    assert "SLG_METRICS_PORT" in caplog.text
    monkeypatch.setenv("SLG_METRICS_PORT", "0")
    assert metrics_mod.start_metrics_server(MetricsSettings(port=9999), GuardMetrics()) is None
