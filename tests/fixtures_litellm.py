"""Session fixtures for the LiteLLM side: the embedded echo upstream and real proxy processes.

- ``echo_upstream``: :class:`~shared_guards.demo.echo.EchoUpstream` on a free port (``.base_url``,
  ``.received()``, ``.clear()``).
- ``litellm_proxy``: the real ``litellm`` proxy with ``config/litellm.yaml`` and the demo policy
  ``config/policy.yaml``, started once per session on a free port.
- ``litellm_proxy_factory(policy_path, env=None, config=...)``: another proxy for another policy/env
  (and optionally another LiteLLM config), cached per (policy, env, config), stopped at session end.

Each proxy writes its audit trail to its own file (``.audit_path``, ``.audit_records()``) and its
output to a log file (``.log_text()``). Ports are always free ports, never the demo's 4000/4001.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared_guards.demo.echo import EchoUpstream
from tests.procutil import free_port, read_jsonl, read_log, venv_executable

REPO = Path(__file__).resolve().parent.parent
LITELLM_CONFIG = REPO / "config" / "litellm.yaml"
DEMO_POLICY = REPO / "config" / "policy.yaml"
START_TIMEOUT = float(os.environ.get("SLG_PROXY_START_TIMEOUT", "240"))

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TOKENIZERS_PARALLELISM": "false",
    "LITELLM_TELEMETRY": "False",
}


def litellm_executable() -> str:
    return venv_executable("litellm")


@dataclass
class ProxyProcess:
    """A running LiteLLM proxy subprocess."""

    port: int
    policy_path: Path
    audit_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str | None, **kwargs: Any) -> Any:
        """A real ``openai.OpenAI`` client against this proxy (no retries: a retry would hide a 5xx)."""
        import openai

        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60.0)
        return openai.OpenAI(base_url=self.base_url, api_key=api_key or "", **kwargs)

    def post_chat(self, body: Any, api_key: str | None = None, *, raw: bytes | None = None,
                  timeout: float = 60.0) -> httpx.Response:
        """POST to /v1/chat/completions with httpx (for raw bodies and header checks)."""
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.base_url}/chat/completions", content=content, headers=headers, timeout=timeout)

    def log_text(self) -> str:
        return read_log(self.log_path)

    def audit_records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.audit_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_proxy(
    *,
    policy_path: str | os.PathLike[str],
    upstream_base: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    config: Path = LITELLM_CONFIG,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> ProxyProcess:
    """Start ``litellm --config config`` and wait for ``/health/liveliness`` (raises with the log tail)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    audit_path = workdir / "audit.jsonl"
    log_path = workdir / "proxy.log"
    full_env = {**os.environ, **OFFLINE_ENV}
    # Isolation: quotas live in the proxy's memory unless the caller passes REDIS_URL explicitly.
    full_env.pop("REDIS_URL", None)
    full_env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "SLG_POLICY": str(Path(policy_path).resolve()),
        "SLG_AUDIT_PATH": str(audit_path),
        "ECHO_API_BASE": upstream_base,
        "ECHO_API_KEY": "sk-echo-upstream",
        "LITELLM_MASTER_KEY": "sk-" + secrets.token_hex(24),
    })
    full_env.update(env or {})
    log_fh = log_path.open("wb")
    proc = subprocess.Popen(
        [litellm_executable(), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        cwd=str(REPO), env=full_env, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log_fh.close()
    proxy = ProxyProcess(port, Path(policy_path), audit_path, log_path, proc, dict(env or {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM proxy exited with {proc.returncode} during start-up:\n"
                               + proxy.log_text()[-4000:])
        try:
            if httpx.get(f"{proxy.url}/health/liveliness", timeout=2).status_code == 200:
                return proxy
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proxy.stop()
    raise RuntimeError(f"LiteLLM proxy not live after {timeout:.0f}s:\n" + proxy.log_text()[-4000:])


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[EchoUpstream]:
    echo = EchoUpstream(port=0).start()
    try:
        yield echo
    finally:
        echo.stop()


ProxyFactory = Callable[..., ProxyProcess]


@pytest.fixture(scope="session")
def litellm_proxy_factory(
    echo_upstream: EchoUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyFactory]:
    started: dict[tuple[str, tuple[tuple[str, str], ...], str], ProxyProcess] = {}

    def factory(policy_path: str | os.PathLike[str] = DEMO_POLICY, env: Mapping[str, str] | None = None,
                config: str | os.PathLike[str] = LITELLM_CONFIG) -> ProxyProcess:
        key = (str(Path(policy_path).resolve()), tuple(sorted((env or {}).items())), str(Path(config).resolve()))
        proxy = started.get(key)
        if proxy is None or not proxy.alive():
            workdir = tmp_path_factory.mktemp("litellm_proxy")
            proxy = start_proxy(policy_path=policy_path, upstream_base=echo_upstream.base_url,
                                workdir=workdir, env=env, config=Path(config))
            started[key] = proxy
        return proxy

    try:
        yield factory
    finally:
        for proxy in started.values():
            proxy.stop()


@pytest.fixture(scope="session")
def litellm_proxy(litellm_proxy_factory: ProxyFactory) -> ProxyProcess:
    return litellm_proxy_factory(DEMO_POLICY)
