"""Audit cost on the request path and sink throughput.

    python benchmarks/bench_audit.py [--n 20000]

Measures (1) what a request pays: ``decision_record`` (building the text-free record, with and
without hashed prompt capture) and ``AuditHub.emit`` (queueing), p50/p99 in µs; (2) what the
background thread sustains: JSONL ``write_batch`` (hash chain + flock + append), the whole hub
(emit -> file, metrics), an HTTP SIEM sink to a local collector, and ``verify_files``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from benchmarks._report import percentiles, write_section
from shared_guards.audit import AuditHub, JsonlAuditSink, decision_record, verify_files
from shared_guards.audit.sinks import build_remote_sink
from shared_guards.metrics import GuardMetrics
from shared_guards.openai_format import parse_chat_request
from shared_guards.policy import AuditSettings, AuditSinkSpec
from shared_guards.types import Action, Decision, Finding, GuardTiming, Identity, Stage

PROMPT = "Summarise the meeting notes for the newsletter, friendly tone, no jargon. " * 14  # ~1 KB


def sample_decision() -> Decision:
    req = parse_chat_request({"model": "general", "messages": [{"role": "user", "content": PROMPT}]},
                             Identity(user="demo-finance", key_alias="finance-demo", team="finance", gateway="litellm"))
    findings = (Finding(guard="pii", rule_id="pii.US_SSN", entity_type="US_SSN", score=0.85, start=10, end=21),
                Finding(guard="pii", rule_id="pii.EMAIL_ADDRESS", entity_type="EMAIL_ADDRESS", start=40, end=60))
    timings = (GuardTiming("rbac", 0.04), GuardTiming("pii", 6.5), GuardTiming("injection", 0.3))
    return Decision(Stage.REQUEST, Action.MODIFY, req, findings=findings, timings=timings, department="finance",
                    policy_version="2026-11-26.1+abc", changed=True)


def time_us(fn: Any, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return percentiles(samples)


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def main() -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    n = args.n
    tmp = Path(tempfile.mkdtemp(prefix="slg-bench-audit-"))
    os.environ["SLG_AUDIT_HASH_KEY"] = "bench-key"
    decision = sample_decision()
    plain = AuditSettings(path=str(tmp / "a.jsonl"))
    hashed = AuditSettings(path=str(tmp / "a.jsonl"), capture="hashed")
    rec = decision_record(decision, None, plain)
    rows = ["| request path | p50 µs | p99 µs |", "|---|---|---|"]
    for label, fn in [
        ("`decision_record` (no capture)", lambda: decision_record(decision, None, plain)),
        ("`decision_record` (hashed capture, 1 KB prompt)", lambda: decision_record(decision, None, hashed)),
    ]:
        p = time_us(fn, n)
        rows.append(f"| {label} | {p['p50']:.1f} | {p['p99']:.1f} |")

    hub = AuditHub(JsonlAuditSink(tmp / "hub.jsonl"), observers=[GuardMetrics().observe], queue_size=10 * n)
    p = time_us(lambda: hub.emit(rec), n)
    rows.append(f"| `AuditHub.emit`, busy (queue; writer thread running) | {p['p50']:.1f} | {p['p99']:.1f} |")
    idle = []
    for _ in range(min(n, 2000)):
        time.sleep(0.0005)  # the writer drained the queue: this emit wakes it
        t0 = time.perf_counter_ns()
        hub.emit(rec)
        idle.append((time.perf_counter_ns() - t0) / 1000)
    p = percentiles(idle)
    rows.append(f"| `AuditHub.emit`, idle (queue empty: wakes the writer) | {p['p50']:.1f} | {p['p99']:.1f} |")
    hub.close()

    # -- background throughput ---------------------------------------------------------------------
    thr = ["| background | records/s |", "|---|---|"]
    sink = JsonlAuditSink(tmp / "jsonl.jsonl")
    t0 = time.perf_counter()
    for i in range(0, n, 500):
        sink.write_batch([rec] * min(500, n - i))
    thr.append(f"| JSONL `write_batch` (chain + flock + append, batches of 500) | {n / (time.perf_counter() - t0):,.0f} |")

    hub = AuditHub(JsonlAuditSink(tmp / "hub2.jsonl"), observers=[GuardMetrics().observe], queue_size=10 * n)
    t0 = time.perf_counter()
    for _ in range(n):
        hub.emit(rec)
    hub.flush(120)
    thr.append(f"| hub end to end (emit -> file + metrics) | {n / (time.perf_counter() - t0):,.0f} |")
    hub.close()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    http = build_remote_sink(AuditSinkSpec(type="http", url=f"http://127.0.0.1:{srv.server_address[1]}/",
                                           batch_size=500, flush_interval_ms=20, queue_size=10 * n))
    chained = JsonlAuditSink(tmp / "c.jsonl").write_batch([rec] * n)
    t0 = time.perf_counter()
    http.offer(chained)
    http.flush(120)
    thr.append(f"| HTTP JSON sink to a local collector (batches of 500) | {n / (time.perf_counter() - t0):,.0f} |")
    http.close()
    srv.shutdown()

    t0 = time.perf_counter()
    res = verify_files([tmp / "jsonl.jsonl"])
    assert res.ok and res.records == n
    thr.append(f"| `slg audit verify` | {n / (time.perf_counter() - t0):,.0f} |")
    size = (tmp / "jsonl.jsonl").stat().st_size / n
    body = "\n".join(rows) + "\n\n" + "\n".join(thr) + (
        f"\n\n{n} records of a masked finance request (3 guards, 2 findings, ~{size:.0f} bytes per line). "
        "The request pays only the first rows; everything else runs in the audit thread. "
        f"Load average during the run: {os.getloadavg()[0]:.1f} (machine shared with other jobs).\n")
    return body


if __name__ == "__main__":
    section = main()
    write_section("Audit", section)
