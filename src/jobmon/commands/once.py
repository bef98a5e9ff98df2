"""An event that carries ``event_id``, applied at most once (see ``idempotency``).

Not a message type of its own: ``protocol.decode`` turns a state-changing
message with an ``event_id`` into this command, with arguments
``(event_id, type, the message's own arguments)``, journaled (and sent through
a cluster's log) as the ``_once`` record. Applying it looks the id up in the
store: applied before, the original reply is answered again and nothing
changes; else the message is applied and its reply remembered. A refused
event (an error reply) changes nothing and is not remembered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..node import Node

if TYPE_CHECKING:
    from . import Handler

RECORD = "_once"


class Repeated(dict[str, Any]):
    """The reply to a retransmission: the original one. Nothing happened, so it
    is no event for subscribers (``publish`` skips it)."""


# The commands it wraps, by type (filled by commands/__init__.py).
TARGETS: dict[str, Handler] = {}


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    event_id, name, inner = args
    seen = node.store.seen_events
    if event_id in seen.replies:
        kept = seen.reply_of(event_id)
        assert kept is not None
        if msg_id is None:
            return Repeated(kept)
        return Repeated({"type": kept["type"], "in_reply_to": msg_id, **kept})
    reply = TARGETS[name].apply(node, now, inner, None)
    seen.remember(event_id, now, reply)
    if msg_id is None:
        return reply
    return {"type": reply["type"], "in_reply_to": msg_id, **reply}
