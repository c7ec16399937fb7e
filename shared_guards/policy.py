"""The policy: one YAML file, validated once at load, shared by every gateway.

Every model forbids unknown keys; errors name the field path (``departments.rnd.guards[1].options.
threshold``). :class:`PolicyStore` reloads the file when it changes and keeps the last good policy
when an edit is invalid.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from shared_guards.errors import ConfigError, PolicyError
from shared_guards.filewatch import FileWatch
from shared_guards.guard import GuardConfig
from shared_guards.registry import get_guard_class
from shared_guards.types import Feature, Identity

log = logging.getLogger("shared_guards.policy")


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"  # decide and record, never block


class OnError(StrEnum):
    FAIL_OPEN = "fail_open"
    FAIL_CLOSED = "fail_closed"


class GuardAction(StrEnum):
    BLOCK = "block"
    ALERT = "alert"
    LOG = "log"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardSpec(_Model):
    """One guard in a department's pipeline."""

    name: str = Field(description="Registered guard name (see `slg policy schema`).")
    id: str | None = Field(None, description="Instance id for audit records; defaults to name.")
    action: GuardAction = GuardAction.BLOCK
    on_error: OnError | None = Field(None, description="Defaults to the department's, then defaults'.")
    timeout_ms: int = Field(2000, gt=0, le=120_000)
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def guard_id(self) -> str:
        return self.id or self.name


class Match(_Model):
    """Identities that belong to a department. Any match wins."""

    teams: list[str] = Field(default_factory=list, description="LiteLLM team id or alias.")
    users: list[str] = Field(default_factory=list)
    key_aliases: list[str] = Field(default_factory=list)
    consumers: list[str] = Field(default_factory=list, description="Kong consumer username or custom_id.")
    consumer_groups: list[str] = Field(default_factory=list, description="Kong consumer groups / IdP groups.")


_GLOB_OK = re.compile(r"^[A-Za-z0-9_.:/@*?\[\]!-]+$")


def _check_glob(pattern: str) -> str:
    if not pattern or not _GLOB_OK.match(pattern):
        raise ValueError(f"bad model glob {pattern!r}: use letters, digits, '-_.:/@' and the wildcards * ? [...]")
    depth = 0
    for ch in pattern:
        if ch == "[":
            if depth:
                raise ValueError(f"bad model glob {pattern!r}: nested '['")
            depth = 1
        elif ch == "]" and depth:
            depth = 0
    if depth:
        raise ValueError(f"bad model glob {pattern!r}: unclosed '['")
    return pattern


class DepartmentPolicy(_Model):
    description: str = ""
    match: Match = Field(default_factory=Match)
    mode: Mode | None = None
    on_error: OnError | None = None
    models: list[str] = Field(default_factory=list, description="Allowed model names or globs.")
    deny_features: list[Feature] = Field(default_factory=list)
    max_tokens: int | None = Field(None, gt=0)
    inherit_default_guards: bool = Field(True, description="Start from defaults.guards.")
    guards: list[GuardSpec] = Field(
        default_factory=list,
        description="Added to defaults.guards; an entry with the same id replaces the default one.",
    )

    @field_validator("models")
    @classmethod
    def _globs(cls, v: list[str]) -> list[str]:
        return [_check_glob(p) for p in v]

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, p) for p in self.models)


class ApiKey(_Model):
    """An API key for deployments without LiteLLM's database (``custom_auth``)."""

    key: SecretStr | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    department: str
    user: str | None = None
    key_alias: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ApiKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self

    def digest(self) -> str:
        if self.key_sha256:
            return self.key_sha256
        assert self.key is not None
        return hashlib.sha256(self.key.get_secret_value().encode()).hexdigest()


class Defaults(_Model):
    unknown_identity: str = Field("deny", description="'deny' or the name of a department.")
    mode: Mode = Mode.ENFORCE
    on_error: OnError = OnError.FAIL_CLOSED
    guards: list[GuardSpec] = Field(default_factory=list)


class CaptureMode(StrEnum):
    """How much of the prompt an audit record keeps (see docs/audit.md)."""

    NONE = "none"  # rule ids, entity types and counts only (default)
    HASHED = "hashed"  # keyed HMAC-SHA256 of each text, for correlation without content
    REDACTED = "redacted"  # the text after the PII guard's masking, else hashed
    FULL = "full"  # raw text: only for departments listed in audit.full_capture_allowed


