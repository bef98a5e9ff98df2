"""One node's life in a cluster: join, follow the log, say it is alive, snapshot.

Join: load the latest snapshot from Redis, then read the log after it; the node
says it is ready (``/readyz``, ``get_cluster``'s ``caught_up``) once it has read
to the end. Membership: every node stamps its entry in the ``nodes`` hash with
Redis's clock every third of the lease; the leader records ``_node_gone`` for an
entry not stamped within the lease (its connections' running jobs then arm
``worker_lost``), and removes it. Snapshots: when the log has grown past
``--compact-min-bytes`` (and the last snapshot), the leader forks; the child
writes the state as of the last applied entry, and once Redis holds it the
log is trimmed to it (never past a live node's position): Redis holds state
in proportion to the number of jobs, not to the number of events ever sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from ..clock import Clock, iso
from ..model import snapshot_default
from ..node import Node
from ..persistence import CONFIG_RECORD, fork_writer
from . import records
from .lease import Lease
from .redislog import READ_COUNT, RedisLog, RedisSettings, format_stream_id, parse_stream_id
from .replica import UNAVAILABLE, ClusterEngine

if TYPE_CHECKING:
    from ..config import Config
    from ..notifiers import AlertNotifier

log = logging.getLogger("jobmon.cluster")
JOIN_TIMEOUT_S = 60.0
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
            self.redis, self.origin, config.lease_ms, self._lease_gained, self._lease_lost
        )
        self.engine = ClusterEngine(node, self.clock, self)
        self.engine.notifier = notifier
        notifier.gate = self.lease.held
        notifier.on_done = self.engine.confirmed
        self.position = (0, 0)  # the last entry applied
        self.read_position = (0, 0)  # the last entry read
        self.read_tail = False  # the last read reached the end of the log
        self.caught_up = False
        self.last_lag_ms = 0.0  # from an entry's time to its apply here
        self.entries_applied = 0
        self.bytes_since_snapshot = 0
        self.snapshot_bytes = 0
        self.snapshotting = False
        self.snapshots = 0
        self.redis_up = True
        self.redis_error: str | None = None
        self.members: dict[str, dict[str, Any]] = {}  # incarnation -> what it said
        self.redis_now_ms = 0
        self.trim_goal: tuple[int, int] | None = None  # the last snapshot, until trimmed to
        self.address = ""
        self._caught_up = asyncio.Event()
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
            await self._say_alive()
        except UNAVAILABLE as exc:
            await self.redis.close()
            raise OSError(f"{self.settings.describe()} is unreachable: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read(), name="jobmon-cluster-reader"),
            loop.create_task(self._membership(), name="jobmon-cluster-members"),
            loop.create_task(self.lease.run(), name="jobmon-cluster-lease"),
        ]
        await asyncio.wait_for(self._caught_up.wait(), JOIN_TIMEOUT_S)
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
        self.lease.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        value = self.lease.value
        if value is not None:
            self.lease.value = None
            with contextlib.suppress(*UNAVAILABLE):
                await asyncio.wait_for(self.redis.release(value), 2.0)
        await self.redis.close()
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
                    "snapshots_written": self.snapshots,
                }
            },
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
                self.snapshot_bytes = len(data)
            first = await self.redis.first_id()
            # A newer snapshot was written, and the log trimmed, while we loaded: again.
            if data is None or first is None or first <= position:
                break
        self.position = self.read_position = position
        self.node.store.drain_alerts()  # alerts in a snapshot were published before

    # -- the log -------------------------------------------------------------------
    async def _read(self) -> None:
        engine = self.engine
        while True:
            if engine.unapplied_bytes > MAX_UNAPPLIED_BYTES:
                await asyncio.sleep(0.002)
                continue
            try:
                entries = await self.redis.read(self.read_position)
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
        self.bytes_since_snapshot += size
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

    # -- membership and the leader's duties -------------------------------------------
    async def _say_alive(self) -> None:
        about = orjson.dumps(
            {
                "node_id": self.name,
                "tcp": self.address,
                "http_port": self.http_port,
                "position": format_stream_id(self.position),
            }
        )
        sent = time.time()
        redis_ms = await self.redis.seen(self.origin, about)
        self.clock.offset = redis_ms / 1000 - (sent + time.time()) / 2
        self.members = {
            incarnation: {**orjson.loads(about), "seen_ms": seen_ms}
            for incarnation, (seen_ms, about) in (await self.redis.members()).items()
        }
        self.redis_now_ms = redis_ms

    async def _membership(self) -> None:
        every = self.config.lease_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                await self._say_alive()
                if self.lease.held():
                    await self._bury_the_dead()
                    await self._trim()
            except UNAVAILABLE as exc:
                self.redis_failed(str(exc) or type(exc).__name__)

    async def _bury_the_dead(self) -> None:
        grace_ms = self.node.store.lost_grace_ms
        for incarnation, about in list(self.members.items()):
            if self.redis_now_ms - about["seen_ms"] <= self.config.lease_ms:
                continue
            value = self.lease.value
            if value is None or not self.lease.held():
                return
            groups = [[None, [[records.NODE_GONE_RECORD, [int(incarnation), grace_ms]]]]]
            if await self.redis.fenced_append(value, orjson.dumps(groups)) is None:
                return
            await self.redis.forget_member(incarnation)
            del self.members[incarnation]
            log.warning("node gone", extra={"fields": {"node_id": about.get("node_id")}})

    def _lease_gained(self) -> None:
        firing = [a for a in self.node.store.recent_alerts() if a.resolved_at is None]
        self.engine.lease_gained(firing)

    def _lease_lost(self) -> None:
        self.engine.retarget()
        self.engine.wake()

    # -- snapshots ---------------------------------------------------------------
    def snapshot_due(self) -> bool:
        threshold = max(self.config.compact_min_bytes, self.snapshot_bytes)
        return (
            not self.snapshotting
            and self.bytes_since_snapshot >= threshold
            and self.lease.held()
            and self.redis_up
        )

    def begin_snapshot(self) -> None:
        """In the store task, between two entries: fork; the child writes the
        state as of ``self.position`` to a file, this process sends it to Redis."""
        self.snapshotting = True
        self.bytes_since_snapshot = 0
        fd, path = tempfile.mkstemp(prefix="jobmon-snapshot-", suffix=".json")
        os.close(fd)
        position = self.position

        def write() -> None:
            state = {
                "position": format_stream_id(position),
                "state": self.node.store.to_snapshot(),
                "cluster": records.extras_to_snapshot(self.node, self.outbox),
            }
            with open(path, "wb") as out:
                out.write(orjson.dumps(state, default=snapshot_default))

        pid = fork_writer(write, "snapshot")
        self.engine.track(asyncio.ensure_future(self._finish_snapshot(pid, path, position)))

    async def _finish_snapshot(self, pid: int, path: str, position: tuple[int, int]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                log.error("snapshot child failed (status %d); the log stays untrimmed", status)
                return
            data = await loop.run_in_executor(None, _read_and_remove, path)
            value = self.lease.value
            if value is None or not await self.redis.put_snapshot(value, data):
                return  # no longer leader: the next one snapshots
            self.snapshot_bytes = len(data)
            self.trim_goal = position
            removed = await self._trim()
            self.snapshots += 1
            log.info(
                "snapshot written",
                extra={
                    "fields": {
                        "position": format_stream_id(position),
                        "bytes": len(data),
                        "entries_trimmed": removed,
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                },
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.error("snapshot not written: %s", exc)
        finally:
            self.snapshotting = False
            if os.path.exists(path):
                os.unlink(path)

    async def _trim(self) -> int:
        """Trim the log up to the last snapshot, but never past what a live node has
        not applied yet (it would have to start again from the snapshot); what is
        left is trimmed later, as the nodes say how far they are."""
        if self.trim_goal is None:
            return 0
        positions = [parse_stream_id(m["position"]) for m in self.live_members().values()]
        trim_to = min([self.trim_goal, *positions])
        if trim_to >= self.trim_goal:
            self.trim_goal = None
        removed: int = await self.redis.trim(trim_to)
        return removed

    def live_members(self) -> dict[str, dict[str, Any]]:
        """Members that said they were alive within the lease."""
        horizon = self.redis_now_ms - self.config.lease_ms
        return {inc: m for inc, m in self.members.items() if m["seen_ms"] >= horizon}

    # -- what get_cluster, /readyz and /metrics show --------------------------------
    def leader_name(self) -> str | None:
        holder = self.lease.holder_incarnation
        if holder is None:
            return None
        if holder == self.origin:
            return self.name
        about = self.members.get(holder)
        return None if about is None else str(about.get("node_id"))

    def info(self) -> dict[str, Any]:
        leader = self.lease.held()
        return {
            "node_id": self.name,
            "leader": self.leader_name(),
            "nodes": sorted(
                {str(m["node_id"]) for m in self.live_members().values()} | {self.name}
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
            "snapshot_bytes": self.snapshot_bytes,
            "as_of": iso(self.clock.now()),
        }


def _read_and_remove(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data
