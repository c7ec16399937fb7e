"""SIEM sinks: HTTP (JSON, Splunk HEC, Elastic bulk, OCSF), syslog CEF over UDP and TCP, OCSF file;
a sink that is down neither slows nor fails requests, and what it missed arrives later or is
reported as dropped (metric + alert)."""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_guards import GuardEngine, parse_chat_request
from shared_guards.audit import AuditHub, JsonlAuditSink
from shared_guards.audit.formats import to_cef, to_ocsf
from shared_guards.audit.sinks import build_remote_sink
from shared_guards.metrics import default_metrics
from shared_guards.policy import AuditSinkSpec
from tests.audit_collector import Collector, free_port

REC_BLOCK = {"event": "decision", "ts": 1_795_700_000.25, "request_id": "r1", "gateway": "litellm",
             "identity": {"user": "u1", "key_alias": "fin-key", "team": "finance"}, "department": "finance",
             "model": "general", "stage": "request", "decision": "block", "severity": "high",
             "policy_version": "v1+abc", "guards": [{"guard": "injection", "ms": 0.4, "outcome": "ok"}],
             "findings": [{"guard": "injection", "rule_id": "inj.ignore_previous", "severity": "high", "score": 0.9}],
             "rules": {"inj.ignore_previous": 1}, "entities": {}, "errors": [],
             "violation": {"status": 400, "code": "content_policy_violation", "rule_id": "inj.ignore_previous"},
             "seq": 7, "prev": "a" * 64, "hash": "b" * 64}
REC_ALLOW = {**REC_BLOCK, "decision": "allow", "severity": "info", "findings": [], "rules": {}, "violation": None,
             "request_id": "r2", "hash": "c" * 64}
REC_ALLOW.pop("violation")


def spec(**kw: Any) -> AuditSinkSpec:
    base: dict[str, Any] = {"flush_interval_ms": 20, "backoff_initial_ms": 50, "backoff_max_ms": 200}
    return AuditSinkSpec.model_validate({**base, **kw})


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector().start()
    yield c
    c.stop()


def test_ocsf_mapping() -> None:
    finding = to_ocsf(REC_BLOCK)
    assert (finding["class_uid"], finding["category_uid"], finding["type_uid"]) == (2004, 2, 200401)
    assert finding["finding_info"]["types"] == ["inj.ignore_previous"]
    assert finding["action_id"] == 2 and finding["disposition_id"] == 2 and finding["severity_id"] == 4
    assert finding["time"] == 1_795_700_000_250 and finding["metadata"]["uid"] == "b" * 64
    assert finding["actor"]["user"]["org"]["name"] == "finance"
    activity = to_ocsf(REC_ALLOW)
    assert (activity["class_uid"], activity["category_uid"], activity["type_uid"]) == (6003, 6, 600301)
    assert activity["action_id"] == 1 and activity["api"]["operation"] == "chat.completions"


