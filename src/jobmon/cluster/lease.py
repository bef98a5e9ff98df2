"""Who may fire deadlines and send notifications: the holder of a lease in Redis.

The lease is a key with a time to live (``--lease-ms``) whose value names the
holder and carries a fencing token that grows with every new holder. Redis
checks that value in the same step as every leader-only append (see
``redislog.FENCED_APPEND``), so a leader that lost the lease cannot append.

This process also judges the lease on its own monotonic clock: it counts the
lease from just *before* the renewal it sent, less a margin, so it always
believes it holds the lease for less time than Redis does. A node that froze
(a long GC pause, SIGSTOP) past that time wakes up knowing it may not act:
``held()`` is checked before every tick and every delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from .redislog import RedisLog

log = logging.getLogger("jobmon.cluster.lease")

MARGIN = 0.2  # of the lease: believed held for 80% of it at most


class Lease:
    def __init__(
        self,
        redis: RedisLog,
        incarnation: str,
        lease_ms: int,
        gained: Callable[[], None],
        lost: Callable[[], None],
        resumed: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.incarnation = incarnation
        self.lease_ms = lease_ms
        self.value: str | None = None  # "incarnation:token" while held
        self.token = 0
        self.valid_until = 0.0  # monotonic
        self.holder: str | None = None  # the current holder's value, as last read
        self.gained_count = 0  # times this node became leader
        self.changes_seen = 0  # leader changes this node saw (failovers)
        self._gained = gained
        self._lost = lost
        self._resumed = resumed
        self._stopping = False

    def held(self) -> bool:
        return self.value is not None and time.monotonic() < self.valid_until

    @property
    def holder_incarnation(self) -> str | None:
        return None if self.holder is None else self.holder.partition(":")[0]

    async def run(self) -> None:
        """Renew while held (every third of the lease); else try to take it,
        every tenth of the lease, so a dead leader is replaced within about
        the lease plus a tenth of it."""
        renew_every = self.lease_ms / 3000
        try_every = self.lease_ms / 10000
        while not self._stopping:
            started = time.monotonic()
            try:
                if self.value is not None:
                    if time.monotonic() >= self.valid_until or not await self.redis.renew(
                        self.value, self.lease_ms
                    ):
                        self._step_down("lease not renewed in time")
                    else:
                        # Sent in time, but answered after this node's own count ran
                        # out (a slow Redis, a starved core): meanwhile held() said no,
                        # and the engine put off what only a leader does; it may go on.
                        lapsed = time.monotonic() >= self.valid_until
                        self.valid_until = started + self.lease_ms / 1000 * (1 - MARGIN)
                        if lapsed and self.held():
                            self._resumed()
                else:
                    token, value = await self.redis.acquire(self.incarnation, self.lease_ms)
                    if value != self.holder:
                        if self.holder is not None:
                            self.changes_seen += 1
                        self.holder = value
                    if token:
                        self.value, self.token = value, token
                        self.valid_until = started + self.lease_ms / 1000 * (1 - MARGIN)
                        self.gained_count += 1
                        log.info("leader", extra={"fields": {"fencing_token": token}})
                        self._gained()
            except (RedisError, OSError, TimeoutError) as exc:
                if self.value is not None and time.monotonic() >= self.valid_until:
                    self._step_down(f"Redis unreachable: {exc}")
            await asyncio.sleep(renew_every if self.value is not None else try_every)

    def _step_down(self, why: str) -> None:
        log.warning("no longer leader", extra={"fields": {"why": why, "token": self.token}})
        self.value = None
        self.holder = None
        self._lost()

    def stop(self) -> None:
        self._stopping = True
