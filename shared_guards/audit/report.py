"""Compliance report from the audit log: a self-contained HTML page (inline SVG charts, no
scripts, no external assets) and a flat CSV. Never shows captured prompt text: only counts,
rule ids, entity types, departments and the chain verification result.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shared_guards.audit.chain import VerifyResult, verify_files

_REL = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str | None, now: datetime | None = None) -> datetime | None:
    """ISO date or datetime (UTC unless it says otherwise), ``now``, or relative ``30m``/``24h``/``7d``/``2w``."""
    if value is None or value == "":
        return None
    now = now or datetime.now(UTC)
    v = value.strip()
    if v == "now":
        return now
    m = _REL.match(v)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {value!r}: use an ISO date/datetime (2026-11-01, 2026-11-01T08:00Z), "
                         "'now' or a relative age like 24h, 7d") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass
class Summary:
    since: datetime | None
    until: datetime | None
    files: list[str]
    requests: int = 0
    answers: int = 0
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, action)
    by_department: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    blocks_by_rule: Counter[str] = field(default_factory=Counter)
    blocks_by_status: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    entities: Counter[str] = field(default_factory=Counter)
    entities_by_department: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    guard_errors: Counter[str] = field(default_factory=Counter)
    gateways: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    bucket_s: int = 3600  # hourly; daily when the data spans more than 3 days
    dropped: int = 0
    bad_lines: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    chain: VerifyResult | None = None


def _records(files: Iterable[str]) -> Iterable[dict[str, Any] | None]:
    for f in files:
        with open(f, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    yield None
                    continue
                yield rec if isinstance(rec, dict) else None


def summarize(files: Sequence[str], since: datetime | None = None, until: datetime | None = None,
              verify: bool = True) -> Summary:
    s = Summary(since, until, list(files))
    lo = since.timestamp() if since else float("-inf")
    hi = until.timestamp() if until else float("inf")
    for rec in _records(files):
        if rec is None:
            s.bad_lines += 1
            continue
        ts = rec.get("ts")
        if not isinstance(ts, (int, float)) or not lo <= ts < hi:
            continue
        if rec.get("event") == "audit.dropped":
            s.dropped += int(rec.get("count", 0))
            continue
        if rec.get("event") != "decision":
            continue
        s.first_ts = ts if s.first_ts is None else min(s.first_ts, ts)
        s.last_ts = ts if s.last_ts is None else max(s.last_ts, ts)
        stage, action = str(rec.get("stage", "")), str(rec.get("decision", ""))
        dep = str(rec.get("department") or "(unknown identity)")
        s.decisions[(stage, action)] += 1
        s.gateways[str(rec.get("gateway", ""))] += 1
        bucket = int(ts // s.bucket_s * s.bucket_s)
        if stage == "request":
            s.requests += 1
            s.by_department[dep]["requests"] += 1
            s.timeline[bucket]["requests"] += 1
        else:
            s.answers += 1
        s.by_department[dep][action] += 1
        if action in ("block", "modify"):
            s.timeline[bucket][action] += 1
        if action == "block":
            v = rec.get("violation") or {}
            s.blocks_by_rule[str(v.get("rule_id") or "-")] += 1
            s.blocks_by_status[str(v.get("status", "-"))] += 1
        for rule, n in (rec.get("rules") or {}).items():
            s.rules[str(rule)] += int(n)
        for ent, n in (rec.get("entities") or {}).items():
            s.entities[str(ent)] += int(n)
            s.entities_by_department[dep][str(ent)] += int(n)
        for g in rec.get("errors") or ():
            s.guard_errors[str(g)] += 1
    if s.first_ts is not None and s.last_ts is not None and s.last_ts - s.first_ts > 3 * 86400:
        daily: dict[int, Counter[str]] = defaultdict(Counter)
        for b, c in s.timeline.items():
            daily[b // 86400 * 86400].update(c)
        s.timeline, s.bucket_s = daily, 86400
    if verify:
        s.chain = verify_files(files)
    return s


# -- CSV ---------------------------------------------------------------------------------------------

def write_csv(s: Summary, out: TextIO) -> None:
    w = csv.writer(out)
    w.writerow(["section", "key", "subkey", "value"])
    w.writerow(["period", "since", "", s.since.isoformat() if s.since else ""])
    w.writerow(["period", "until", "", s.until.isoformat() if s.until else ""])
    w.writerow(["totals", "requests", "", s.requests])
    w.writerow(["totals", "answers", "", s.answers])
    w.writerow(["totals", "audit_records_dropped", "", s.dropped])
    w.writerow(["totals", "chain_ok", "", "" if s.chain is None else s.chain.ok])
    for (stage, action), n in sorted(s.decisions.items()):
        w.writerow(["decisions", stage, action, n])
    for dep, c in sorted(s.by_department.items()):
        for k, n in sorted(c.items()):
            w.writerow(["department", dep, k, n])
    for rule, n in s.blocks_by_rule.most_common():
        w.writerow(["blocks_by_rule", rule, "", n])
    for rule, n in s.rules.most_common():
        w.writerow(["rules", rule, "", n])
    for ent, n in s.entities.most_common():
        w.writerow(["pii_entities", ent, "", n])
    for g, n in s.guard_errors.most_common():
        w.writerow(["guard_errors", g, "", n])
    for b, c in sorted(s.timeline.items()):
        for k, n in sorted(c.items()):
            w.writerow(["timeline", datetime.fromtimestamp(b, UTC).isoformat(), k, n])


# -- HTML --------------------------------------------------------------------------------------------

_COLORS = {"requests": "#4e79a7", "block": "#e15759", "modify": "#f28e2b", "allow": "#59a14f", "alert": "#edc948"}
_e = html.escape


def svg_bars(items: Sequence[tuple[str, int]], color: str = "#4e79a7", width: int = 640) -> str:
    """A horizontal bar chart."""
    if not items:
        return "<p class=muted>none</p>"
    row, label_w = 22, 230
    top = max(n for _, n in items) or 1
    h = row * len(items) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img">']
    for i, (label, n) in enumerate(items):
        y = i * row + 3
        bw = max(1, int((width - label_w - 60) * n / top))
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{_e(label[:34])}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bw}" height="{row - 8}" fill="{color}"/>'
                     f'<text x="{label_w + bw + 4}" y="{y + 15}" font-size="12">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_timeline(s: Summary, width: int = 720, height: int = 220) -> str:
    """Requests, blocks and masked requests per bucket as lines."""
    if not s.timeline:
        return "<p class=muted>no decisions in this period</p>"
    buckets = sorted(s.timeline)
    if len(buckets) > 1:
        buckets = list(range(buckets[0], buckets[-1] + s.bucket_s, s.bucket_s))
    pad_l, pad_b, pad_t = 50, 30, 10
    w, h = width - pad_l - 10, height - pad_b - pad_t
    top = max(max(s.timeline[b].values(), default=0) for b in buckets) or 1
    step = w / max(1, len(buckets) - 1)

    def xy(i: int, v: int) -> str:
        return f"{pad_l + i * step:.1f},{pad_t + h - h * v / top:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>',
             f'<text x="{pad_l - 6}" y="{pad_t + 10}" text-anchor="end" font-size="11">{top}</text>',
             f'<text x="{pad_l - 6}" y="{pad_t + h}" text-anchor="end" font-size="11">0</text>']
    fmt = "%Y-%m-%d" if s.bucket_s >= 86400 else "%m-%d %H:00"
    for i in sorted({0, len(buckets) - 1, len(buckets) // 2}):
        label = datetime.fromtimestamp(buckets[i], UTC).strftime(fmt)
        parts.append(f'<text x="{pad_l + i * step:.1f}" y="{height - 8}" text-anchor="middle" '
                     f'font-size="11">{_e(label)}</text>')
    for key in ("requests", "block", "modify"):
        pts = " ".join(xy(i, s.timeline[b].get(key, 0) if b in s.timeline else 0) for i, b in enumerate(buckets))
        if len(buckets) == 1:
            parts.append(f'<circle cx="{pad_l}" cy="{pts.split(",")[1]}" r="4" fill="{_COLORS[key]}"/>')
        parts.append(f'<polyline fill="none" stroke="{_COLORS[key]}" stroke-width="2" points="{pts}"/>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{_COLORS[k]}">&#9632; {n}</span>'
                      for k, n in (("requests", "requests"), ("block", "blocked"), ("modify", "masked")))
    return "".join(parts) + f"<p>{legend}</p>"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def render_html(s: Summary) -> str:
    def when(d: datetime | None, ts: float | None) -> str:
        if d is not None:
            return d.isoformat()
        return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else "-"

    blocks = sum(n for (st, a), n in s.decisions.items() if a == "block")
    masked = sum(n for (st, a), n in s.decisions.items() if a == "modify")
    if s.chain is None:
        chain = "not checked"
    elif s.chain.ok:
        chain = f"intact: {s.chain.summary()}"
    else:
        chain = f"BROKEN ({len(s.chain.problems)} problem(s)): " + "; ".join(str(p) for p in s.chain.problems[:5])
    actions = ("requests", "allow", "modify", "alert", "block")
    dep_rows = [[dep, *(c.get(a, 0) for a in actions)] for dep, c in sorted(s.by_department.items())]
    dep_blocks = [(dep, c.get("block", 0)) for dep, c in sorted(s.by_department.items())]
    ent_dep = [[dep, ", ".join(f"{k}: {v}" for k, v in c.most_common())]
               for dep, c in sorted(s.entities_by_department.items())]
    kpis = [("requests", s.requests), ("answers checked", s.answers), ("blocked", blocks), ("masked", masked),
            ("PII entities", sum(s.entities.values())), ("guard failures", sum(s.guard_errors.values())),
            ("audit records dropped", s.dropped)]
    kpi_html = "".join(f'<div class=kpi><b>{n}</b><br>{_e(k)}</div>' for k, n in kpis)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>secure-llm-gateway compliance report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:980px;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}}.kpi{{display:inline-block;border:1px solid #ddd;border-radius:6px;padding:8px 14px;
margin:4px;text-align:center}}.kpi b{{font-size:1.4em}}.muted{{color:#888}}.bad{{color:#b00;font-weight:bold}}
</style></head><body>
<h1>secure-llm-gateway: compliance report</h1>
<p>Period: {_e(when(s.since, s.first_ts))} to {_e(when(s.until, s.last_ts))}<br>
Audit files: {_e(", ".join(s.files))}<br>
Hash chain: <span class="{'bad' if s.chain is not None and not s.chain.ok else ''}">{_e(chain)}</span><br>
Generated {_e(datetime.now(UTC).isoformat(timespec="seconds"))}. Counts only: this report never contains prompt text.</p>
{kpi_html}
<h2>Over time</h2>{svg_timeline(s)}
<h2>Decisions by department</h2>{_table(["department", *actions], dep_rows)}
<h2>Blocks by department</h2>{svg_bars(dep_blocks, _COLORS["block"])}
<h2>Blocks by rule</h2>{svg_bars(s.blocks_by_rule.most_common(20), _COLORS["block"])}
<h2>Blocks by HTTP status</h2>{_table(["status", "count"], sorted(s.blocks_by_status.items()))}
<h2>PII entities found</h2>{svg_bars(s.entities.most_common(20), _COLORS["modify"])}
{_table(["department", "entities"], ent_dep)}
<h2>Top rules (all findings)</h2>{svg_bars(s.rules.most_common(20))}
<h2>Guard and backend failures</h2>{_table(["guard", "count"], s.guard_errors.most_common())}
<h2>Gateways</h2>{_table(["gateway", "decisions"], s.gateways.most_common())}
</body></html>
"""


def write_report(s: Summary, html_out: str | Path | None, csv_out: str | Path | None) -> None:
    if html_out:
        Path(html_out).write_text(render_html(s), encoding="utf-8")
    if csv_out:
        with open(csv_out, "w", newline="", encoding="utf-8") as fh:
            write_csv(s, fh)
