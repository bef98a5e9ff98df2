"""One node's life in a cluster: join, follow the log, stop.

Join: load the latest snapshot from Redis, then read the log after it (without
waiting at its end, so a node learns at once that it has caught up); the node
says it is ready (``/readyz``, ``get_cluster``'s ``caught_up``) once it has
applied all it read. The reader then follows the log. Who is alive and who is
gone: membership.py; the snapshot and trimming: snapshots.py; the lease:
lease.py; applying the log: replica.py. A clean stop ends every task (see
tasks.py: on Python 3.11 a cancelled Redis call may carry on) and hands the
lease back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from ..clock import Clock, iso
from ..node import Node
from ..persistence import CONFIG_RECORD
from . import records
from .lease import Lease
from .membership import Membership
from .redislog import (
    READ_COUNT,
    UNAVAILABLE,
    RedisLog,
    RedisSettings,
    format_stream_id,
    parse_stream_id,
)
from .replica import ClusterEngine
from .snapshots import Snapshots
from .tasks import cancel_and_wait

if TYPE_CHECKING:
    from ..config import Config
    from ..notifiers import AlertNotifier

log = logging.getLogger("jobmon.cluster")
JOIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0  # for the node's tasks to end, and for Redis to take the lease back
MAX_UNAPPLIED_BYTES = 8 << 20  # records read ahead of the store task before reading pauses


class ClusterClock:
    """The cluster's clock as this node reads it: its own, corrected by the
    offset to Redis's (entry IDs are Redis's time)."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset = 0.0

    def now(self) -> float:
        return self.base.now() + self.offset


