"""Audit trail: one record per decision, hash-chained, never raw prompts or PII.

``decision_record`` builds the record from a decision; ``build_audit_sink`` builds the sink the
policy asks for. Sinks must never block or fail the request path.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared_guards.guard import RequestContext
    from shared_guards.policy import AuditSettings
    from shared_guards.types import Decision

GENESIS = "0" * 64


class AuditSink(Protocol):
    def emit(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def decision_record(decision: Decision, ctx: RequestContext | None, **extra: Any) -> dict[str, Any]:
    """The audit record of one decision: identities, rule ids, entity types, timings; no text."""
    identity = ctx.identity if ctx is not None else decision.request.identity
    rec: dict[str, Any] = {
        "ts": time.time(),
        "request_id": ctx.request_id if ctx is not None else decision.request.request_id,
        "gateway": identity.gateway,
        "identity": identity.audit_view(),
        "department": decision.department or (ctx.department if ctx is not None else ""),
        "model": decision.request.model,
        "stage": decision.stage.value,
        "decision": decision.action.value,
        "mode": decision.mode,
        "changed": decision.changed,
        "policy_version": decision.policy_version,
        "guards": [{"guard": t.guard, "ms": round(t.ms, 3), "outcome": t.outcome} for t in decision.timings],
        "findings": [f.audit_view() for f in decision.findings],
        "errors": list(decision.errors),
    }
    if decision.violation is not None:
        v = decision.violation
        rec["violation"] = {"status": v.http_status, "code": v.code, "rule_id": v.rule_id}
    rec.update(extra)
    return rec


class JsonlAuditSink:
    """Append-only JSONL with a hash chain: each record carries ``prev`` and its own ``hash``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._prev = self._last_hash()

    def _last_hash(self) -> str:
        try:
            with self.path.open("rb") as fh:
                last = b""
                for line in fh:
                    if line.strip():
                        last = line
            return str(json.loads(last)["hash"]) if last else GENESIS
        except (OSError, ValueError, KeyError):
            return GENESIS

    def emit(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            body = dict(record)
            body["prev"] = self._prev
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
            body["hash"] = hashlib.sha256(canonical.encode()).hexdigest()
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str) + "\n")
            self._prev = body["hash"]

    def close(self) -> None:
        return None


class NullAuditSink:
    def emit(self, record: Mapping[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


def build_audit_sink(settings: AuditSettings) -> AuditSink:
    if not settings.enabled:
        return NullAuditSink()
    return JsonlAuditSink(os.environ.get("SLG_AUDIT_PATH") or settings.path)
