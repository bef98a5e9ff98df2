"""The Redis side of a cluster: one stream for the log, a lease, a membership hash
and a snapshot, all under one hash tag (``{NAME}:...``) so that a cluster's keys
live in one slot of a Redis Cluster and its scripts may touch them together.

Every call has a short timeout: a node that cannot reach Redis says so to its
clients (error 11) within about two seconds instead of hanging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

COMMAND_TIMEOUT_S = 1.5  # a call to Redis that takes longer has failed
READ_BLOCK_MS = 1000  # XREAD waits this long for new entries
READ_COUNT = 2000  # entries per read

# Take the lease when nobody holds it; the fencing token grows with every new holder.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {token, value}
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Leader-only records (clock passes, nodes gone, notifications confirmed): appended
# only while the caller's lease value, fencing token included, is the current one.
FENCED_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
return redis.call('XADD', KEYS[2], '*', 'o', ARGV[1], 's', '0', 'r', ARGV[2])
"""
# A node says it is alive; stamped with Redis's clock (one clock for the cluster).
# Also says whether its entry was new (1): after its first stamp, it had been forgotten.
SEEN = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new = redis.call('HSET', KEYS[1], ARGV[1], ms .. ' ' .. ARGV[2])
return {ms, new}
"""
# The leader's snapshot, written only while it still holds the lease.
PUT_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


@dataclass
class RedisSettings:
    url: str | None = None  # redis://, rediss:// (TLS), redis://:password@host:port/db
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    master: str | None = None  # the Sentinel service name
    min_replicas: int = 0  # WAIT for this many replicas before acknowledging
    cluster_name: str = "jobmon"

    def describe(self) -> str:
        if self.sentinels:
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"Sentinel {where} (master {self.master})"
        return f"Redis {self.url}"


def parse_stream_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def connect(settings: RedisSettings, timeout_s: float) -> Any:
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        # No silent retries: a failed call is reported at once (error 11) and
        # the next call reconnects (and, under Sentinel, finds the new primary).
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.sentinels:
        assert settings.master is not None
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinels,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )
        return sentinel.master_for(settings.master, **options)
    assert settings.url is not None
    return aioredis.Redis.from_url(settings.url, **options)


class RedisLog:
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        tag = "{" + settings.cluster_name + "}"
        self.log_key = f"{tag}:log"
        self.lease_key = f"{tag}:lease"
        self.fence_key = f"{tag}:fence"
        self.nodes_key = f"{tag}:nodes"
        self.snapshot_key = f"{tag}:snapshot"
        # redis-py's replies are loosely typed: Any here, checked where read.
        self.redis: Any = connect(settings, COMMAND_TIMEOUT_S)
        # XREAD blocks: its own connection, and a timeout past the block.
        self.reader: Any = connect(settings, READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT_S)
        self._acquire = self.redis.register_script(ACQUIRE)
        self._renew = self.redis.register_script(RENEW)
        self._release = self.redis.register_script(RELEASE)
        self._fenced = self.redis.register_script(FENCED_APPEND)
        self._seen = self.redis.register_script(SEEN)
        self._put_snapshot = self.redis.register_script(PUT_SNAPSHOT)

    async def close(self) -> None:
        await self.redis.aclose()
        await self.reader.aclose()

    # -- the log -------------------------------------------------------------
    async def propose(self, origin: str, seq: int, valid_until_ms: int, payload: bytes) -> bytes:
        """Append one entry (a turn's records); its ID once Redis has it (on
        ``min_replicas`` replicas too). Raises on failure or a WAIT shortfall."""
        fields = {"o": origin, "s": seq, "u": valid_until_ms, "r": payload}
        if not self.settings.min_replicas:
            entry_id: bytes = await self.redis.xadd(self.log_key, fields)
            return entry_id
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.log_key, fields)
        pipe.execute_command("WAIT", self.settings.min_replicas, int(COMMAND_TIMEOUT_S * 800))
        entry_id, acked = await pipe.execute()
        if acked < self.settings.min_replicas:
            raise ReplicasShort(acked, self.settings.min_replicas)
        return entry_id

    async def fenced_append(self, lease_value: str, payload: bytes) -> bytes | None:
        """A leader-only entry; None when ``lease_value`` is no longer the lease."""
        entry_id: bytes | None = await self._fenced(
            keys=[self.lease_key, self.log_key], args=[lease_value, payload]
        )
        if entry_id is not None and self.settings.min_replicas:
            await self.redis.execute_command(
                "WAIT", self.settings.min_replicas, int(COMMAND_TIMEOUT_S * 800)
            )
        return entry_id

    async def read(
        self, after: tuple[int, int], block: bool = True
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries after ``after``; ``block``: wait up to READ_BLOCK_MS for one
        (a joining node does not, to learn at once where the log ends)."""
        reply = await self.reader.xread(
            {self.log_key: format_stream_id(after)},
            count=READ_COUNT,
            block=READ_BLOCK_MS if block else None,
        )
        if not reply:
            return []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
        return entries

    async def first_id(self) -> tuple[int, int] | None:
        first = await self.redis.xrange(self.log_key, count=1)
        return parse_stream_id(first[0][0]) if first else None

    async def last_id(self) -> tuple[int, int] | None:
        last = await self.redis.xrevrange(self.log_key, count=1)
        return parse_stream_id(last[0][0]) if last else None

    async def trim(self, min_id: tuple[int, int]) -> int:
        removed: int = await self.redis.xtrim(
            self.log_key, minid=format_stream_id(min_id), approximate=False
        )
        return removed

    async def length(self) -> int:
        return int(await self.redis.xlen(self.log_key))

    # -- the lease -------------------------------------------------------------
    async def acquire(self, incarnation: str, lease_ms: int) -> tuple[int, str]:
        """(token, value) when taken now; (0, the holder's value) when held by another."""
        token, value = await self._acquire(
            keys=[self.lease_key, self.fence_key], args=[incarnation, lease_ms]
        )
        return int(token), value.decode() if isinstance(value, bytes) else str(value)

    async def renew(self, value: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[self.lease_key], args=[value, lease_ms]))

    async def release(self, value: str) -> None:
        """A clean stop: hand the lease back at once (a planned restart fails over fast)."""
        await self._release(keys=[self.lease_key], args=[value])

    async def holder(self) -> str | None:
        value = await self.redis.get(self.lease_key)
        return None if value is None else value.decode()

    # -- membership ------------------------------------------------------------
    async def seen(self, incarnation: str, about: bytes) -> tuple[int, bool]:
        """Say this node is alive: Redis's clock (ms), and whether the entry was new."""
        ms, new = await self._seen(keys=[self.nodes_key], args=[incarnation, about])
        return int(ms), bool(new)

    async def members(self) -> dict[str, tuple[int, bytes]]:
        """incarnation -> (last seen, Redis ms; what the node said of itself)."""
        out = {}
        for incarnation, value in (await self.redis.hgetall(self.nodes_key)).items():
            seen_ms, _, about = value.partition(b" ")
            if seen_ms.isdigit() and about.startswith(b"{"):  # else not a node's stamp
                out[incarnation.decode()] = (int(seen_ms), about)
        return out

    async def forget_member(self, incarnation: str) -> None:
        await self.redis.hdel(self.nodes_key, incarnation)

    # -- snapshots --------------------------------------------------------------
    async def snapshot(self) -> bytes | None:
        data: bytes | None = await self.redis.get(self.snapshot_key)
        return data

    async def put_snapshot(self, lease_value: str, data: bytes) -> bool:
        done = await self._put_snapshot(
            keys=[self.lease_key, self.snapshot_key], args=[lease_value, data]
        )
        if done and self.settings.min_replicas:
            await self.redis.execute_command(
                "WAIT", self.settings.min_replicas, int(COMMAND_TIMEOUT_S * 800)
            )
        return bool(done)


class ReplicasShort(Exception):
    def __init__(self, acked: int, wanted: int) -> None:
        super().__init__(f"Redis confirmed the write on {acked} replicas of the {wanted} required")


# What a call to Redis raises when Redis cannot be reached in time.
UNAVAILABLE = (RedisError, OSError, TimeoutError, ReplicasShort)
