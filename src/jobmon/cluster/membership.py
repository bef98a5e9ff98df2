"""Who is in the cluster, and the leader's judgement of who is gone.

Every node stamps its entry in the ``nodes`` hash with Redis's clock every
third of the lease, with the position it has applied. The leader records
``_node_gone`` for a node not heard from within the lease: that node's
connections' running jobs then arm ``worker_lost`` on every node. A node is
judged on time alone, and a busy machine delays everyone, so:

- A leader that was stalled itself (its previous look at the hash is more than
  two thirds of a lease old: a GC pause, a starved core) does not judge on its
  first look back: the others were likely stalled with it, and get one more
  period to stamp.
- A node judged gone stays in the hash, and the log is not trimmed past its
  position, until it has been silent for ``FORGET_AFTER_LEASES`` leases; one
  that comes back before then has missed nothing in the log.
- A node that applies its own ``_node_gone`` (judged gone, yet alive) claims
  its open connections' jobs again (``_reattached``, see replica.py), so its
  workers get no ``worker_lost`` for a pause that was the node's own.
- A node that finds its entry forgotten and the log trimmed past what it had
  read stops: the log can no longer bring its state up to date, and a restart
  loads the latest snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from . import records
from .redislog import UNAVAILABLE, format_stream_id, parse_stream_id

if TYPE_CHECKING:
    from .node import Member

log = logging.getLogger("jobmon.cluster")
FORGET_AFTER_LEASES = 10  # silent this long: removed from the hash, no longer holds the log
STALLED_LOOK = 2 / 3  # of the lease: a leader's looks further apart than this do not judge


class FellOut(Exception):
    """This node was forgotten and the log trimmed past its position."""


class Membership:
    def __init__(self, member: Member) -> None:
        self.member = member
        self.lease_ms = member.config.lease_ms
        self.members: dict[str, dict[str, Any]] = {}  # incarnation -> what it said, seen_ms
        self.redis_now_ms = 0  # Redis's clock at this node's last stamp
        self.previous_look_ms: int | None = None  # ... and at the one before
        self.judged_gone: dict[str, int] = {}  # incarnation -> its last stamp when judged
        self.stamps = 0
        self.stopping = False

    async def say_alive(self) -> None:
        member = self.member
        about = orjson.dumps(
            {
                "node_id": member.name,
                "tcp": member.address,
                "http_port": member.http_port,
                "position": format_stream_id(member.position),
            }
        )
        sent = time.time()
        redis_ms, new = await member.redis.seen(member.origin, about)
        member.clock.offset = redis_ms / 1000 - (sent + time.time()) / 2
        if new and self.stamps:
            await self._forgotten()
        self.stamps += 1
        self.members = _parse(await member.redis.members())
        self.previous_look_ms = self.redis_now_ms or None
        self.redis_now_ms = redis_ms

    async def run(self) -> None:
        """Stamp every third of the lease; the leader also judges and trims."""
        member = self.member
        every = self.lease_ms / 3000
        while not self.stopping:
            await asyncio.sleep(every)
            try:
                await self.say_alive()
                if member.lease.held():
                    await self._judge()
                    await member.snapshots.trim()
            except UNAVAILABLE as exc:
                member.redis_failed(str(exc) or type(exc).__name__)

    async def _judge(self) -> None:
        now = self.redis_now_ms
        previous = self.previous_look_ms
        if previous is None or now - previous > self.lease_ms * STALLED_LOOK:
            return  # this leader was stalled itself: the others get a period to stamp
        member = self.member
        for incarnation, about in list(self.members.items()):
            silent_ms = now - about["seen_ms"]
            if incarnation == member.origin or silent_ms <= self.lease_ms:
                continue
            if silent_ms > self.lease_ms * FORGET_AFTER_LEASES:
                await member.redis.forget_member(incarnation)
                del self.members[incarnation]
                self.judged_gone.pop(incarnation, None)
                log.info("node forgotten", extra={"fields": {"node_id": about.get("node_id")}})
                continue
            if self.judged_gone.get(incarnation) == about["seen_ms"]:
                continue  # judged already, and silent since
            value = member.lease.value
            if value is None or not member.lease.held():
                return
            grace_ms = member.node.store.lost_grace_ms
            groups = [[None, [[records.NODE_GONE_RECORD, [int(incarnation), grace_ms]]]]]
            if await member.redis.fenced_append(value, orjson.dumps(groups)) is None:
                return
            self.judged_gone[incarnation] = about["seen_ms"]
            log.warning(
                "node gone",
                extra={"fields": {"node_id": about.get("node_id"), "silent_ms": silent_ms}},
            )

    async def _forgotten(self) -> None:
        """Our entry had been removed: we were silent for FORGET_AFTER_LEASES
        leases. Stop if the log was trimmed past what we had read."""
        member = self.member
        first = await member.redis.first_id()
        if first is not None and first > member.read_position:
            member.engine.fail(
                FellOut(
                    f"this node was silent for over {FORGET_AFTER_LEASES} leases "
                    f"({FORGET_AFTER_LEASES * self.lease_ms} ms), and the cluster's log was "
                    f"trimmed past what it had read ({format_stream_id(member.read_position)}, "
                    f"the log now starts at {format_stream_id(first)}): its state cannot be "
                    "brought up to date; restart it (it then loads the latest snapshot)"
                )
            )
        else:
            log.warning("this node had been forgotten; the log still holds all it has not read")

    def live(self) -> dict[str, dict[str, Any]]:
        """Members that said they were alive within the lease."""
        horizon = self.redis_now_ms - self.lease_ms
        return {inc: m for inc, m in self.members.items() if m["seen_ms"] >= horizon}

    def positions(self) -> list[tuple[int, int]]:
        """Where every node not yet forgotten stands: the log is kept after them."""
        return [parse_stream_id(m["position"]) for m in self.members.values()]


def _parse(stamps: dict[str, tuple[int, bytes]]) -> dict[str, dict[str, Any]]:
    """incarnation -> what the node said of itself, and when; what is not a
    node's stamp (another program's field in the hash) is left out."""
    members = {}
    for incarnation, (seen_ms, about) in stamps.items():
        if not incarnation.isdigit():
            continue
        try:
            said = orjson.loads(about)
            parse_stream_id(said["position"])
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            continue
        members[incarnation] = {**said, "seen_ms": seen_ms}
    return members
