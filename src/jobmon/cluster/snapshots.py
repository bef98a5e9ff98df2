"""The cluster's snapshot in Redis, and the trimming of its log after it.

When the log has grown past ``--compact-min-bytes`` (and the last snapshot),
the leader forks between two entries; the child writes the state as of the
last applied entry, this process stores it in ``{NAME}:snapshot`` (only while
it still holds the lease), and the log is then trimmed up to it, but never past
a node that has not applied that far yet (see membership.py): Redis holds state
in proportion to the number of jobs, not to the number of events ever sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from ..model import snapshot_default
from ..persistence import fork_writer
from . import records
from .redislog import format_stream_id

if TYPE_CHECKING:
    from .node import Member

log = logging.getLogger("jobmon.cluster")


class Snapshots:
    def __init__(self, member: Member) -> None:
        self.member = member
        self.bytes_since = 0  # of entries applied since the last snapshot
        self.size = 0  # bytes of the last snapshot written or loaded
        self.writing = False
        self.written = 0
        self.trim_goal: tuple[int, int] | None = None  # the last snapshot, until trimmed to

    def due(self) -> bool:
        member = self.member
        threshold = max(member.config.compact_min_bytes, self.size)
        return (
            not self.writing
            and self.bytes_since >= threshold
            and member.lease.held()
            and member.redis_up
        )

    def begin(self) -> None:
        """In the store task, between two entries: fork; the child writes the
        state as of ``member.position`` to a file, this process sends it to Redis."""
        member = self.member
        self.writing = True
        self.bytes_since = 0
        fd, path = tempfile.mkstemp(prefix="jobmon-snapshot-", suffix=".json")
        os.close(fd)
        position = member.position

        def write() -> None:
            state = {
                "position": format_stream_id(position),
                "state": member.node.store.to_snapshot(),
                "cluster": records.extras_to_snapshot(member.node, member.outbox),
            }
            with open(path, "wb") as out:
                out.write(orjson.dumps(state, default=snapshot_default))

        pid = fork_writer(write, "snapshot")
        member.engine.track(asyncio.ensure_future(self._finish(pid, path, position)))

    async def _finish(self, pid: int, path: str, position: tuple[int, int]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        member = self.member
        try:
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                log.error("snapshot child failed (status %d); the log stays untrimmed", status)
                return
            data = await loop.run_in_executor(None, _read_and_remove, path)
            value = member.lease.value
            if value is None or not await member.redis.put_snapshot(value, data):
                return  # no longer leader: the next one snapshots
            self.size = len(data)
            self.trim_goal = position
            removed = await self.trim()
            self.written += 1
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
            self.writing = False
            if os.path.exists(path):
                os.unlink(path)

    async def trim(self) -> int:
        """Trim the log up to the last snapshot, but never past what a node not
        yet forgotten has not applied (it would have to start again from the
        snapshot); what is left is trimmed later, as the nodes say how far they are."""
        if self.trim_goal is None:
            return 0
        goal = self.trim_goal
        trim_to = min([goal, *self.member.membership.positions()])
        removed: int = await self.member.redis.trim(trim_to)
        # Reached only once Redis has trimmed (a failed XTRIM keeps the goal), and
        # kept if a newer snapshot set another meanwhile.
        if trim_to >= goal and self.trim_goal == goal:
            self.trim_goal = None
        return removed


def _read_and_remove(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data
