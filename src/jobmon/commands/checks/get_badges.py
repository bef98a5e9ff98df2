"""get_badges: per tag (and ``*`` for every check), how many checks there are,
in their grace period, and down: what a badge shows."""

from __future__ import annotations

from typing import Any

from ...hc.model import status_of
from ...node import Node
from .. import fields

NAME = "get_badges"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    checks = node.store.checks
    tags: dict[str, dict[str, int]] = {"*": {"total": 0, "grace": 0, "down": 0}}
    for check in checks.by_uuid.values():
        status = status_of(check, checks.job_of(check), now)
        for tag in ("*", *check.tag_list()):
            counts = tags.setdefault(tag, {"total": 0, "grace": 0, "down": 0})
            counts["total"] += 1
            if status in ("grace", "down"):
                counts[status] += 1
    out = fields.reply("badges", msg_id)
    out["tags"] = tags
    return out
