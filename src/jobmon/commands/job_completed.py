"""job_completed: a run finished; record its duration and resource usage."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from ..errors import malformed
from ..node import Node
from . import fields

NAME = "job_completed"
MUTATES = True


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    duration_ms: fields.WireNumber | None = None
    # Stricter than parse (every value a number): anything else takes the slow path.
    resource_usage: dict[str, fields.WireNumber] = msgspec.field(default_factory=dict)
    at: fields.WireNumber | None = None
    msg_id: fields.WireMsgId | None = None


from_wire = attrgetter("job_id", "duration_ms", "resource_usage", "at")


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    duration_ms = fields.number(body, "duration_ms")
    usage = body.get("resource_usage")
    if usage is None:
        usage = {}
    elif type(usage) is not dict:
        raise malformed(
            f"resource_usage must be an object such as "
            f'{{"cpu_percent": 75, "memory_mb": 1024}}, got {fields._show(usage)}'
        )
    else:
        for key, value in usage.items():
            if fields.is_number(value):
                fields.checked_number(value, f"resource_usage.{key}")
            elif key in ("cpu_percent", "memory_mb"):
                raise malformed(
                    f"resource_usage.{key} must be a number >= 0, got {fields._show(value)}"
                )
    return (job_id, duration_ms, usage, fields.number(body, "at"))


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    try:
        job_id, duration_ms, usage, at = args
    except ValueError:  # journaled before events had ``at``
        (job_id, duration_ms, usage), at = args, None
    when = now if at is None else fields.event_time(now, args, 3)
    job = node.store.complete(when, job_id, duration_ms, usage)
    out = fields.reply("job_completed", msg_id)
    out["job_id"] = job_id
    out["duration_ms"] = job.duration_ms
    out["resource_usage"] = usage
    return out
