"""The record types jobmon keeps: job status, the per-job record, alerts."""

from __future__ import annotations

from base64 import b64encode
from enum import Enum
from operator import attrgetter
from typing import Any

import msgspec
import orjson

from .clock import iso


class Status(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUS_BY_NAME: dict[str, Status] = {s.value: s for s in Status}
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.PENDING, Status.QUEUED, Status.RUNNING, Status.RETRYING})


class JobMore(msgspec.Struct, array_like=True, gc=False, eq=False):
    """What most jobs never have, or have only while a run fails: one object,
    ``Job.more``, None for the rest (each slot fewer in ``Job`` is 8 bytes a
    job). ``Job``'s properties of the same names read and write it."""

    error: str | None = None
    retries: int = 0
    max_retries: int | None = None
    # Open alerts by kind (at most one per kind); None while there are none.
    # (A snapshot row holds their ids; ``Store.load_snapshot`` puts the alerts back.)
    alerts: Any = None
    # Negative-alerting settings and timers; None for jobs that only report.
    monitor: Any = None
    # What a wrapper reported of the current run (arguments, exit_code,
    # output, memory_limit_mb, a failed run's resource_usage), or its run_id.
    run_info: Any = None

    def is_empty(self) -> bool:
        return (
            self.error is None
            and not self.retries
            and self.max_retries is None
            and self.alerts is None
            and self.monitor is None
            and self.run_info is None
        )


MORE_FIELDS: tuple[str, ...] = JobMore.__struct_fields__


def _in_more(name: str) -> Any:
    """A ``Job`` property that reads ``job.more.<name>`` (the default while
    ``more`` is None) and writes it, making ``more`` for the first value other
    than the default. The hot path reads ``job.more`` itself."""
    read = attrgetter(name)
    default = read(JobMore())

    def get(job: Job) -> Any:
        more = job.more
        return default if more is None else read(more)

    def put(job: Job, value: Any) -> None:
        more = job.more
        if more is None:
            if value is default or (type(value) is type(default) and value == default):
                return
            more = job.more = JobMore()
        setattr(more, name, value)

    return property(get, put)


class Job(msgspec.Struct, array_like=True, gc=False, eq=False):
    """One tracked job; one object per job_id.

    Status, progress, the timestamps, error and retries describe the current run;
    duration_ms and resource_usage are those of the last completed run.
    Timestamps are epoch seconds; ``runs`` counts runs ever seen.

    A msgspec Struct, so a snapshot's rows decode straight into jobs (in C, the
    bulk of a restart), and small: no ``__dict__``, no garbage-collector header
    (``gc=False``: a job refers to no object that refers back to it), and 14
    slots, 128 bytes (one of pymalloc's sizes; 19 were 176): what few jobs have
    is in ``more`` (``JobMore``), read and written through properties of the
    same names. ``Job(job_id, status, 0, now, now)`` makes a new one.
    """

    job_id: str
    status: Status
    progress: int | float = 0
    created_at: int | float = 0.0
    updated_at: int | float = 0.0
    started_at: int | float | None = None
    finished_at: int | float | None = None
    runs: int = 1
    duration_ms: int | float | None = None
    # The last completed run's, as its JSON (bytes are a third of the dict's
    # memory), as ``get_job`` writes it back; base64 in a snapshot row, which
    # msgspec decodes straight into bytes again (a dict would be thrice the
    # memory, and slower to read).
    resource_usage: bytes | None = None
    # As of the run before the current one (see ``history``).
    last_success_at: int | float | None = None
    # Earlier finished runs (``history.RUN_FIELDS`` tuples, or lists as a
    # snapshot gives them back), newest last.
    recent_runs: Any = None
    more: JobMore | None = None
    # Its place in the order jobs were first seen (the store's; a snapshot row's
    # last field, see ``jobrows``).
    seq: int = 0

    error = _in_more("error")
    retries = _in_more("retries")
    max_retries = _in_more("max_retries")
    alerts = _in_more("alerts")
    monitor = _in_more("monitor")
    run_info = _in_more("run_info")


# ``compress(jobs, map(MORE_OF, jobs))``: the jobs with a ``more``, the rest
# skipped in C (a scan of a million jobs for monitors or alerts).
MORE_OF = attrgetter("more")


