"""delete_check: the check, its pings and flips go; its job's record stays."""

from __future__ import annotations

from typing import Any

from ...node import Node
from .. import fields
from . import spec

NAME = "delete_check"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_uuid(body, "check"),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    check = spec.found(node, args[0])
    record = spec.record(node, check)
    node.store.checks.delete(now, check)
    out = fields.reply("check_deleted", msg_id)
    out["check"] = record
    return out
