"""heartbeat: Redis's SETEX for a job; no further heartbeat before deadline_at alerts."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec

from ..clock import iso
from ..errors import malformed
from ..node import Node
from . import fields, run_ids

NAME = "heartbeat"
MUTATES = True


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    job_id: fields.WireJobId
    ttl_ms: fields.WireSpanMs | None = None
    at: fields.WireNumber | None = None
    for_run: bool = False
    msg_id: fields.WireMsgId | None = None
    event_id: fields.WireEventId | None = None
    run_id: fields.WireRunId | None = None


from_wire = attrgetter("job_id", "ttl_ms", "at", "for_run")


def from_run_wire(wire: Wire) -> tuple[Any, ...]:
    """One run's beat (run_id), as ``parse`` makes it."""
    return (wire.job_id, wire.ttl_ms, wire.at, wire.for_run, wire.run_id)


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    ttl_ms = fields.span_ms(body, "ttl_ms")
    for_run = body.get("for_run", False)
    if type(for_run) is not bool:
        raise malformed(
            f"for_run must be true or false (true: the heartbeats end with the run), "
            f"got {fields._show(for_run)}"
        )
    at = fields.number(body, "at")
    run_id = run_ids.parse(body) if "run_id" in body else None
    if run_id is not None:
        return (job_id, ttl_ms, at, for_run, run_id)
    return (job_id, ttl_ms, at, for_run)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    try:
        job_id, ttl_ms, at, for_run = args
    except ValueError:  # journaled before events had ``at`` and ``for_run``
        if len(args) > 4:  # one run's beat (run_id)
            return run_ids.heartbeat(node, now, args, msg_id)
        job_id, ttl_ms = args[0], args[1]
        at, for_run = (args[2] if len(args) > 2 else None), False
    when = now if at is None else fields.event_time(now, args, 2)
    deadline_at = node.store.heartbeat(when, job_id, ttl_ms, for_run)
    out = fields.reply("heartbeat_ok", msg_id)
    out["job_id"] = job_id
    out["deadline_at"] = iso(deadline_at)
    return out
