"""The examples in examples/ run as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_direct_use_example(tmp_path: Path) -> None:
    env = {**os.environ, "SLG_AUDIT_PATH": str(tmp_path / "audit.jsonl"), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "examples/direct_use.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "allowed: allow" in res.stdout or "allowed: modify" in res.stdout
    blocked = next(line for line in res.stdout.splitlines() if line.startswith("blocked:"))
    status, body = blocked.split(" ", 2)[1:]
    assert status == "403"
    assert json.loads(body)["error"]["code"] == "model_not_allowed"
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 2
