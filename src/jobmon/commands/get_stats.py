"""get_stats: aggregate counts and the mean run duration, O(1)."""

from __future__ import annotations

from typing import Any

from ..node import Node
from . import fields

NAME = "get_stats"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    out = fields.reply("job_stats", msg_id)
    out.update(node.store.stats())
    return out
