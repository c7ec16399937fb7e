"""Helpers shared by the fixtures that run real processes (proxies, plugin server, service, Redis)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_executable(name: str) -> str:
    """A console script of this virtualenv (``litellm``, ``slg``), else the name on PATH."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
