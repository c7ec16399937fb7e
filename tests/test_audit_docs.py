"""docs/audit.md cannot rot: its policy snippets validate and its commands run as shown."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared_guards.audit import JsonlAuditSink
from shared_guards.cli import main
from shared_guards.policy import parse_policy

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "audit.md").read_text()


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block."""
    out: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                out.append((lang, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


BLOCKS = _blocks(DOC)
YAML_BLOCKS = [b for kind, b in BLOCKS if kind == "yaml"]
COMMANDS = [line.split("#")[0].strip().lstrip("$ ").strip() for kind, b in BLOCKS if kind == ""
            for line in b.splitlines() if line.lstrip("$ ").startswith("slg ")]


def test_doc_has_snippets() -> None:
    assert len(YAML_BLOCKS) >= 4 and len(COMMANDS) >= 6


@pytest.mark.parametrize("snippet", YAML_BLOCKS, ids=lambda s: s.split(":")[0])
def test_policy_snippets_validate(snippet: str) -> None:
    demo: dict[str, Any] = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    part = yaml.safe_load(snippet.replace("…", "x"))
    for section, value in part.items():
        if section == "audit" and "capture_departments" in value:  # the doc's sandbox department
            demo["departments"]["sandbox"] = {"models": ["general"]}
        demo[section] = {**demo.get(section, {}), **value}
    parse_policy(demo)


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_run(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    sink = JsonlAuditSink(tmp_path / "var" / "audit.jsonl", max_bytes=600)
    for i in range(6):
        sink.write_batch([{"event": "decision", "ts": 1_795_700_000.0 + i, "stage": "request",
                           "department": "finance", "decision": "allow"}])
    argv = shlex.split(command)[1:]
    argv = [a for arg in argv for a in (sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(arg))
                                        if "*" in arg else [arg])]
    if "--anchor" in argv:
        i = argv.index("--anchor") + 1
        argv[i] = (tmp_path / "var" / "audit.jsonl").read_text().splitlines()[-1].split('"hash":"')[1][:64]
    assert main(argv) == 0, capsys.readouterr()
