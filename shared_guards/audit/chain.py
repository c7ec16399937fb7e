"""The hash chain: canonical JSON, record hashes and verification of one or more files.

Every record carries ``seq`` (one more than the record before it), ``prev`` (the previous record's
``hash``; ``GENESIS`` for the very first) and ``hash`` = SHA-256 of its canonical JSON without
``hash``. After a rotation the new file starts with an ``audit.rotate`` record whose ``prev`` is the
last hash of the rotated file, so ``verify_files(rotated..., live)`` checks one unbroken chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
ROTATE_EVENT = "audit.rotate"


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8. ``hash`` is computed over this.

    Text that is not valid Unicode (lone surrogates) cannot be UTF-8: such a record is written
    with ASCII escapes instead, which parse back to the same data and so to the same bytes."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def normalize(record: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, so that what is hashed is exactly what a reader will parse back."""
    out: dict[str, Any] = json.loads(json.dumps(record, default=str, ensure_ascii=False))
    return out


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def seal_line(record: Mapping[str, Any], prev: str, seq: int) -> tuple[dict[str, Any], bytes]:
    """Chain a record: set ``prev`` and ``seq``, add ``hash``; returns it and its JSONL line.

    The line is the canonical JSON of the record without ``hash`` with ``"hash"`` appended as the
    last member: one serialization per record. Canonical JSON survives a parse/serialize round
    trip, so a reader recomputes the same hash."""
    body = dict(record)
    body.pop("hash", None)
    body["prev"] = prev
    body["seq"] = seq
    try:
        c = canonical(body)  # default=str: what a reader parses back serializes to the same bytes
    except (TypeError, ValueError):  # e.g. keys of mixed types
        body = normalize(body)
        c = canonical(body)
    digest = hashlib.sha256(c).hexdigest()
    body["hash"] = digest
    return body, c[:-1] + b',"hash":"' + digest.encode() + b'"}'


def seal(record: Mapping[str, Any], prev: str, seq: int) -> dict[str, Any]:
    """Chain a record: set ``prev`` and ``seq``, add ``hash``."""
    return seal_line(record, prev, seq)[0]


@dataclass
class Problem:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass
class VerifyResult:
    files: list[str]
    records: int = 0
    rotations: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS
    first_ts: float | None = None
    last_ts: float | None = None
    problems: list[Problem] = field(default_factory=list)
    starts_mid_chain: bool = False  # the first file continues a rotated file not given

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        span = f"seq {self.first_seq}..{self.last_seq}" if self.records else "empty"
        note = " (continues an earlier rotated file not given)" if self.starts_mid_chain else ""
        return (f"{self.records} records in {len(self.files)} file(s), {span}, "
                f"{self.rotations} rotation(s), last hash {self.last_hash[:16]}{note}")


def _seq_note(seq: Any, last_seq: int | None) -> str:
    if not isinstance(seq, int) or last_seq is None:
        return ""
    if seq == last_seq + 1:
        return ""
    if seq > last_seq + 1:
        return f"; seq jumps {last_seq} -> {seq}: {seq - last_seq - 1} record(s) missing"
    if seq == last_seq:
        return f"; seq {seq} repeated: a record was inserted or duplicated"
    return f"; seq goes back {last_seq} -> {seq}: records reordered or inserted"


def verify_files(paths: Iterable[str | Path], max_problems: int = 50,
                 anchors: Iterable[str] = ()) -> VerifyResult:
    """Check one chain across ``paths`` (oldest first). Reports every break with file and line.

    ``anchors`` are record hashes known from elsewhere (a SIEM copy, an earlier verify run): each
    must still be in the chain, which catches records cut off the end of the file."""
    files = [str(p) for p in paths]
    missing = set(anchors)
    res = VerifyResult(files)
    last_hash: str | None = None  # None: nothing read yet
    last_seq: int | None = None

    def problem(file: str, line: int, what: str) -> None:
        if len(res.problems) < max_problems:
            res.problems.append(Problem(file, line, what))

    for fi, path in enumerate(files):
        try:
            fh = open(path, "rb")
        except OSError as exc:
            problem(path, 0, f"cannot read: {exc.strerror}")
            continue
        with fh:
            first_in_file = True
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    problem(path, lineno, "empty line")
                    continue
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                except ValueError:
                    problem(path, lineno, "not a JSON record (edited or truncated)")
                    last_hash = None  # resynchronize on the next record
                    continue
                stored, prev, seq = rec.get("hash"), rec.get("prev"), rec.get("seq")
                if not isinstance(stored, str) or not isinstance(prev, str):
                    problem(path, lineno, "record without hash/prev: not part of the chain (inserted?)")
                    last_hash = None
                    continue
                if record_hash(rec) != stored:
                    problem(path, lineno, "hash does not match the record's content: record edited")
                is_rotate = rec.get("event") == ROTATE_EVENT
                if res.records == 0 and last_hash is None and fi == 0 and first_in_file:
                    if prev != GENESIS:
                        if is_rotate:
                            res.starts_mid_chain = True
                        else:
                            problem(path, lineno, "chain does not start here (prev is not genesis and this is "
                                                  "not a rotation record): records before it were deleted")
                elif last_hash is not None and prev != last_hash:
                    where = "the last record of the previous file" if first_in_file else f"line {lineno - 1}"
                    problem(path, lineno, f"prev does not match the hash of {where}: a record was deleted, "
                                          f"inserted or reordered here{_seq_note(seq, last_seq)}")
                elif last_hash is not None and isinstance(seq, int) and last_seq is not None and seq != last_seq + 1:
                    problem(path, lineno, f"sequence broken{_seq_note(seq, last_seq)}")
                if first_in_file and fi > 0 and not is_rotate:
                    problem(path, lineno, "a continued file must start with a rotation record")
                if is_rotate:
                    res.rotations += 1
                first_in_file = False
                res.records += 1
                if isinstance(seq, int):
                    res.first_seq = seq if res.first_seq is None else res.first_seq
                    res.last_seq = seq
                ts = rec.get("ts")
                if isinstance(ts, (int, float)):
                    res.first_ts = ts if res.first_ts is None else res.first_ts
                    res.last_ts = ts
                missing.discard(stored)
                last_hash = stored
                last_seq = seq if isinstance(seq, int) else None
                res.last_hash = stored
    for anchor in sorted(missing):
        problem(files[-1] if files else "-", 0, f"anchor {anchor[:16]}... not found: records were removed "
                                                 "(the end of the log was cut off?)")
    return res
