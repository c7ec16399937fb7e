"""Core pipeline time per request with a policy (default: the demo policy), per guard.

    python benchmarks/bench_core.py [--policy config/policy.yaml] [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from benchmarks._report import percentiles, write_section
from shared_guards.engine import GuardEngine
from shared_guards.openai_format import parse_chat_request

PROMPT = (
    "Please summarise the following meeting notes for the weekly newsletter. The team reviewed the Q3 "
    "roadmap, agreed to move the analytics launch to October, and asked design for two more mock-ups of "
    "the onboarding flow. Marketing wants a short blog post and three social posts; legal must review "
    "the customer quotes first. Action items: update the launch checklist, book the venue for the "
    "partner event, and draft the FAQ. Keep it under 150 words, friendly tone, no jargon. "
) * 2


async def run(policy: str, n: int, department_key: str) -> str:
    os.environ.setdefault("SLG_AUDIT_PATH", str(Path(tempfile.mkdtemp()) / "audit.jsonl"))
    engine = GuardEngine(policy)
    identity = engine.authenticate_key(department_key)
    body = {"model": "general", "messages": [{"role": "user", "content": PROMPT[:1024]}]}
    for _ in range(10):  # warm-up: loads models once
        await engine.check_request(parse_chat_request(body, identity))
    totals: list[float] = []
    per_guard: dict[str, list[float]] = defaultdict(list)
    blocked: dict[str, int] = defaultdict(int)
    for i in range(n):
        b = {"model": "general", "messages": [{"role": "user", "content": f"{i} " + PROMPT[:1020]}]}
        t0 = time.perf_counter()
        decision, ctx = await engine.check_request(parse_chat_request(b, identity))
        totals.append((time.perf_counter() - t0) * 1000)
        if ctx is not None:
            await engine.finish(ctx, ok=True)
        if decision.violation is not None:
            blocked[decision.violation.rule_id] += 1
        for t in decision.timings:
            if t.outcome != "skipped":
                per_guard[t.guard].append(t.ms)
    engine.close()
    rows = ["| what | p50 ms | p99 ms |", "|---|---|---|"]
    p = percentiles(totals)
    rows.append(f"| whole request stage ({department_key}, 1 KB prompt, audit included) | {p['p50']:.3f} | {p['p99']:.3f} |")
    for g, samples in per_guard.items():
        q = percentiles(samples)
        rows.append(f"| guard `{g}` | {q['p50']:.3f} | {q['p99']:.3f} |")
    note = ", ".join(f"{c} blocked by `{r}`" for r, c in blocked.items()) or "none blocked"
    return "\n".join(rows) + f"\n\n{n} sequential requests, distinct prompts (no verdict-cache hits); {note}.\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="config/policy.yaml")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--keys", default="sk-marketing,sk-finance,sk-rnd")
    args = ap.parse_args()
    body = ""
    for key in args.keys.split(","):
        body += asyncio.run(run(args.policy, args.n, key)) + "\n"
    write_section("Core pipeline", body)


if __name__ == "__main__":
    main()
