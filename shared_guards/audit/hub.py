"""The audit hub: what the engine's ``emit`` talks to.

``emit`` appends the record to a bounded in-memory queue and returns (a deque append: ~1 µs); it
never blocks and never raises. One background thread drains the queue in batches and

1. appends them to the JSONL file (the system of record, hash-chained, see :mod:`.jsonl`),
2. hands the chained records to each SIEM sink's own queue (:mod:`.sinks`),
3. feeds observers (Prometheus metrics, alerts).

When the queue is full the record is dropped, counted (``slg_audit_dropped_records_total``),
alerted, and an ``audit.dropped`` record with the count goes into the file as soon as possible:
the chain shows the gap. A JSONL write error keeps the batch and retries it (up to a bound).
Shutdown (``close()``, also registered with ``atexit``) drains everything still queued.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared_guards.audit.jsonl import JsonlAuditSink
from shared_guards.audit.sinks import RemoteSink

log = logging.getLogger("shared_guards.audit")

Observer = Callable[[Mapping[str, Any]], None]
DROPPED_EVENT = "audit.dropped"
_WRITE_RETRIES = 5


_hubs: weakref.WeakSet[AuditHub] = weakref.WeakSet()


def flush_all(timeout: float = 5.0) -> bool:
    """Flush every audit hub of this process (tests and tools that read the file right away)."""
    deadline = time.monotonic() + timeout
    ok = True
    for hub in list(_hubs):
        ok = hub.flush(max(0.0, deadline - time.monotonic()), sinks=False) and ok
    return ok


def _after_fork(ref: weakref.ref[AuditHub]) -> None:
    hub = ref()
    if hub is not None and not hub._closed:
        hub.restart_after_fork()


def _close_at_exit(ref: weakref.ref[AuditHub]) -> None:
    hub = ref()
    if hub is not None:
        hub.close(timeout=3.0)


class AuditHub:
    def __init__(
        self,
        jsonl: JsonlAuditSink | None,
        sinks: Sequence[RemoteSink] = (),
        observers: Sequence[Observer] = (),
        *,
        queue_size: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        on_drop: Callable[[str, str, int], None] | None = None,
        closers: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.jsonl = jsonl
        self.sinks = list(sinks)
        self.observers = list(observers)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_drop = on_drop
        self._closers = list(closers)
        self._queue: deque[Mapping[str, Any]] = deque()
        self._dropped = 0  # incremented by emit only (never written by the worker: no lost updates)
        self.dropped_total = 0  # the part of _dropped already reported by the worker
        self.written = 0
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._stop = False
        self._retry: list[Mapping[str, Any]] = []
        self._attempts = 0
        self._thread = threading.Thread(target=self._run, name="slg-audit", daemon=True)
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))
        _hubs.add(self)

    # -- request path -----------------------------------------------------------------------------

    def emit(self, record: Mapping[str, Any]) -> None:
        """Queue one record. Never blocks, never raises."""
        if self._closed:
            self._report_drop("jsonl", "closed", 1)
            return
        if len(self._queue) >= self.queue_size:
            self._dropped += 1  # the worker reports it (metric, alert, audit.dropped record)
            self._wake.set()
            return
        was_empty = not self._queue
        self._queue.append(record)
        self._idle.clear()
        if was_empty or len(self._queue) >= self.batch_size:
            # Wake the writer: records reach the file within milliseconds when traffic is light;
            # under load the writer is busy and the queue batches by itself.
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def restart_after_fork(self) -> None:
        """A forked child (pre-forking servers) has no writer thread: start one, with a queue of
        its own (what the parent queued is the parent's to write) and fresh locks."""
        self._queue.clear()
        self._retry = []
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        if self.jsonl is not None:
            self.jsonl.reset_after_fork()
        for sink in self.sinks:
            sink.restart_after_fork()
        self._thread = threading.Thread(target=self._run, name="slg-audit", daemon=True)
        self._thread.start()

    # -- worker -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stop = self._stop
            while self._queue or self._dropped > self.dropped_total or self._retry:
                if not self._process_once():
                    break  # the writer failed: back off until the next tick
            if stop:
                left = len(self._queue) + len(self._retry)
                if left:
                    self._report_drop("jsonl", "shutdown", left)
                self._idle.set()
                return
            if not self._queue:
                self._idle.set()

    def _take(self) -> list[Mapping[str, Any]]:
        batch: list[Mapping[str, Any]] = []
        while self._queue and len(batch) < self.batch_size:
            batch.append(self._queue.popleft())
        return batch

    def _process_once(self) -> bool:
        batch = self._retry or self._take()
        self._retry = []
        dropped = self._dropped - self.dropped_total
        if dropped:
            self.dropped_total += dropped
            batch = [{"v": 1, "event": DROPPED_EVENT, "ts": time.time(), "count": dropped,
                      "reason": "queue_full"}, *batch]
            self._report_drop("jsonl", "queue_full", dropped)
        written: list[dict[str, Any]]
        if self.jsonl is not None:
            try:
                written = self.jsonl.write_batch(batch)
            except Exception as exc:
                attempts = self._attempts + 1
                log.error("audit file write failed (%s), attempt %d", type(exc).__name__, attempts)
                if attempts >= _WRITE_RETRIES or self._stop:
                    self._attempts = 0
                    lost = sum(1 for r in batch if r.get("event") != DROPPED_EVENT)
                    self._report_drop("jsonl", "write_failed", lost)
                    written = [dict(r) for r in batch]  # still give them to the SIEM sinks
                else:
                    self._attempts = attempts
                    self._retry = batch
                    return False
            else:
                self._attempts = 0
                self.written += len(written)
        else:
            written = [dict(r) for r in batch]
        for sink in self.sinks:
            sink.offer(written)
        for rec in written:
            for obs in self.observers:
                try:
                    obs(rec)
                except Exception as exc:
                    log.error("audit observer failed: %s", type(exc).__name__)
        return True

    def _report_drop(self, sink: str, reason: str, count: int) -> None:
        log.error("audit: %d record(s) dropped by %s (%s)", count, sink, reason)
        if self.on_drop is not None:
            try:
                self.on_drop(sink, reason, count)
            except Exception as exc:
                log.error("audit drop callback failed: %s", type(exc).__name__)

    # -- lifecycle --------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0, sinks: bool = True) -> bool:
        """Wait until every queued record is written (and, with ``sinks``, delivered or dropped)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while (self._queue or not self._idle.is_set()) and time.monotonic() < deadline:
            self._wake.set()
            self._idle.wait(0.01)
        ok = not self._queue
        if sinks:
            for s in self.sinks:
                ok = s.flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for s in self.sinks:
            s.close(max(0.5, deadline - time.monotonic()))
        for c in self._closers:
            try:
                c()
            except Exception as exc:
                log.error("audit close failed: %s", type(exc).__name__)
        if self.jsonl is not None:
            self.jsonl.close()
