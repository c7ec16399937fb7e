"""SIEM sinks: each has its own bounded queue and background thread, sends in batches and retries
with exponential backoff. A sink that is down never slows requests: records wait in its queue
(the JSONL file already has them) and are delivered when it is back; records that overflow the
queue or exhaust ``max_attempts`` are reported through ``on_drop`` (metric + alert), never
silently lost.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from shared_guards.audit.formats import elastic_bulk_body, splunk_hec_body, syslog_line, to_ocsf

if TYPE_CHECKING:
    from shared_guards.policy import AuditSinkSpec

log = logging.getLogger("shared_guards.audit")

DropCallback = Callable[[str, str, int], None]  # (sink label, reason, count)


def _no_drop(sink: str, reason: str, count: int) -> None:
    return None


class RemoteSink(ABC):
    """Bounded queue + sender thread + retry with backoff. Subclasses implement :meth:`send`."""

    def __init__(self, spec: AuditSinkSpec, on_drop: DropCallback | None = None) -> None:
        self.spec = spec
        self.label = spec.label
        self.on_drop = on_drop or _no_drop
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._inflight = 0
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=f"slg-audit-{self.label}", daemon=True)
        self._thread.start()

    def restart_after_fork(self) -> None:
        """In a forked child: the sender thread did not survive the fork. Start afresh (the
        parent keeps delivering what was queued before the fork)."""
        self._queue.clear()
        self._cond = threading.Condition()
        self._inflight = 0
        self.close_transport()
        self._thread = threading.Thread(target=self._run, name=f"slg-audit-{self.label}", daemon=True)
        self._thread.start()

    @abstractmethod
    def send(self, batch: list[dict[str, Any]]) -> None:
        """Deliver one batch; raise on any failure (the batch is retried)."""

    def close_transport(self) -> None:  # noqa: B027 - optional hook
        """Release sockets/clients (called from the sender thread on exit)."""

    # -- queueing (called from the hub thread) ----------------------------------------------------

    def offer(self, records: list[dict[str, Any]]) -> None:
        with self._cond:
            room = self.spec.queue_size - len(self._queue)
            take = records[:max(room, 0)]
            self._queue.extend(take)
            over = len(records) - len(take)
            if len(self._queue) >= self.spec.batch_size:
                self._cond.notify()
        if over:
            self._drop("queue_full", over)

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    def flush(self, timeout: float) -> bool:
        """Wake the sender and wait until the queue is empty (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.pending()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout``; count the rest as dropped (``shutdown``)."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            left = len(self._queue)  # the batch in flight gets one last attempt in the sender thread
            self._queue.clear()
            self._cond.notify_all()
        if left:
            self._drop("shutdown", left)
        self._thread.join(timeout=max(1.0, self.spec.timeout_ms / 1000 + 0.5))

    # -- sender thread ----------------------------------------------------------------------------

    def _drop(self, reason: str, count: int) -> None:
        self.dropped += count
        log.error("audit sink %s dropped %d record(s): %s", self.label, count, reason)
        try:
            self.on_drop(self.label, reason, count)
        except Exception as exc:
            log.error("audit drop callback failed: %s", type(exc).__name__)

    def _next_batch(self) -> list[dict[str, Any]] | None:
        with self._cond:
            if not self._queue and not self._closing:
                self._cond.wait(self.spec.flush_interval_ms / 1000)
            if not self._queue:
                return None
            n = min(self.spec.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._inflight = n
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    if self._closing:
                        return
                    continue
                self._deliver(batch)
        finally:
            self.close_transport()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        attempt = 0
        delay = self.spec.backoff_initial_ms / 1000
        while True:
            attempt += 1
            try:
                self.send(batch)
            except Exception as exc:
                self.failures += 1
                log.warning("audit sink %s: send failed (%s), attempt %d", self.label, type(exc).__name__, attempt)
                if self._closing or (self.spec.max_attempts and attempt >= self.spec.max_attempts):
                    with self._cond:
                        self._inflight = 0
                    self._drop("closing" if self._closing else "retries_exhausted", len(batch))
                    return
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, timeout=delay)
                delay = min(delay * 2, self.spec.backoff_max_ms / 1000)
                continue
            with self._cond:
                self._inflight = 0
            self.sent += len(batch)
            return


class SyslogCefSink(RemoteSink):
    """RFC 5424 syslog lines with a CEF payload, over UDP (one datagram each) or TCP (newline framed)."""

    def __init__(self, spec: AuditSinkSpec, on_drop: DropCallback | None = None) -> None:
        self._sock: socket.socket | None = None
        self._host = socket.gethostname()
        super().__init__(spec, on_drop)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            assert self.spec.port is not None
            timeout = self.spec.timeout_ms / 1000
            if self.spec.protocol == "tcp":
                self._sock = socket.create_connection((self.spec.host, self.spec.port), timeout=timeout)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(timeout)
                s.connect((self.spec.host, self.spec.port))
                self._sock = s
        return self._sock

    def send(self, batch: list[dict[str, Any]]) -> None:
        lines = [syslog_line(r, self._host).encode("utf-8") for r in batch]
        try:
            sock = self._connect()
            if self.spec.protocol == "tcp":
                sock.sendall(b"".join(line + b"\n" for line in lines))
            else:
                for line in lines:
                    sock.send(line[:65000])
        except OSError:
            self.close_transport()
            raise

    def close_transport(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class HttpJsonSink(RemoteSink):
    """POST batches as JSON (plain array), Splunk HEC, Elastic ``_bulk`` or OCSF array."""

    def __init__(self, spec: AuditSinkSpec, on_drop: DropCallback | None = None) -> None:
        headers = {"User-Agent": "secure-llm-gateway-audit"}
        token = os.environ.get(spec.token_env, "") if spec.token_env else ""
        fmt = spec.format.value
        if token:
            headers["Authorization"] = f"Splunk {token}" if fmt == "splunk_hec" else f"Bearer {token}"
        headers["Content-Type"] = "application/x-ndjson" if fmt == "elastic_bulk" else "application/json"
        self._client = httpx.Client(timeout=spec.timeout_ms / 1000, headers=headers, follow_redirects=False)
        super().__init__(spec, on_drop)

    def body(self, batch: list[dict[str, Any]]) -> bytes:
        fmt = self.spec.format.value
        if fmt == "splunk_hec":
            return splunk_hec_body(batch, f"{self.spec.index}:audit")
        if fmt == "elastic_bulk":
            return elastic_bulk_body(batch, self.spec.index)
        if fmt == "ocsf":
            return json.dumps([to_ocsf(r) for r in batch], separators=(",", ":"), default=str).encode()
        return json.dumps(batch, separators=(",", ":"), default=str).encode()

    def send(self, batch: list[dict[str, Any]]) -> None:
        assert self.spec.url is not None
        resp = self._client.post(self.spec.url, content=self.body(batch))
        if resp.status_code >= 300:
            raise OSError(f"HTTP {resp.status_code}")
        if self.spec.format.value == "elastic_bulk" and resp.headers.get("content-type", "").startswith(
                "application/json") and resp.json().get("errors"):
            items = resp.json().get("items", [])
            bad = [i for i in items if any(v.get("status", 200) >= 300 and v.get("status") != 409
                                           for v in i.values())]
            if bad:  # 409 = already stored (retried batch): fine
                raise OSError(f"elastic bulk: {len(bad)} item(s) rejected")

    def close_transport(self) -> None:
        self._client.close()


class OcsfFileSink(RemoteSink):
    """OCSF events as JSONL, for a collector that tails files (e.g. a Security Lake pipeline)."""

    def send(self, batch: list[dict[str, Any]]) -> None:
        assert self.spec.path is not None
        path = Path(self.spec.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(to_ocsf(r), separators=(",", ":"), default=str) + "\n" for r in batch)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(data)


SINK_CLASSES: dict[str, type[RemoteSink]] = {
    "syslog_cef": SyslogCefSink,
    "http": HttpJsonSink,
    "ocsf_file": OcsfFileSink,
}


def build_remote_sink(spec: AuditSinkSpec, on_drop: DropCallback | None = None) -> RemoteSink:
    return SINK_CLASSES[spec.type.value](spec, on_drop)
