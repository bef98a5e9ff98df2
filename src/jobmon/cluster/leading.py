"""What only the leader appends, through the fenced script (a deposed leader's
append fails in Redis): ``_tick`` when a deadline is due here, and
``_notified`` for the alerts every notifier is done with; and what a node does
when it becomes leader (send what the outbox holds: its predecessor had not
confirmed it).

Each kind has one append out at a time. A tick is not appended again until the
last one has been applied (or given up: lost in a Redis failover); a
confirmation Redis did not take is kept and tried again shortly, so that the
leader does not forget what it delivered while Redis blinked. A renewal of the
lease answered after this node's own count ran out (a slow Redis, a starved
core) leaves it not leading for that while: what it would append then waits
(confirmations kept, ticks put off) and goes on once the renewal is in
(``Lease`` calls ``resumed``), or is dropped if it steps down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..engine import EXPIRE_SLICE, SETTLE_BUDGET
from ..model import Alert
from ..persistence import TICK_RECORD
from . import records
from .redislog import COMMAND_TIMEOUT_S, UNAVAILABLE, parse_stream_id

if TYPE_CHECKING:
    from .replica import ClusterEngine

APPEND_TIMEOUT_S = COMMAND_TIMEOUT_S + 0.3
RETRY_AFTER_S = 0.1  # a leader-only append that failed is tried again after this
TICK_LOST_S = 5.0  # a tick appended but never seen in the log: append another


class Leading:
    def __init__(self, engine: ClusterEngine) -> None:
        self.engine = engine
        self.tick_until: tuple[int, int] | None = None  # a tick appended, not yet applied
        self.ticking = False
        self.tick_retry_at = 0.0  # after a failed append, wait a little (Redis is down)
        self.tick_sent_at = 0.0
        self.confirmations: list[str] = []  # delivered alerts, to record
        self.confirming = False
        self.confirm_retry_at = 0.0

    # -- what the engine's turn asks ------------------------------------------------
    def may_tick(self) -> bool:
        return not self.ticking and self.tick_settled() and time.monotonic() >= self.tick_retry_at

    def may_confirm(self) -> bool:
        return (
            bool(self.confirmations)
            and not self.confirming
            and time.monotonic() >= self.confirm_retry_at
        )

    def tick_settled(self) -> bool:
        """No tick of ours is waiting to be applied (one lost in a Redis failover
        is given up after a while, or deadlines would stop)."""
        if self.tick_until is not None and time.monotonic() - self.tick_sent_at > TICK_LOST_S:
            self.tick_until = None
        return self.tick_until is None

    # -- the appends ---------------------------------------------------------------
    def tick(self) -> None:
        engine = self.engine
        store_due = engine.node.store.next_deadline(SETTLE_BUDGET)
        if store_due is None or store_due > engine.clock.now():
            return
        self.ticking = True
        self.tick_sent_at = time.monotonic()

        def later() -> None:  # Redis is down: the timer brings the next try
            self.tick_retry_at = time.monotonic() + RETRY_AFTER_S

        # A slice, as the embedded engine fires them: every node fires the same
        # first EXPIRE_SLICE due at the entry's time; the next tick goes on.
        tick = [TICK_RECORD, [engine.restarted_at, EXPIRE_SLICE]]
        self._append([[None, [tick]]], "ticking", later)

    def confirm(self) -> None:
        """Record what was delivered. Delivered stays true whatever the lease does,
        so the keys are kept until recorded, or until this node steps down (they
        are still in the outbox: the next leader sends them again)."""
        keys, self.confirmations = self.confirmations, []
        lease = self.engine.member.lease
        if lease.value is None:
            return

        def again() -> None:  # not now (Redis did not take it, or a renewal is late)
            self.confirmations.extend(keys)
            self.confirm_retry_at = time.monotonic() + RETRY_AFTER_S
            asyncio.get_running_loop().call_later(RETRY_AFTER_S, self.engine.wake)

        if not lease.held():  # a renewal answered late: held again when it is
            again()
            return
        self.confirming = True
        self._append([[None, [[records.NOTIFIED_RECORD, keys]]]], "confirming", again)

    def confirmed(self, keys: list[str]) -> None:
        """The notifier is done with these alerts (on every target)."""
        self.confirmations.extend(keys)
        self.engine.wake()

    def _append(self, groups: list[list[Any]], flag: str, unavailable: Callable[[], None]) -> None:
        """A fenced append (only while this node's lease is the current one);
        ``flag`` is set while it is out; ``unavailable`` runs if Redis failed."""
        engine = self.engine
        member = engine.member

        async def append() -> None:
            lease = member.lease
            try:
                if lease.value is not None and not lease.held():
                    unavailable()  # not now (a renewal answered late): again shortly
                elif lease.value is not None:
                    entry_id = await asyncio.wait_for(
                        member.redis.fenced_append(lease.value, orjson.dumps(groups)),
                        APPEND_TIMEOUT_S,
                    )
                    if entry_id is not None and flag == "ticking":
                        self.tick_until = parse_stream_id(entry_id)
            except UNAVAILABLE as exc:
                member.redis_failed(str(exc) or type(exc).__name__)
                unavailable()
            finally:
                setattr(self, flag, False)
                engine.wake()

        engine.track(asyncio.ensure_future(append()))

    # -- becoming leader --------------------------------------------------------------
    def lease_gained(self, firing: list[Alert]) -> None:
        """This node leads now: send what the outbox holds (its predecessor had
        not confirmed it), and fire what came due meanwhile."""
        engine = self.engine
        notifier = engine.notifier
        outbox = engine.member.outbox
        if notifier is not None and outbox.pending:
            notifier.submit(list(outbox.pending.values()), keys=list(outbox.pending))
        if notifier is not None:
            notifier.remember_firing(firing)
        engine.retarget()
        engine.wake()
