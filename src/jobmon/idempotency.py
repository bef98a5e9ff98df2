"""The store's memory of applied ``event_id``s, so an event sent again applies once.

A retry after a lost reply, a client's resend after a reconnect, or a resend to
another node after a failover carries the same ``event_id``. What was applied
is remembered with the reply it got: the retransmission gets that reply back and
changes nothing (``commands.once`` decides, at apply time, from the record).

Bounded: ids are kept ``KEEP_S`` (24 h), but at most ``max_kept`` of them
(``--event-ids-kept``, about 300 bytes each); past that the oldest is forgotten
first, and counted. At high rates the bound wins over the 24 h: memory must stay
bounded, and a retry comes within seconds. Eviction depends only on the records
applied (their times and order) and on ``max_kept``, which is one of the
settings the journal and the cluster's log record, so every replica and every
replay forgets alike. The memory is part of the snapshot.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from .model import kept_json

KEEP_S = 24 * 3600.0
MAX_KEPT = 200_000


class SeenEvents:
    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self.max_kept = max_kept
        # event_id -> the reply without in_reply_to, as JSON: bytes are compact and
        # not scanned by the garbage collector, which matters at 200,000 of them.
        self.replies: dict[str, bytes] = {}
        self.order: deque[tuple[float, str]] = deque()  # (applied at, event_id), oldest first
        self.forgotten_early = 0  # evicted by MAX_KEPT before KEEP_S had passed
        # Retransmissions answered from memory, by this process (/metrics): a
        # client's retry after a lost reply, or a cluster's nodes proposing the same
        # event (each Celery receiver hears every event).
        self.repeats = 0

    def __len__(self) -> int:
        return len(self.replies)

    def reply_of(self, event_id: str) -> dict[str, Any] | None:
        kept = self.replies.get(event_id)
        if kept is None:
            return None
        self.repeats += 1
        reply: dict[str, Any] = orjson.loads(kept)
        return reply

    def remember(self, event_id: str, now: float, reply: dict[str, Any]) -> None:
        self.replies[event_id] = kept_json(reply)
        order = self.order
        order.append((now, event_id))
        if len(order) > self.max_kept or order[0][0] < now - KEEP_S:
            self._forget(now)

    def _forget(self, now: float) -> None:
        """The oldest past the bound, and those older than KEEP_S."""
        order = self.order
        replies = self.replies
        horizon = now - KEEP_S
        while len(order) > self.max_kept or order[0][0] < horizon:
            applied_at, oldest = order.popleft()
            del replies[oldest]
            if applied_at >= horizon:
                self.forgotten_early += 1

    def to_snapshot(self) -> dict[str, Any]:
        replies = self.replies
        return {
            "replies": [[eid, at, replies[eid].decode()] for at, eid in self.order],
            "forgotten_early": self.forgotten_early,
        }

    def load_snapshot(self, snap: dict[str, Any] | None) -> None:
        self.replies = {}
        self.order = deque()
        if not snap:
            return
        for event_id, applied_at, body in snap["replies"]:
            self.replies[event_id] = body.encode()
            self.order.append((applied_at, event_id))
        self.forgotten_early = snap.get("forgotten_early", 0)
