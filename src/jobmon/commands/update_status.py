"""update_status: record a job's current status and progress."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from ..errors import malformed
from ..model import STATUS_BY_NAME
from ..node import Node
from . import fields, run_ids

NAME = "update_status"
MUTATES = True
_EXPECTED = ", ".join(STATUS_BY_NAME)


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    status: fields.WireStatus
    progress: fields.WirePercent | None = None
    max_retries: fields.WireCount | None = None
    at: fields.WireNumber | None = None
    msg_id: fields.WireMsgId | None = None
    event_id: fields.WireEventId | None = None
    run_id: fields.WireRunId | None = None


from_wire = attrgetter("job_id", "status", "progress", "max_retries", "at")


def from_run_wire(wire: Wire) -> tuple[Any, ...]:
    """One run's report (run_id), as ``parse`` makes it: no usage, no run info."""
    return (
        wire.job_id,
        wire.status,
        wire.progress,
        wire.max_retries,
        wire.at,
        {},
        None,
        wire.run_id,
    )


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    # The hottest message: valid input takes the inline checks, anything else
    # goes through the validators that explain what was wrong.
    get = body.get
    job_id = get("job_id")
    if type(job_id) is not str or not 0 < len(job_id) <= fields.MAX_JOB_ID_CHARS:
        job_id = fields.job_id(body)
    status = get("status")
    if type(status) is not str or status not in STATUS_BY_NAME:
        if status is None:
            raise malformed(f"missing field status: expected one of {_EXPECTED}")
        shown = fields._show(status).removeprefix("a string ")
        raise malformed(f"unknown status {shown}: expected one of {_EXPECTED}")
    progress = get("progress")
    if progress is not None and (type(progress) not in fields.NUMBER or not 0 <= progress <= 100):
        fields.number(body, "progress", 0, 100)
    max_retries = get("max_retries")
    if max_retries is not None:
        fields.integer(body, "max_retries")
    at = get("at")
    if at is not None:
        fields.number(body, "at")
    run_id = run_ids.parse(body) if "run_id" in body else None
    if "resource_usage" in body or "memory_limit_mb" in body or run_id is not None:
        usage, info = fields.usage(body), fields.run_info(body)  # a wrapper watching memory
        if run_id is not None:
            return (job_id, status, progress, max_retries, at, usage, info, run_id)
        return (job_id, status, progress, max_retries, at, usage, info)
    return (job_id, status, progress, max_retries, at)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    try:
        job_id, status, progress, max_retries, at = args
        watched = None
    except ValueError:  # older records are shorter; a wrapper's report is longer
        if len(args) > 7:  # one of several runs (run_id)
            return run_ids.update_status(node, now, args, msg_id)
        job_id, status, progress, max_retries = args[0], args[1], args[2], args[3]
        at = args[4] if len(args) > 4 else None
        watched = args[5:7] if len(args) > 5 else None
    when = now if at is None else fields.event_time(now, args, 4)
    store = node.store
    job = store.update_status(when, job_id, STATUS_BY_NAME[status], progress, max_retries)
    if watched is not None:
        store.watch_memory(job, watched[0], watched[1], when)
    if msg_id is None:
        return {
            "type": "status_updated",
            "job_id": job_id,
            "status": status,
            "progress": job.progress,
        }
    return {
        "type": "status_updated",
        "in_reply_to": msg_id,
        "job_id": job_id,
        "status": status,
        "progress": job.progress,
    }
