"""One worker connection: chunked reads, line framing, backpressure, ordered replies.

Reads arrive in large chunks; every complete line is decoded at the edge into
this connection's inbox, and the connection asks the engine for a turn. The
engine answers from the inbox in order, so replies come back in request order,
written with one ``write`` per turn.

Flow control, both ways, so no client can make the server's memory grow:
- a client that stops reading its replies: once the transport holds more than
  the high-water mark of unsent replies the connection is congested; the engine
  skips it and reading pauses, until the transport drains;
- a client that sends faster than it is answered: reading pauses while the
  inbox holds more than ``MAX_INBOX`` requests.
A turn also answers at most ``TURN_OUTPUT_BUDGET`` bytes per connection, since
one small request (``list_jobs``) can ask for a large reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from .errors import Code
from .protocol import Request, decode, decode_framed, encode, error_body, line_too_long

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("jobmon.connection")

WRITE_HIGH_WATER = 1 << 20  # bytes of unsent replies before the connection is congested
MAX_INBOX = 8192  # decoded requests waiting before reading pauses
TURN_OUTPUT_BUDGET = 256 << 10  # reply bytes per connection per engine turn
SUBSCRIBER_MAX_UNSENT = 4 << 20  # pushed bytes a subscriber may leave unread
FRAMED_READ_BYTES = 512  # a shorter read (a line or two) is cheaper decoded line by line


class Connection(asyncio.Protocol):
    persistent = True  # subscribe may push lines to it

    def __init__(
        self,
        engine: Engine,
        max_line_bytes: int,
        registry: set[Connection],
        conn_id: int = 0,
        auth_timeout_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self.auth_timeout_s = auth_timeout_s  # under --token (0: none)
        self._auth_timer: asyncio.TimerHandle | None = None
        self.conn_id: int | None = conn_id
        self.max_line_bytes = max_line_bytes
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer: object = None
        self.buffer = b""
        self.skipping = False  # inside a line longer than max_line_bytes
        self.inbox: deque[Request] = deque()
        self.scheduled = False  # waiting for, or inside, an engine turn
        self.congested = False
        self.input_ended = False
        self.closed = False
        self.read_blocks: set[str] = set()
        self.paused = asyncio.Event()  # set while reading is paused (tests await it)
        self.gone = asyncio.Event()  # set once the connection is closed
        self.authenticated = False  # matters only under --token (commands.auth)
        self.auth_failures = 0

    # -- asyncio callbacks -----------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.registry.add(self)
        if self.auth_timeout_s > 0:
            loop = asyncio.get_running_loop()
            self._auth_timer = loop.call_later(self.auth_timeout_s, self._auth_expired)

    def _auth_expired(self) -> None:
        """--auth-timeout-ms: a connection that never authenticated gives its place up."""
        self._auth_timer = None
        if self.authenticated or self.closed or self.transport is None:
            return
        ms = round(self.auth_timeout_s * 1000)
        self.transport.write(
            encode(
                None,
                error_body(
                    None,
                    Code.UNAUTHORIZED,
                    f"not authenticated within {ms} ms (--auth-timeout-ms): closing; "
                    'send {"type":"auth","token":"..."} first',
                ),
                "",
            )
        )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data = data[newline + 1 :]
            self.skipping = False
        if self.buffer:
            data = self.buffer + data
        limit = self.max_line_bytes
        inbox = self.inbox
        # A Maelstrom client's many lines all begin with the same head: cut off in one pass.
        framed = None
        if FRAMED_READ_BYTES < len(data) <= limit and data[:7] == b'{"src":':
            framed = decode_framed(data)
        if framed is not None:
            requests, self.buffer = framed
            inbox.extend(requests)
        else:
            lines = data.split(b"\n")
            self.buffer = lines.pop()
            if len(data) <= limit:  # no line in it can be too long
                inbox.extend(filter(None, map(decode, lines)))  # None: a blank line
            else:
                for line in lines:
                    request = line_too_long(limit) if len(line) > limit else decode(line)
                    if request is not None:
                        inbox.append(request)
        if len(self.buffer) > limit:
            # Answer now and drop the rest of this line as it arrives, never holding it whole.
            inbox.append(line_too_long(limit))
            self.buffer = b""
            self.skipping = True
        if len(inbox) >= MAX_INBOX:
            self._block_reading("inbox")
        self._schedule()

    def eof_received(self) -> bool:
        # A last line without a newline still counts.
        if self.buffer and not self.skipping:
            request = decode(self.buffer)
            if request is not None:
                self.inbox.append(request)
        self.buffer = b""
        self.input_ended = True
        self._schedule()
        self._close_when_answered()
        return True  # keep our side open until every reply is written

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.gone.set()
        self.registry.discard(self)
        self.engine.publisher.forget(self)
        if self.conn_id is not None:
            self.engine.connection_closed(self.conn_id)
        # Nobody can read answers to questions any more; reported facts still
        # count (a worker may write its events and hang up without reading).
        self.inbox = deque(r for r in self.inbox if r[2] is not None and r[2].mutates)

    def pause_writing(self) -> None:
        self.congested = True
        self._block_reading("write")

    def resume_writing(self) -> None:
        self.congested = False
        self._unblock_reading("write")
        self._schedule()

    # -- engine side ---------------------------------------------------------
    def _schedule(self) -> None:
        if self.inbox and not self.scheduled and not self.congested:
            self.scheduled = True
            self.engine.ready(self)

    def deliver(self, data: bytes) -> None:
        """The engine's answer to this connection's turn (after the journal write)."""
        self.scheduled = False
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)  # may call pause_writing
        if self.closed and self.conn_id is not None:
            # Reports applied after the close still name this connection: have
            # the engine look at its jobs again (see Engine.connection_closed).
            self.engine.connection_closed(self.conn_id)
        # (Checked here first: each costs a call, and a reply to one request needs none.)
        if self.read_blocks and len(self.inbox) < MAX_INBOX // 2:
            self._unblock_reading("inbox")
        if self.inbox:
            self._schedule()
        elif self.input_ended:
            self._close_when_answered()

    def push(self, data: bytes) -> bool:
        """A line for a subscriber; a subscriber too slow to read is dropped."""
        if self.closed or self.transport is None:
            return False
        unsent = self.transport.get_write_buffer_size()
        if unsent > SUBSCRIBER_MAX_UNSENT:
            log.warning(
                "subscriber dropped: too slow",
                extra={"fields": {"peer": str(self.peer), "unsent_bytes": unsent}},
            )
            self.transport.close()
            return False
        self.transport.write(data)
        return True

    def _close_when_answered(self) -> None:
        if (
            self.input_ended
            and not self.inbox
            and not self.scheduled
            and self.transport is not None
        ):
            self.transport.close()

    # -- flow control -----------------------------------------------------------
    def _block_reading(self, reason: str) -> None:
        if not self.read_blocks and self.transport is not None and not self.closed:
            if not self.input_ended:
                self.transport.pause_reading()
            self.paused.set()
        self.read_blocks.add(reason)

    def _unblock_reading(self, reason: str) -> None:
        if reason not in self.read_blocks:
            return
        self.read_blocks.discard(reason)
        if not self.read_blocks and self.transport is not None and not self.closed:
            if not self.input_ended:
                self.transport.resume_reading()
            self.paused.clear()

    def stop_reading(self) -> None:
        """Shutdown: take no more input; what was read is still answered."""
        self._block_reading("shutdown")
        self.input_ended = True
        self._close_when_answered()
