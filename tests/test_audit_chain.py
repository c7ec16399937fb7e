"""Tamper evidence: `slg audit verify` on real files, rotation, several writer processes."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared_guards.audit import JsonlAuditSink, rotated_files, verify_files
from shared_guards.audit.chain import record_hash
from shared_guards.cli import main


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"event": "decision", "ts": 1_795_700_000.0 + i, "request_id": f"r{i}", "decision": "allow",
             "department": "finance", "rules": {}, "entities": {}} for i in range(start, start + n)]


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    sink.write_batch(_records(3))
    sink.write_batch(_records(3, 3))
    return path


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines(keepends=True)


def _edit(lines: list[str]) -> list[str]:
    rec = json.loads(lines[2])
    rec["decision"] = "block"
    return [*lines[:2], json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n", *lines[3:]]


def _edit_and_rehash(lines: list[str]) -> list[str]:
    """A forger who recomputes the edited record's hash still breaks the next link."""
    rec = json.loads(lines[2])
    rec["decision"] = "block"
    rec["hash"] = record_hash(rec)
    return [*lines[:2], json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n", *lines[3:]]


def _delete(lines: list[str]) -> list[str]:
    return [*lines[:2], *lines[3:]]


def _delete_first(lines: list[str]) -> list[str]:
    return lines[1:]


def _insert_copy(lines: list[str]) -> list[str]:
    return [*lines[:3], lines[1], *lines[3:]]


def _insert_forged(lines: list[str]) -> list[str]:
    prev = json.loads(lines[1])
    forged = {"event": "decision", "ts": prev["ts"] + 0.5, "request_id": "forged", "decision": "allow",
              "prev": prev["hash"], "seq": prev["seq"] + 1}
    forged["hash"] = record_hash(forged)
    return [*lines[:2], json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n", *lines[2:]]


def _swap(lines: list[str]) -> list[str]:
    return [*lines[:2], lines[3], lines[2], *lines[4:]]


def _truncate_line(lines: list[str]) -> list[str]:
    return [*lines[:3], lines[3][: len(lines[3]) // 2] + "\n", *lines[4:]]


@pytest.mark.parametrize(
    ("tamper", "line", "words"),
    [
        (_edit, 3, "record edited"),
        (_edit_and_rehash, 4, "deleted, inserted or reordered"),
        (_delete, 3, "1 record(s) missing"),
        (_delete_first, 1, "records before it were deleted"),
        (_insert_copy, 4, "deleted, inserted or reordered"),
        (_insert_forged, 4, "seq 3 repeated"),
        (_swap, 3, "reordered"),
        (_truncate_line, 4, "not a JSON record"),
    ],
    ids=["edited", "edited+rehashed", "deleted", "deleted-first", "inserted-copy", "inserted-forged",
         "swapped", "truncated"],
)
def test_verify_fails_on_tampering(chain_file: Path, capsys: pytest.CaptureFixture[str], tamper: Any,
                                   line: int, words: str) -> None:
    assert main(["audit", "verify", str(chain_file)]) == 0
    chain_file.write_text("".join(tamper(_lines(chain_file))))
    capsys.readouterr()
    assert main(["audit", "verify", str(chain_file)]) == 1
    err = capsys.readouterr().err
    assert f"{chain_file}:{line}:" in err, err
    assert words in err, err


def test_verify_cli_subprocess(chain_file: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "shared_guards.cli", "audit", "verify", str(chain_file)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "OK: 6 records" in ok.stdout and "seq 1..6" in ok.stdout
    chain_file.write_text("".join(_swap(_lines(chain_file))))
    bad = subprocess.run([sys.executable, "-m", "shared_guards.cli", "audit", "verify", str(chain_file)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "BROKEN" in bad.stderr and ":3:" in bad.stderr


def test_verify_json_and_missing_file(tmp_path: Path, chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--json", str(chain_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["records"] == 6 and out["last_seq"] == 6
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_rotation_keeps_one_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, max_bytes=1500)
    for i in range(12):
        sink.write_batch(_records(2, i * 2))
    files = rotated_files(path)
    assert len(files) >= 3 and files[-1] == path
    assert files[0].name == "audit.jsonl.000001"
    res = verify_files(files)
    assert res.ok, res.problems
    assert res.records == 24 + res.rotations and res.rotations == len(files) - 1
    assert main(["audit", "verify", "--rotated", str(path)]) == 0
    # The live file alone verifies (it starts with a rotation record) and says so.
    alone = verify_files([path])
    assert alone.ok and alone.starts_mid_chain
    # A rotated file left out of the middle breaks the chain at the next file's first line.
    gap = verify_files([files[0], *files[2:]])
    assert not gap.ok and gap.problems[0].file == str(files[2]) and gap.problems[0].line == 1
    # Files in the wrong order fail too.
    assert not verify_files([files[1], files[0], *files[2:]]).ok
    # Deleting the rotation record at the head of the live file is detected.
    path.write_text("".join(_lines(path)[1:]))
    capsys.readouterr()
    assert main(["audit", "verify", str(path)]) == 1


def test_torn_tail_is_reported_and_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    JsonlAuditSink(path).write_batch(_records(2))
    with path.open("a") as fh:
        fh.write('{"event":"decision","ts":1')  # a crash mid-write
    JsonlAuditSink(path).write_batch(_records(2, 2))  # a new process continues the chain
    res = verify_files([path])
    assert [(p.line, "not a JSON record" in p.what) for p in res.problems] == [(3, True)]
    assert res.records == 4 and res.last_seq == 4


def _writer(path: str, n: int, tag: str) -> None:
    sink = JsonlAuditSink(path)
    for i in range(n):
        sink.write_batch([{"event": "decision", "ts": float(i), "request_id": f"{tag}-{i}-{j}"} for j in range(3)])


def test_several_processes_share_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 40, f"p{k}")) for k in range(3)]
    for p in procs:
        p.start()
    _writer(str(path), 40, "main")
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    res = verify_files([path])
    assert res.ok, res.problems[:3]
    assert res.records == 4 * 40 * 3 and (res.first_seq, res.last_seq) == (1, 480)
    ids = {json.loads(line)["request_id"] for line in path.read_text().splitlines()}
    assert len(ids) == 480


def test_rotation_with_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_rotating_writer, args=(str(path),)) for _ in range(2)]
    for p in procs:
        p.start()
    _rotating_writer(str(path))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = rotated_files(path)
    assert len(files) > 2
    res = verify_files(files)
    assert res.ok, res.problems[:3]
    assert res.records - res.rotations == 3 * 30 * 2


def _rotating_writer(path: str) -> None:
    sink = JsonlAuditSink(path, max_bytes=4000)
    for i in range(30):
        sink.write_batch([{"event": "decision", "ts": float(i), "n": j} for j in range(2)])


def test_anchor_detects_a_cut_off_tail(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(chain_file)
    last = json.loads(lines[-1])["hash"]
    assert main(["audit", "verify", "--anchor", last, str(chain_file)]) == 0
    chain_file.write_text("".join(lines[:-2]))  # the last two records removed: the chain itself is intact
    capsys.readouterr()
    assert main(["audit", "verify", str(chain_file)]) == 0
    assert main(["audit", "verify", "--anchor", last, str(chain_file)]) == 1
    assert "not found" in capsys.readouterr().err


def test_odd_records_keep_the_chain_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    circular: dict[str, Any] = {"event": "decision", "request_id": "r-circ"}
    circular["self"] = circular
    written = JsonlAuditSink(path).write_batch([
        {"event": "decision", "identity": {"user": "bad\udcffname"}, "ts": 1.5},  # lone surrogate
        {"event": "decision", "groups": ("a", "b"), "when": Path("/x"), 1: "int key"},  # tuple, object, int key
        {"event": "decision", 2: "mixed", "k": "keys"},  # keys of mixed types
        circular,
        {"event": "decision", "text": "ünïcödé ✓", "nan": float("nan")},
    ])
    assert [w["event"] for w in written][3] == "audit.unserializable"
    res = verify_files([path])
    assert res.ok and res.records == 5, res.problems
    path.read_bytes().decode("utf-8")  # the file is valid UTF-8
