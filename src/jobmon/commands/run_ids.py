"""``run_id`` on update_status, job_completed, job_failed and heartbeat: one of
several live runs of a job (the store side is ``runs``).

Each of the four commands parses ``run_id`` into the last place of its
arguments and, when it is there, hands the whole request to the function of
the same name below (so the journal record, and its replay, take the same
way). Without ``run_id`` none of this runs. Replies are the usual ones plus
``run_id``.
"""

from __future__ import annotations

from typing import Any

from ..clock import iso
from ..errors import malformed
from ..model import STATUS_BY_NAME
from ..node import Node
from ..runs import MAX_RUN_ID_CHARS
from . import fields


def parse(body: dict[str, Any]) -> str | None:
    """The optional ``run_id``: a non-empty string of at most MAX_RUN_ID_CHARS."""
    value = body.get("run_id")
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= MAX_RUN_ID_CHARS or "\x00" in value:
        raise malformed(
            f"run_id must be a non-empty string of at most {MAX_RUN_ID_CHARS} characters "
            f"(one run of the job, such as a UUID), got {fields._show(value)}"
        )
    return value


def update_status(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, status, progress, max_retries, at, usage, info, run_id = args
    when = fields.event_time(now, args, 4)
    store = node.store
    job = store.run_status(when, job_id, run_id, STATUS_BY_NAME[status], progress, max_retries)
    if usage or info:
        store.watch_memory(job, usage, info, when)
    out = fields.reply("status_updated", msg_id)
    out["job_id"] = job_id
    out["status"] = status
    out["progress"] = progress if progress is not None else job.progress
    out["run_id"] = run_id
    return out


def job_completed(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, duration_ms, usage, _, info, run_id = args
    when = fields.event_time(now, args, 3)
    job = node.store.run_completed(when, job_id, run_id, duration_ms, usage, info)
    out = fields.reply("job_completed", msg_id)
    out["job_id"] = job_id
    out["duration_ms"] = job.duration_ms
    out["resource_usage"] = usage
    out["run_id"] = run_id
    return out


def job_failed(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, error, retries, max_retries, _, info, usage, run_id = args
    when = fields.event_time(now, args, 4)
    _, exhausted = node.store.run_failed(
        when, job_id, run_id, error, retries, max_retries, info, usage
    )
    if exhausted:
        out = fields.reply("alert_sent", msg_id)
        out["job_id"] = job_id
        out["alert"] = f"Job failed after {retries} retries: {error}"
    else:
        out = fields.reply("job_failed", msg_id)
        out["job_id"] = job_id
        out["error"] = error
        out["retries"] = retries
        out["will_retry"] = True
    out["run_id"] = run_id
    return out


def heartbeat(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, ttl_ms, _, _, run_id = args
    when = fields.event_time(now, args, 2)
    deadline_at = node.store.run_heartbeat(when, job_id, run_id, ttl_ms)
    out = fields.reply("heartbeat_ok", msg_id)
    out["job_id"] = job_id
    out["deadline_at"] = iso(deadline_at)
    out["run_id"] = run_id
    return out
