"""What the store remembers of past runs and alerts, beyond each job's current run:
a job's recent runs, failures per clock hour, a histogram of run durations, and
alert counts by kind. Kept in the snapshot, so a restart loses none of it.

Only the store task calls these, with the turn's clock reading: replaying the
journal rebuilds the same figures.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from .model import Job

RECENT_RUNS = 20  # per job, newest last
FAILURE_HOURS_KEPT = 7 * 24
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

# A run as kept in ``Job.recent_runs``: a tuple, read by position.
RUN_FIELDS = ("started_at", "finished_at", "status", "duration_ms", "retries", "error")


class History:
    def __init__(self) -> None:
        # Epoch hour (UTC) -> runs that ended failed in it; the last week only.
        self.failures_by_hour: dict[int, int] = {}
        # Counts per bucket of DURATION_BUCKETS_S (not cumulative), +Inf last.
        self.duration_buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.fired_by_kind: dict[str, int] = {}
        self.firing_by_kind: dict[str, int] = {}

    # -- recording (store task only) -------------------------------------------
    @staticmethod
    def run_finished(job: Job, now: float, duration_ms: float | None) -> None:
        """The job's current run ended (its status is now terminal): keep it."""
        if duration_ms is None and job.started_at is not None:
            duration_ms = max(0, round((now - job.started_at) * 1000))
        run = (job.started_at, now, job.status.value, duration_ms, job.retries, job.error)
        runs = job.recent_runs
        if runs is None:
            job.recent_runs = [run]
        else:
            runs.append(run)
            if len(runs) > RECENT_RUNS:
                del runs[0]

    def run_failed(self, now: float) -> None:
        hour = int(now // 3600)
        counts = self.failures_by_hour
        if hour not in counts:
            for old in [h for h in counts if h <= hour - FAILURE_HOURS_KEPT]:
                del counts[old]
        counts[hour] = counts.get(hour, 0) + 1

    def duration_observed(self, duration_ms: float) -> None:
        self.duration_buckets[bisect_left(DURATION_BUCKETS_S, duration_ms / 1000)] += 1

    def alert_fired(self, kind: str) -> None:
        self.fired_by_kind[kind] = self.fired_by_kind.get(kind, 0) + 1
        self.firing_by_kind[kind] = self.firing_by_kind.get(kind, 0) + 1

    def alert_resolved(self, kind: str) -> None:
        self.firing_by_kind[kind] -= 1

    # -- reading ---------------------------------------------------------------
    def failures_last_hours(self, now: float, hours: int) -> list[tuple[int, int]]:
        """(epoch hour, failures) for the ``hours`` clock hours up to now, oldest first."""
        current = int(now // 3600)
        counts = self.failures_by_hour
        return [(hour, counts.get(hour, 0)) for hour in range(current - hours + 1, current + 1)]

    @staticmethod
    def runs_of(job: Job) -> list[dict[str, Any]]:
        """Recent runs, newest first, as dicts (timestamps still epoch seconds)."""
        return [dict(zip(RUN_FIELDS, run, strict=True)) for run in reversed(job.recent_runs or ())]

    # -- snapshot --------------------------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return {
            "failures_by_hour": [[h, n] for h, n in self.failures_by_hour.items()],
            "duration_buckets": self.duration_buckets,
            "fired_by_kind": self.fired_by_kind,
        }

    def load_snapshot(self, snap: dict[str, Any] | None, jobs: dict[str, Job]) -> None:
        if snap is not None:
            self.failures_by_hour = {h: n for h, n in snap["failures_by_hour"]}
            self.duration_buckets = snap["duration_buckets"]
            self.fired_by_kind = snap["fired_by_kind"]
        firing: dict[str, int] = {}
        for job in jobs.values():
            if job.alerts is not None:
                for kind in job.alerts:
                    firing[kind] = firing.get(kind, 0) + 1
        self.firing_by_kind = firing
