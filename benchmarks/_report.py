"""Write one benchmark's section into docs/benchmarks.md (replacing the previous run's)."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nMeasured on this project's CI-class machine (2 cores). Each section names the command that produced it.\n"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    s = sorted(samples_ms)
    if not s:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {
        "p50": s[len(s) // 2],
        "p99": s[min(len(s) - 1, int(len(s) * 0.99))],
        "mean": statistics.fmean(s),
    }


def write_section(title: str, body: str, command: str | None = None) -> None:
    command = command or "python " + " ".join([os.path.relpath(sys.argv[0], DOC.parents[1]), *sys.argv[1:]])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (
        f"## {title}\n\n"
        f"Command: `{command}` ({stamp}, {os.cpu_count()} CPUs, Python {platform.python_version()})\n\n"
        f"{body.strip()}\n"
    )
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)
    print(section)
