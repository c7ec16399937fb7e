"""`slg demo` (what `make run` runs): the echo upstream on :4001 and the real LiteLLM proxy on :4000.

The proxy runs ``config/litellm.yaml`` with the guardrail and ``custom_auth`` from ``litellm_hooks``
and the demo policy. Ctrl-C or SIGTERM stops both. Offline by default (no price list, no hub).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from shared_guards.errors import PolicyError
from shared_guards.policy import load_policy

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TOKENIZERS_PARALLELISM": "false",
    "LITELLM_TELEMETRY": "False",
}


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the demo: echo upstream + LiteLLM proxy with the guards")
    p.add_argument("--host", default="127.0.0.1", help="proxy host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4000, help="proxy port (default 4000)")
    p.add_argument("--echo-port", type=int, default=4001, help="echo upstream port (default 4001)")
    p.add_argument("--config", default="config/litellm.yaml", help="LiteLLM config file")
    p.add_argument("--policy", default=None, help="policy file (default $SLG_POLICY or config/policy.yaml)")
    p.add_argument("--no-echo", action="store_true",
                   help="do not start the echo upstream (models point at a real provider)")
    p.add_argument("--start-timeout", type=float, default=240.0, help="seconds to wait for the proxy")
    p.set_defaults(func=run)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _litellm_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "litellm"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("litellm")
    if found:
        return [found]
    return [sys.executable, "-m", "litellm.proxy.proxy_cli"]


def _repo_root() -> Path:
    """The folder holding ``litellm_hooks`` (for PYTHONPATH when not installed as a package)."""
    return Path(__file__).resolve().parents[2]


def _fail(msg: str) -> int:
    print(f"slg demo: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    config = Path(args.config).resolve()
    policy = Path(args.policy or os.environ.get("SLG_POLICY") or "config/policy.yaml").resolve()
    if not config.is_file():
        return _fail(f"LiteLLM config {config} not found (run from the repository root or pass --config)")
    try:
        load_policy(policy)
    except PolicyError as exc:
        return _fail(str(exc))
    if not args.no_echo and not _port_free("127.0.0.1", args.echo_port):
        return _fail(f"port {args.echo_port} (echo upstream) is already in use; pass --echo-port")
    if not _port_free(args.host, args.port):
        return _fail(f"port {args.port} (LiteLLM proxy) is already in use; pass --port")

    echo = None
    if not args.no_echo:
        from shared_guards.demo.echo import EchoUpstream

        echo = EchoUpstream("127.0.0.1", args.echo_port).start()

    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in OFFLINE_ENV.items()}}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_repo_root()), os.environ.get("PYTHONPATH", "")) if p)
    env["SLG_POLICY"] = str(policy)
    env.setdefault("ECHO_API_BASE", f"http://127.0.0.1:{args.echo_port}/v1")
    env.setdefault("ECHO_API_KEY", "sk-echo-upstream")
    env.setdefault("LITELLM_MASTER_KEY", "sk-" + secrets.token_hex(24))
    cmd = [*_litellm_cmd(), "--config", str(config), "--host", args.host, "--port", str(args.port)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    url = f"http://{args.host}:{args.port}"
    rc = 0
    try:
        ready = False
        deadline = time.monotonic() + args.start_timeout
        while not stop.is_set() and proc.poll() is None and time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            stop.wait(0.5)
        if proc.poll() is not None:
            return _fail(f"the LiteLLM proxy exited with code {proc.returncode} during start-up")
        if not ready and not stop.is_set():
            return _fail(f"the LiteLLM proxy was not ready after {args.start_timeout:.0f}s")
        if ready:
            upstream = env["ECHO_API_BASE"] if echo is None else echo.base_url
            print(
                f"\nslg demo ready: LiteLLM proxy {url} (guards on, policy {policy.name}), upstream {upstream}\n"
                f"  curl -s {url}/v1/chat/completions -H 'Authorization: Bearer sk-marketing' "
                f"-H 'Content-Type: application/json' "
                "-d '{\"model\": \"general\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
        while not stop.is_set() and proc.poll() is None:
            stop.wait(0.5)
        if proc.poll() is not None and not stop.is_set():
            rc = _fail(f"the LiteLLM proxy exited with code {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if echo is not None:
            echo.stop()
        for s, h in old.items():
            signal.signal(s, h)
        print("slg demo stopped.", flush=True)
    return rc
