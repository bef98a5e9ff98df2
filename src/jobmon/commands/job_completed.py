"""job_completed: a run finished; record its duration and resource usage."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from ..node import Node
from . import fields, run_ids

NAME = "job_completed"
MUTATES = True


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    duration_ms: fields.WireNumber | None = None
    # Stricter than parse (every value a number): anything else takes the slow path.
    resource_usage: fields.WireUsage = msgspec.field(default_factory=dict)
    at: fields.WireNumber | None = None
    msg_id: fields.WireMsgId | None = None
    event_id: fields.WireEventId | None = None
    run_id: fields.WireRunId | None = None


from_wire = attrgetter("job_id", "duration_ms", "resource_usage", "at")


def from_run_wire(wire: Wire) -> tuple[Any, ...]:
    """One run's report (run_id), as ``parse`` makes it."""
    return (wire.job_id, wire.duration_ms, wire.resource_usage, wire.at, None, wire.run_id)


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    duration_ms = fields.number(body, "duration_ms")
    usage = fields.usage(body)
    at = fields.number(body, "at")
    info = fields.run_info(body)
    if "run_id" in body:
        run_id = run_ids.parse(body)
        if run_id is not None:
            return (job_id, duration_ms, usage, at, info, run_id)
    if info is None:  # as the fast path decodes it
        return (job_id, duration_ms, usage, at)
    return (job_id, duration_ms, usage, at, info)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, duration_ms, usage = args[0], args[1], args[2]
    n = len(args)
    at = args[3] if n > 3 else None  # older records are shorter
    if n > 4:
        if n > 5:  # one of several runs (run_id)
            return run_ids.job_completed(node, now, args, msg_id)
        info = args[4]
    else:
        info = None
    when = now if at is None else fields.event_time(now, args, 3)
    job = node.store.complete(when, job_id, duration_ms, usage, info)
    out = fields.reply("job_completed", msg_id)
    out["job_id"] = job_id
    out["duration_ms"] = job.duration_ms
    out["resource_usage"] = usage
    return out
