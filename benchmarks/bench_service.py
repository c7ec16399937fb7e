"""Guard service (`slg serve`): memory and latency, `full` vs `edge` profile.

Starts the real service as a subprocess per configuration, waits for /readyz, warms up, then
sends sequential requests over one keep-alive connection and reads the process's RSS from /proc:

* full and edge, demo policy (config/policy.yaml: injection pattern + context; PII for finance, on
  Presidio/spaCy under full, pattern recognizers under edge);
* full and edge, injection policy (tests/policies/service_edge.yaml: pattern, context, the
  semantic MiniLM guard, the combined guard): edge drops the model layers.

Usage: ``python benchmarks/bench_service.py [--n 200]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import percentiles, write_section  # noqa: E402
from tests.fixtures_litellm import OFFLINE_ENV, free_port  # noqa: E402

PROMPT = ("Summarize the attached meeting notes for the product team and list the next steps. " * 12)[:1000]
TOKEN = "bench-token-0123456789abcdef"


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run(label: str, policy: str, profile: str, identity: dict[str, Any], n: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    token_file = workdir / "token"
    token_file.write_text(TOKEN)
    env = {**os.environ, **OFFLINE_ENV, "SLG_AUDIT_PATH": str(workdir / f"audit-{label}.jsonl"),
           "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "slg"), "serve", "--policy", policy, "--port",
                             str(port), "--profile", profile, "--token-file", str(token_file)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    body = {"body": {"model": "general", "messages": [{"role": "user", "content": PROMPT}]}, "identity": identity}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"{label}: slg serve exited with {proc.returncode}")
                time.sleep(0.1)
            first = client.post("/v1/guard/request", json={**body, "expect_response": False})
            if first.status_code != 200:
                raise RuntimeError(f"first request answered {first.status_code}: {first.text[:200]}")
            if first.json()["blocked"]:
                rules = sorted({f["rule_id"] for f in first.json().get("findings", [])})
                raise RuntimeError(f"the policy blocks the repetitive 1 KB probe prompt ({', '.join(rules)})")
            ready_s = time.perf_counter() - t0
            for _ in range(10):
                client.post("/v1/guard/request", json={**body, "expect_response": False})
            samples = []
            for i in range(n):
                b = {"body": {"model": "general", "messages": [{"role": "user", "content": f"{i} {PROMPT}"}]},
                     "identity": identity, "expect_response": False}
                s = time.perf_counter()
                r = client.post("/v1/guard/request", json=b)
                samples.append((time.perf_counter() - s) * 1000)
                assert r.status_code == 200
            generic = []
            for i in range(n):
                g = {"input_type": "request", "texts": [f"g{i} {PROMPT}"], "model": "general",
                     "request_data": {"user_api_key_team_id": identity.get("team", "")}}
                s = time.perf_counter()
                r = client.post("/beta/litellm_basic_guardrail_api", json=g)
                generic.append((time.perf_counter() - s) * 1000)
                assert r.status_code == 200
            rss, peak = _rss_mb(proc.pid)
            heavy = subprocess.run([sys.executable, "-c", f"print(open('/proc/{proc.pid}/maps').read())"],
                                   capture_output=True, text=True).stdout
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {"label": label, "ready_s": ready_s, "rss": rss, "peak": peak, "req": percentiles(samples),
            "generic": percentiles(generic), "torch": "libtorch" in heavy}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    demo = ROOT / "config" / "policy.yaml"
    inj = str(ROOT / "tests" / "policies" / "service_edge.yaml")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [
            ("edge, one regex guard (service overhead: HTTP, auth, JSON, audit)",
             str(ROOT / "tests" / "policies" / "service.yaml"), "edge", {"team": "rnd"}),
            ("full, demo policy, finance (combined injection + PII: Presidio with the learned name tagger)", str(demo), "full", {"team": "finance"}),
            ("full, demo policy, marketing (combined injection: pattern + context + MiniLM)", str(demo), "full", {"team": "marketing"}),
            ("edge, demo policy, finance (PII pattern recognizers)", str(demo), "edge", {"team": "finance"}),
            ("edge, demo policy, marketing (injection pattern + context)", str(demo), "edge", {"team": "marketing"}),
            ("full, injection policy, rnd (pattern + context + MiniLM)", inj, "full", {"team": "rnd"}),
            ("edge, injection policy, rnd (pattern + context)", inj, "edge", {"team": "rnd"}),
        ]
        for label, policy, profile, identity in configs:
            try:
                r = run(label, policy, profile, identity, args.n, Path(tmp))
            except (RuntimeError, AssertionError) as exc:
                r = {"label": label, "error": str(exc).splitlines()[0][:160]}
            rows.append(r)
            print(r, flush=True)
    lines = ["| profile, policy | ready + 1st request s | RSS MB | peak RSS MB | torch mapped | "
             "/v1/guard/request p50 / p99 ms | Generic Guardrail API p50 / p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | not measured: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['label']} | {r['ready_s']:.1f} | {r['rss']:.0f} | {r['peak']:.0f} | "
                     f"{'yes' if r['torch'] else 'no'} | {r['req']['p50']:.2f} / {r['req']['p99']:.2f} | "
                     f"{r['generic']['p50']:.2f} / {r['generic']['p99']:.2f} |")
    body = "\n".join(lines) + (
        f"\n\n{args.n} sequential requests per row over one keep-alive connection (HTTP, JSON, auth, "
        "audit included), 1 KB prompts, distinct texts; RSS read from /proc after the run. "
        "The edge profile drops the semantic guard and layer and runs PII as pattern recognizers "
        "(no torch, no spaCy: see tests/test_service_edge.py).")
    write_section("Guard service", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
