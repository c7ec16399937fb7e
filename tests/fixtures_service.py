"""Session fixtures for the guard service (`slg serve` as a real subprocess on a free port).

- ``guard_service``: ``slg serve`` with ``tests/policies/service.yaml`` (full profile, token auth).
- ``guard_service_factory(policy, args=(), env=None)``: another instance, cached per arguments.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures_litellm import OFFLINE_ENV, REPO, free_port
from tests.procutil import venv_executable

SERVICE_POLICY = REPO / "tests" / "policies" / "service.yaml"
START_TIMEOUT = float(os.environ.get("SLG_SERVICE_START_TIMEOUT", "180"))
# One random service token per test session (schemathesis needs it at collection time).
SESSION_TOKEN = "slg-test-" + secrets.token_hex(16)


def slg_executable() -> str:
    return venv_executable("slg")


@dataclass
class ServiceProcess:
    port: int
    token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    audit_path: Path
    args: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def post(self, path: str, body: Any = None, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth if auth else {}), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        if body is not None:
            kwargs["json"] = body
        return httpx.post(self.url + path, headers=headers, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

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


def start_service(policy: str | os.PathLike[str], workdir: Path, *, args: Sequence[str] = (),
                  env: Mapping[str, str] | None = None, port: int | None = None,
                  timeout: float = START_TIMEOUT) -> ServiceProcess:
    """``slg serve --policy POLICY --port PORT --token-file TOKEN [args]``; waits for /healthz."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    token = SESSION_TOKEN
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    audit_path = workdir / "audit.jsonl"
    log_path = workdir / "service.log"
    full_env = {**os.environ, **OFFLINE_ENV, "SLG_AUDIT_PATH": str(audit_path)}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    cmd = [slg_executable(), "serve", "--policy", str(policy), "--host", "127.0.0.1", "--port", str(port),
           "--token-file", str(token_file), *args]
    with log_path.open("wb") as log_fh:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=full_env, stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    svc = ServiceProcess(port, token, proc, log_path, audit_path, tuple(args))
    tls = "--tls-cert" in args
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slg serve exited with {proc.returncode}:\n{svc.log_text()[-4000:]}")
        try:
            if tls:  # a client certificate may be required even for /healthz: uvicorn listens once started
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return svc
            if httpx.get(svc.url + "/healthz", timeout=2).status_code == 200:
                return svc
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"slg serve not up after {timeout:.0f}s:\n{svc.log_text()[-4000:]}")


ServiceFactory = Callable[..., ServiceProcess]


@pytest.fixture(scope="session")
def guard_service_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceFactory]:
    started: dict[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ServiceProcess] = {}

    def factory(policy: str | os.PathLike[str] = SERVICE_POLICY, args: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> ServiceProcess:
        key = (str(Path(policy).resolve()), tuple(args), tuple(sorted((env or {}).items())))
        svc = started.get(key)
        if svc is None or not svc.alive():
            svc = start_service(policy, tmp_path_factory.mktemp("guard_service"), args=args, env=env)
            started[key] = svc
        return svc

    try:
        yield factory
    finally:
        for svc in started.values():
            svc.stop()


@pytest.fixture(scope="session")
def guard_service(guard_service_factory: ServiceFactory) -> ServiceProcess:
    return guard_service_factory(SERVICE_POLICY)