class Member:
    def __init__(self, config: Config, node: Node, clock: Clock, notifier: AlertNotifier) -> None:
        self.config = config
        self.node = node
        self.settings = RedisSettings(
            url=config.redis,
            sentinels=config.redis_sentinels,
            master=config.redis_master,
            min_replicas=config.redis_min_replicas,
            cluster_name=config.cluster_name,
        )
        self.redis = RedisLog(self.settings)
        self.incarnation = secrets.randbits(31) | 1
        self.origin = str(self.incarnation)
        self.name = config.node_id
        self.clock = ClusterClock(clock)
        self.outbox = records.Outbox()
        self.lease = Lease(
            self.redis,
            self.origin,
            config.lease_ms,
            self._lease_gained,
            self._lease_lost,
            self._lease_resumed,
        )
        self.membership = Membership(self)
        self.snapshots = Snapshots(self)
        self.engine = ClusterEngine(node, self.clock, self)
        self.engine.notifier = notifier
        notifier.gate = self.lease.held
        notifier.on_done = self.engine.leading.confirmed
        self.position = (0, 0)  # the last entry applied
        self.read_position = (0, 0)  # the last entry read
        self.read_tail = False  # the last read reached the end of the log
        self.caught_up = False
        self.last_lag_ms = 0.0  # from an entry's time to its apply here
        self.entries_applied = 0
        self.redis_up = True
        self.redis_error: str | None = None
        self.address = ""
        self.http_port = 0
        self._caught_up = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- start and stop -------------------------------------------------------
    async def start(self, host: str, port: int, http_port: int) -> None:
        if self.name == "monitor":  # not named: host:port
            self.name = f"{host}:{port}"
        self.address = f"{host}:{port}"
        self.http_port = http_port
        wanted = self.node.store.settings()
        try:
            await asyncio.wait_for(self._load_snapshot(), JOIN_TIMEOUT_S)
            last = await self.redis.last_id()
            if last is not None and last > self.position:
                self.engine.history_until = last
            await self.membership.say_alive()
        except UNAVAILABLE as exc:
            await self.redis.close()
            raise OSError(f"{self.settings.describe()} is unreachable: {exc}") from exc
        self._run(self._read(), "jobmon-cluster-reader")
        self._run(self.membership.run(), "jobmon-cluster-members")
        await asyncio.wait_for(self._caught_up.wait(), JOIN_TIMEOUT_S)
        # Only a node that has caught up may lead: its outbox is whole (a leader
        # sends what it holds), and it fires deadlines from the current state.
        self._run(self.lease.run(), "jobmon-cluster-lease")
        if self.node.store.settings() != wanted:  # this node's flags win from here on
            self.engine.propose_own(CONFIG_RECORD, wanted)
        log.info(
            "joined",
            extra={
                "fields": {
                    "node_id": self.name,
                    "redis": self.settings.describe(),
                    "cluster": self.settings.cluster_name,
                    "position": format_stream_id(self.position),
                    "jobs": len(self.node.store.jobs),
                }
            },
        )

    async def stop(self) -> None:
        self._stopping = self.membership.stopping = True
        self.lease.stop()
        await cancel_and_wait(self._tasks, STOP_TIMEOUT_S)
        value = self.lease.value
        if value is not None:
            self.lease.value = None
            with contextlib.suppress(*UNAVAILABLE):
                await asyncio.wait_for(self.redis.release(value), STOP_TIMEOUT_S)
        with contextlib.suppress(*UNAVAILABLE):
            await asyncio.wait_for(self.redis.close(), STOP_TIMEOUT_S)
        engine = self.engine
        log.info(
            "left the cluster",
            extra={
                "fields": {
                    "node_id": self.name,
                    "position": format_stream_id(self.position),
                    "entries_applied": self.entries_applied,
                    "proposals": engine.next_seq - 1,
                    "refused_unavailable": engine.refused_unavailable,
                    "entries_skipped_late": engine.entries_skipped_late,
                    "times_leader": self.lease.gained_count,
                    "snapshots_written": self.snapshots.written,
                    "nodes_judged_gone": len(self.membership.judged_gone),
                }
            },
        )

    def _run(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        task.add_done_callback(self._task_ended)
        self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """The reader, membership and lease run for the node's life: one that
        ends before the node stops (a bug, an entry this version cannot read)
        would leave it answering from a state that no longer follows the log."""
        if self._stopping or task.cancelled():
            return
        why = task.exception()
        self.engine.fail(
            RuntimeError(
                f"{task.get_name()} ended ({why!r}): this node cannot follow the cluster any more"
            )
        )

    async def _load_snapshot(self) -> None:
        while True:
            data = await self.redis.snapshot()
            position = (0, 0)
            if data is not None:
                snap = orjson.loads(data)
                position = parse_stream_id(snap["position"])
                self.node.store.load_snapshot(snap["state"])
                records.load_extras(self.node, self.outbox, snap["cluster"])
                self.snapshots.size = len(data)
            first = await self.redis.first_id()
            # A newer snapshot was written, and the log trimmed, while we loaded: again.
            if data is None or first is None or first <= position:
                break
        self.position = self.read_position = position
        self.node.store.drain_alerts()  # alerts in a snapshot were published before

    # -- the log -------------------------------------------------------------------
    async def _read(self) -> None:
        engine = self.engine
        while not self._stopping:
            if engine.unapplied_bytes > MAX_UNAPPLIED_BYTES:
                await asyncio.sleep(0.002)
                continue
            try:
                # Until a read reaches the end of the log, none waits there.
                entries = await self.redis.read(self.read_position, block=self.read_tail)
            except UNAVAILABLE as exc:
                self.redis_failed(str(exc) or type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            self.redis_ok()
            if entries:
                self.read_position = parse_stream_id(entries[-1][0])
                engine.entries.extend(entries)
                engine.unapplied_bytes += sum(len(fields[b"r"]) for _, fields in entries)
            self.read_tail = len(entries) < READ_COUNT
            if entries:
                engine.wake()
            elif self.read_tail:
                self.caught_up_to_read()

    def applied(self, position: tuple[int, int], size: int) -> None:
        self.position = position
        self.entries_applied += 1
        self.snapshots.bytes_since += size
        self.last_lag_ms = max(0.0, time.time() * 1000 - position[0])

    def caught_up_to_read(self) -> None:
        if self.read_tail and self.position >= self.read_position and not self.caught_up:
            self.caught_up = True
            self._caught_up.set()

    def redis_failed(self, why: str) -> None:
        if self.redis_up:
            log.error("Redis unavailable", extra={"fields": {"why": why}})
        self.redis_up = False
        self.redis_error = why

    def redis_ok(self) -> None:
        if not self.redis_up:
            log.warning("Redis reachable again")
        self.redis_up = True
        self.redis_error = None

    # -- the lease ---------------------------------------------------------------
    def _lease_gained(self) -> None:
        firing = [a for a in self.node.store.recent_alerts() if a.resolved_at is None]
        self.engine.leading.lease_gained(firing)

    def _lease_lost(self) -> None:
        self.engine.retarget()
        self.engine.wake()

    def _lease_resumed(self) -> None:
        self.engine.retarget()  # the deadlines' timer again, and what waited for held()
        self.engine.wake()

    # -- what get_cluster, /readyz and /metrics show --------------------------------
    def leader_name(self) -> str | None:
        holder = self.lease.holder_incarnation
        if holder is None:
            return None
        if holder == self.origin:
            return self.name
        about = self.membership.members.get(holder)
        return None if about is None else str(about.get("node_id"))

    def info(self) -> dict[str, Any]:
        leader = self.lease.held()
        return {
            "node_id": self.name,
            "leader": self.leader_name(),
            "nodes": sorted(
                {str(m["node_id"]) for m in self.membership.live().values()} | {self.name}
            ),
            "role": "leader" if leader else "follower",
            "position": format_stream_id(self.position),
            "lag_ms": round(self.last_lag_ms, 1),
            "unapplied_entries": len(self.engine.entries),
            "caught_up": self.caught_up,
            "redis": "ok" if self.redis_up else "unavailable",
            "redis_error": self.redis_error,
            "lease_ms": self.config.lease_ms,
            "fencing_token": self.lease.token if leader else None,
            "leader_changes_seen": self.lease.changes_seen,
            "times_leader": self.lease.gained_count,
            "outbox": len(self.outbox.pending),
            "snapshot_bytes": self.snapshots.size,
            "as_of": iso(self.clock.now()),
        }
