"""The per-request pseudonymization vault and placeholder restoring, whole or streamed.

A :class:`Vault` lives in ``ctx.state`` for one request: never on a guard, never logged (its
``repr`` shows only a count). Placeholders look like ``<PERSON_1>``; the same value (case- and
whitespace-insensitive) gets the same placeholder within the request, and because every request
carries the conversation so far, numbering is stable across a conversation too.
"""

from __future__ import annotations

import re
from collections import Counter

PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z_]{0,40}?)_(\d{1,6})>")
MAX_PLACEHOLDER_LEN = 50
# A placeholder that may still be incomplete at the end of a stream buffer: "<", "<PERS", "<PERSON_1".
_TAIL_RE = re.compile(r"<[A-Z_]{0,42}\d{0,6}$")


def _key(entity: str, value: str) -> tuple[str, str]:
    return entity, " ".join(value.split()).casefold()


class Vault:
    """Placeholder <-> original value for one request."""

    __slots__ = ("_by_key", "_values", "_counters", "_taken")

    def __init__(self, reserved_text: str = "") -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counters: Counter[str] = Counter()
        # Placeholders already present in the caller's text are never reused for a value.
        self._taken: set[str] = set(m.group(0) for m in PLACEHOLDER_RE.finditer(reserved_text))

    def reserve(self, text: str) -> None:
        self._taken.update(m.group(0) for m in PLACEHOLDER_RE.finditer(text))

    def pseudonym(self, entity: str, value: str) -> str:
        key = _key(entity, value)
        ph = self._by_key.get(key)
        if ph is not None:
            return ph
        while True:
            self._counters[entity] += 1
            ph = f"<{entity}_{self._counters[entity]}>"
            if ph not in self._taken:
                break
        self._by_key[key] = ph
        self._values[ph] = value
        return ph

    def restore(self, text: str) -> str:
        if not self._values or "<" not in text:
            return text
        return PLACEHOLDER_RE.sub(lambda m: self._values.get(m.group(0), m.group(0)), text)

    def is_known(self, entity: str, value: str) -> bool:
        return _key(entity, value) in self._by_key

    def known_values(self) -> set[str]:
        return {k[1] for k in self._by_key}

    def placeholders(self) -> list[str]:
        return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:  # never show values
        return f"<Vault {len(self._values)} entries>"

    __str__ = __repr__


def hold_point(text: str) -> int:
    """Where a possibly incomplete placeholder starts at the end of ``text`` (``len(text)`` if none)."""
    lt = text.rfind("<", max(0, len(text) - MAX_PLACEHOLDER_LEN))
    if lt < 0:
        return len(text)
    if _TAIL_RE.match(text, lt) and len(text) - lt < MAX_PLACEHOLDER_LEN:
        return lt
    return len(text)


def placeholder_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in PLACEHOLDER_RE.finditer(text)]


class StreamRestorer:
    """Restores placeholders in a streamed answer, one buffer per choice. Holds back at most
    ``MAX_PLACEHOLDER_LEN`` characters (a placeholder that may be split across chunks)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._pending: dict[int, str] = {}

    def feed(self, delta: str, choice_index: int = 0) -> str:
        buf = self._pending.get(choice_index, "") + delta
        cut = hold_point(buf)
        self._pending[choice_index] = buf[cut:]
        return self.vault.restore(buf[:cut])

    def flush(self, choice_index: int = 0) -> str:
        return self.vault.restore(self._pending.pop(choice_index, ""))
