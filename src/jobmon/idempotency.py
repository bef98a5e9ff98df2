"""The store's memory of applied ``event_id``s, so an event sent again applies once.

A retry after a lost reply, a client's resend after a reconnect, or a resend to
another node after a failover carries the same ``event_id``. What was applied
is remembered with the reply it got: the retransmission gets that reply back and
changes nothing (``commands.once`` decides, at apply time, from the record).

Bounded: ids are kept at least ``KEEP_S`` (24 h) and at most ``MAX_KEPT`` of
them; past that the oldest is forgotten first (and counted). Eviction depends
only on the records applied (their times and order), so every replica and every
replay forgets alike. The memory is part of the snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

KEEP_S = 24 * 3600.0
MAX_KEPT = 200_000


class SeenEvents:
    def __init__(self) -> None:
        # event_id -> (applied at, the reply without in_reply_to); oldest first.
        self.replies: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.forgotten_early = 0  # evicted by MAX_KEPT before KEEP_S had passed

    def __len__(self) -> int:
        return len(self.replies)

    def reply_of(self, event_id: str) -> dict[str, Any] | None:
        kept = self.replies.get(event_id)
        return None if kept is None else kept[1]

    def remember(self, event_id: str, now: float, reply: dict[str, Any]) -> None:
        replies = self.replies
        replies[event_id] = (now, reply)
        while len(replies) > MAX_KEPT:
            _, (applied_at, _) = replies.popitem(last=False)
            if applied_at > now - KEEP_S:
                self.forgotten_early += 1
        horizon = now - KEEP_S
        while replies:
            oldest = next(iter(replies.values()))
            if oldest[0] >= horizon:
                break
            replies.popitem(last=False)

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "replies": [[eid, at, body] for eid, (at, body) in self.replies.items()],
            "forgotten_early": self.forgotten_early,
        }

    def load_snapshot(self, snap: dict[str, Any] | None) -> None:
        self.replies = OrderedDict()
        if not snap:
            return
        for event_id, applied_at, body in snap["replies"]:
            self.replies[event_id] = (applied_at, body)
        self.forgotten_early = snap.get("forgotten_early", 0)
