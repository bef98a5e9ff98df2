"""Negative alerting, as the Store's methods: what a job promised, the signs of
life that keep the promise, and the deadlines that fire when it is broken.

Kinds: ``missed_heartbeat`` (no heartbeat within its ttl), ``missed_run`` (a
scheduled run did not start by its expected time plus grace), ``overrun`` (a run
longer than max_runtime_ms), ``stalled`` (progress unchanged for stall_ms). A
paused job raises no alerts; its deadlines are looked at again when the pause
ends. Mixed into ``Store``: these methods run only in the store task.
"""

from __future__ import annotations

from itertools import compress
from typing import TYPE_CHECKING, Any

from . import schedule
from .clock import iso
from .errors import Code, RequestError
from .model import MORE_OF, TERMINAL, Job, Monitor, Status

if TYPE_CHECKING:
    from .deadlines import Deadlines
    from .model import Alert

NEGATIVE_KINDS = ("missed_heartbeat", "missed_run", "overrun", "stalled", "worker_lost")
RUNNING = Status.RUNNING
SIGNS_OF_LIFE = frozenset({Status.QUEUED, Status.RUNNING})


class Monitoring:
    jobs: dict[str, Job]
    deadlines: Deadlines
    # Set by the engine for each connection's turn: who is reporting.
    reporter: int | None
    # Connection -> the monitored jobs it last reported running.
    reported_by: dict[int, set[str]]
    lost_grace_ms: int

    # Provided by Store.
    def _create(self, job_id: str, status: Status, now: float) -> Job:
        raise NotImplementedError

    def _fire(self, job: Job, kind: str, text: str, now: float) -> Alert | None:
        raise NotImplementedError

    def _resolve(self, job: Job, kind: str, now: float) -> None:
        raise NotImplementedError

    def _monitor(self, job: Job) -> Monitor:
        monitor: Monitor | None = job.monitor
        if monitor is None:
            monitor = job.monitor = Monitor()
        return monitor

    def _known(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(Code.NOT_FOUND, f"no job with job_id {job_id!r} is tracked")
        return job

    # -- the messages --------------------------------------------------------
    def heartbeat(
        self, now: float, job_id: str, ttl_ms: int | None, for_run: bool = False
    ) -> float:
        """Redis's SETEX: alert unless another heartbeat comes within ttl. Returns the
        deadline. ``for_run``: the heartbeats belong to the current run (a wrapper's):
        they are no longer expected once it ends."""
        job = self.jobs.get(job_id)
        monitor = job.monitor if job is not None else None
        if ttl_ms is None:
            ttl_ms = monitor.heartbeat_ttl_ms if monitor is not None else None
            if ttl_ms is None:
                raise RequestError(
                    Code.MALFORMED,
                    f"ttl_ms is missing and job {job_id!r} has none yet: "
                    "the first heartbeat of a job must say how long until the next (ttl_ms)",
                )
        if job is None:
            job = self._create(job_id, Status.PENDING, now)
        else:
            job.updated_at = now
        monitor = self._monitor(job)
        monitor.heartbeat_ttl_ms = ttl_ms
        monitor.last_heartbeat_at = now
        deadline_at = now + ttl_ms / 1000
        if for_run and job.status in TERMINAL:
            # A wrapper's heartbeat that crossed its run's outcome on the way:
            # the run is over, so nothing more is expected.
            return deadline_at
        monitor.heartbeat_for_run = for_run
        self.deadlines.set(job, monitor, "missed_heartbeat", deadline_at)
        if job.alerts is not None:
            self._resolve(job, "missed_heartbeat", now)
        self.sign_of_life(job, monitor, now)
        return deadline_at

    def run_heartbeats_end(self, job: Job, monitor: Monitor, now: float) -> None:
        """The run whose wrapper sent heartbeats ended: expect none until the next."""
        monitor.heartbeat_for_run = False
        self.deadlines.clear(monitor, "missed_heartbeat")
        if job.alerts is not None:
            self._resolve(job, "missed_heartbeat", now)

    def register(self, now: float, job_id: str, settings: dict[str, Any]) -> Job:
        """Create or update a job's promises; a field left out keeps its value."""
        job = self.jobs.get(job_id)
        if job is None:
            job = self._create(job_id, Status.PENDING, now)
        monitor = self._monitor(job)
        for name, value in settings.items():
            if name == "max_retries":
                job.max_retries = value
            elif name == "labels":
                monitor.labels = value or {}
            else:
                setattr(monitor, name, value)
        self._arm_missed_run(job, monitor, monitor.last_seen_at or now)
        if job.status is RUNNING:
            self._arm_run(job, monitor, now, restart=True)
        # A promise taken back: its alert has nothing left to wait for.
        if job.alerts is not None:
            if monitor.schedule is None:
                self._resolve(job, "missed_run", now)
            if monitor.max_runtime_ms is None:
                self._resolve(job, "overrun", now)
            if monitor.stall_ms is None:
                self._resolve(job, "stalled", now)
            if monitor.lost_grace_ms == 0:
                self._resolve(job, "worker_lost", now)
        if monitor.lost_grace_ms == 0:
            self.deadlines.clear(monitor, "worker_lost")
        return job

    def unregister(self, now: float, job_id: str) -> Job:
        """Stop watching the job (its record stays); its open negative alerts resolve."""
        job = self._known(job_id)
        if job.monitor is not None:
            for kind in NEGATIVE_KINDS:
                self._resolve(job, kind, now)
            self._set_reporter(job, job.monitor, None)
            job.monitor = None  # its heap entries are now stale and will be dropped
        return job

    def pause(self, now: float, job_id: str, until: float | None) -> Job:
        job = self._known(job_id)
        monitor = self._monitor(job)
        monitor.paused = True
        monitor.paused_until = until
        return job

    def resume(self, now: float, job_id: str) -> Job:
        job = self._known(job_id)
        monitor = self._monitor(job)
        monitor.paused = False
        monitor.paused_until = None
        # Expectations start again from now: the pause was a maintenance window.
        self._arm_missed_run(job, monitor, now)
        if monitor.heartbeat_ttl_ms is not None and "missed_heartbeat" not in monitor.timers:
            self.deadlines.set(
                job, monitor, "missed_heartbeat", now + monitor.heartbeat_ttl_ms / 1000
            )
        if job.status is RUNNING:
            self._arm_run(job, monitor, now, restart=False)
            if monitor.lost_at is not None and "worker_lost" not in monitor.timers:
                # Its worker was lost during the pause: the same grace, from now.
                self.deadlines.set(job, monitor, "worker_lost", now + monitor.lost_grace_s)
        return job

    # -- what the lifecycle events tell the monitor --------------------------
    def sign_of_life(self, job: Job, monitor: Monitor, now: float) -> None:
        """The job started, ran or beat: the scheduled run is not missed."""
        monitor.last_seen_at = now
        self._heard_from(job, monitor, now)
        if monitor.schedule is not None:
            if job.alerts is not None:
                self._resolve(job, "missed_run", now)
            self._arm_missed_run(job, monitor, now)

    def observe_status(
        self, job: Job, monitor: Monitor, previous: Status, progress_moved: bool, now: float
    ) -> None:
        status = job.status
        if status in SIGNS_OF_LIFE:
            self.sign_of_life(job, monitor, now)
        else:
            self._heard_from(job, monitor, now)
        if status is RUNNING:
            self._track_reporter(job, monitor)
        if status is RUNNING:
            if previous is not RUNNING:
                self._arm_run(job, monitor, now, restart=False)
            elif progress_moved and monitor.stall_ms is not None:
                monitor.progress_at = now
                self.deadlines.set(job, monitor, "stalled", now + monitor.stall_ms / 1000)
                if job.alerts is not None:
                    self._resolve(job, "stalled", now)
        elif previous is RUNNING or status in TERMINAL:
            self._leave_running(job, monitor, now, ended=status in TERMINAL)

    def observe_outcome(self, job: Job, monitor: Monitor, succeeded: bool, now: float) -> bool:
        """A run ended; True when the failure alert should fire (succeeded=False) or
        resolve (succeeded=True), by the job's failure and recovery thresholds."""
        self._leave_running(job, monitor, now, ended=True)
        if succeeded:
            self.sign_of_life(job, monitor, now)
            monitor.consecutive_failures = 0
            monitor.consecutive_successes += 1
            return monitor.consecutive_successes >= monitor.recovery_threshold
        self._heard_from(job, monitor, now)
        monitor.consecutive_successes = 0
        monitor.consecutive_failures += 1
        return monitor.consecutive_failures >= monitor.failure_threshold

    # -- worker_lost -----------------------------------------------------------
    def _heard_from(self, job: Job, monitor: Monitor, now: float) -> None:
        if monitor.lost_at is not None:
            monitor.lost_at = None
            self.deadlines.clear(monitor, "worker_lost")
        if job.alerts is not None:
            self._resolve(job, "worker_lost", now)

    def _track_reporter(self, job: Job, monitor: Monitor) -> None:
        if monitor.reporter != self.reporter:
            self._set_reporter(job, monitor, self.reporter)

    def _set_reporter(self, job: Job, monitor: Monitor, reporter: int | None) -> None:
        """Move the job in the connection -> jobs index (runtime only)."""
        if monitor.reporter is not None:
            self.reported_by.get(monitor.reporter, set()).discard(job.job_id)
        monitor.reporter = reporter
        if reporter is not None:
            self.reported_by.setdefault(reporter, set()).add(job.job_id)

    def jobs_lost_with(self, connection: int) -> list[str]:
        """Running monitored jobs last reported by this (now closed) connection."""
        job_ids = self.reported_by.pop(connection, set())
        lost = []
        for job_id in sorted(job_ids):
            job = self.jobs.get(job_id)
            if (
                job is not None
                and job.monitor is not None
                and job.status is RUNNING
                and job.monitor.reporter == connection
            ):
                lost.append(job_id)
        return lost

    def running_monitored_jobs(self) -> list[str]:
        """At start after a restart: every connection that reported a run is gone."""
        jobs = self.jobs.values()
        return sorted(
            job.job_id
            # Only jobs with a ``more`` can have a monitor: the rest skipped in C.
            for job in compress(jobs, map(MORE_OF, jobs))
            if job.monitor is not None and job.status is RUNNING
        )

    def workers_gone(
        self, now: float, job_ids: list[str], default_grace_ms: int | None = None
    ) -> list[list[Any]]:
        """The connections that reported these jobs running are gone: unless
        something reports on a job within its grace, alert worker_lost.
        Returns ``[job_id, grace_s]`` pairs, which the journal records: the grace
        comes from a flag that may differ in the process that replays them
        (a cluster's record carries ``default_grace_ms`` instead)."""
        if default_grace_ms is None:
            default_grace_ms = self.lost_grace_ms
        armed: list[list[Any]] = []
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            monitor = job.monitor if job is not None else None
            if job is None or monitor is None or job.status is not RUNNING:
                continue
            grace = monitor.lost_grace_ms if monitor.lost_grace_ms is not None else default_grace_ms
            if grace > 0:
                armed.append([job_id, grace / 1000])
        self.lose_workers(now, armed)
        return armed

    def lose_workers(self, now: float, armed: list[list[Any]]) -> None:
        """Arm worker_lost for each ``[job_id, grace_s]`` (also what replay calls)."""
        for job_id, grace_s in armed:
            job = self.jobs.get(job_id)
            monitor = job.monitor if job is not None else None
            if job is None or monitor is None:
                continue
            self._set_reporter(job, monitor, None)
            monitor.lost_at = now
            monitor.lost_grace_s = grace_s
            self.deadlines.set(job, monitor, "worker_lost", now + grace_s)

    def _arm_missed_run(self, job: Job, monitor: Monitor, after: float) -> None:
        if monitor.schedule is None:
            monitor.next_expected_at = None
            self.deadlines.clear(monitor, "missed_run")
            return
        expected = schedule.next_after(monitor.schedule, after)
        monitor.next_expected_at = expected
        if expected is None:  # no run expected before the end of the calendar
            self.deadlines.clear(monitor, "missed_run")
            return
        self.deadlines.set(job, monitor, "missed_run", expected + monitor.grace_ms / 1000)

    def _arm_run(self, job: Job, monitor: Monitor, now: float, restart: bool) -> None:
        if monitor.max_runtime_ms is not None and job.started_at is not None:
            self.deadlines.set(
                job, monitor, "overrun", job.started_at + monitor.max_runtime_ms / 1000
            )
        elif restart:
            self.deadlines.clear(monitor, "overrun")
        if monitor.stall_ms is not None:
            if monitor.progress_at is None or not restart:
                monitor.progress_at = now
            self.deadlines.set(
                job, monitor, "stalled", monitor.progress_at + monitor.stall_ms / 1000
            )
        elif restart:
            self.deadlines.clear(monitor, "stalled")

    def _leave_running(self, job: Job, monitor: Monitor, now: float, ended: bool) -> None:
        self.deadlines.clear(monitor, "stalled")
        monitor.progress_at = None
        if job.alerts is not None:
            self._resolve(job, "stalled", now)
        if ended:
            self.deadlines.clear(monitor, "overrun")
            if job.alerts is not None:
                self._resolve(job, "overrun", now)

    # -- deadlines -------------------------------------------------------------
    def next_deadline(self, settle_budget: int | None = None) -> float | None:
        """The earliest deadline (with a budget of stale entries to look past, it
        may be an earlier time: then a turn comes early and finds nothing due)."""
        self.deadlines.tidy(self.jobs)
        return self.deadlines.next_at(self.jobs, settle_budget)

    def expire(
        self,
        now: float,
        restarted_at: float | None,
        limit: int | None = None,
        settle_budget: int | None = None,
    ) -> int:
        """Act on the deadlines that have come, earliest first: all of them, or the
        first ``limit``; returns how many it acted on. The next call goes on where
        this one stopped. Given the state, ``now`` and that count, the outcome is
        always the same (replay passes the count the live pass returned), however
        many stale heap entries ``settle_budget`` let the live pass look past.

        ``restarted_at``: when this process started, after a restart; a deadline
        before it passed while jobmon was down, and the alert says so.
        """
        due = 0
        for deadline_at, job, kind in self.deadlines.pop_due(self.jobs, now, limit, settle_budget):
            due += 1
            monitor = job.monitor
            assert monitor is not None
            if monitor.is_paused(now):
                self._after_pause(job, monitor, kind)
                continue
            text = _TEXTS[kind](job, monitor, deadline_at)
            if restarted_at is not None and deadline_at < restarted_at:
                text += " (detected after a restart)"
            self._fire(job, kind, text, now)
        return due

    def _after_pause(self, job: Job, monitor: Monitor, kind: str) -> None:
        """A deadline met a paused job: look again once the pause ends."""
        until = monitor.paused_until
        if until is None:
            return  # resume_job arms what applies again
        if kind == "missed_run":
            self._arm_missed_run(job, monitor, until)
        elif kind == "missed_heartbeat" and monitor.heartbeat_ttl_ms is not None:
            self.deadlines.set(job, monitor, kind, until + monitor.heartbeat_ttl_ms / 1000)
        else:
            self.deadlines.set(job, monitor, kind, until)


def _missed_heartbeat(job: Job, monitor: Monitor, deadline_at: float) -> str:
    return (
        f"Job {job.job_id} missed its heartbeat: expected one every {monitor.heartbeat_ttl_ms} ms, "
        f"the last came at {iso(monitor.last_heartbeat_at)}, none by {iso(deadline_at)}"
    )


def _missed_run(job: Job, monitor: Monitor, deadline_at: float) -> str:
    assert monitor.schedule is not None
    last = iso(monitor.last_seen_at) if monitor.last_seen_at is not None else "never"
    return (
        f"Job {job.job_id} did not start: a run was expected at {iso(monitor.next_expected_at)} "
        f"({schedule.describe(monitor.schedule)}, {monitor.grace_ms} ms grace), none had "
        f"started by {iso(deadline_at)}; last seen {last}"
    )


def _overrun(job: Job, monitor: Monitor, deadline_at: float) -> str:
    return (
        f"Job {job.job_id} has run longer than its limit of {monitor.max_runtime_ms} ms: "
        f"started at {iso(job.started_at)}, still running at {iso(deadline_at)}"
    )


def _worker_lost(job: Job, monitor: Monitor, deadline_at: float) -> str:
    grace = round(monitor.lost_grace_s * 1000)
    return (
        f"Job {job.job_id} lost its worker: the connection that reported it running closed "
        f"at {iso(monitor.lost_at)} and nothing reported on the job within {grace} ms"
    )


def _stalled(job: Job, monitor: Monitor, deadline_at: float) -> str:
    return (
        f"Job {job.job_id} stalled at {job.progress}%: its progress has not moved for "
        f"{monitor.stall_ms} ms (since {iso(monitor.progress_at)})"
    )


_TEXTS = {
    "missed_heartbeat": _missed_heartbeat,
    "missed_run": _missed_run,
    "overrun": _overrun,
    "stalled": _stalled,
    "worker_lost": _worker_lost,
}
