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
    """The complete records of a JSONL file another process may be appending to: a last line
    without its newline is still being written and is left for the next read."""
    try:
        text = path.read_text()
    except OSError:
        return []
    complete = text[: text.rfind("\n") + 1]  # not splitlines: a record may hold U+2028
    return [json.loads(line) for line in complete.split("\n") if line.strip()]
