"""The JSONL file: the audit system of record.

Several processes (LiteLLM workers, Kong plugin server processes) may append to the same file:
every batch is written under an exclusive ``fcntl.flock`` on ``<file>.lock``, and the writer reads
the chain head (last ``hash`` and ``seq``) from the file's tail under that lock unless the file is
exactly as this writer left it. So all processes extend one verifiable chain. Each batch is one
``write`` on an ``O_APPEND`` descriptor.

Rotation (``max_bytes``) happens under the same lock: ``audit.jsonl`` is renamed to
``audit.jsonl.000001`` (next free number) and the new file starts with an ``audit.rotate`` record
whose ``prev`` is the rotated file's last hash.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_guards.audit.chain import GENESIS, ROTATE_EVENT, seal_line

log = logging.getLogger("shared_guards.audit")

_TAIL_BLOCK = 64 * 1024
_TAIL_LIMIT = 16 * 1024 * 1024


def rotated_files(path: str | os.PathLike[str]) -> list[Path]:
    """The rotated files of ``path`` oldest first, then ``path`` itself if it exists."""
    p = Path(path)
    pat = re.compile(re.escape(p.name) + r"\.(\d{6,})$")
    found: list[tuple[int, Path]] = []
    if p.parent.is_dir():
        for q in p.parent.iterdir():
            m = pat.match(q.name)
            if m:
                found.append((int(m.group(1)), q))
    out = [q for _, q in sorted(found)]
    if p.exists():
        out.append(p)
    return out


def read_head(path: Path) -> tuple[str, int, bool]:
    """``(last hash, last seq, ends_with_newline)`` of a chain file; genesis when empty or missing."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return GENESIS, 0, True
    with fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return GENESIS, 0, True
        fh.seek(end - 1)
        newline = fh.read(1) == b"\n"
        pos, buf = end, b""
        while pos > 0 and end - pos < _TAIL_LIMIT:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            lines = buf.split(b"\n")
            # lines[0] may be partial unless we reached the start of the file
            candidates = lines if pos == 0 else lines[1:]
            for raw in reversed(candidates):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue  # a torn line (crash mid-write): chain from the last good record
                if isinstance(rec, dict) and isinstance(rec.get("hash"), str):
                    seq = rec.get("seq")
                    return rec["hash"], seq if isinstance(seq, int) else 0, newline
        return GENESIS, 0, newline


class JsonlAuditSink:
    """Hash-chained, rotated, multi-process safe JSONL writer.

    ``write_batch`` is synchronous: the :class:`~shared_guards.audit.hub.AuditHub` calls it from its
    background thread. ``emit`` (one record, synchronous) remains for direct use and tests.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 0, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._tlock = threading.Lock()
        # (inode, size) of the file right after our last write, with the head we wrote.
        self._cache: tuple[int, int, str, int] | None = None

    # -- public ----------------------------------------------------------------------------------

    def reset_after_fork(self) -> None:
        self._tlock = threading.Lock()
        self._cache = None  # the parent appends too: always re-read the head under the file lock

    def emit(self, record: Mapping[str, Any]) -> None:
        self.write_batch([record])

    def close(self) -> None:
        return None

    def write_batch(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Chain and append ``records``; returns them as written (with ``seq``, ``prev``, ``hash``)."""
        if not records:
            return []
        with self._tlock, open(self.lock_path, "a") as lockfh:
            fcntl.flock(lockfh.fileno(), fcntl.LOCK_EX)
            try:
                return self._append(records)
            finally:
                fcntl.flock(lockfh.fileno(), fcntl.LOCK_UN)

    # -- internals (called under the lock) --------------------------------------------------------

    def _head(self) -> tuple[str, int, int, bool]:
        """``(prev, seq, size, needs_newline)`` of the live file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return GENESIS, 0, 0, False
        if self._cache is not None and self._cache[0] == st.st_ino and self._cache[1] == st.st_size:
            return self._cache[2], self._cache[3], st.st_size, False
        prev, seq, newline = read_head(self.path)
        return prev, seq, st.st_size, not newline

    def _rotate(self, prev: str, seq: int) -> tuple[str, int]:
        existing = rotated_files(self.path)[:-1] if self.path.exists() else rotated_files(self.path)
        n = 1
        if existing:
            n = int(existing[-1].name.rsplit(".", 1)[1]) + 1
        target = self.path.with_name(f"{self.path.name}.{n:06d}")
        os.rename(self.path, target)
        marker, line = seal_line({"event": ROTATE_EVENT, "ts": time.time(), "previous_file": target.name,
                                  "previous_last_seq": seq}, prev, seq + 1)
        self._write(line + b"\n")
        log.info("audit file rotated to %s", target.name)
        return marker["hash"], marker["seq"]

    def _write(self, data: bytes) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
            return os.fstat(fd).st_ino
        finally:
            os.close(fd)

    def _append(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        prev, seq, size, torn = self._head()
        if self.max_bytes and size >= self.max_bytes:
            prev, seq = self._rotate(prev, seq)
            torn = False
        out: list[dict[str, Any]] = []
        chunks: list[bytes] = [b"\n"] if torn else []
        for r in records:
            seq += 1
            try:
                sealed, line = seal_line(r, prev, seq)
            except (TypeError, ValueError) as exc:  # one bad record must not cost the batch
                log.error("audit record not serializable (%s): replaced by a placeholder", type(exc).__name__)
                sealed, line = seal_line({"event": "audit.unserializable", "ts": time.time(),
                                          "request_id": str(r.get("request_id", "")),
                                          "error": type(exc).__name__}, prev, seq)
            prev = sealed["hash"]
            out.append(sealed)
            chunks.append(line + b"\n")
        ino = self._write(b"".join(chunks))
        self._cache = (ino, self.path.stat().st_size, prev, seq)
        return out
