"""The audit record of one decision. Built on the request path, so it stays cheap and text-free.

By default a record holds identities, rule ids, entity types, counts, scores and timings, never
the prompt or the answer. Prompt capture is opt-in per department (``audit.capture`` /
``audit.capture_departments``):

- ``hashed``: keyed HMAC-SHA256 of each text (key from ``$SLG_AUDIT_HASH_KEY``, else a random key
  created once in ``<audit dir>/audit.key``), so equal prompts correlate without being readable;
- ``redacted``: the request text as the PII guard left it: only when that guard ran successfully on
  this request and either changed it or found nothing. In every other case (guard absent, failed,
  skipped, in alert-only mode, request blocked) the record falls back to ``hashed``. Answers are
  always hashed under ``redacted`` (the PII guard restores real values into answers);
- ``full``: raw text, refused at policy load unless the department is in ``full_capture_allowed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared_guards.types import Action, Decision, Finding, Identity, Stage

if TYPE_CHECKING:
    from shared_guards.guard import RequestContext
    from shared_guards.policy import AuditSettings

SCHEMA_VERSION = 1
DECISION_EVENT = "decision"
_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
# Severity of a block that carries no findings, by HTTP status.
_STATUS_SEVERITY = {401: "medium", 403: "medium", 429: "low", 503: "high"}


_IDENTITY_FIELDS = [f.name for f in dataclasses.fields(Identity)]
_FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]


def _identity_view(identity: Identity) -> dict[str, Any]:
    """``Identity.audit_view`` without ``dataclasses.asdict``'s deep copy (hot path)."""
    out: dict[str, Any] = {}
    for name in _IDENTITY_FIELDS:
        v = getattr(identity, name)
        if v is not None and v != ():
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def _finding_view(f: Finding) -> dict[str, Any]:
    """``Finding.audit_view`` without the deep copy: offsets, types and scores, never text."""
    out: dict[str, Any] = {}
    for name in _FINDING_FIELDS:
        v = getattr(f, name)
        if v != "" and v != -1:
            out[name] = v
    return out


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 1)


def _severity(decision: Decision) -> str:
    if decision.action is Action.ALLOW and not decision.findings and not decision.errors:
        return "info"
    sev = "low" if decision.action in (Action.ALLOW, Action.MODIFY) else "medium"
    if decision.violation is not None and not decision.findings:
        sev = _STATUS_SEVERITY.get(decision.violation.http_status, "medium")
    for f in decision.findings:
        if severity_rank(f.severity) > severity_rank(sev):
            sev = f.severity
    if decision.errors and severity_rank(sev) < severity_rank("high"):
        sev = "high"
    return sev


def decision_record(
    decision: Decision, ctx: RequestContext | None, audit: AuditSettings | None = None, **extra: Any
) -> dict[str, Any]:
    """The audit record of one decision: identities, rule ids, entity types, timings; no text
    unless ``audit`` asks for prompt capture for this department."""
    identity = ctx.identity if ctx is not None else decision.request.identity
    findings = [_finding_view(f) for f in decision.findings]
    rules = Counter(f.rule_id for f in decision.findings)
    entities = Counter(f.entity_type for f in decision.findings if f.entity_type)
    department = decision.department or (ctx.department if ctx is not None else "")
    rec: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "event": DECISION_EVENT,
        "ts": time.time(),
        "request_id": ctx.request_id if ctx is not None else decision.request.request_id,
        "gateway": identity.gateway,
        "identity": _identity_view(identity),
        "department": department,
        "model": decision.request.model,
        "stage": decision.stage.value,
        "decision": decision.action.value,
        "severity": _severity(decision),
        "mode": decision.mode,
        "changed": decision.changed,
        "policy_version": decision.policy_version,
        "guards": [{"guard": t.guard, "ms": round(t.ms, 3), "outcome": t.outcome} for t in decision.timings],
        "findings": findings,
        "rules": dict(rules),
        "entities": dict(entities),
        "errors": list(decision.errors),
    }
    if decision.violation is not None:
        v = decision.violation
        rec["violation"] = {"status": v.http_status, "code": v.code, "rule_id": v.rule_id}
    if audit is not None and department:
        capture = prompt_capture(decision, ctx, audit, department)
        if capture is not None:
            rec["capture"] = capture
    rec.update(extra)
    return rec


