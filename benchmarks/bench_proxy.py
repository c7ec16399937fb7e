"""Proxy overhead: requests/s and p50/p99 through the real LiteLLM proxy with the guards vs without.

Same run, same echo upstream (its own process), both proxies up at once; requests alternate
between the targets in blocks so machine noise hits both alike. Also the core pipeline time per
request (request stage + response stage + finish, in-process).

    python benchmarks/bench_proxy.py [--n 300] [--concurrency 8] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import httpx  # noqa: E402

from benchmarks._report import percentiles, write_section  # noqa: E402
from tests.fixtures_litellm import ProxyProcess, free_port, start_proxy  # noqa: E402

PROMPT = ("Draft a short, friendly product announcement for our new analytics dashboard. Mention the "
          "faster load times, the new export button and the dark mode. Keep it under 120 words. ") * 3

BASELINE_CONFIG = """\
model_list:
  - model_name: general
    litellm_params: {model: openai/general, api_base: os.environ/ECHO_API_BASE, api_key: os.environ/ECHO_API_KEY}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
litellm_settings: {drop_params: true, num_retries: 0}
"""


def _body(i: int) -> dict[str, Any]:
    return {"model": "general", "messages": [{"role": "user", "content": f"{i} {PROMPT}"}]}


def run_sequential(url: str, key: str, start: int, n: int, samples: list[float]) -> None:
    with httpx.Client(timeout=60, headers={"authorization": f"Bearer {key}"}) as c:
        for i in range(start, start + n):
            t0 = time.perf_counter()
            r = c.post(url, json=_body(i))
            samples.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"unexpected {r.status_code} from {url}: {r.text[:200]}")


async def run_concurrent(url: str, key: str, n: int, concurrency: int) -> tuple[list[float], float]:
    samples: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, headers={"authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await c.post(url, json=_body(i))
                samples.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"unexpected {r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return samples, n / wall


def core_pipeline(n: int, key: str) -> dict[str, float]:
    from shared_guards.engine import GuardEngine
    from shared_guards.openai_format import parse_chat_request, parse_chat_response

    engine = GuardEngine(REPO / "config" / "policy.yaml")
    identity = engine.authenticate_key(key)
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": PROMPT}, "finish_reason": "stop"}]}

    async def go() -> list[float]:
        out: list[float] = []
        for i in range(n + 10):
            t0 = time.perf_counter()
            decision, ctx = await engine.check_request(parse_chat_request(_body(i), identity))
            if ctx is not None:
                await engine.check_response(ctx, parse_chat_response(answer))
                await engine.finish(ctx, ok=True)
            if i >= 10:
                out.append((time.perf_counter() - t0) * 1000)
        return out

    samples = asyncio.run(go())
    engine.close()
    return percentiles(samples)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="sequential requests per target")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--concurrent-n", type=int, default=200, help="requests per target in the concurrent run")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="slg-bench-proxy-"))
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-m", "shared_guards.demo.echo", "--port", str(echo_port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    upstream = f"http://127.0.0.1:{echo_port}/v1"
    baseline_cfg = work / "baseline.yaml"
    baseline_cfg.write_text(BASELINE_CONFIG)
    master = "sk-bench-" + os.urandom(12).hex()
    proxies: list[ProxyProcess] = []
    try:
        guarded = start_proxy(policy_path=REPO / "config" / "policy.yaml", upstream_base=upstream,
                              workdir=work / "guarded")
        proxies.append(guarded)
        baseline = start_proxy(policy_path=REPO / "config" / "policy.yaml", upstream_base=upstream,
                               workdir=work / "baseline", config=baseline_cfg, env={"LITELLM_MASTER_KEY": master})
        proxies.append(baseline)
        targets: dict[str, tuple[str, str]] = {
            "no guards (LiteLLM + master key)": (f"{baseline.base_url}/chat/completions", master),
            "guards, marketing (custom_auth + RBAC + injection: pattern, context, MiniLM)": (f"{guarded.base_url}/chat/completions", "sk-marketing"),
            "guards, finance (custom_auth + RBAC + injection + PII)": (f"{guarded.base_url}/chat/completions", "sk-finance"),
        }
        seq: dict[str, list[float]] = {name: [] for name in targets}
        for url, key in targets.values():  # warm-up (first-request imports, connections)
            run_sequential(url, key, 0, 10, [])
        block = 25
        for start in range(0, args.n, block):
            for name, (url, key) in targets.items():
                run_sequential(url, key, start, min(block, args.n - start), seq[name])
        conc: dict[str, tuple[list[float], float]] = {}
        for name, (url, key) in targets.items():
            conc[name] = asyncio.run(run_concurrent(url, key, args.concurrent_n, args.concurrency))
        core = {k: core_pipeline(200, k) for k in ("sk-marketing", "sk-finance")}
    finally:
        for p in proxies:
            p.stop()
        echo.terminate()
        echo.wait(timeout=10)

    base_p50 = percentiles(seq["no guards (LiteLLM + master key)"])["p50"]
    rows = ["| target | seq req/s | seq p50 ms | seq p99 ms | p50 overhead ms | "
            f"{args.concurrency}-way req/s | {args.concurrency}-way p50 ms | {args.concurrency}-way p99 ms |",
            "|---|---|---|---|---|---|---|---|"]
    for name in targets:
        p = percentiles(seq[name])
        c = percentiles(conc[name][0])
        rps = 1000 / p["mean"]
        rows.append(f"| {name} | {rps:.0f} | {p['p50']:.1f} | {p['p99']:.1f} | {p['p50'] - base_p50:+.1f} | "
                    f"{conc[name][1]:.0f} | {c['p50']:.1f} | {c['p99']:.1f} |")
    rows += ["", "| core pipeline in-process (request + response stage + finish, audit included) | p50 ms | p99 ms |",
             "|---|---|---|"]
    for k, p in core.items():
        rows.append(f"| {k} | {p['p50']:.3f} | {p['p99']:.3f} |")
    body = "\n".join(rows) + (
        f"\n\n{args.n} sequential requests per target (alternating blocks of 25 so noise hits all alike) and "
        f"{args.concurrent_n} requests per target at concurrency {args.concurrency}; ~450-character prompt; "
        "both proxies are the real `litellm` 1.108.7 process (one worker) in front of the same echo upstream "
        "(its own process). The machine's 2 cores also run the client, the echo server and both proxies, so "
        "absolute numbers are pessimistic; the difference between sequential p50s is the guards' cost (the "
        "concurrent columns mostly show scheduling noise on a loaded 2-core machine). "
        f"Load average during the run: {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other jobs shared the machine).\n")
    if args.no_write:
        print(body)
    else:
        write_section("Proxy overhead", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
