"""pause_job / resume_job: a maintenance window; a paused job raises no alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..clock import iso
from ..errors import malformed
from ..node import Node
from . import fields

NAME = "pause_job"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    until = body.get("until")
    if until is None:
        return (job_id, None)
    if type(until) is str:
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            # "0001-01-01T00:00:00+14:00" is in year 0 in UTC: not writable back.
            if fields.writable_time(moment.timestamp()):
                return (job_id, moment.timestamp())
    raise malformed(
        "until must be an ISO-8601 time between 0001-01-01T00:00:00Z and "
        f"9999-12-31T23:59:59.999Z, such as 2026-11-22T04:00:00Z, got {fields._show(until)}"
    )


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, until = args
    node.store.pause(now, job_id, until)
    out = fields.reply("job_paused", msg_id)
    out["job_id"] = job_id
    out["until"] = iso(until)
    return out