# -- prompt capture --------------------------------------------------------------------------------

_key_lock = threading.Lock()
_keys: dict[tuple[str, str], bytes] = {}


def hash_key(audit: AuditSettings) -> bytes:
    """The HMAC key: ``$<hash_key_env>``, else ``<audit dir>/audit.key`` (created once, mode 0600)."""
    env_name = audit.hash_key_env
    cache_key = (env_name, audit.path)
    key = _keys.get(cache_key)
    if key is not None:
        return key
    with _key_lock:
        env_val = os.environ.get(env_name)
        if env_val:
            key = env_val.encode()
        else:
            path = Path(os.environ.get("SLG_AUDIT_PATH") or audit.path).with_name("audit.key")
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # write a complete key file, then link it in: racing processes agree
                tmp = path.with_name(f".audit.key.{os.getpid()}.{secrets.token_hex(4)}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_hex(32).encode())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    pass
                finally:
                    os.unlink(tmp)
            key = path.read_bytes().strip()
        _keys[cache_key] = key
        return key


def _hmac(key: bytes, text: str) -> str:
    return "hmac-sha256:" + hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _request_texts(decision: Decision, ctx: RequestContext | None, original: bool) -> list[tuple[int, str, str]]:
    req = decision.request
    if original and ctx is not None and ctx.original_request is not None:
        req = ctx.original_request
    return [(i, role.value, text) for i, role, text in req.texts()]


def _redaction_applied(decision: Decision, audit: AuditSettings) -> bool:
    """True only when a redaction guard ran OK on this request and masked or found nothing."""
    if decision.action is Action.BLOCK:
        return False
    ran = [t for t in decision.timings if t.guard in audit.redaction_guards]
    if not ran or any(t.outcome != "ok" for t in ran):
        return False
    found = any(f.guard in audit.redaction_guards for f in decision.findings)
    return decision.changed or not found


def prompt_capture(
    decision: Decision, ctx: RequestContext | None, audit: AuditSettings, department: str
) -> dict[str, Any] | None:
    from shared_guards.policy import CaptureMode  # local: policy imports the registry

    mode = audit.capture_for(department)
    if mode is CaptureMode.NONE:
        return None
    if mode is CaptureMode.FULL and department not in audit.full_capture_allowed:  # defence in depth
        mode = CaptureMode.HASHED
    if decision.stage is Stage.RESPONSE:
        texts = [(c.index, "assistant", c.text) for c in (decision.response.choices if decision.response else ())
                 if c.text]
        if mode is CaptureMode.FULL:
            return {"mode": "full", "texts": [{"i": i, "role": r, "text": t} for i, r, t in texts]}
        key = hash_key(audit)
        return {"mode": "hashed", "texts": [{"i": i, "role": r, "hash": _hmac(key, t)} for i, r, t in texts]}
    if mode is CaptureMode.FULL:
        texts = _request_texts(decision, ctx, original=True)
        return {"mode": "full", "texts": [{"i": i, "role": r, "text": t} for i, r, t in texts]}
    if mode is CaptureMode.REDACTED and _redaction_applied(decision, audit):
        texts = _request_texts(decision, ctx, original=False)
        return {"mode": "redacted", "texts": [{"i": i, "role": r, "text": t} for i, r, t in texts]}
    key = hash_key(audit)
    texts = _request_texts(decision, ctx, original=True)
    out: dict[str, Any] = {"mode": "hashed", "texts": [{"i": i, "role": r, "hash": _hmac(key, t)} for i, r, t in texts]}
    if mode is CaptureMode.REDACTED:
        out["fallback"] = "no successful redaction on this request"
    return out
