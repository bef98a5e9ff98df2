"""get_ping_body: the body kept with ping ``n`` of a check (error 20 if none)."""

from __future__ import annotations

from typing import Any

from ...errors import Code, RequestError, malformed
from ...hc.model import P_BODY, P_N
from ...node import Node
from .. import fields
from . import spec

NAME = "get_ping_body"
MUTATES = False


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    n = fields.integer(body, "n", 1)
    if n is None:
        raise malformed("missing field n: the ping's number (1 for the first)")
    return (spec.check_uuid(body, "check"), n)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    key, n = args
    pings = spec.found(node, key).pings
    first = pings[0][P_N] if pings else 0
    kept = pings[n - first][P_BODY] if pings and first <= n <= pings[-1][P_N] else None
    if not kept:
        raise RequestError(Code.NOT_FOUND, f"ping {n} of check {key} has no body kept")
    out = fields.reply("ping_body", msg_id)
    out["body"] = kept
    return out
