"""get_check_flips: the check's status changes, newest first; ``seconds`` (the
last so many), ``start`` and ``end`` (epoch seconds) narrow them."""

from __future__ import annotations

from typing import Any

from ...clock import iso
from ...node import Node
from .. import fields
from . import spec

NAME = "get_check_flips"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    key = spec.check_key(body)
    return (key, *(fields.integer(body, name) for name in ("seconds", "start", "end")))


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    key, seconds, start, end = args
    check = spec.found(node, key)
    out = fields.reply("flips", msg_id)
    out["flips"] = [
        {"at": iso(at), "status": status}
        for at, status in reversed(check.flips)
        if (start is None or at >= start)
        and (end is None or at < end)
        and (seconds is None or at >= now - seconds)
    ]
    return out
