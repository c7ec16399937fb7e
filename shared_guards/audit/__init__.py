"""Audit trail: one record per decision, hash-chained, never raw prompts or PII by default.

``decision_record`` builds the record from a decision (on the request path, cheap, text-free);
``build_audit_sink`` builds what the engine emits into: an :class:`AuditHub` that queues records
and, in a background thread, writes the JSONL system of record (:mod:`.jsonl`), feeds the SIEM
sinks (:mod:`.sinks`), the Prometheus metrics and the alerts. Sinks never block or fail the
request path. ``slg audit verify`` checks the chain (:mod:`.chain`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared_guards.audit.chain import GENESIS, VerifyResult, verify_files
from shared_guards.audit.hub import AuditHub, flush_all
from shared_guards.audit.jsonl import JsonlAuditSink, rotated_files
from shared_guards.audit.record import decision_record

if TYPE_CHECKING:
    from shared_guards.policy import AuditSettings, Policy

log = logging.getLogger("shared_guards.audit")

__all__ = [
    "GENESIS",
    "AuditHub",
    "AuditSink",
    "JsonlAuditSink",
    "NullAuditSink",
    "VerifyResult",
    "audit_path",
    "build_audit_sink",
    "decision_record",
    "flush_all",
    "rotated_files",
    "verify_files",
]


class AuditSink(Protocol):
    def emit(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullAuditSink:
    def emit(self, record: Mapping[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


def audit_path(settings: AuditSettings) -> str:
    """The JSONL path: ``$SLG_AUDIT_PATH`` if set, else ``audit.path`` (relative to the cwd)."""
    return os.environ.get("SLG_AUDIT_PATH") or settings.path


def build_audit_sink(settings: AuditSettings | Policy) -> AuditSink:
    """The engine's audit sink. Given the whole policy, alerts and metrics are wired in too and the
    metrics server is started (once per process) when ``metrics.port`` / ``SLG_METRICS_PORT`` is set."""
    from shared_guards.alerts import AlertManager
    from shared_guards.audit.sinks import build_remote_sink
    from shared_guards.metrics import default_metrics, start_metrics_server
    from shared_guards.policy import AlertSettings, MetricsSettings, Policy

    if isinstance(settings, Policy):
        audit, alert_settings, metrics_settings = settings.audit, settings.alerts, settings.metrics
    else:
        audit, alert_settings, metrics_settings = settings, AlertSettings(), MetricsSettings()
    metrics = default_metrics()
    start_metrics_server(metrics_settings, metrics)
    alerts = AlertManager(alert_settings, metrics)

    def on_drop(sink: str, reason: str, count: int) -> None:
        metrics.dropped(sink, reason, count)
        alerts.system("audit_dropped", f"{sink}:{reason}",
                      f"audit sink {sink} dropped {count} record(s) ({reason}); the JSONL file keeps them"
                      if sink != "jsonl" else f"{count} audit record(s) lost before the JSONL file ({reason})")

    jsonl = JsonlAuditSink(audit_path(audit), max_bytes=audit.max_bytes, fsync=audit.fsync) if audit.enabled else None
    sinks = [build_remote_sink(spec, on_drop) for spec in audit.sinks] if audit.enabled else []

    def queue_depth(rec: Mapping[str, Any]) -> None:
        metrics.audit_queue.set(hub.pending())

    hub = AuditHub(jsonl, sinks, [metrics.observe, alerts.observe, queue_depth],
                   queue_size=audit.queue_size, batch_size=audit.batch_size,
                   flush_interval=audit.flush_interval_ms / 1000, on_drop=on_drop, closers=[alerts.close])
    return hub
