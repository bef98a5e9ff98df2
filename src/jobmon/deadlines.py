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
from collections.abc import Iterable, Iterator

from .model import Job, Monitor

MAX_KINDS = 5  # alert kinds with deadlines: a bound on live entries per job


class Deadlines:
    def __init__(self) -> None:
        self.heap: list[tuple[float, str, str]] = []
        # Stale entries _settle may still handle in this pass (None: no bound).
        self._budget: int | None = None

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
            self.rebuild(jobs.values())

    def rebuild(self, jobs: Iterable[Job]) -> None:
        """After loading a snapshot: arm every job's timers again (``jobs``: all
        of them, or at least every one with a monitor)."""
        self.heap = []
        for job in jobs:
            more = job.more
            monitor = more.monitor if more is not None else None
            if monitor is not None:
                monitor.armed = {}
                for kind, at in monitor.timers.items():
                    self._push(job.job_id, monitor, kind, at)

    def _settle(self, jobs: dict[str, Job]) -> tuple[float, Job, str] | None:
        """Drop or re-arm stale entries until the top one is live; return it.
        None when the heap is empty, or when the pass's budget of stale entries
        ran out first (the heap is then not empty)."""
        heap = self.heap
        while heap:
            at, job_id, kind = heap[0]
            job = jobs.get(job_id)
            monitor = job.monitor if job is not None else None
            # Not armed at this time: the job is gone, or an earlier entry replaced it.
            armed = monitor is not None and monitor.armed.get(kind) == at
            current = monitor.timers.get(kind) if armed and monitor is not None else None
            if job is not None and current is not None and current <= at:
                return at, job, kind
            if self._budget is not None:
                if self._budget <= 0:
                    return None
                self._budget -= 1
            heapq.heappop(heap)
            if monitor is None or not armed:
                continue
            if current is None:  # cleared since it was armed
                del monitor.armed[kind]
            else:  # moved later since it was armed
                self._push(job_id, monitor, kind, current)
        return None

    def next_at(self, jobs: dict[str, Job], budget: int | None = None) -> float | None:
        """The earliest deadline; with a ``budget`` of stale entries to settle, maybe
        an earlier time than that (a stale entry's), never a later one."""
        self._budget = budget
        top = self._settle(jobs)
        self._budget = None
        if top is not None:
            return top[0]
        return self.heap[0][0] if self.heap else None

    def pop_due(
        self, jobs: dict[str, Job], now: float, limit: int | None = None, budget: int | None = None
    ) -> Iterator[tuple[float, Job, str]]:
        """Each (deadline_at, job, kind) due at ``now``, earliest first; each is disarmed.
        At most ``limit`` of them, and at most ``budget`` stale entries settled on
        the way (None: no bound). Which entries are live, and their order, depend
        only on the timers: ``limit`` alone says which deadlines a pass handles."""
        handed = 0
        while limit is None or handed < limit:
            self._budget = budget
            top = self._settle(jobs)
            budget = self._budget
            self._budget = None
            if top is None or top[0] > now:
                return
            handed += 1
            at, job, kind = top
            heapq.heappop(self.heap)
            assert job.monitor is not None
            del job.monitor.armed[kind]
            del job.monitor.timers[kind]
            yield at, job, kind

    def __len__(self) -> int:
        return len(self.heap)
