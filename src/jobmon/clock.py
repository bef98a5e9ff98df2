"""Time: an injectable clock (tests use FakeClock instead of sleeping) and ISO-8601 formatting."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.current = start

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


_last_second = -1
_last_prefix = ""


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ``2026-11-22T02:05:00.000Z`` (UTC, milliseconds)."""
    global _last_second, _last_prefix
    if ts is None:
        return None
    seconds, ms = divmod(round(ts * 1000), 1000)
    if seconds != _last_second:  # strftime is slow; most calls share the second
        _last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = seconds
    return f"{_last_prefix}.{ms:03d}Z"
