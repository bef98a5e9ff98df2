"""A Healthchecks check as jobmon keeps it: its settings, its ping log and its
flips. Everything else about it (running, alerts, deadlines, history) is its
job's own state, so the status is derived, with one clock reading.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any

from ..clock import iso
from ..history import History
from ..model import TERMINAL, Job, Status

# Healthchecks' defaults and limits.
DEFAULT_TIMEOUT_S = 86_400
DEFAULT_GRACE_S = 3_600
MIN_PERIOD_S = 60
MAX_PERIOD_S = 31_536_000
MAX_NAME_CHARS = 100
MAX_SLUG_CHARS = 100
MAX_TAGS_CHARS = 500
MAX_DESC_CHARS = 10_000
MAX_SCHEDULE_CHARS = 100
MAX_UA_CHARS = 200
MAX_CHANNELS = 64
# What jobmon keeps, so that no client can grow memory without bound.
MAX_CHECKS = 10_000
PINGS_KEPT = 100  # per check, as Healthchecks' free plan
FLIPS_KEPT = 1_000  # per check
PING_BODY_LIMIT = 100_000  # bytes of a request body kept with its ping
BODY_BUDGET = 64 << 20  # bytes of ping bodies kept over all checks; the oldest go first
OUTPUT_CHARS = 8_192  # the tail of a body that becomes its run's output (as jobmon run's)

PING_KINDS = ("success", "start", "fail", "log", "ign")
# Alerts that make a check "down"; memory and slow_run are about runs that ran.
DOWN_KINDS = frozenset(
    {"failed", "missed_run", "missed_heartbeat", "overrun", "stalled", "worker_lost"}
)

# A ping, as kept: a list read by position (a snapshot row as it is).
P_N, P_KIND, P_AT, P_SCHEME, P_ADDR, P_METHOD, P_UA, P_RID, P_DURATION, P_BODY, P_EXIT = range(11)


class Check:
    # Persisted, in this order (``to_row``).
    FIELDS = (
        "uuid",
        "job_id",
        "name",
        "slug",
        "tags",
        "desc",
        "timeout",
        "grace",
        "schedule",
        "tz",
        "manual_resume",
        "methods",
        "channels",
        "created_at",
        "reset_at",
        "armed",
        "n_pings",
        "last_status",
        "pings",
        "flips",
    )
    __slots__ = FIELDS

    def __init__(self, uuid: str, job_id: str, now: float) -> None:
        self.uuid = uuid
        self.job_id = job_id
        self.name = ""
        self.slug = ""
        self.tags = ""
        self.desc = ""
        self.timeout: int | None = DEFAULT_TIMEOUT_S  # seconds; None when it has a schedule
        self.grace = DEFAULT_GRACE_S
        self.schedule: str | None = None  # a cron expression (a "cron" check)
        self.tz = "UTC"
        self.manual_resume = False
        self.methods = ""
        self.channels: list[str] = []  # --notify channel names
        self.created_at = now
        # Created or resumed at: "new" until its job's next success or failure.
        self.reset_at = now
        # Its timeout/schedule and grace are its job's promises (from its first ping).
        self.armed = False
        self.n_pings = 0
        self.last_status = "new"  # as of its last flip
        self.pings: deque[list[Any]] = deque(maxlen=PINGS_KEPT)
        self.flips: deque[list[Any]] = deque(maxlen=FLIPS_KEPT)  # [at, status]

    @property
    def kind(self) -> str:
        return "cron" if self.schedule is not None else "simple"

    def tag_list(self) -> list[str]:
        return self.tags.split()

    @property
    def unique_key(self) -> str:
        """Healthchecks' stable read-only identifier, derived from the uuid."""
        return hashlib.sha1(self.uuid.replace("-", "")[:16].encode()).hexdigest()

    def to_row(self) -> list[Any]:
        row = [getattr(self, name) for name in self.FIELDS]
        row[-2], row[-1] = list(self.pings), list(self.flips)
        return row

    @classmethod
    def from_row(cls, row: list[Any]) -> Check:
        check = cls.__new__(cls)
        for name, value in zip(cls.FIELDS, row, strict=True):
            setattr(check, name, value)
        check.pings = deque(check.pings, maxlen=PINGS_KEPT)
        check.flips = deque(check.flips, maxlen=FLIPS_KEPT)
        return check


def is_new(check: Check, job: Job) -> bool:
    """No success or failure since it was made or resumed (a start leaves it new)."""
    finished = last_finish(job)
    return finished is None or finished < check.reset_at


def status_of(check: Check, job: Job, now: float, with_started: bool = False) -> str:
    """Healthchecks' status, read off the job: paused, new, down, grace, up (and,
    with ``with_started``, as API v1 says it, started)."""
    monitor = job.monitor
    if monitor is not None and monitor.is_paused(now):
        return "paused"
    running = job.status is Status.RUNNING
    if running and monitor is not None and monitor.max_runtime_ms is not None:
        started = job.started_at
        if started is not None and now >= started + monitor.max_runtime_ms / 1000:
            return "down"  # started and not finished within its grace
    if job.alerts is not None and not DOWN_KINDS.isdisjoint(job.alerts):
        return "down"
    if running and with_started:
        return "started"
    if is_new(check, job):
        return "new"
    if job.status is Status.FAILED:
        return "down"
    expected = monitor.next_expected_at if monitor is not None else None
    if expected is not None and monitor is not None and "missed_run" in monitor.timers:
        if now >= expected + monitor.grace_ms / 1000:
            return "down"
        if now >= expected:
            return "grace"
    return "up"


def flip_status(check: Check, job: Job, now: float) -> str:
    """The status a flip records: grace counts as up, as Healthchecks has it."""
    status = status_of(check, job, now)
    return "up" if status == "grace" else status


def last_finish(job: Job) -> float | None:
    if job.status in TERMINAL:
        return job.finished_at
    runs = History.recent_runs(job)
    return runs[-1][1] if runs else None


def record(check: Check, job: Job, now: float) -> dict[str, Any]:
    """A check as replies carry it (jobmon's times: ISO-8601 UTC)."""
    status = status_of(check, job, now)
    monitor = job.monitor
    finished = last_finish(job)
    last_ping = None if finished is None or finished < check.reset_at else finished
    next_ping = None
    if status in ("up", "grace") and monitor is not None and "missed_run" in monitor.timers:
        next_ping = monitor.next_expected_at
    return {
        "uuid": check.uuid,
        "job_id": check.job_id,
        "name": check.name,
        "slug": check.slug,
        "tags": check.tags,
        "desc": check.desc,
        "kind": check.kind,
        "timeout": check.timeout,
        "grace": check.grace,
        "schedule": check.schedule,
        "tz": check.tz,
        "manual_resume": check.manual_resume,
        "methods": check.methods,
        "channels": check.channels,
        "status": status,
        "started": job.status is Status.RUNNING,
        "last_ping": iso(last_ping),
        "next_ping": iso(next_ping),
        "n_pings": check.n_pings,
        "last_duration_ms": job.duration_ms,
        "created_at": iso(check.created_at),
        "unique_key": check.unique_key,
    }


def ping_record(ping: list[Any]) -> dict[str, Any]:
    return {
        "n": ping[P_N],
        "type": ping[P_KIND],
        "at": iso(ping[P_AT]),
        "scheme": ping[P_SCHEME],
        "remote_addr": ping[P_ADDR],
        "method": ping[P_METHOD],
        "ua": ping[P_UA],
        "rid": ping[P_RID],
        "duration_s": ping[P_DURATION],
        "has_body": bool(ping[P_BODY]),
        "exit_status": ping[P_EXIT],
    }
