"""resume_check: a paused check becomes "new" (error 22 if it is not paused)."""

from __future__ import annotations

from typing import Any

from ...node import Node
from .. import fields
from . import spec

NAME = "resume_check"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_uuid(body, "check"),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    check = spec.found(node, args[0])
    node.store.checks.resume(now, check)
    out = fields.reply("check", msg_id)
    out["check"] = spec.record(node, check)
    return out
