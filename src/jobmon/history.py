"""What the store remembers of past runs and alerts, beyond each job's current run:
a job's recent runs, a histogram of run durations, and alert counts by kind
(failures per hour are the analytics' own, in ``analytics``). Kept in the
snapshot, so a restart loses none of it.

Only the store task calls these, with the turn's clock reading: replaying the
journal rebuilds the same figures.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .model import TERMINAL, Job, Status

RECENT_RUNS = 20  # per job, the current one included
# Upper bounds, in seconds, of the run-duration histogram: jobs run for
# seconds to hours, so the buckets span 100 ms to a day (then +Inf).
DURATION_BUCKETS_S = (
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)

# A run as kept in ``Job.recent_runs``: a tuple, read by position. One earlier
# run (a quarter of issue 11's million jobs) is kept as that tuple alone, several
# as a list of them (``recent_runs`` reads both, and a snapshot's lists).
RUN_FIELDS = ("started_at", "finished_at", "status", "duration_ms", "retries", "error", "info")
COMPLETED = Status.COMPLETED


class History:
    def __init__(self) -> None:
        # Counts per bucket of DURATION_BUCKETS_S (not cumulative), +Inf last.
        self.duration_buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.fired_by_kind: dict[str, int] = {}
        self.firing_by_kind: dict[str, int] = {}

    # -- a job's runs -------------------------------------------------------------
    # A finished run is read off the job's own fields for as long as it is the
    # job's latest; it is copied into ``recent_runs`` only when the next run
    # starts. A job that ran once (most of a million jobs) then carries no
    # history of its own: no memory, no snapshot bytes, no load time.
    @staticmethod
    def latest_run(job: Job) -> tuple[Any, ...] | None:
        """The job's current run if it has finished (its status is terminal)."""
        status = job.status
        if status not in TERMINAL:
            return None
        duration_ms = job.duration_ms if status is COMPLETED else None
        if status is not COMPLETED and job.started_at is not None and job.finished_at is not None:
            duration_ms = max(0, round((job.finished_at - job.started_at) * 1000))
        more = job.more
        if more is None:  # most runs: no error, no retries, no wrapper's report
            return (job.started_at, job.finished_at, status._value_, duration_ms, 0, None, None)
        error = more.error
        return (
            job.started_at,
            job.finished_at,
            status._value_,  # .value is a slower descriptor lookup
            duration_ms,
            more.retries,
            # Kept for up to RECENT_RUNS runs: one copy of each distinct text.
            error if error is None else sys.intern(error),
            more.run_info,
        )

    @classmethod
    def archive_run(cls, job: Job) -> None:
        """The job's next run starts: keep the one that finished (store task only)."""
        run = cls.latest_run(job)
        if run is None:
            return
        if job.status is COMPLETED:
            job.last_success_at = job.finished_at
        runs = job.recent_runs
        if runs is None:
            job.recent_runs = run
        elif type(runs[0]) not in (list, tuple):  # one run so far
            job.recent_runs = [runs, run]
        else:
            runs.append(run)
            if len(runs) >= RECENT_RUNS:
                del runs[0]

    @staticmethod
    def recent_runs(job: Job) -> Sequence[Sequence[Any]]:
        """The job's earlier finished runs, oldest first (see RUN_FIELDS)."""
        runs = job.recent_runs
        if runs is None:
            return ()
        return runs if type(runs[0]) in (list, tuple) else (runs,)

    @staticmethod
    def last_success_at(job: Job) -> float | None:
        return job.finished_at if job.status is COMPLETED else job.last_success_at

    # -- recording (store task only; the duration histogram: Analytics.settle) --------
    def alert_fired(self, kind: str) -> None:
        self.fired_by_kind[kind] = self.fired_by_kind.get(kind, 0) + 1
        self.firing_by_kind[kind] = self.firing_by_kind.get(kind, 0) + 1

    def alert_resolved(self, kind: str) -> None:
        self.firing_by_kind[kind] -= 1

    # -- reading ---------------------------------------------------------------
    @classmethod
    def runs_of(cls, job: Job) -> list[dict[str, Any]]:
        """Recent runs, newest first, as dicts (timestamps still epoch seconds)."""
        runs = list(reversed(cls.recent_runs(job)))
        latest = cls.latest_run(job)
        if latest is not None:
            runs.insert(0, latest)
        out = []
        for run in runs:
            entry = dict(zip(RUN_FIELDS, run, strict=False))
            info = entry.pop("info", None)
            if info:
                entry.update(info)
            out.append(entry)
        return out

    # -- snapshot --------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {
            "duration_buckets": self.duration_buckets,
            "fired_by_kind": self.fired_by_kind,
        }

    def load_snapshot(self, snap: dict[str, Any] | None, jobs: Iterable[Job]) -> None:
        """``jobs``: every job, or at least every one with open alerts."""
        if snap is not None:
            self.duration_buckets = snap["duration_buckets"]
            self.fired_by_kind = snap["fired_by_kind"]
        firing: dict[str, int] = {}
        for job in jobs:
            more = job.more
            alerts = more.alerts if more is not None else None
            if alerts is not None:
                for kind in alerts:
                    firing[kind] = firing.get(kind, 0) + 1
        self.firing_by_kind = firing
