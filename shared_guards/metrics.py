"""Prometheus metrics, fed from audit records in the audit thread (never on the request path).

One :class:`GuardMetrics` per process on its own ``CollectorRegistry`` (so LiteLLM's own
Prometheus metrics cannot clash). :func:`start_metrics_server` exposes it once per process on
``metrics.port`` (env ``SLG_METRICS_PORT`` wins); when the port is taken (several LiteLLM workers,
a multi-process Kong plugin server) the next free port up to ``port + port_span - 1`` is used and
logged, so every worker process is scraped on its own port.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from shared_guards.policy import MetricsSettings

log = logging.getLogger("shared_guards.metrics")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter("slg_decisions", "Pipeline decisions", ["stage", "action", "department", "gateway"],
                                 registry=r)
        self.guard_runs = Counter("slg_guard_runs", "Guard runs by outcome", ["guard", "outcome", "department"],
                                  registry=r)
        self.guard_actions = Counter("slg_guard_actions", "Findings and blocks by the guard that raised them",
                                     ["guard", "action", "department"], registry=r)
        self.guard_latency = Histogram("slg_guard_latency_seconds", "Guard latency", ["guard", "stage"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.blocks = Counter("slg_blocks", "Blocked requests/answers by rule", ["rule_id", "status", "department"],
                              registry=r)
        self.quota_rejections = Counter("slg_quota_rejections", "Quota rejections (rules quota.*)",
                                        ["rule_id", "department"], registry=r)
        self.backend_errors = Counter("slg_backend_errors", "Guard or backend failures (errors, timeouts)",
                                      ["guard", "department"], registry=r)
        self.pii_entities = Counter("slg_pii_entities", "Entities found", ["entity_type", "department"], registry=r)
        self.audit_dropped = Counter("slg_audit_dropped_records", "Audit records a sink could not keep",
                                     ["sink", "reason"], registry=r)
        self.audit_queue = Gauge("slg_audit_queue_depth", "Records waiting for the audit writer", registry=r)
        self.alerts = Counter("slg_alerts", "Alerts by result", ["kind", "result"], registry=r)

    def observe(self, rec: Mapping[str, Any]) -> None:
        """Count one audit record (decision records only)."""
        if rec.get("event") != "decision":
            return
        dep = str(rec.get("department") or "-")
        stage = str(rec.get("stage", ""))
        action = str(rec.get("decision", ""))
        self.decisions.labels(stage, action, dep, str(rec.get("gateway", ""))).inc()
        for g in rec.get("guards") or ():
            guard, outcome = str(g.get("guard")), str(g.get("outcome"))
            self.guard_runs.labels(guard, outcome, dep).inc()
            if outcome != "skipped":
                self.guard_latency.labels(guard, stage).observe(float(g.get("ms", 0.0)) / 1000)
        violation = rec.get("violation") or {}
        rule = str(violation.get("rule_id", ""))
        by_guard = {str(f.get("guard")) for f in rec.get("findings") or ()}
        for guard in by_guard:
            self.guard_actions.labels(guard, "finding", dep).inc()
        if action == "block":
            blocker = next((str(f.get("guard")) for f in rec.get("findings") or () if f.get("rule_id") == rule),
                           rule.split(".", 1)[0] or "-")
            self.guard_actions.labels(blocker, "block", dep).inc()
            self.blocks.labels(rule or "-", str(violation.get("status", "")), dep).inc()
            if rule.startswith("quota."):
                self.quota_rejections.labels(rule, dep).inc()
        for guard in rec.get("errors") or ():
            self.backend_errors.labels(str(guard), dep).inc()
        for entity, n in (rec.get("entities") or {}).items():
            self.pii_entities.labels(str(entity), dep).inc(int(n))

    def dropped(self, sink: str, reason: str, count: int) -> None:
        self.audit_dropped.labels(sink, reason).inc(count)


_default: GuardMetrics | None = None
_server_port: int | None = None
_lock = threading.Lock()


def default_metrics() -> GuardMetrics:
    """The process-wide metrics (one registry per process, like the metrics server)."""
    global _default
    with _lock:
        if _default is None:
            _default = GuardMetrics()
        return _default


def metrics_port() -> int | None:
    """The port this process serves metrics on, if started."""
    return _server_port


def start_metrics_server(settings: MetricsSettings, metrics: GuardMetrics | None = None) -> int | None:
    """Start the Prometheus endpoint once per process; returns the bound port or None when off."""
    global _server_port
    env = os.environ.get("SLG_METRICS_PORT", "").strip()
    try:
        port = int(env) if env else settings.port
    except ValueError:
        log.error("SLG_METRICS_PORT=%r is not a port number: metrics server not started", env)
        return None
    if not port:
        return None
    m = metrics or default_metrics()
    with _lock:
        if _server_port is not None:
            return _server_port
        for candidate in range(port, min(port + settings.port_span, 65536)):
            try:
                start_http_server(candidate, addr=settings.addr, registry=m.registry)
            except OSError:
                continue
            _server_port = candidate
            log.info("metrics on http://%s:%d/metrics (pid %d)", settings.addr, candidate, os.getpid())
            return candidate
    log.error("metrics: no free port in %d..%d", port, port + settings.port_span - 1)
    return None
