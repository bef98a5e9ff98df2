"""job_failed: an attempt failed; retry, or fail the job and alert once its retries are spent."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from ..node import Node
from . import fields, run_ids

NAME = "job_failed"
MUTATES = True


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    error: fields.WireError = ""
    retries: fields.WireCount = 0
    max_retries: fields.WireCount | None = None
    at: fields.WireNumber | None = None
    msg_id: fields.WireMsgId | None = None
    event_id: fields.WireEventId | None = None
    run_id: fields.WireRunId | None = None


from_wire = attrgetter("job_id", "error", "retries", "max_retries", "at")


def from_run_wire(wire: Wire) -> tuple[Any, ...]:
    """One run's report (run_id), as ``parse`` makes it: no run info, no usage."""
    return (wire.job_id, wire.error, wire.retries, wire.max_retries, wire.at, None, {}, wire.run_id)


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    error = fields.error_text(body)
    retries = fields.integer(body, "retries")
    max_retries = fields.integer(body, "max_retries")
    at = fields.number(body, "at")
    info = fields.run_info(body)
    usage = fields.usage(body)
    if "run_id" in body:
        run_id = run_ids.parse(body)
        if run_id is not None:
            return (job_id, error, retries or 0, max_retries, at, info, usage, run_id)
    if info is None and not usage:
        return (job_id, error, retries or 0, max_retries, at)
    return (job_id, error, retries or 0, max_retries, at, info, usage)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, error, retries, max_retries = args[0], args[1], args[2], args[3]
    n = len(args)
    at = args[4] if n > 4 else None  # older records are shorter
    if n > 5:
        if n > 7:  # one of several runs (run_id)
            return run_ids.job_failed(node, now, args, msg_id)
        info, usage = args[5], args[6]
    else:
        info = usage = None
    when = now if at is None else fields.event_time(now, args, 4)
    _, exhausted = node.store.fail(when, job_id, error, retries, max_retries, info, usage)
    if exhausted:
        out = fields.reply("alert_sent", msg_id)
        out["job_id"] = job_id
        out["alert"] = f"Job failed after {retries} retries: {error}"
        return out
    out = fields.reply("job_failed", msg_id)
    out["job_id"] = job_id
    out["error"] = error
    out["retries"] = retries
    out["will_retry"] = True
    return out
