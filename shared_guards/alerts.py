"""Real-time alerts to a Slack-compatible webhook (``{"text": ...}``).

Rules, evaluated on audit records in the audit thread (never on the request path):

- a block at or above ``alerts.min_severity``;
- repeated attacks: one identity blocked ``repeat_threshold`` times within ``repeat_window_s``
  (content and permission blocks; quota and unknown-identity refusals do not count);
- guard or backend failures (the record's ``errors``);
- audit records dropped by a sink (:meth:`AlertManager.system`).

Identical alerts (same kind, rule, department, subject) are sent once per ``dedup_window_s``;
at most ``max_per_minute`` posts go out, the rest are counted as suppressed. Alert text carries
rule ids, departments, key aliases and a short hash of the user id: never prompt text or PII.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from shared_guards.audit.record import severity_rank

if TYPE_CHECKING:
    from shared_guards.metrics import GuardMetrics
    from shared_guards.policy import AlertSettings

log = logging.getLogger("shared_guards.alerts")

_REPEAT_STATUSES = {400, 403}
_MAX_SUBJECTS = 10_000
_QUEUE_MAX = 1000


def subject_of(rec: Mapping[str, Any]) -> str:
    """A stable, PII-free name for the caller: key alias, consumer or team; else a user hash."""
    ident = rec.get("identity") or {}
    for k in ("key_alias", "consumer", "team"):
        if ident.get(k):
            return f"{k}:{ident[k]}"
    user = ident.get("user")
    if user:
        return "user#" + hashlib.sha256(str(user).encode()).hexdigest()[:10]
    return "anonymous"


def _after_fork(ref: weakref.ref[AlertManager]) -> None:
    am = ref()
    if am is not None and am._thread is not None and not am._closing:
        am._restart_after_fork()


class AlertManager:
    def __init__(self, settings: AlertSettings, metrics: GuardMetrics | None = None,
                 webhook_url: str | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.url = webhook_url or os.environ.get("SLG_ALERT_WEBHOOK") or settings.webhook_url
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._dedup: dict[str, float] = {}
        self._sent_times: deque[float] = deque()
        self._queue: deque[tuple[str, str]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self.sent: list[str] = []  # kinds sent, for introspection (bounded below)
        self._thread: threading.Thread | None = None
        if self.url:
            self._thread = threading.Thread(target=self._run, name="slg-alerts", daemon=True)
            self._thread.start()
            os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def _restart_after_fork(self) -> None:
        self._queue.clear()
        self._cond = threading.Condition()
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="slg-alerts", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return self._thread is not None

    # -- rules (called from the audit thread) -----------------------------------------------------

    def observe(self, rec: Mapping[str, Any]) -> None:
        if not self.enabled or rec.get("event") != "decision":
            return
        dep = str(rec.get("department") or "-")
        who = subject_of(rec)
        gw = str(rec.get("gateway", ""))
        errors = [str(e) for e in rec.get("errors") or ()]
        if errors and self.settings.on_errors:
            outcomes = {str(g.get("guard")): str(g.get("outcome")) for g in rec.get("guards") or ()}
            detail = ", ".join(f"{e} ({outcomes.get(e, 'error')})" for e in errors)
            self._raise("guard_failure", f"guard_failure:{','.join(sorted(errors))}:{dep}",
                        f":warning: secure-llm-gateway: guard failure in {dep} via {gw}: {detail}; "
                        f"decision {rec.get('decision')} (request {rec.get('request_id')})")
        if rec.get("decision") != "block":
            return
        violation = rec.get("violation") or {}
        rule = str(violation.get("rule_id") or "-")
        sev = str(rec.get("severity", "medium"))
        if severity_rank(sev) >= severity_rank(self.settings.min_severity.value):
            self._raise("block", f"block:{rule}:{dep}:{who}",
                        f":no_entry: secure-llm-gateway: {sev} block, rule {rule}, department {dep}, "
                        f"caller {who}, gateway {gw}, request {rec.get('request_id')}")
        if self.settings.repeat_threshold and violation.get("status") in _REPEAT_STATUSES:
            now = time.monotonic()
            window = self._recent.get(who)
            if window is None:
                window = self._recent[who] = deque()
                if len(self._recent) > _MAX_SUBJECTS:
                    self._recent.popitem(last=False)
            self._recent.move_to_end(who)
            window.append(now)
            while window and window[0] < now - self.settings.repeat_window_s:
                window.popleft()
            if len(window) >= self.settings.repeat_threshold:
                n = len(window)
                window.clear()
                self._raise("repeated_attacks", f"repeat:{who}",
                            f":rotating_light: secure-llm-gateway: {who} ({dep}) was blocked {n} times within "
                            f"{self.settings.repeat_window_s:g}s; last rule {rule}")

    def system(self, kind: str, key: str, text: str) -> None:
        """An operational alert (e.g. audit records dropped)."""
        if self.enabled:
            self._raise(kind, f"{kind}:{key}", f":warning: secure-llm-gateway: {text}")

    # -- dedup, rate limit, delivery --------------------------------------------------------------

    def _count(self, kind: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts.labels(kind, result).inc()

    def _raise(self, kind: str, key: str, text: str) -> None:
        now = time.monotonic()
        with self._cond:
            last = self._dedup.get(key)
            if last is not None and now - last < self.settings.dedup_window_s:
                self._count(kind, "deduplicated")
                return
            while self._sent_times and self._sent_times[0] < now - 60:
                self._sent_times.popleft()
            if len(self._sent_times) >= self.settings.max_per_minute or len(self._queue) >= _QUEUE_MAX:
                self._count(kind, "rate_limited")
                return
            self._dedup[key] = now
            if len(self._dedup) > _MAX_SUBJECTS:
                cutoff = now - self.settings.dedup_window_s
                self._dedup = {k: t for k, t in self._dedup.items() if t >= cutoff}
            self._sent_times.append(now)
            self._queue.append((kind, text))
            self._cond.notify()

    def _run(self) -> None:
        assert self.url is not None
        with httpx.Client(timeout=self.settings.timeout_ms / 1000) as client:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    kind, text = self._queue.popleft()
                    self._busy = True
                try:
                    self._post(client, kind, text)
                finally:
                    with self._cond:
                        self._busy = False

    def _post(self, client: httpx.Client, kind: str, text: str) -> None:
        for attempt in range(2):
            try:
                resp = client.post(self.url or "", json={"text": text})
                if resp.status_code < 300:
                    self._count(kind, "sent")
                    self.sent.append(kind)
                    del self.sent[:-100]
                    return
                log.warning("alert webhook answered %d", resp.status_code)
            except httpx.HTTPError as exc:
                log.warning("alert webhook failed: %s", type(exc).__name__)
            if attempt == 0:
                time.sleep(0.5)
        self._count(kind, "failed")

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 3.0) -> None:
        if self._thread is None:
            return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