def test_cef_format_escapes() -> None:
    rec = {**REC_BLOCK, "department": "fin|ance=x", "model": "a\nb"}
    cef = to_cef(rec)
    head = cef.split("|")
    assert head[:4] == ["CEF:0", "secure-llm-gateway", "secure-llm-gateway", "0.1.0"]
    assert head[4] == "inj.ignore_previous" and head[6] == "8"
    assert "cs1=fin|ance\\=x" in cef and "cs2=a\\nb" in cef and "\n" not in cef


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("json", lambda c: [r["request_id"] for r in c.json_items()] == ["r1", "r2"]),
        ("ocsf", lambda c: [r["class_uid"] for r in c.json_items()] == [2004, 6003]),
        ("splunk_hec", lambda c: c.posts[0][1]["authorization"] == "Splunk tok-123"
         and [json.loads(x)["event"]["request_id"] for x in c.bodies()[0].replace(b"}{", b"}\n{").split(b"\n")]
         == ["r1", "r2"]),
        ("elastic_bulk", lambda c: c.posts[0][1]["authorization"] == "Bearer tok-123"
         and c.posts[0][1]["content-type"] == "application/x-ndjson"
         and [json.loads(x) for x in c.bodies()[0].splitlines()][0] == {"create": {"_index": "slg-audit",
                                                                                  "_id": "b" * 64}}),
    ],
)
def test_http_formats(collector: Collector, monkeypatch: pytest.MonkeyPatch, fmt: str, check: Any) -> None:
    monkeypatch.setenv("SIEM_TOKEN", "tok-123")
    sink = build_remote_sink(spec(type="http", url=collector.url + "/ingest", format=fmt, token_env="SIEM_TOKEN"))
    sink.offer([REC_BLOCK, REC_ALLOW])
    assert sink.flush(5)
    sink.close()
    assert len(collector.posts) == 1 and check(collector)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_syslog_cef(protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    port = srv.getsockname()[1]
    got: list[bytes] = []
    if protocol == "tcp":
        srv.listen(1)

        def serve() -> None:
            conn, _ = srv.accept()
            conn.settimeout(5)
            buf = b""
            while buf.count(b"\n") < 2:
                buf += conn.recv(65536)
            got.extend(buf.splitlines())
            conn.close()

        t = threading.Thread(target=serve)
        t.start()
    sink = build_remote_sink(spec(type="syslog_cef", port=port, protocol=protocol))
    sink.offer([REC_BLOCK, REC_ALLOW])
    assert sink.flush(5)
    if protocol == "udp":
        got += [srv.recv(65536), srv.recv(65536)]
    else:
        t.join(5)
    sink.close()
    srv.close()
    assert len(got) == 2
    line = got[0].decode()
    assert line.startswith("<131>1 2026-") and " slg - audit - CEF:0|secure-llm-gateway|" in line
    assert "suser=u1" in line and "cs4=inj.ignore_previous" in line and "externalId=r1" in line


def test_ocsf_file_sink(tmp_path: Path) -> None:
    out = tmp_path / "ocsf" / "events.jsonl"
    sink = build_remote_sink(spec(type="ocsf_file", path=str(out)))
    sink.offer([REC_BLOCK, REC_ALLOW])
    sink.close()
    assert [json.loads(x)["class_name"] for x in out.read_text().splitlines()] == ["Detection Finding",
                                                                                   "API Activity"]


def _policy(tmp_path: Path, sinks: list[dict[str, Any]], alerts: dict[str, Any] | None = None) -> Path:
    doc = {"version": "s1", "api_keys": [{"key": "sk-a", "department": "alpha", "user": "u-a"}],
           "audit": {"path": str(tmp_path / "audit.jsonl"), "flush_interval_ms": 20, "sinks": sinks},
           "alerts": alerts or {}, "departments": {"alpha": {"models": ["general"]}}}
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


async def _timed_requests(eng: GuardEngine, n: int) -> list[float]:
    ident = eng.authenticate_key("sk-a")
    assert ident is not None
    times = []
    for i in range(n):
        req = parse_chat_request({"model": "general", "messages": [{"role": "user", "content": f"hi {i}"}]}, ident)
        t0 = time.perf_counter()
        d, _ = await eng.check_request(req)
        times.append(time.perf_counter() - t0)
        assert d.action.value == "allow"
    return times


async def test_down_sink_does_not_slow_requests_and_catches_up(tmp_path: Path) -> None:
    siem = Collector()  # not started: the SIEM is down
    eng = GuardEngine(_policy(tmp_path, [{"type": "http", "url": siem.url, "flush_interval_ms": 20,
                                          "backoff_initial_ms": 50, "backoff_max_ms": 200,
                                          "max_attempts": 0, "timeout_ms": 500}]))
    try:
        await _timed_requests(eng, 5)  # warm-up
        times = await _timed_requests(eng, 100)
        assert statistics.median(times) < 0.005 and max(times) < 0.1, (statistics.median(times), max(times))
        assert isinstance(eng.audit, AuditHub)
        eng.audit.flush(5, sinks=False)
        sink = eng.audit.sinks[0]
        time.sleep(0.3)
        assert sink.failures >= 1 and sink.pending() == 105 and sink.sent == 0
        siem.start()  # the SIEM comes back: everything it missed is delivered, in chain order
        assert siem.wait_for(lambda: len(siem.json_items()) == 105, 15), len(siem.json_items())
        seqs = [r["seq"] for r in siem.json_items()]
        assert seqs == list(range(1, 106)) and sink.dropped == 0
    finally:
        eng.close()
        siem.stop()


async def test_dropped_records_are_counted_and_alerted(tmp_path: Path) -> None:
    webhook = Collector().start()
    port = free_port()  # nothing listens here
    dropped_before = default_metrics().registry.get_sample_value(
        "slg_audit_dropped_records_total", {"sink": "dead-siem", "reason": "retries_exhausted"}) or 0
    eng = GuardEngine(_policy(tmp_path, [{"type": "http", "name": "dead-siem", "url": f"http://127.0.0.1:{port}/x",
                                          "flush_interval_ms": 20, "backoff_initial_ms": 20, "backoff_max_ms": 40,
                                          "max_attempts": 2, "timeout_ms": 300}],
                          alerts={"webhook_url": webhook.url + "/hook"}))
    try:
        times = await _timed_requests(eng, 20)
        assert max(times) < 0.1
        assert isinstance(eng.audit, AuditHub)
        sink = eng.audit.sinks[0]
        assert webhook.wait_for(lambda: sink.dropped == 20 and bool(webhook.posts), 15), (sink.dropped, webhook.posts)
        texts = [json.loads(b)["text"] for b in webhook.bodies()]
        assert any("dead-siem dropped" in t and "retries_exhausted" in t for t in texts), texts
        after = default_metrics().registry.get_sample_value(
            "slg_audit_dropped_records_total", {"sink": "dead-siem", "reason": "retries_exhausted"})
        assert after == dropped_before + 20
        # the system of record still has every record
        assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 20
    finally:
        eng.close()
        webhook.stop()


def test_sink_queue_overflow_is_counted() -> None:
    drops: list[tuple[str, str, int]] = []
    sink = build_remote_sink(spec(type="http", url=f"http://127.0.0.1:{free_port()}", queue_size=10,
                                  max_attempts=0, timeout_ms=200), on_drop=lambda *a: drops.append(a))
    sink.offer([dict(REC_ALLOW, seq=i) for i in range(25)])
    sink.close(timeout=0.5)
    assert ("http", "queue_full", 15) in drops
    assert sum(n for _, _, n in drops) == 25  # the rest are reported at shutdown, never silently lost


def test_hub_feeds_sinks_with_chained_records(tmp_path: Path, collector: Collector) -> None:
    sink = build_remote_sink(spec(type="http", url=collector.url))
    hub = AuditHub(JsonlAuditSink(tmp_path / "a.jsonl"), [sink], flush_interval=0.01)
    for i in range(3):
        hub.emit({"event": "decision", "ts": float(i)})
    assert hub.flush(5)
    hub.close()
    file_hashes = [json.loads(x)["hash"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["hash"] for r in collector.json_items()] == file_hashes
