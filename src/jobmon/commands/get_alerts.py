"""get_alerts: recent alerts, newest first, by state and job."""

from __future__ import annotations

from typing import Any

import orjson

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
    limit = fields.integer(body, "limit", 1, MAX_LIMIT)
    before = fields.integer(body, "before", 1)  # an alert id: the alerts older than it
    return (state, job_id, limit or DEFAULT_LIMIT, before)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    state, job_id, limit, before = args
    out = fields.reply("alerts", msg_id)
    page = []
    size = 0
    found = node.store.find_alerts(state, job_id, limit, before)
    for alert in found:
        row = orjson.dumps(alert.to_wire())
        page.append(orjson.Fragment(row))
        size += len(row)
        if size >= fields.PAGE_BYTES and len(page) < len(found):
            # The rest would make the reply too large: the next page starts here.
            out["alerts"] = page
            out["next_before"] = alert.alert_id
            return out
    out["alerts"] = page
    return out
