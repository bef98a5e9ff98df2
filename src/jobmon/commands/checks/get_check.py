"""get_check: one check, by uuid or unique_key, with its status now."""

from __future__ import annotations

from typing import Any

from ...node import Node
from .. import fields
from . import spec

NAME = "get_check"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_key(body),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    out = fields.reply("check", msg_id)
    out["check"] = spec.record(node, spec.found(node, args[0]))
    return out
