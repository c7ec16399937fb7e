"""`slg demo` (what `make run` runs): echo upstream + real LiteLLM proxy, ready line, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures_litellm import OFFLINE_ENV, REPO, free_port

SLG = str(Path(sys.executable).parent / "slg")


def _env() -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("REDIS_URL", None)
    env.pop("ECHO_API_BASE", None)
    return env


@pytest.mark.slow
def test_demo_starts_answers_and_stops(tmp_path: Path) -> None:
    port, echo_port = free_port(), free_port()
    log = tmp_path / "demo.log"
    env = _env() | {"SLG_AUDIT_PATH": str(tmp_path / "audit.jsonl")}
    with log.open("wb") as fh:
        proc = subprocess.Popen([SLG, "demo", "--port", str(port), "--echo-port", str(echo_port)], cwd=REPO,
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "slg demo ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "demo not ready"
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in text
        assert "sk-marketing" in text
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"authorization": "Bearer sk-marketing"}
        r = httpx.post(url, headers=headers, timeout=30,
                       json={"model": "general", "messages": [{"role": "user", "content": "Hello demo!"}]})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Hello demo!"
        got = httpx.get(f"http://127.0.0.1:{echo_port}/v1/echo/received", timeout=5).json()
        assert got[-1]["messages"][-1]["content"] == "Hello demo!"
        r = httpx.post(url, headers=headers, timeout=30,
                       json={"model": "coder", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 403 and "rbac.model" in r.json()["error"]["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, log.read_text(errors="replace")[-3000:]
    assert "slg demo stopped." in log.read_text(errors="replace")
    for p in (port, echo_port):  # both servers are gone
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", p), timeout=1):
            pass


def test_demo_refuses_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([SLG, "demo", "--port", str(free_port()), "--echo-port", str(port)], cwd=REPO,
                           env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"port {port} (echo upstream) is already in use" in r.stderr


def test_demo_refuses_bad_policy(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("departments:\n  a:\n    models: [general]\n    colour: blue\n")
    r = subprocess.run([SLG, "demo", "--policy", str(bad), "--port", str(free_port()),
                        "--echo-port", str(free_port())], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "departments.a.colour" in r.stderr
