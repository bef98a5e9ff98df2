"""subscribe: push alerts (and/or job events) to this connection as they happen."""

from __future__ import annotations

from typing import Any

from ..errors import Code, RequestError, malformed
from ..node import TOPICS, Node, Subscription
from . import fields

NAME = "subscribe"
MUTATES = False  # a connection's interest, not job state: it ends with the connection
WANTS_FRAME = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    topics = body.get("topics", ["alerts"])
    if (
        type(topics) is not list
        or not topics
        or not all(type(t) is str and t in TOPICS for t in topics)
    ):
        raise malformed(
            f"topics must be a non-empty array drawn from {', '.join(TOPICS)}, "
            f"got {fields._show(topics)}"
        )
    return (sorted(set(topics)),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    topics, frame = args
    sink = node.sink
    if sink is not None and not sink.persistent:
        raise RequestError(
            Code.NOT_SUPPORTED,
            "subscribe needs a connection that stays open (TCP); "
            "over HTTP, GET /api/stream?topics=alerts,events",
        )
    if sink is not None:  # stdio has no connection to push to
        node.subscribe(sink, Subscription(sink, frozenset(topics), frame))
    out = fields.reply("subscribed", msg_id)
    out["topics"] = topics
    return out
