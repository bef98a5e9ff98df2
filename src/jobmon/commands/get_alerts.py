"""get_alerts: recent alerts, newest first, by state and job."""

from __future__ import annotations

from typing import Any

from ..errors import malformed
from ..node import Node
from . import fields

NAME = "get_alerts"
MUTATES = False
STATES = ("firing", "resolved", "all")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    state = body.get("state", "all")
    if type(state) is not str or state not in STATES:
        raise malformed(f"state must be one of {', '.join(STATES)}, got {fields._show(state)}")
    job_id = fields.job_id(body) if body.get("job_id") is not None else None
    limit = fields.integer(body, "limit", 1)
    if limit is not None and limit > MAX_LIMIT:
        raise malformed(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return (state, job_id, limit or DEFAULT_LIMIT)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    state, job_id, limit = args
    out = fields.reply("alerts", msg_id)
    out["alerts"] = [a.to_wire() for a in node.store.find_alerts(state, job_id, limit)]
    return out
