"""The store task: the one place job state changes.

Connections decode requests into their inboxes and queue themselves as ready.
Each turn the engine answers every ready connection (up to an output budget
each), applying requests in order with one clock reading, writes the turn's
journal records with one ``write``, fsyncs once if the policy is ``always``
(group commit), and only then releases the replies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import deque
from typing import Protocol

import orjson

from .clock import Clock, iso
from .connection import TURN_OUTPUT_BUDGET
from .errors import Code, RequestError
from .model import Alert
from .node import Node
from .persistence import DataDir
from .protocol import Request, encode, error_body

log = logging.getLogger("jobmon.engine")
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
alert_log = logging.getLogger("jobmon.alert")


class Sink(Protocol):
    """A source of requests and the place their replies go (a connection)."""

    inbox: deque[Request]

    def deliver(self, data: bytes) -> None: ...


class Engine:
    def __init__(
        self,
        node: Node,
        clock: Clock,
        data_dir: DataDir | None = None,
        fsync: str = "everysec",
    ) -> None:
        self.node = node
        self.clock = clock
        self.data_dir = data_dir
        self.fsync_always = fsync == "always"
        self.queue: deque[Sink] = deque()  # sinks with requests waiting, in arrival order
        self.requests_handled = 0
        self.connection_turns = 0
        self.turns = 0
        self.errors_replied = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: set[asyncio.Task[None]] = set()

    # -- called by connections -------------------------------------------
    def ready(self, sink: Sink) -> None:
        """``sink.inbox`` has requests; answer them in the next turn."""
        self.queue.append(sink)
        self._idle.clear()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    # -- applying ------------------------------------------------------------
    def execute(self, inbox: deque[Request], now: float, budget: int = 1 << 62) -> bytes:
        """Apply requests from the inbox in order until it is empty or the replies
        reach ``budget`` bytes; returns the reply lines (journal records buffered)."""
        node = self.node
        writer = self.data_dir.writer if self.data_dir is not None else None
        journal = writer.pending.append if writer is not None else None
        out: list[bytes] = []
        size = 0
        pop = inbox.popleft
        while inbox and size < budget:
            frame, msg_id, handler, args = pop()
            if handler is None:
                body = error_body(msg_id, args.code, args.text)
                self.errors_replied += 1
            else:
                try:
                    body = handler.apply(node, now, args, msg_id)
                    if journal is not None and handler.mutates:
                        journal((handler.name, args))
                except RequestError as exc:
                    body = error_body(msg_id, exc.code, exc.text)
                    self.errors_replied += 1
                except Exception:
                    log.exception("bug while handling %s", handler.name)
                    # The command may have changed state before failing; journal it
                    # anyway so a replay ends in the same state as this process.
                    if journal is not None and handler.mutates:
                        journal((handler.name, args))
                    body = error_body(
                        msg_id, Code.CRASH, f"internal error while handling {handler.name}; logged"
                    )
                    self.errors_replied += 1
            try:
                line = (
                    _dumps(body, option=_NEWLINE)
                    if frame is None
                    else encode(frame, body, node.node_id)
                )
            except (TypeError, orjson.JSONEncodeError):
                log.exception("bug: reply could not be encoded")
                line = _dumps(
                    error_body(msg_id, Code.CRASH, "internal error encoding the reply; logged"),
                    option=_NEWLINE,
                )
            out.append(line)
            size += len(line)
        self.requests_handled += len(out)
        return b"".join(out)

    def publish_alerts(self) -> None:
        alerts = self.node.store.drain_alerts()
        if alerts and alert_log.isEnabledFor(logging.WARNING):
            # Straight to stderr, one write per turn: the logging module costs
            # tens of microseconds a line, too much on the ingest path.
            try:
                sys.stderr.flush()
                os.write(sys.stderr.fileno(), alert_lines(alerts))
            except OSError as exc:  # a closed stderr must not stop the store
                log.debug("alert log line not written: %s", exc)

    # -- the task --------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        data_dir = self.data_dir
        while True:
            while not self.queue:
                self._idle.set()
                if self._stopping:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
            sinks, self.queue = self.queue, deque()
            self.turns += 1
            self.connection_turns += len(sinks)
            now = self.clock.now()
            budget = TURN_OUTPUT_BUDGET
            replies = [(sink, self.execute(sink.inbox, now, budget)) for sink in sinks]
            if data_dir is not None and data_dir.writer is not None:
                writer = data_dir.writer
                if writer.write(now) and self.fsync_always:
                    # Batches keep queueing while this thread fsyncs: the next turn
                    # commits all of them with one fsync.
                    await loop.run_in_executor(None, writer.fsync)
                if data_dir.should_compact():
                    self._compact(loop)
            self.publish_alerts()
            for sink, data in replies:
                sink.deliver(data)

    def _compact(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.data_dir is not None
        started = time.perf_counter()
        generation, pid = self.data_dir.begin_compaction(self.node)
        log.info(
            "compaction started",
            extra={
                "fields": {
                    "generation": generation,
                    "jobs": len(self.node.store.jobs),
                    "child_pid": pid,
                    "stall_ms": round((time.perf_counter() - started) * 1000, 1),
                }
            },
        )
        future = loop.run_in_executor(None, self.data_dir.finish_compaction, generation, pid)
        self.track(asyncio.ensure_future(future))

    def track(self, task: asyncio.Future[None]) -> None:
        self._background.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def fsync_every_second(self) -> None:
        """``--fsync everysec``: what the OS holds reaches the disk within about a second."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            if self.data_dir is not None and self.data_dir.writer is not None:
                writer = self.data_dir.writer
                if writer.dirty:
                    await loop.run_in_executor(None, writer.fsync)

    async def wait_background(self) -> None:
        """Wait for work started in threads (a compaction) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def stop(self) -> None:
        """Finish what is queued, then let ``run`` return; wait for compaction."""
        self._stopping = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def alert_lines(alerts: list[Alert]) -> bytes:
    """One structured log line per alert, in the format of ``logs.JsonFormatter``."""
    ts = iso(time.time())
    return b"".join(
        orjson.dumps(
            {
                "ts": ts,
                "level": "warning",
                "logger": "jobmon.alert",
                "msg": "alert",
                "alert_id": alert.alert_id,
                "job_id": alert.job_id,
                "kind": alert.kind,
                "state": alert.state.value,
                "text": alert.text,
                "fired_at": iso(alert.fired_at),
                "resolved_at": iso(alert.resolved_at),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for alert in alerts
    )
