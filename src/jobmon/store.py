"""All job state and its aggregates. Only the engine task calls these methods.

Every mutation is a plain synchronous method: no ``await`` mid-change, so no
locks. A method that refuses (``RequestError``) checks everything before it
changes anything. Aggregates (counts by status, the duration sum) are kept up
to date as events arrive, so ``get_stats`` is O(1).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import store_snapshot
from .alerting import Alerting
from .analytics import (
    COMPLETED_RUN,
    FAILED_RUN,
    FAILURE,
    PRICED_AGAIN,
    SETTLE_AT,
    Analytics,
    CostModel,
)
from .deadlines import Deadlines
from .errors import Code, RequestError
from .hc.registry import Checks
from .history import History
from .idempotency import SeenEvents
from .jobindex import BLOCK_BITS, BLOCK_MASK, StatusIndex
from .model import (
    TERMINAL,
    Alert,
    Job,
    JobMore,
    Status,
    kept_json,
)
from .monitoring import Monitoring
from .runs import RunIds
from .store_snapshot import ALERT_HISTORY

# Plain names: Status.X is an attribute lookup on the Enum class, slow on the hot path.
RUNNING = Status.RUNNING
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
RETRYING = Status.RETRYING


class Store(Alerting, Monitoring, RunIds):
    def __init__(self, default_max_retries: int = 3) -> None:
        self.default_max_retries = default_max_retries
        self.jobs: dict[str, Job] = {}
        self.count_by_status: dict[Status, int] = {s: 0 for s in Status}
        self.status_index = StatusIndex()  # list_jobs by status (jobindex)
        # Runs completed through job_completed: the mean duration is over these.
        self.timed_runs = 0
        self.duration_sum_ms: float = 0
        self.next_alert_id = 1
        self.alert_history: deque[Alert] = deque(maxlen=ALERT_HISTORY)
        # Alerts fired or resolved since the engine last drained them.
        self.alert_outbox: list[Alert] = []
        self.deadlines = Deadlines()
        self.reporter: int | None = None
        self.reported_by: dict[int, set[str]] = {}
        self.lost_grace_ms = 30_000
        self.history = History()
        self.analytics = Analytics()
        self.analytics.history = self.history
        self.analytics.jobs = self.jobs
        self.live_runs = {}  # runs with a run_id (see runs.py)
        self.checks = Checks(self)  # Healthchecks' checks (see hc/)
        self.seen_events = SeenEvents()  # event_id -> the reply it got (commands.once)

    # -- reading ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        mean: float = self.duration_sum_ms / self.timed_runs if self.timed_runs else 0
        if isinstance(mean, float) and mean.is_integer():
            mean = int(mean)
        return {
            "total": len(self.jobs),
            "completed": self.count_by_status[Status.COMPLETED],
            "failed": self.count_by_status[Status.FAILED],
            "avg_duration_ms": mean,
        }

    def settings(self) -> dict[str, Any]:
        """What replaying the journal depends on besides the records themselves."""
        analytics = self.analytics
        return {
            "default_max_retries": self.default_max_retries,
            "slow_run_factor": analytics.slow_run_factor,
            "cost_model": vars(analytics.cost_model),
            "event_ids_kept": self.seen_events.max_kept,
        }

    def settle(self) -> None:
        """What this turn's runs added that changes no reply (see analytics.COMPLETED_RUN)."""
        if self.analytics.pending:
            self.analytics.settle()

    def apply_settings(self, settings: dict[str, Any]) -> None:
        self.settle()  # under the cost model they were recorded with
        if "default_max_retries" in settings:
            self.default_max_retries = settings["default_max_retries"]
        if "slow_run_factor" in settings:
            self.analytics.slow_run_factor = settings["slow_run_factor"]
        if "cost_model" in settings:
            model = CostModel(**settings["cost_model"])
            if model != self.analytics.cost_model:
                self.analytics.ranking.invalidate()  # records are priced by it
            self.analytics.cost_model = model
        if "event_ids_kept" in settings:
            self.seen_events.max_kept = settings["event_ids_kept"]

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(Code.NOT_FOUND, f"no job with job_id {job_id!r} is tracked")
        return job

    def max_retries_of(self, job: Job | None) -> int:
        more = job.more if job is not None else None
        if more is None or more.max_retries is None:
            return self.default_max_retries
        return more.max_retries

    # -- primitives ------------------------------------------------------
    def _create(self, job_id: str, status: Status, now: float) -> Job:
        job = Job(job_id, status, 0, now, now, seq=len(self.jobs))
        self.jobs[job_id] = job
        self.count_by_status[status] += 1
        index = self.status_index
        if job.seq & BLOCK_MASK:  # jobindex.StatusIndex.added, inline
            index.order.append(job)
            index.blocks[status][job.seq >> BLOCK_BITS] += 1
        else:
            index.added(job)
        return job

    def _set_status(self, job: Job, status: Status) -> None:
        if job.status is not status:
            self.count_by_status[job.status] -= 1
            self.count_by_status[status] += 1
            blocks, block = self.status_index.blocks, job.seq >> BLOCK_BITS
            blocks[job.status][block] -= 1
            blocks[status][block] += 1
            job.status = status

    @staticmethod
    def _new_run(job: Job) -> None:
        """A finished job reported on again: the same job_id, its next run."""
        History.archive_run(job)
        job.runs += 1
        job.progress = 0
        job.started_at = None
        job.finished_at = None
        more = job.more
        if more is not None:
            more.error = None
            more.retries = 0
            more.run_info = None
            # A run's error, retries or report were all it had (more.is_empty()).
            if more.alerts is None and more.monitor is None and more.max_retries is None:
                job.more = None

    def _run_ended(self, job: Job, now: float) -> None:
        """The job's status just became terminal."""
        more = job.more
        monitor = more.monitor if more is not None else None
        if monitor is not None and monitor.heartbeat_for_run:
            self.run_heartbeats_end(job, monitor, now)
        if job.status is FAILED:
            pending = self.analytics.pending
            pending.append((FAILURE, job.job_id, now))
            if len(pending) >= SETTLE_AT:
                self.analytics.settle()

    # -- the three lifecycle events --------------------------------------
    def update_status(
        self,
        now: float,
        job_id: str,
        status: Status,
        progress: float | None,
        max_retries: int | None,
    ) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            job = self._create(job_id, status, now)
            previous = None
        else:
            previous = job.status
            if previous is not status:
                if previous in TERMINAL and status not in TERMINAL:
                    self._new_run(job)
                counts = self.count_by_status
                counts[previous] -= 1
                counts[status] += 1
                blocks, block = self.status_index.blocks, job.seq >> BLOCK_BITS
                blocks[previous][block] -= 1
                blocks[status][block] += 1
                job.status = status
            job.updated_at = now
        if status is RUNNING and job.started_at is None:
            job.started_at = now
        if status in TERMINAL:
            if job.finished_at is None:
                job.finished_at = now
            if status is COMPLETED and progress is None:
                progress = 100
            if previous is not status:
                if status is COMPLETED:
                    # This run's duration, if it can be known: duration_ms is
                    # always the last completed run's.
                    started_at = job.started_at
                    job.duration_ms = (
                        None if started_at is None else max(0, round((now - started_at) * 1000))
                    )
                    if job.resource_usage is not None:  # its price from its record moved
                        self.analytics.pending.append((PRICED_AGAIN, job))
                self._run_ended(job, now)
        more = job.more
        monitor = more.monitor if more is not None else None
        moved = False
        if progress is not None:
            if monitor is not None:
                moved = progress != job.progress
            job.progress = progress
        if max_retries is not None:
            job.max_retries = max_retries
        if more is None:
            return job
        if monitor is not None and previous is not None:
            self.observe_status(job, monitor, previous, moved, now)
            if (
                status is COMPLETED
                and previous is not COMPLETED
                and self.observe_outcome(job, monitor, True, now)
                and more.alerts is not None
            ):
                self._resolve(job, "failed", now)
        elif status is COMPLETED and more.alerts is not None:
            self._resolve(job, "failed", now)
        return job

    def complete(
        self,
        now: float,
        job_id: str,
        duration_ms: float | None,
        resource_usage: dict[str, Any],
        info: dict[str, Any] | None = None,
    ) -> Job:
        job = self.jobs.get(job_id)
        if duration_ms is None:
            if job is None or job.status in TERMINAL or job.started_at is None:
                raise RequestError(
                    Code.PRECONDITION_FAILED,
                    f"duration_ms is missing and job {job_id!r} was never reported running "
                    "in this run, so its duration cannot be computed; send duration_ms",
                )
            duration_ms = round((now - job.started_at) * 1000)
            if duration_ms < 0:
                duration_ms = 0
        if job is None:
            job = self._create(job_id, COMPLETED, now)
            previous_ms = previous_usage = None
        else:
            if job.status in TERMINAL:
                self._new_run(job)
            self._set_status(job, COMPLETED)
            job.updated_at = now
            previous_ms, previous_usage = job.duration_ms, job.resource_usage
        job.progress = 100
        job.finished_at = now
        job.duration_ms = duration_ms
        job.resource_usage = kept_json(resource_usage)
        more = job.more
        if more is not None:
            more.error = None
            more.run_info = info
        elif info is not None:
            job.more = JobMore(run_info=info)
        self.timed_runs += 1
        self.duration_sum_ms += duration_ms
        self._run_ended(job, now)
        over = info is not None and self.watch_memory(job, resource_usage, info, now)
        if not over and (more := job.more) is not None and more.alerts is not None:
            self._resolve(job, "memory", now)
        analytics = self.analytics
        p95 = analytics.duration(job_id, duration_ms, previous_ms)
        if p95 is not None and analytics.slow_run_factor:
            if duration_ms > analytics.slow_run_factor * p95:
                self._fire(
                    job,
                    "slow_run",
                    f"Job {job_id} took {duration_ms / 1000:g} s, over "
                    f"{analytics.slow_run_factor:g} x its p95 of {p95 / 1000:.3g} s",
                    now,
                )
            elif (more := job.more) is not None and more.alerts is not None:
                self._resolve(job, "slow_run", now)
        # Its histogram bucket, the overall sketch, cost and memory: at the turn's end.
        pending = analytics.pending
        pending.append(
            (COMPLETED_RUN, job, duration_ms, resource_usage, previous_usage, previous_ms, info)
        )
        if len(pending) >= SETTLE_AT:
            analytics.settle()
        more = job.more
        if more is None:
            return job
        monitor = more.monitor
        if monitor is not None and not self.observe_outcome(job, monitor, True, now):
            return job  # not yet enough good runs in a row to call it recovered
        if more.alerts is not None:
            self._resolve(job, "failed", now)
        return job

    def fail(
        self,
        now: float,
        job_id: str,
        error: str,
        retries: int,
        max_retries: int | None,
        info: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """Record a failed attempt; returns the job and whether its retries are exhausted."""
        job = self.jobs.get(job_id)
        limit = max_retries if max_retries is not None else self.max_retries_of(job)
        exhausted = retries >= limit
        status = FAILED if exhausted else RETRYING
        duplicate = False
        if job is None:
            job = self._create(job_id, status, now)
            previous = None
        else:
            previous = job.status
            duplicate = exhausted and previous is FAILED
            if previous in TERMINAL and not duplicate:
                self._new_run(job)
            self._set_status(job, status)
            job.updated_at = now
        more = job.more
        if more is None:
            more = job.more = JobMore()
        more.error = error
        more.retries = retries
        if max_retries is not None:
            more.max_retries = max_retries
        if info is not None or usage:
            more.run_info = {**(info or {}), **({"resource_usage": usage} if usage else {})}
            self.watch_memory(job, usage or {}, info, now)
            started = job.started_at
            spent_ms = None if started is None else max(0.0, (now - started) * 1000)
            pending = self.analytics.pending
            pending.append(
                (FAILED_RUN, job_id, usage, spent_ms, job.resource_usage, job.duration_ms, info)
            )
            if len(pending) >= SETTLE_AT:
                self.analytics.settle()
        monitor = more.monitor
        if exhausted:
            if job.finished_at is None:
                job.finished_at = now
            if not duplicate:
                self._run_ended(job, now)
            if monitor is None:
                alert = True
            elif duplicate:  # the same failed run again: counts once
                alert = monitor.consecutive_failures >= monitor.failure_threshold
            else:
                alert = self.observe_outcome(job, monitor, False, now)
            # One alert per incident: a repeated exhausted report is the same failure.
            if alert:
                self._fire(job, "failed", f"Job failed after {retries} retries: {error}", now)
        elif monitor is not None and previous is not None:
            self.observe_status(job, monitor, previous, False, now)
        return job, exhausted

    # -- snapshot (store_snapshot) ----------------------------------------------
    def to_snapshot(self) -> dict[str, Any]:
        return store_snapshot.dump(self)

    def load_snapshot(self, snap: dict[str, Any]) -> None:
        store_snapshot.load(self, snap)
