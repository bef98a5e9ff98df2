"""get_job: one job's whole record."""

from __future__ import annotations

from typing import Any

from ..clock import iso
from ..model import Job
from ..node import Node
from . import fields

NAME = "get_job"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (fields.job_id(body),)


def record(node: Node, job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "progress": job.progress,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "runs": job.runs,
        "duration_ms": job.duration_ms,
        "resource_usage": job.resource_usage,
        "error": job.error,
        "retries": job.retries,
        "max_retries": node.store.max_retries_of(job),
    }


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job = node.store.get(args[0])
    out = fields.reply("job", msg_id)
    out["job"] = record(node, job)
    return out