class Monitor:
    """What a job promised (a schedule, a heartbeat, a runtime limit...) and the
    deadlines that follow; only jobs that registered or sent heartbeats have one.

    ``timers`` maps an alert kind to the time it fires; ``armed`` maps a kind to
    the time of its entry in the deadline heap (see ``deadlines``).
    """

    # Persisted, in this order (``to_row``); ``armed`` is rebuilt at load.
    FIELDS = (
        "heartbeat_ttl_ms",
        "last_heartbeat_at",
        "labels",
        "timers",
        "schedule",
        "grace_ms",
        "max_runtime_ms",
        "stall_ms",
        "failure_threshold",
        "recovery_threshold",
        "paused",
        "paused_until",
        "last_seen_at",
        "next_expected_at",
        "progress_at",
        "consecutive_failures",
        "consecutive_successes",
        "lost_grace_ms",
        "lost_at",
        "lost_grace_s",
        "heartbeat_for_run",
        "channels",
    )
    # ``reporter``: the connection that last reported the job running (this
    # process only; a restart closes every connection).
    __slots__ = (*FIELDS, "armed", "reporter")

    def __init__(self) -> None:
        self.heartbeat_ttl_ms: int | None = None
        self.last_heartbeat_at: float | None = None
        self.labels: dict[str, str] = {}
        self.timers: dict[str, float] = {}
        self.armed: dict[str, float] = {}
        self.schedule: dict[str, Any] | None = None
        self.grace_ms = 0
        self.max_runtime_ms: int | None = None
        self.stall_ms: int | None = None
        self.failure_threshold = 1
        self.recovery_threshold = 1
        self.paused = False
        self.paused_until: float | None = None  # None while paused: until resumed
        self.last_seen_at: float | None = None  # the last sign of life
        self.next_expected_at: float | None = None
        self.progress_at: float | None = None  # when progress last moved
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.lost_grace_ms: int | None = None  # None: the server's --lost-grace-ms
        self.lost_at: float | None = None  # when its reporting connection closed
        self.lost_grace_s = 0.0  # the grace worker_lost was armed with
        self.heartbeat_for_run = False  # heartbeats end with the run (jobmon run's)
        self.channels: list[str] | None = None  # --notify channels its alerts go to
        self.reporter: int | None = None

    def to_row(self) -> list[Any]:
        return [getattr(self, name) for name in self.FIELDS]

    @classmethod
    def from_row(cls, row: list[Any]) -> Monitor:
        monitor = cls()
        for name, value in zip(cls.FIELDS, row, strict=False):  # older rows are shorter
            setattr(monitor, name, value)
        return monitor

    def is_paused(self, now: float) -> bool:
        return self.paused and (self.paused_until is None or now < self.paused_until)


class AlertState(str, Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert:
    """One incident: fires once, resolves once."""

    __slots__ = ("alert_id", "job_id", "kind", "text", "fired_at", "resolved_at", "labels")

    def __init__(
        self,
        alert_id: int,
        job_id: str,
        kind: str,
        text: str,
        fired_at: float,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.alert_id = alert_id
        self.job_id = job_id
        self.kind = kind
        self.text = text
        self.fired_at = fired_at
        self.resolved_at: float | None = None
        self.labels = labels or {}

    @property
    def state(self) -> AlertState:
        return AlertState.FIRING if self.resolved_at is None else AlertState.RESOLVED

    def to_row(self) -> list[Any]:
        return [
            self.alert_id,
            self.job_id,
            self.kind,
            self.text,
            self.fired_at,
            self.resolved_at,
            self.labels,
        ]

    @classmethod
    def from_row(cls, row: list[Any]) -> Alert:
        alert = cls(row[0], row[1], row[2], row[3], row[4], row[6])
        alert.resolved_at = row[5]
        return alert

    def to_wire(self) -> dict[str, Any]:
        """The alert as subscribers, get_alerts and webhooks see it."""
        return {
            "id": self.alert_id,
            "job_id": self.job_id,
            "kind": self.kind,
            "state": self.state.value,
            "text": self.text,
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "labels": self.labels,
        }


def kept_json(value: Any) -> bytes:
    """``value`` as JSON, to keep: orjson's output holds on to the buffer it was
    written into (some 4 KiB, whatever its length), so what is kept long is
    copied into bytes of its own size (a tenth of a million kept replies' RSS)."""
    return bytes(memoryview(orjson.dumps(value)))


def usage_of(job: Job) -> Any:
    """A job's ``resource_usage`` for a reply (orjson writes a Fragment as it is)."""
    usage = job.resource_usage
    return None if usage is None else orjson.Fragment(usage)


def snapshot_default(value: Any) -> Any:
    """orjson's hook for what it cannot write itself: a job's open alerts (by id),
    its monitor (as a row) and its ``more`` (as the array of its slots)."""
    if isinstance(value, Alert):
        return value.alert_id
    if type(value) is bytes:  # Job.resource_usage, JSON: as a row holds it (jobrows)
        return b64encode(value).decode()
    if isinstance(value, Monitor):
        return value.to_row()
    if type(value) is JobMore:  # a snapshot row's (jobrows)
        return [getattr(value, name) for name in MORE_FIELDS]
    raise TypeError(f"cannot snapshot {type(value).__name__}")
