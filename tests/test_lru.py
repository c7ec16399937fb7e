"""The shared in-process LRU of the content guards' result caches."""

from __future__ import annotations

from shared_guards.lru import LRU


def test_least_recently_used_entry_goes_first() -> None:
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # "a" is now the most recent
    c.put("c", 3)
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3
    assert len(c) == 2


def test_size_zero_is_off() -> None:
    c: LRU[str, int] = LRU(0)
    c.put("a", 1)
    assert c.get("a") is None and len(c) == 0
