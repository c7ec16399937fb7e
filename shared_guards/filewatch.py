"""Cheap change detection for files that are reloaded without a restart (policy, rule packs)."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def file_stamp(path: Path) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a file, ``(-1, -1)`` when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


class FileWatch:
    """Says whether a file changed, looking at most every ``interval`` seconds (one ``stat``).

    Thread-safe: of several callers racing after a change, exactly one gets True."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp = file_stamp(path)
        self._next = time.monotonic() + interval

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.interval
            stamp = file_stamp(self.path)
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            return True

    def mark(self) -> None:
        """Take the file as it is now as seen (after an explicit reload)."""
        with self._lock:
            self._stamp = file_stamp(self.path)
