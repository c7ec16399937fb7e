"""Kong plugin: access-phase round trips through the REAL kong-pdk plugin server.

Starts ``kong_plugins/secure_llm_guard.py -p TMPDIR`` (demo policy) and plays Kong with
tests/kong_harness.py: ``plugin.HandleEvent`` plus one ``plugin.Step`` per PDK call over the unix
socket, exactly as Kong's mp_rpc does. Measures, per request, sequentially:

* access phase, allowed (the request would be proxied);
* access phase, refused by RBAC (``kong.response.exit`` 403);
* access phase, refused before the body is read (no consumer: 401);
* access + response (echo answer checked) + log: everything the plugin adds to one proxied request;
* the core alone (parse + ``check_request_sync`` + ``finish_sync`` in-process) for comparison.

Kong's own work (nginx, the PDK calls' Lua side) is not included: Kong cannot be installed here.
Usage: ``python benchmarks/bench_kong.py [--n 500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": ""}.items():
    os.environ.setdefault(_k, _v)

from benchmarks._report import percentiles, write_section  # noqa: E402
from shared_guards.audit import NullAuditSink  # noqa: E402
from shared_guards.engine import GuardEngine  # noqa: E402
from shared_guards.openai_format import parse_chat_request, parse_json_body  # noqa: E402
from shared_guards.types import Identity  # noqa: E402
from tests.kong_harness import DEMO_POLICY, KongHarness  # noqa: E402

PROMPT = ("Write three taglines for the spring campaign of our running shoes, friendly tone. " * 12)[:1000]
ALLOWED = {"model": "general", "messages": [{"role": "user", "content": PROMPT}]}
FORBIDDEN = {"model": "coder", "messages": [{"role": "user", "content": PROMPT}]}


def measure(fn: Callable[[], object], n: int, warmup: int = 30) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return percentiles(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="requests per scenario (default 500)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()

    h = KongHarness(DEMO_POLICY).start()
    rows: list[tuple[str, dict[str, float], int]] = []
    try:
        def access_allowed() -> object:
            r = h.access(ALLOWED, "marketing")
            assert not r.exited
            return r

        kept: list[object] = []

        def access_only() -> None:
            kept.append(access_allowed())

        def forbidden() -> None:
            assert h.access(FORBIDDEN, "marketing").exit_status == 403

        def no_consumer() -> None:
            assert h.access(ALLOWED, None).exit_status == 401

        def full() -> None:
            r = h.access(ALLOWED, "marketing")
            resp = h.response(r)
            assert not resp.exited
            h.log(resp)

        stats = measure(access_only, args.n)
        calls = len(h.access(ALLOWED, "marketing").methods)
        rows.append(("access, allowed (proxied)", stats, calls))
        for r in kept:  # Kong runs the log phase after each answer: release the kept contexts
            h.log(r)  # type: ignore[arg-type]
        rows.append(("access, refused by RBAC (403)", measure(forbidden, args.n),
                     len(h.access(FORBIDDEN, "marketing").methods)))
        rows.append(("access, no consumer (401, body not read)", measure(no_consumer, args.n),
                     len(h.access(ALLOWED, None).methods)))
        rows.append(("access + response + log (one proxied request)", measure(full, args.n), 0))

        engine = GuardEngine(DEMO_POLICY, audit=NullAuditSink())
        raw = json.dumps(ALLOWED).encode()

        def core() -> None:
            req = parse_chat_request(parse_json_body(raw), Identity(consumer="marketing", gateway="kong"))
            decision, ctx = engine.check_request_sync(req)
            assert ctx is not None and not decision.blocked
            engine.finish_sync(ctx, ok=True)

        rows.append(("core only, in-process (no RPC, no audit)", measure(core, args.n), 0))
        engine.close()
    finally:
        h.stop()

    lines = ["| scenario | PDK calls | p50 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    for name, s, calls in rows:
        lines.append(f"| {name} | {calls or '-'} | {s['p50']:.3f} | {s['p99']:.3f} | {s['mean']:.3f} |")
    body = "\n".join(lines) + (
        f"\n\n{args.n} sequential requests per scenario, 1 KB prompt, demo policy, audit to a JSONL file. "
        "Round trips through the real kong-pdk 0.36 plugin server (threading mode, lua-style) over its unix "
        "socket, driven by tests/kong_harness.py playing Kong; Kong's own nginx/Lua work is not included "
        "(Kong cannot be installed here). Each PDK call is one more socket round trip: the plugin reads the "
        "body once and asks for consumer groups only when the policy matches on groups. "
        f"Load average at the end of the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs shared with "
        "other jobs, which dominates the p99s.\n"
    )
    if args.no_write:
        print(body)
    else:
        write_section("Kong plugin", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