class SinkType(StrEnum):
    SYSLOG_CEF = "syslog_cef"
    HTTP = "http"
    OCSF_FILE = "ocsf_file"


class HttpFormat(StrEnum):
    JSON = "json"  # a JSON array of audit records
    SPLUNK_HEC = "splunk_hec"  # Splunk HTTP Event Collector (/services/collector/event)
    ELASTIC_BULK = "elastic_bulk"  # Elasticsearch / OpenSearch _bulk NDJSON
    OCSF = "ocsf"  # a JSON array of OCSF events


class AuditSinkSpec(_Model):
    """A SIEM sink fed from the audit queue in the background (never on the request path)."""

    type: SinkType
    name: str | None = Field(None, description="Label for metrics and alerts; defaults to the type.")
    host: str = Field("127.0.0.1", description="syslog_cef: syslog server host.")
    port: int | None = Field(None, gt=0, lt=65536, description="syslog_cef: syslog server port (514).")
    protocol: str = Field("udp", pattern="^(udp|tcp)$", description="syslog_cef: udp or tcp.")
    url: str | None = Field(None, pattern="^https?://", description="http: endpoint URL.")
    format: HttpFormat = HttpFormat.JSON
    token_env: str | None = Field(None, description="http: environment variable holding the token.")
    index: str = Field("slg-audit", description="http elastic_bulk: index; splunk_hec: sourcetype prefix.")
    path: str | None = Field(None, description="ocsf_file: JSONL file of OCSF events.")
    queue_size: int = Field(10_000, gt=0, le=1_000_000)
    batch_size: int = Field(200, gt=0, le=10_000)
    flush_interval_ms: int = Field(500, gt=0, le=60_000)
    timeout_ms: int = Field(2000, gt=0, le=60_000)
    max_attempts: int = Field(12, ge=0, description="Send attempts per batch before it is dropped (0 = forever).")
    backoff_initial_ms: int = Field(500, gt=0)
    backoff_max_ms: int = Field(30_000, gt=0)

    @model_validator(mode="after")
    def _needed(self) -> AuditSinkSpec:
        if self.type is SinkType.SYSLOG_CEF and self.port is None:
            raise ValueError("syslog_cef sink needs port")
        if self.type is SinkType.HTTP and not self.url:
            raise ValueError("http sink needs url")
        if self.type is SinkType.OCSF_FILE and not self.path:
            raise ValueError("ocsf_file sink needs path")
        return self

    @property
    def label(self) -> str:
        return self.name or self.type.value


class AuditSettings(_Model):
    path: str = Field("var/audit.jsonl", description="JSONL file, relative to the working directory.")
    enabled: bool = True
    max_bytes: int = Field(100_000_000, ge=0, description="Rotate the JSONL file past this size (0 = never).")
    queue_size: int = Field(50_000, gt=0, le=10_000_000, description="Records waiting for the writer thread.")
    flush_interval_ms: int = Field(200, gt=0, le=60_000)
    batch_size: int = Field(500, gt=0, le=100_000)
    fsync: bool = Field(False, description="fsync the JSONL file after every batch.")
    capture: CaptureMode = Field(CaptureMode.NONE, description="Prompt capture for every department.")
    capture_departments: dict[str, CaptureMode] = Field(default_factory=dict, description="Per-department override.")
    full_capture_allowed: list[str] = Field(
        default_factory=list, description="Departments explicitly allowed `full` capture (e.g. a sandbox)."
    )
    redaction_guards: list[str] = Field(["pii"], description="Guard ids whose output counts as redacted text.")
    hash_key_env: str = Field("SLG_AUDIT_HASH_KEY", description="Environment variable with the HMAC key.")
    sinks: list[AuditSinkSpec] = Field(default_factory=list)

    def capture_for(self, department: str) -> CaptureMode:
        return self.capture_departments.get(department, self.capture)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class AlertSettings(_Model):
    webhook_url: str | None = Field(None, pattern="^https?://", description="Slack-compatible webhook; env SLG_ALERT_WEBHOOK overrides.")
    min_severity: Severity = Field(Severity.HIGH, description="Alert on blocks at or above this severity.")
    repeat_threshold: int = Field(5, ge=0, description="Alert when one identity is blocked this often (0 = off).")
    repeat_window_s: float = Field(60.0, gt=0)
    on_errors: bool = Field(True, description="Alert on guard or backend failures.")
    dedup_window_s: float = Field(300.0, ge=0, description="Identical alerts are sent once per window.")
    max_per_minute: int = Field(20, gt=0, description="Rate limit for webhook posts.")
    timeout_ms: int = Field(3000, gt=0, le=60_000)


