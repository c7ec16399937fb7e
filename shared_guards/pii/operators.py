"""Irreversible masks. Pseudonyms live in :mod:`shared_guards.pii.vault`."""

from __future__ import annotations

from shared_guards.pii.presets import MaskStyle


def partial_mask(value: str, keep: int = 4, char: str = "*") -> str:
    """Star every letter and digit except the last ``keep`` ones; separators stay.
    ``123-45-6789`` -> ``***-**-6789``. Values with fewer than ``2 * keep`` letters/digits are fully starred."""
    alnum = sum(1 for c in value if c.isalnum())
    keep = keep if alnum >= 2 * keep else 0
    out = []
    seen = 0
    for c in value:
        if c.isalnum():
            seen += 1
            out.append(c if seen > alnum - keep else char)
        else:
            out.append(c)
    return "".join(out)


def mask(value: str, entity: str, style: MaskStyle) -> str:
    if style is MaskStyle.PARTIAL:
        return partial_mask(value)
    if style is MaskStyle.REDACT:
        return "[REDACTED]"
    return f"[{entity}]"
