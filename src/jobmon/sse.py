"""``GET /api/stream``: Server-Sent Events, a subscription like a TCP connection's.

``event: alert`` and ``event: event`` (job events) as the engine pushes them;
with topic ``changes``, a coalesced ``event: changed``. A client that leaves
more than ``SUBSCRIBER_MAX_UNSENT`` bytes unread (queued here plus what its
transport holds) is dropped, as a TCP subscriber is: its connection is aborted,
so a write waiting on it ends at once, and so does shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import web

from .connection import SUBSCRIBER_MAX_UNSENT
from .node import Subscription

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("jobmon.http")

KEEPALIVE_S = 15.0
# ``changes``: at most one "something changed" event per this many seconds,
# however fast events arrive (a dashboard needs no more, and costs no more).
CHANGES_EVERY_S = 0.25
STREAM_TOPICS = ("alerts", "events", "changes")


class StreamSubscriber:
    """What the engine pushes to one stream, queued until the stream writes it."""

    def __init__(self, transport: asyncio.BaseTransport | None, peer: object) -> None:
        self.lines: deque[bytes] = deque()
        self.queued_bytes = 0
        self.ready = asyncio.Event()
        self.dropped = False
        self.transport = transport
        self.peer = peer

    def push(self, data: bytes) -> bool:
        if self.dropped:
            return False
        transport = self.transport
        unsent = self.queued_bytes + (
            transport.get_write_buffer_size() if isinstance(transport, asyncio.Transport) else 0
        )
        if unsent > SUBSCRIBER_MAX_UNSENT:
            log.warning(
                "stream subscriber dropped: too slow",
                extra={"fields": {"peer": str(self.peer), "unsent_bytes": unsent}},
            )
            self.drop()
            return False
        self.lines.extend(data.splitlines())
        self.queued_bytes += len(data)
        self.ready.set()
        return True

    def drop(self) -> None:
        """End the stream now, even while a write waits on a client that stopped reading."""
        self.dropped = True
        self.lines.clear()
        self.queued_bytes = 0
        self.ready.set()
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()


async def serve(
    request: web.Request, server: Server, streams: set[StreamSubscriber], topics: list[str]
) -> web.StreamResponse:
    pushed = frozenset(topics) - {"changes"}
    engine = server.engine
    seen_changes = engine.changes if "changes" in topics else None
    wait_s = CHANGES_EVERY_S if seen_changes is not None else KEEPALIVE_S
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    subscriber = StreamSubscriber(request.transport, request.remote)
    node = server.node
    if pushed:
        node.subscribe(subscriber, Subscription(subscriber, pushed, None))
    streams.add(subscriber)
    idle_s = 0.0
    try:
        await response.write(b": subscribed\n\n")
        while not subscriber.dropped:
            try:
                await asyncio.wait_for(subscriber.ready.wait(), wait_s)
            except TimeoutError:
                idle_s += wait_s
                if seen_changes is not None and engine.changes != seen_changes:
                    seen_changes = engine.changes
                    await response.write(b"event: changed\ndata: {}\n\n")
                    idle_s = 0.0
                elif idle_s >= KEEPALIVE_S:
                    # A comment line: keeps proxies from closing an idle stream,
                    # and finds clients that went away (the write fails).
                    await response.write(b": keepalive\n\n")
                    idle_s = 0.0
                continue
            subscriber.ready.clear()
            out = []
            # From here the bytes are the transport's, which push() counts.
            subscriber.queued_bytes = 0
            while subscriber.lines:
                line = subscriber.lines.popleft()
                kind = b"alert" if line.startswith(b'{"type":"alert"') else b"event"
                out.append(b"event: %s\ndata: %s\n\n" % (kind, line))
            if out:
                await response.write(b"".join(out))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        node.unsubscribe(subscriber)
        streams.discard(subscriber)
    return response