class MetricsSettings(_Model):
    port: int | None = Field(None, ge=0, lt=65536, description="Prometheus port (env SLG_METRICS_PORT); unset = off.")
    addr: str = Field("127.0.0.1", description="Bind address of the metrics server.")
    port_span: int = Field(16, ge=1, le=1024, description="Try port .. port+span-1 (one per worker process).")


class VerdictCacheSettings(_Model):
    """Reuse of content-guard verdicts for identical content (see docs/quotas.md)."""

    enabled: bool = True
    max_entries: int = Field(10_000, ge=0, le=10_000_000, description="In-process LRU size (0 disables it).")
    ttl_seconds: float = Field(300.0, gt=0, le=86_400)
    redis: bool = Field(False, description="Also share verdicts through Redis (when a Redis is configured).")


class BackendSettings(_Model):
    redis_url: str | None = Field(None, description="Overridden by the REDIS_URL environment variable.")
    redis_timeout_ms: int = Field(50, gt=0, le=10_000)
    key_prefix: str = "slg:"
    redis_pool_size: int = Field(64, gt=0, le=10_000, description="Connections per process and event loop.")
    redis_cluster: bool = Field(False, description="Connect with the Redis Cluster client.")
    breaker_failures: int = Field(3, gt=0, le=1000, description="Consecutive failures that open the circuit.")
    breaker_max_backoff_ms: int = Field(5000, gt=0, le=600_000, description="Longest wait between probes.")
    verdict_cache: VerdictCacheSettings = Field(default_factory=VerdictCacheSettings)


