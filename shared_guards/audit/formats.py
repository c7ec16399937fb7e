"""SIEM shapes of an audit record: CEF (syslog), OCSF, Splunk HEC, Elastic bulk.

OCSF mapping (schema 1.1.0), documented in docs/audit.md:

- a decision with findings, a block or guard errors -> **Detection Finding** (``class_uid`` 2004,
  category 2 Findings), ``activity_id`` 1 Create, ``finding_info.types`` = rule ids;
- any other decision (allowed, nothing found) -> **API Activity** (``class_uid`` 6003, category 6
  Application Activity), ``activity_id`` 1 Create, ``api.operation`` = ``chat.completions``;
- ``action_id`` 1 Allowed / 2 Denied; ``disposition_id`` 1 Allowed, 2 Blocked, 99 Other with
  ``disposition`` "Modified" for masked requests;
- ``severity_id``: 1 Informational/low ... 5 Critical; ``metadata.uid`` is the record's chain hash.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

PRODUCT = {"name": "secure-llm-gateway", "vendor_name": "secure-llm-gateway", "version": "0.1.0"}
OCSF_VERSION = "1.1.0"
_OCSF_SEVERITY = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
_CEF_SEVERITY = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}


def _subject(rec: Mapping[str, Any]) -> dict[str, Any]:
    ident = rec.get("identity") or {}
    return ident if isinstance(ident, dict) else {}


def is_finding(rec: Mapping[str, Any]) -> bool:
    return bool(rec.get("findings") or rec.get("violation") or rec.get("errors"))


def to_ocsf(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Map one audit record to an OCSF Detection Finding or API Activity event."""
    ident = _subject(rec)
    ts_ms = int(float(rec.get("ts", 0)) * 1000)
    decision = str(rec.get("decision", ""))
    blocked = decision == "block"
    severity = str(rec.get("severity", "info"))
    user = {k: v for k, v in {"name": ident.get("user"), "uid": ident.get("key_alias") or ident.get("consumer"),
                              "groups": [{"name": g} for g in ident.get("groups", [])] or None,
                              "org": {"name": rec.get("department")}}.items() if v}
    common: dict[str, Any] = {
        "activity_id": 1,
        "time": ts_ms,
        "severity_id": _OCSF_SEVERITY.get(severity, 3),
        "severity": severity.capitalize(),
        "status_id": 2 if blocked else 1,
        "status": "Failure" if blocked else "Success",
        "action_id": 2 if blocked else 1,
        "action": "Denied" if blocked else "Allowed",
        "disposition_id": 2 if blocked else (99 if decision == "modify" else 1),
        "disposition": "Blocked" if blocked else ("Modified" if decision == "modify" else "Allowed"),
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": rec.get("hash"),
                     "correlation_uid": rec.get("request_id"), "log_name": "slg-audit",
                     "labels": [f"policy:{rec.get('policy_version', '')}", f"stage:{rec.get('stage', '')}"]},
        "actor": {"user": user},
        "api": {"operation": "chat.completions", "service": {"name": rec.get("gateway", "")},
                "request": {"uid": rec.get("request_id")}},
        "unmapped": {k: rec[k] for k in ("model", "department", "guards", "errors", "seq", "prev", "rules", "entities")
                     if k in rec},
    }
    if not is_finding(rec):
        return {"class_uid": 6003, "class_name": "API Activity", "category_uid": 6,
                "category_name": "Application Activity", "type_uid": 600301, **common}
    violation = rec.get("violation") or {}
    rule_ids = sorted(set(rec.get("rules") or {}) | ({violation["rule_id"]} if violation.get("rule_id") else set()))
    title = f"LLM {rec.get('stage', 'request')} {decision}: {', '.join(rule_ids) or 'guard error'}"
    return {
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "category_name": "Findings",
        "type_uid": 200401,
        "finding_info": {"uid": f"{rec.get('request_id')}:{rec.get('stage')}", "title": title, "types": rule_ids,
                         "analytic": {"name": "secure-llm-gateway guards", "type_id": 1, "type": "Rule"}},
        "evidences": [{"data": {"entity_counts": rec.get("entities", {}), "findings": rec.get("findings", [])}}],
        **common,
    }


# -- CEF --------------------------------------------------------------------------------------------

def _cef_header(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cef_ext(s: str) -> str:
    return s.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def to_cef(rec: Mapping[str, Any]) -> str:
    """``CEF:0|vendor|product|version|signature|name|severity|extension`` for one record."""
    ident = _subject(rec)
    violation = rec.get("violation") or {}
    decision = str(rec.get("decision", ""))
    sig = violation.get("rule_id") or (next(iter(rec.get("rules") or {}), "") or f"decision.{decision}")
    name = f"LLM {rec.get('stage', '')} {decision}"
    sev = _CEF_SEVERITY.get(str(rec.get("severity", "info")), 5)
    ext = {
        "rt": str(int(float(rec.get("ts", 0)) * 1000)),
        "act": decision,
        "suser": ident.get("user") or ident.get("consumer") or "",
        "cs1Label": "department", "cs1": str(rec.get("department", "")),
        "cs2Label": "model", "cs2": str(rec.get("model", "")),
        "cs3Label": "gateway", "cs3": str(rec.get("gateway", "")),
        "cs4Label": "rules", "cs4": ",".join(sorted(rec.get("rules") or {})),
        "cs5Label": "entities", "cs5": ",".join(f"{k}:{v}" for k, v in sorted((rec.get("entities") or {}).items())),
        "cs6Label": "policyVersion", "cs6": str(rec.get("policy_version", "")),
        "externalId": str(rec.get("request_id", "")),
        "cn1Label": "seq", "cn1": str(rec.get("seq", "")),
        "fileHash": str(rec.get("hash", "")),
    }
    if violation:
        ext["outcome"] = str(violation.get("status", ""))
    body = " ".join(f"{k}={_cef_ext(v)}" for k, v in ext.items() if v != "")
    head = "|".join(_cef_header(x) for x in ("CEF:0", PRODUCT["vendor_name"], PRODUCT["name"], PRODUCT["version"],
                                             str(sig), name, str(sev)))
    return f"{head}|{body}"


def syslog_line(rec: Mapping[str, Any], hostname: str | None = None) -> str:
    """RFC 5424 syslog line carrying a CEF message (facility local0, severity from the record)."""
    sev = {"critical": 2, "high": 3, "medium": 4, "low": 5}.get(str(rec.get("severity", "")), 6)
    pri = 16 * 8 + sev
    ts = datetime.fromtimestamp(float(rec.get("ts", 0)), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = hostname or socket.gethostname()
    return f"<{pri}>1 {ts} {host} slg - audit - {to_cef(rec)}"


# -- HTTP bodies ------------------------------------------------------------------------------------

def splunk_hec_body(records: list[dict[str, Any]], sourcetype: str) -> bytes:
    return "".join(json.dumps({"time": r.get("ts"), "sourcetype": sourcetype, "source": "secure-llm-gateway",
                               "event": r}, separators=(",", ":"), default=str) for r in records).encode()


def elastic_bulk_body(records: list[dict[str, Any]], index: str) -> bytes:
    lines: list[str] = []
    for r in records:
        action = {"create": {"_index": index, **({"_id": r["hash"]} if r.get("hash") else {})}}
        lines.append(json.dumps(action, separators=(",", ":")))
        doc = dict(r)
        doc["@timestamp"] = datetime.fromtimestamp(float(r.get("ts", 0)), UTC).isoformat()
        lines.append(json.dumps(doc, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n").encode()
