"""Every pending deadline of every job, in one heap ordered by time.

A job's ``Monitor.timers`` says when each of its alert kinds is due; the heap
holds at most one entry per (job, kind), at ``Monitor.armed[kind]``. Moving a
deadline later (the common case: a heartbeat extends it) only updates the
timer, O(1); the old heap entry, when it comes up, is pushed again at the
current time. Moving it earlier pushes a new entry, O(log n), and the old one
is recognised as stale when it surfaces. So the next deadline is always at the
top, and one timer in the engine is enough.

Equal times pop in (job_id, kind) order, never in insertion order, so a replay
(or a heap rebuilt from a snapshot) fires them in the order the live process
did. When stale entries outnumber what could be live, the heap is rebuilt.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from .model import Job, Monitor

MAX_KINDS = 5  # alert kinds with deadlines: a bound on live entries per job


class Deadlines:
    def __init__(self) -> None:
        self.heap: list[tuple[float, str, str]] = []

    def set(self, job: Job, monitor: Monitor, kind: str, at: float) -> None:
        monitor.timers[kind] = at
        armed = monitor.armed.get(kind)
        if armed is None or at < armed:
            self._push(job.job_id, monitor, kind, at)

    @staticmethod
    def clear(monitor: Monitor, kind: str) -> None:
        monitor.timers.pop(kind, None)

    def _push(self, job_id: str, monitor: Monitor, kind: str, at: float) -> None:
        monitor.armed[kind] = at
        heapq.heappush(self.heap, (at, job_id, kind))

    def tidy(self, jobs: dict[str, Job]) -> None:
        """Rebuild when stale entries clearly dominate (unregistered jobs, deadlines
        moved earlier); cheap to check, O(n) when it acts, so amortised O(1)."""
        if len(self.heap) > MAX_KINDS * len(jobs) + 1024:
            self.rebuild(jobs)

    def rebuild(self, jobs: dict[str, Job]) -> None:
        """After loading a snapshot: arm every job's timers again."""
        self.heap = []
        for job in jobs.values():
            monitor = job.monitor
            if monitor is not None:
                monitor.armed = {}
                for kind, at in monitor.timers.items():
                    self._push(job.job_id, monitor, kind, at)

    def _settle(self, jobs: dict[str, Job]) -> tuple[float, Job, str] | None:
        """Drop or re-arm stale entries until the top one is live; return it."""
        heap = self.heap
        while heap:
            at, job_id, kind = heap[0]
            job = jobs.get(job_id)
            monitor = job.monitor if job is not None else None
            if job is None or monitor is None or monitor.armed.get(kind) != at:
                heapq.heappop(heap)  # the job is gone, or an earlier entry replaced this one
                continue
            current = monitor.timers.get(kind)
            if current is None:
                heapq.heappop(heap)
                del monitor.armed[kind]
                continue
            if current > at:  # moved later since it was armed
                heapq.heappop(heap)
                self._push(job_id, monitor, kind, current)
                continue
            return at, job, kind
        return None

    def next_at(self, jobs: dict[str, Job]) -> float | None:
        top = self._settle(jobs)
        return top[0] if top is not None else None

    def pop_due(self, jobs: dict[str, Job], now: float) -> Iterator[tuple[float, Job, str]]:
        """Each (deadline_at, job, kind) due at ``now``, earliest first; each is disarmed."""
        while True:
            top = self._settle(jobs)
            if top is None or top[0] > now:
                return
            at, job, kind = top
            heapq.heappop(self.heap)
            assert job.monitor is not None
            del job.monitor.armed[kind]
            del job.monitor.timers[kind]
            yield at, job, kind

    def __len__(self) -> int:
        return len(self.heap)
