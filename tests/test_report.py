"""`slg report`: HTML (inline SVG, no scripts or external assets) and CSV from a real audit file."""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from shared_guards.audit import JsonlAuditSink
from shared_guards.audit.report import parse_when
from shared_guards.cli import main

DAY = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def rec(t: float, dep: str, decision: str, **kw: Any) -> dict[str, Any]:
    return {"event": "decision", "ts": t, "stage": "request", "department": dep, "decision": decision,
            "gateway": "litellm", "rules": {}, "entities": {}, "errors": [], **kw,
            "capture": {"mode": "full", "texts": [{"i": 0, "text": "RAW PROMPT 078-05-1120"}]}}


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, max_bytes=3000)  # rotated: the report reads every file
    sink.write_batch([
        rec(DAY + 10, "finance", "allow"),
        rec(DAY + 20, "finance", "modify", rules={"pii.US_SSN": 1, "pii.EMAIL_ADDRESS": 1},
            entities={"US_SSN": 1, "EMAIL_ADDRESS": 1}),
        rec(DAY + 3600, "finance", "block", rules={"pii.CREDIT_CARD": 1}, entities={"CREDIT_CARD": 1},
            violation={"rule_id": "pii.CREDIT_CARD", "status": 400}),
    ])
    sink.write_batch([
        rec(DAY + 7200, "marketing", "block", violation={"rule_id": "rbac.feature", "status": 403},
            rules={"rbac.feature": 1}),
        rec(DAY + 7300, "rnd", "block", violation={"rule_id": "quota.rpm", "status": 429}, rules={"quota.rpm": 1}),
        rec(DAY + 7400, "rnd", "alert", errors=["quota"]),
        {**rec(DAY + 7400, "rnd", "allow"), "stage": "response"},
        rec(DAY + 86400 * 5, "rnd", "allow"),  # outside the period below
    ])
    sink.write_batch([{"event": "audit.dropped", "ts": DAY + 7500, "count": 3}])
    return path


def test_report_html_and_csv(audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, out_csv = tmp_path / "r.html", tmp_path / "r.csv"
    rc = main(["report", "--since", "2026-11-20", "--until", "2026-11-21", "--audit", str(audit),
               "--out", str(out), "--csv", str(out_csv)])
    assert rc == 0
    assert "6 requests, 3 blocked, 3 PII entities; chain intact" in capsys.readouterr().out
    page = out.read_text()
    assert page.count("<svg") >= 5 and "<script" not in page and not re.search(r'(src|href)="http', page)
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ElementTree.fromstring(svg)  # every chart is well-formed SVG
    assert "RAW PROMPT" not in page and "078-05" not in page  # captured text never reaches a report
    assert "pii.CREDIT_CARD" in page and "rbac.feature" in page and "EMAIL_ADDRESS" in page
    assert "Hash chain: <span class=\"\">intact" in page
    rows = {(r["section"], r["key"], r["subkey"]): r["value"] for r in csv.DictReader(out_csv.open())}
    assert rows[("totals", "requests", "")] == "6"
    assert rows[("totals", "answers", "")] == "1"
    assert rows[("totals", "audit_records_dropped", "")] == "3"
    assert rows[("department", "finance", "block")] == "1"
    assert rows[("department", "rnd", "requests")] == "2"
    assert rows[("blocks_by_rule", "quota.rpm", "")] == "1"
    assert rows[("pii_entities", "US_SSN", "")] == "1"
    assert rows[("guard_errors", "quota", "")] == "1"
    assert rows[("timeline", "2026-11-20T02:00:00+00:00", "block")] == "2"
    assert "RAW PROMPT" not in out_csv.read_text()


def test_report_flags_a_broken_chain(audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = audit.with_name("audit.jsonl.000001")
    lines = first.read_text().splitlines(keepends=True)
    first.write_text("".join(lines[:1] + lines[2:]))
    out = tmp_path / "r.html"
    assert main(["report", "--audit", str(audit), "--out", str(out)]) == 0
    assert "chain BROKEN" in capsys.readouterr().out
    assert 'class="bad">BROKEN' in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--since", "yesterday"], "bad time 'yesterday'"),
     (["--since", "2026-11-21", "--until", "2026-11-20"], "--since must be before --until"),
     (["--audit", "/nonexistent/audit.jsonl"], "no audit file")],
)
def test_report_bad_input(args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["report", *args, "--out", str(tmp_path / "x.html")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
     ("2026-11-20T08:30Z", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
     ("24h", datetime(2026, 11, 25, 12, tzinfo=UTC)),
     ("7d", datetime(2026, 11, 19, 12, tzinfo=UTC)),
     ("now", datetime(2026, 11, 26, 12, tzinfo=UTC))],
)
def test_parse_when(value: str, expected: datetime) -> None:
    assert parse_when(value, now=datetime(2026, 11, 26, 12, tzinfo=UTC)) == expected


def test_timeline_is_hourly_then_daily(audit: Path) -> None:
    from shared_guards.audit import rotated_files
    from shared_guards.audit.report import summarize

    files = [str(p) for p in rotated_files(audit)]
    hourly = summarize(files, parse_when("2026-11-20"), parse_when("2026-11-21"))
    assert hourly.bucket_s == 3600 and sorted(hourly.timeline) == [DAY, DAY + 3600, DAY + 7200]
    daily = summarize(files)  # the data spans 5 days
    assert daily.bucket_s == 86400 and sorted(daily.timeline) == [DAY, DAY + 5 * 86400]
    assert daily.timeline[DAY]["requests"] == 6
