"""heartbeat: Redis's SETEX for a job; no further heartbeat before deadline_at alerts."""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import msgspec

from ..clock import iso
from ..node import Node
from . import fields

NAME = "heartbeat"
MUTATES = True


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    ttl_ms: Annotated[int, msgspec.Meta(ge=1, le=fields.MAX_NUMBER)] | None = None
    at: fields.WireNumber | None = None
    msg_id: fields.WireMsgId | None = None


from_wire = attrgetter("job_id", "ttl_ms", "at")


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    ttl_ms = fields.integer(body, "ttl_ms", 1)
    return (job_id, ttl_ms, fields.number(body, "at"))


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    try:
        job_id, ttl_ms, at = args
    except ValueError:  # journaled before events had ``at``
        (job_id, ttl_ms), at = args, None
    when = now if at is None else fields.event_time(now, args, 2)
    deadline_at = node.store.heartbeat(when, job_id, ttl_ms)
    out = fields.reply("heartbeat_ok", msg_id)
    out["job_id"] = job_id
    out["deadline_at"] = iso(deadline_at)
    return out