class Policy(_Model):
    version: str = "1"
    defaults: Defaults = Field(default_factory=Defaults)
    departments: dict[str, DepartmentPolicy]
    api_keys: list[ApiKey] = Field(default_factory=list)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    backends: BackendSettings = Field(default_factory=BackendSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @model_validator(mode="after")
    def _references(self) -> Policy:
        names = set(self.departments)
        if self.defaults.unknown_identity != "deny" and self.defaults.unknown_identity not in names:
            raise ValueError(f"defaults.unknown_identity: unknown department {self.defaults.unknown_identity!r}")
        for i, k in enumerate(self.api_keys):
            if k.department not in names:
                raise ValueError(f"api_keys[{i}].department: unknown department {k.department!r}")
        for dep in [*self.audit.capture_departments, *self.audit.full_capture_allowed]:
            if dep not in names:
                raise ValueError(f"audit: unknown department {dep!r}")
        for dep in names:
            if self.audit.capture_for(dep) is CaptureMode.FULL and dep not in self.audit.full_capture_allowed:
                raise ValueError(f"audit: full prompt capture for {dep!r} needs audit.full_capture_allowed: [{dep}]")
        return self

    def guards_for(self, department: str) -> list[GuardSpec]:
        """The department's effective guard list: defaults (unless not inherited), with entries of
        the same id replaced by the department's, then the department's own; disabled ones dropped."""
        dep = self.departments[department]
        merged: dict[str, GuardSpec] = {}
        if dep.inherit_default_guards:
            merged = {s.guard_id: s for s in self.defaults.guards}
        for s in dep.guards:
            merged[s.guard_id] = s
        return [s for s in merged.values() if s.enabled]

    def mode_for(self, department: str) -> Mode:
        return self.departments[department].mode or self.defaults.mode

    def on_error_for(self, department: str, spec: GuardSpec) -> OnError:
        return spec.on_error or self.departments[department].on_error or self.defaults.on_error

    def resolve(self, identity: Identity) -> str | None:
        """The department an identity belongs to, or None when unknown."""
        if identity.department:
            return identity.department if identity.department in self.departments else None
        checks: list[tuple[str, tuple[str, ...]]] = [
            ("key_aliases", (identity.key_alias,) if identity.key_alias else ()),
            ("users", (identity.user,) if identity.user else ()),
            ("teams", (identity.team,) if identity.team else ()),
            ("consumers", (identity.consumer,) if identity.consumer else ()),
            ("consumer_groups", identity.groups),
        ]
        for field_name, values in checks:
            for name, dep in self.departments.items():
                allowed = getattr(dep.match, field_name)
                if any(v in allowed for v in values):
                    return name
        if identity.team and identity.team in self.departments:
            return identity.team
        if self.defaults.unknown_identity != "deny":
            return self.defaults.unknown_identity
        return None

    def lookup_key(self, api_key: str) -> ApiKey | None:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        for k in self.api_keys:
            if hmac.compare_digest(k.digest(), digest):
                return k
        return None


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    version: str  # "<policy.version>+<content hash>"
    guard_configs: dict[tuple[str, str], GuardConfig]  # (department, guard id) -> validated options
    source: str

    def guard_config(self, department: str, guard_id: str) -> GuardConfig:
        return self.guard_configs[(department, guard_id)]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def parse_policy(data: Any, source: str = "<policy>", raw: bytes = b"") -> LoadedPolicy:
    """Validate a policy mapping. Raises :class:`PolicyError` listing every problem with its path."""
    if not isinstance(data, dict):
        raise PolicyError(source, [("<root>", "the policy must be a mapping")])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, [(_loc(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    problems: list[tuple[str, str]] = []
    validated: dict[int, GuardConfig] = {}
    spec_lists: list[tuple[str, list[GuardSpec]]] = [("defaults.guards", policy.defaults.guards)]
    spec_lists += [(f"departments.{n}.guards", d.guards) for n, d in policy.departments.items()]
    for prefix, specs in spec_lists:
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            path = f"{prefix}[{i}]"
            if spec.guard_id in seen:
                problems.append((f"{path}.id", f"duplicate guard id {spec.guard_id!r}"))
            seen.add(spec.guard_id)
            try:
                cls = get_guard_class(spec.name)
            except ConfigError as exc:
                problems.append((f"{path}.name", str(exc)))
                continue
            try:
                validated[id(spec)] = cls.Config.model_validate(spec.options)
            except ValidationError as exc:
                problems += [(f"{path}.options.{_loc(e['loc'])}", e["msg"]) for e in exc.errors()]
    if problems:
        raise PolicyError(source, problems)
    configs: dict[tuple[str, str], GuardConfig] = {}
    for name in policy.departments:
        for spec in policy.guards_for(name):
            configs[(name, spec.guard_id)] = validated[id(spec)]
    digest = hashlib.sha256(raw or repr(data).encode()).hexdigest()[:12]
    return LoadedPolicy(policy, f"{policy.version}+{digest}", configs, source)


def load_policy(
    path: str | os.PathLike[str], transform: Callable[[Any], Any] | None = None
) -> LoadedPolicy:
    """Load and validate a policy file. ``transform`` (e.g. a deployment profile) rewrites the
    parsed YAML before validation, so guards it removes are never imported."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(str(p), [("<file>", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(str(p), [("<yaml>", str(exc))]) from None
    if transform is not None:
        data = transform(data)
    return parse_policy(data, str(p), raw)


def policy_json_schema() -> dict[str, Any]:
    return Policy.model_json_schema()


class PolicyStore:
    """Holds the current policy; reloads it when the file changes (checked at most every
    ``check_interval`` seconds, on access). A bad edit keeps the last good policy and logs why."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        check_interval: float = 1.0,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self.transform = transform
        self._current = load_policy(self.path, transform)
        self._watch = FileWatch(self.path, check_interval)
        self.last_error: str | None = None

    def get(self) -> LoadedPolicy:
        if self._watch.changed():
            self.reload()
        return self._current

    def reload(self) -> bool:
        try:
            loaded = load_policy(self.path, self.transform)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed, keeping version %s: %s", self._current.version, exc)
            return False
        if loaded.version != self._current.version:
            log.info("policy reloaded: %s -> %s", self._current.version, loaded.version)
        self._current = loaded
        self.last_error = None
        return True
