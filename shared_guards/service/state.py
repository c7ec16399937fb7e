"""What every handler of the guard service shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared_guards.engine import GuardEngine
from shared_guards.errors import GuardViolation, MalformedRequest
from shared_guards.service.http import Metrics
from shared_guards.service.sessions import Sessions
from shared_guards.service.settings import ServiceSettings
from shared_guards.types import Decision, Finding

IDENTITY_HEADER_MAX = 256


@dataclass
class ServiceState:
    engine: GuardEngine
    settings: ServiceSettings
    sessions: Sessions
    metrics: Metrics


def findings_out(findings: tuple[Finding, ...]) -> list[dict[str, Any]]:
    return [f.audit_view() for f in findings]


def violation_out(v: GuardViolation | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"status": v.http_status, "rule_id": v.rule_id, "body": v.to_openai(), "headers": dict(v.headers)}


def decision_out(d: Decision) -> dict[str, Any]:
    return {
        "action": d.action.value,
        "blocked": d.blocked,
        "changed": d.changed,
        "findings": findings_out(d.findings),
        "violation": violation_out(d.violation),
        "headers": dict(d.headers),
        "errors": list(d.errors),
    }


def header_identity(headers: Mapping[str, str]) -> dict[str, Any]:
    """Identity fields from ``X-SLG-*`` headers (set by a trusted gateway)."""
    out: dict[str, Any] = {}
    for field, header in (("user", "x-slg-user"), ("team", "x-slg-team"), ("key_alias", "x-slg-key-alias"),
                          ("consumer", "x-slg-consumer"), ("department", "x-slg-department"),
                          ("tenant", "x-slg-tenant"), ("groups", "x-slg-groups")):
        value = headers.get(header)
        if value and len(value) > IDENTITY_HEADER_MAX:
            raise MalformedRequest(f"Header {header} is longer than {IDENTITY_HEADER_MAX} characters.",
                                   rule_id="request.schema", param=header)
        if value and field == "groups":
            out["groups"] = tuple(g.strip() for g in value.split(",") if g.strip())
        elif value:
            out[field] = value
    return out
