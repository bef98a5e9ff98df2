"""get_job: one job's whole record, with its recent runs (newest first)."""

from __future__ import annotations

from typing import Any

from ..clock import iso
from ..history import History
from ..model import Job, usage_of
from ..node import Node
from . import fields

NAME = "get_job"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (fields.job_id(body),)


def record(node: Node, job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "progress": job.progress,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "runs": job.runs,
        "duration_ms": job.duration_ms,
        "resource_usage": usage_of(job),
        "error": job.error,
        "retries": job.retries,
        "max_retries": node.store.max_retries_of(job),
        "last_success_at": iso(History.last_success_at(job)),
    }
    if job.alerts:
        out["alerts"] = sorted(job.alerts)
    live = node.store.live_runs_of(job.job_id) if node.store.live_runs else None
    if live is not None:  # runs with a run_id still going (runs.py)
        out["live_runs"] = live
    monitor = job.monitor
    if monitor is not None:
        out["monitor"] = {
            "schedule": monitor.schedule,
            "next_expected_at": iso(monitor.next_expected_at),
            "grace_ms": monitor.grace_ms,
            "heartbeat_ttl_ms": monitor.heartbeat_ttl_ms,
            "max_runtime_ms": monitor.max_runtime_ms,
            "stall_ms": monitor.stall_ms,
            "failure_threshold": monitor.failure_threshold,
            "recovery_threshold": monitor.recovery_threshold,
            "labels": monitor.labels,
            "paused": monitor.is_paused(node.now),
            "paused_until": iso(monitor.paused_until),
            "last_seen_at": iso(monitor.last_seen_at),
            "deadlines": {kind: iso(at) for kind, at in sorted(monitor.timers.items())},
        }
        if monitor.channels:
            out["monitor"]["channels"] = monitor.channels
    return out


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job = node.store.get(args[0])
    out = fields.reply("job", msg_id)
    full = record(node, job)
    runs = History.runs_of(job)
    for run in runs:
        run["started_at"] = iso(run["started_at"])
        run["finished_at"] = iso(run["finished_at"])
    full["recent_runs"] = runs
    out["job"] = fields.encoded(full, f"job {args[0]!r}'s record")
    return out
