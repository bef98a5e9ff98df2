"""get_stats: aggregate counts and the mean run duration, O(1)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..node import Node
from . import fields

NAME = "get_stats"
MUTATES = False


class Wire(msgspec.Struct, tag_field="type", tag=NAME, forbid_unknown_fields=True):
    msg_id: fields.WireMsgId | None = None


def from_wire(wire: Wire) -> tuple[Any, ...]:
    return ()


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    out = fields.reply("job_stats", msg_id)
    out.update(node.store.stats())
    return out
