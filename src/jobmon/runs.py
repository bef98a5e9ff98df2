"""Runs with a ``run_id``: several runs of one job live at once, each with its
own start, progress and outcome (Healthchecks' ``rid``). Mixed into ``Store``:
these methods run only in the store task, from journaled records.

The job's own record stays what it always was, the job as a whole: its status
is ``running`` while any live run is, and each run that ends is recorded
through the store's ordinary lifecycle methods (so alerts, history, analytics
and metrics see it like any other run). When one run ends while others go on,
the ended run is recorded as the job's finished run and the job starts its
next run at once, made of the runs still live (the oldest one's start, for
``max_runtime_ms``).

Events without ``run_id`` are about the job as a whole, as before, and never
look at this table: the hot path pays nothing for it. A run that has outlived
its job's ``max_runtime_ms`` when another run starts, or the oldest once a job
has ``MAX_LIVE_RUNS``, is abandoned: recorded ``cancelled``, so a crashed run
that never reported cannot keep its job running for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import iso
from .errors import Code, RequestError
from .history import History
from .model import STATUS_BY_NAME, TERMINAL, Job, Monitor, Status

if TYPE_CHECKING:
    from .deadlines import Deadlines

MAX_RUN_ID_CHARS = 128
MAX_LIVE_RUNS = 64  # per job
RUNNING = Status.RUNNING
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
CANCELLED = Status.CANCELLED
RETRYING = Status.RETRYING


class LiveRun:
    """One run of a job that has not ended yet."""

    FIELDS = ("run_id", "status", "started_at", "progress", "updated_at", "last_heartbeat_at")
    __slots__ = FIELDS

    def __init__(self, run_id: str, status: Status, now: float) -> None:
        self.run_id = run_id
        self.status = status
        self.started_at: float | None = now if status is RUNNING else None
        self.progress: float = 0
        self.updated_at = now
        self.last_heartbeat_at: float | None = None

    def to_row(self) -> list[Any]:
        return [getattr(self, name) for name in self.FIELDS]

    @classmethod
    def from_row(cls, row: list[Any]) -> LiveRun:
        run = cls.__new__(cls)
        for name, value in zip(cls.FIELDS, row, strict=True):
            setattr(run, name, value)
        run.status = STATUS_BY_NAME[row[1]]
        return run

    def to_wire(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "started_at": iso(self.started_at),
            "progress": self.progress,
            "updated_at": iso(self.updated_at),
        }


class RunIds:
    jobs: dict[str, Job]
    deadlines: Deadlines
    # job_id -> run_id -> its live run (only jobs that have some).
    live_runs: dict[str, dict[str, LiveRun]]

    # Provided by Store and Monitoring.
    def update_status(
        self,
        now: float,
        job_id: str,
        status: Status,
        progress: float | None,
        max_retries: int | None,
    ) -> Job:
        raise NotImplementedError

    def complete(
        self,
        now: float,
        job_id: str,
        duration_ms: float | None,
        resource_usage: dict[str, Any],
        info: dict[str, Any] | None = None,
    ) -> Job:
        raise NotImplementedError

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
        raise NotImplementedError

    def heartbeat(
        self, now: float, job_id: str, ttl_ms: int | None, for_run: bool = False
    ) -> float:
        raise NotImplementedError

    def max_retries_of(self, job: Job | None) -> int:
        raise NotImplementedError

    def _arm_run(self, job: Job, monitor: Monitor, now: float, restart: bool) -> None:
        raise NotImplementedError

    # -- the four events, with a run_id -------------------------------------------
    def run_status(
        self,
        now: float,
        job_id: str,
        run_id: str,
        status: Status,
        progress: float | None,
        max_retries: int | None,
    ) -> Job:
        if status in TERMINAL:
            run = self._detach(job_id, run_id)
            job = self.jobs.get(job_id)
            if job is not None and job.status not in TERMINAL:
                job.started_at = run.started_at if run is not None else None
            job = self.update_status(now, job_id, status, progress, max_retries)
            job.run_info = {"run_id": run_id}
            self._carry_on(now, job)
            return job
        run = self._live(now, job_id, run_id, status)
        run.status = status
        run.updated_at = now
        if progress is not None:
            run.progress = progress
        if status is RUNNING and run.started_at is None:
            run.started_at = now
        job = self.jobs.get(job_id)
        others_running = False
        for other in self.live_runs[job_id].values():
            if other.status is RUNNING and other is not run:
                others_running = True
                break
        if job is not None and others_running and status is not RUNNING:
            # Another run is running: so is the job; this one waits its turn.
            job.updated_at = now
            if max_retries is not None:
                job.max_retries = max_retries
            return job
        job = self.update_status(now, job_id, status, progress, max_retries)
        if job.status is RUNNING and run.started_at is not None:
            started = job.started_at
            job.started_at = run.started_at if started is None else min(started, run.started_at)
        return job

    def run_completed(
        self,
        now: float,
        job_id: str,
        run_id: str,
        duration_ms: float | None,
        usage: dict[str, Any],
        info: dict[str, Any] | None,
    ) -> Job:
        job = self.jobs.get(job_id)
        if job is not None and self._already_ended(job, run_id, COMPLETED):
            return job  # the same report again (delivery is at least once)
        runs = self.live_runs.get(job_id)
        run = runs.get(run_id) if runs is not None else None
        if duration_ms is None:
            if run is None or run.started_at is None:
                raise RequestError(
                    Code.PRECONDITION_FAILED,
                    f"duration_ms is missing and run {run_id!r} of job {job_id!r} was never "
                    "reported running, so its duration cannot be computed; send duration_ms",
                )
            duration_ms = max(0, round((now - run.started_at) * 1000))
        self._detach(job_id, run_id)
        job = self.complete(now, job_id, duration_ms, usage, {**(info or {}), "run_id": run_id})
        job.started_at = run.started_at if run is not None else None
        self._carry_on(now, job)
        return job

    def run_failed(
        self,
        now: float,
        job_id: str,
        run_id: str,
        error: str,
        retries: int,
        max_retries: int | None,
        info: dict[str, Any] | None,
        usage: dict[str, Any] | None,
    ) -> tuple[Job, bool]:
        job = self.jobs.get(job_id)
        limit = max_retries if max_retries is not None else self.max_retries_of(job)
        if retries < limit:  # it will be tried again: the run stays live, retrying
            retrying = self._live(now, job_id, run_id, RETRYING)
            retrying.status = RETRYING
            retrying.updated_at = now
            others = self.live_runs[job_id].values()
            if job is not None and any(r.status is RUNNING for r in others):
                job.updated_at = now
                job.error = error
                job.retries = retries
                if max_retries is not None:
                    job.max_retries = max_retries
                return job, False
            return self.fail(now, job_id, error, retries, max_retries, info, usage)
        if job is not None and self._already_ended(job, run_id, FAILED):
            return job, True  # the same report again: it counts once
        run = self._detach(job_id, run_id)
        if job is not None and job.status is FAILED:
            # A failed job whose next run fails at once: that run starts first,
            # so it counts as a run of its own, not as the last failure again.
            self.update_status(now, job_id, RUNNING, None, None)
        job, exhausted = self.fail(
            now, job_id, error, retries, max_retries, {**(info or {}), "run_id": run_id}, usage
        )
        job.started_at = run.started_at if run is not None else None
        self._carry_on(now, job)
        return job, exhausted

    def run_heartbeat(self, now: float, job_id: str, run_id: str, ttl_ms: int | None) -> float:
        """A beat of one run: the job's heartbeat, ending with its runs (as ``for_run``)."""
        deadline_at = self.heartbeat(now, job_id, ttl_ms, True)
        runs = self.live_runs.get(job_id)
        run = runs.get(run_id) if runs is not None else None
        if run is not None:
            run.last_heartbeat_at = now
        return deadline_at

    # -- reading ----------------------------------------------------------------
    def live_runs_of(self, job_id: str) -> list[dict[str, Any]] | None:
        runs = self.live_runs.get(job_id)
        if not runs:
            return None
        return [run.to_wire() for run in sorted(runs.values(), key=_by_start)]

    # -- the table ----------------------------------------------------------------
    def _live(self, now: float, job_id: str, run_id: str, status: Status) -> LiveRun:
        runs = self.live_runs.get(job_id)
        if runs is not None:
            run = runs.get(run_id)
            if run is not None:
                return run
            self._abandon_stale(now, job_id, run_id)
        runs = self.live_runs.setdefault(job_id, {})
        run = runs[run_id] = LiveRun(run_id, status, now)
        return run

    def _detach(self, job_id: str, run_id: str) -> LiveRun | None:
        runs = self.live_runs.get(job_id)
        if runs is None:
            return None
        run = runs.pop(run_id, None)
        if not runs:
            del self.live_runs[job_id]
        return run

    @staticmethod
    def _already_ended(job: Job, run_id: str, status: Status) -> bool:
        """This run ended so already: the job's last run, or one of its recent ones."""
        info = job.run_info
        if job.status is status and info is not None and info.get("run_id") == run_id:
            return True
        value = status.value
        for run in History.recent_runs(job):  # a loop: any() of a generator is thrice the cost
            info = run[6]
            if info is not None and info.get("run_id") == run_id and run[2] == value:
                return True
        return False

    def _abandon_stale(self, now: float, job_id: str, starting: str) -> None:
        """Before another run starts: runs past the job's max_runtime_ms, and the
        oldest once there are MAX_LIVE_RUNS, are recorded cancelled."""
        runs = self.live_runs[job_id]
        job = self.jobs.get(job_id)
        monitor = job.monitor if job is not None else None
        limit_ms = monitor.max_runtime_ms if monitor is not None else None
        oldest_first = sorted(runs.values(), key=_by_start)
        stale: dict[str, str] = {}
        if limit_ms is not None:
            for run in oldest_first:
                started = run.started_at if run.started_at is not None else run.updated_at
                if started + limit_ms / 1000 <= now:
                    stale[run.run_id] = f"still running after its job's {limit_ms} ms"
        kept = [run for run in oldest_first if run.run_id not in stale]
        for run in kept[: max(0, len(kept) - MAX_LIVE_RUNS + 1)]:
            stale[run.run_id] = f"the job had {MAX_LIVE_RUNS} runs live"
        for run_id, why in stale.items():
            self._abandon(now, job_id, run_id, f"abandoned when run {starting!r} started: {why}")

    def _abandon(self, now: float, job_id: str, run_id: str, why: str) -> None:
        run = self._detach(job_id, run_id)
        job = self.jobs[job_id]
        if job.status not in TERMINAL:
            job.started_at = run.started_at if run is not None else None
        job = self.update_status(now, job_id, CANCELLED, None, None)
        job.run_info = {"run_id": run_id}
        job.error = why
        self._carry_on(now, job)

    def _carry_on(self, now: float, job: Job) -> None:
        """A run just ended; if others are still live, the job's next run is theirs."""
        runs = self.live_runs.get(job.job_id)
        if not runs:
            return
        latest = max(runs.values(), key=lambda r: r.updated_at)
        running = [r for r in runs.values() if r.status is RUNNING]
        status = RUNNING if running else latest.status
        self.update_status(now, job.job_id, status, latest.progress, None)
        starts = [r.started_at for r in running if r.started_at is not None]
        job.started_at = min(starts) if starts else None
        monitor = job.monitor
        if monitor is not None and job.status is RUNNING:
            self._arm_run(job, monitor, now, restart=True)
            beats = [r.last_heartbeat_at for r in runs.values() if r.last_heartbeat_at is not None]
            if beats and monitor.heartbeat_ttl_ms is not None:
                monitor.heartbeat_for_run = True
                deadline_at = max(beats) + monitor.heartbeat_ttl_ms / 1000
                self.deadlines.set(job, monitor, "missed_heartbeat", deadline_at)

    # -- snapshot ---------------------------------------------------------------
    def live_runs_snapshot(self) -> dict[str, list[list[Any]]]:
        return {
            job_id: [run.to_row() for run in runs.values()]
            for job_id, runs in self.live_runs.items()
        }

    def load_live_runs(self, rows: dict[str, list[list[Any]]] | None) -> None:
        self.live_runs = {
            job_id: {row[0]: LiveRun.from_row(row) for row in runs}
            for job_id, runs in (rows or {}).items()
        }


def _by_start(run: LiveRun) -> float:
    """Oldest first; equal times keep the order the runs were seen in (sorts are stable)."""
    return run.started_at if run.started_at is not None else run.updated_at
