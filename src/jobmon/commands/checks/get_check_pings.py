"""get_check_pings: the check's kept pings (the last 100), newest first."""

from __future__ import annotations

from typing import Any

from ...hc.model import ping_record
from ...node import Node
from .. import fields
from . import spec

NAME = "get_check_pings"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_uuid(body, "check"),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    check = spec.found(node, args[0])
    out = fields.reply("pings", msg_id)
    out["check"] = check.uuid
    out["pings"] = [ping_record(p) for p in reversed(check.pings)]
    return out
