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


# The times ISO-8601 can carry as YYYY-MM-DDTHH:MM:SS.mmmZ (years 1 to 9999):
# a time outside them is refused at the edge, never written back.
MIN_TIME = -62_135_596_800.0
MAX_TIME = 253_402_300_799.999
# Spans added to a time (ttl_ms, grace_ms, max_runtime_ms, every_ms, ...): at
# most about ten years, so every deadline jobmon computes stays writable.
MAX_SPAN_MS = 10 * 366 * 24 * 3600 * 1000

_last_second = -1
_last_prefix = ""


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ``2026-11-22T02:05:00.000Z`` (UTC, milliseconds)."""
    global _last_second, _last_prefix
    if ts is None:
        return None
    seconds, ms = divmod(round(ts * 1000), 1000)
    if seconds != _last_second:  # formatting is slow; most calls share the second
        t = time.gmtime(seconds)  # (strftime's %Y would write year 1 as "1")
        _last_prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _last_second = seconds
    return f"{_last_prefix}.{ms:03d}Z"
