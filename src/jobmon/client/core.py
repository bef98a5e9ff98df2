"""``Client``: one connection (or a cluster's nodes in turn), requests
pipelined and matched by ``msg_id``, events queued while jobmon is unreachable
and sent again after a lost connection (their ``event_id`` makes that safe)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..tls import client_context
from .errors import JobmonError, JobmonUnavailable, checked
from .messages import Messages

log = logging.getLogger("jobmon.client")


EVENT_TYPES = frozenset({"update_status", "job_completed", "job_failed", "heartbeat"})
_REQUEUED: dict[str, Any] = {"type": "requeued"}  # an event's reply when its connection dropped


@dataclass
class _Outgoing:
    body: dict[str, Any]
    happened_at: float  # when the caller sent it: ``at`` if it must wait
    reply: asyncio.Future[dict[str, Any]] | None = None
    sent_once: bool = field(default=False)


class Client(Messages):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7070,
        *,
        token: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        queue_limit: int = 10_000,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 5.0,
        addresses: list[tuple[str, int]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # Where to connect, in turn: after a failure the next (a cluster's nodes).
        self.addresses = addresses or [(host, port)]
        self._address = 0
        self.token = token if token is not None else os.environ.get("JOBMON_TOKEN") or None
        # TLS: tls=True (system CAs) or tls_ca=FILE; None reads JOBMON_TLS / JOBMON_TLS_CA.
        self.tls = client_context(tls, tls_ca)
        self.queue_limit = queue_limit
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        # An event's caller waits this long for its reply, then goes on (the
        # event stays in flight); a stuck server never holds up the job.
        self.reply_timeout_s = reply_timeout_s
        self.queued: deque[_Outgoing] = deque()  # events waiting for a connection
        self.dropped = 0  # events lost to a full queue
        self._writer: asyncio.StreamWriter | None = None
        self._in_flight: dict[int, _Outgoing] = {}
        self._next_id = 1
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: list[asyncio.Queue[dict[str, Any] | None]] = []
        self._topics: set[str] = set()
        self._offline_warned = False
        self._delivered = asyncio.Event()  # set while nothing is queued or in flight
        self._delivered.set()
        self._disconnected = asyncio.Event()
        self._attempted = asyncio.Event()  # a connection attempt has failed
        self._answered = False  # this connection has answered something
        self.last_failure: str | None = None  # why the last connection attempt failed

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Client:
        # A bounded wait for the first connection, so that what the block sends
        # goes out at once and its questions can be asked; unreachable, it goes
        # on offline (events queue) once the first attempt has failed.
        self._ensure_running()
        await _first(self.connect_timeout_s, self._connected, self._attempted)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, wait_s: float | None = None) -> bool:
        """Start connecting in the background; with ``wait_s``, wait that long for
        the connection. True when connected."""
        self._ensure_running()
        if wait_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait_s)
        return self._connected.is_set()

    def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="jobmon-client")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def delivered(self, timeout_s: float | None = None) -> bool:
        """Wait until every event sent so far has been answered; False on timeout."""
        try:
            await asyncio.wait_for(self._delivered.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def undelivered(self) -> int:
        """Events queued or sent and not yet answered."""
        in_flight = sum(o.body["type"] in EVENT_TYPES for o in self._in_flight.values())
        return len(self.queued) + in_flight

    async def disconnected(self) -> None:
        """Wait until the connection is lost (or was never made)."""
        await self._disconnected.wait()

    async def close(self, flush_s: float | None = None) -> None:
        """Give queued events ``flush_s`` (default: the reply timeout) to go out,
        connecting if need be; then disconnect, warning of what was not delivered."""
        if self._task is None:
            return
        await self.delivered(self.reply_timeout_s if flush_s is None else flush_s)
        undelivered = self.undelivered
        if undelivered:
            log.warning("jobmon client closing with %d events undelivered", undelivered)
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # -- the connection ------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.backoff_s
        while not self._closing:
            self.host, self.port = self.addresses[self._address % len(self.addresses)]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=1 << 24, ssl=self.tls),
                    self.connect_timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                self.last_failure = str(exc) or type(exc).__name__
                self._attempted.set()
                self._warn_offline(f"cannot connect to jobmon at {self.host}:{self.port}: {exc}")
                self._address += 1
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self._writer = writer
            self._answered = False
            try:
                await self._serve(reader, writer)
            except (OSError, asyncio.IncompleteReadError, JobmonError) as exc:
                if isinstance(exc, JobmonError):
                    self.last_failure = f"it refused the token: {exc.text}"
                elif not self._answered:
                    self.last_failure = str(exc)
                self._warn_offline(f"lost the connection to jobmon: {exc}")
                self._address += 1
            finally:
                self._attempted.set()
                if self._answered and self._connected.is_set():
                    delay = self.backoff_s  # it worked: a fresh start
                else:  # refused (a wrong token), or closed unanswered: wait before trying again
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self.backoff_max_s)
                self._connected.clear()
                self._disconnected.set()
                self._writer = None
                writer.close()
                # Unanswered events go first when the connection is back (their
                # callers stop waiting); questions fail.
                for outgoing in reversed(list(self._in_flight.values())):
                    event = outgoing.body["type"] in EVENT_TYPES
                    if outgoing.reply is not None and not outgoing.reply.done():
                        if event:
                            outgoing.reply.set_result(_REQUEUED)
                        else:
                            outgoing.reply.set_exception(JobmonUnavailable("connection lost"))
                    if event:
                        outgoing.reply = None
                        self.queued.appendleft(outgoing)
                self._in_flight.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.token is not None:
            writer.write(orjson.dumps({"type": "auth", "token": self.token}) + b"\n")
            reply = orjson.loads(await self._read_line(reader))
            if reply.get("type") != "auth_ok":
                raise JobmonError(reply.get("code", 0), reply.get("text", "authentication failed"))
        if self._topics:
            writer.write(
                orjson.dumps({"type": "subscribe", "topics": sorted(self._topics)}) + b"\n"
            )
            await self._read_line(reader)
        if self._offline_warned:
            log.warning("jobmon reachable again; sending %d queued events", len(self.queued))
            self._offline_warned = False
        self._disconnected.clear()
        self.last_failure = None
        self._connected.set()
        sending = asyncio.get_running_loop().create_task(self._send_queued(writer))
        try:
            while True:
                self._receive(orjson.loads(await self._read_line(reader)))
        finally:
            sending.cancel()

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        line = await reader.readline()
        if not line:
            raise ConnectionResetError(self._closed())
        self._answered = True
        return line

    def _closed(self) -> str:
        if self._answered or self.tls is not None:
            return "jobmon closed the connection"
        # What a TLS port does to a plaintext client: closes it without a word.
        return "jobmon closed the connection before answering (if it serves TLS, connect with TLS)"

    async def _send_queued(self, writer: asyncio.StreamWriter) -> None:
        while True:
            while self.queued:
                outgoing = self.queued.popleft()
                self._write(writer, outgoing)
            await writer.drain()
            self._wake.clear()
            if not self.queued:
                await self._wake.wait()

    def _write(self, writer: asyncio.StreamWriter, outgoing: _Outgoing) -> None:
        msg_id = self._next_id
        self._next_id += 1
        body = {**outgoing.body, "msg_id": msg_id}
        if outgoing.sent_once or time.time() - outgoing.happened_at > 0.5:
            body.setdefault("at", outgoing.happened_at)  # it waited: say when it happened
        outgoing.sent_once = True
        self._in_flight[msg_id] = outgoing
        writer.write(orjson.dumps(body) + b"\n")

    def _receive(self, reply: dict[str, Any]) -> None:
        msg_id = reply.get("in_reply_to")
        outgoing = self._in_flight.pop(msg_id, None) if msg_id is not None else None
        if not self._in_flight and not self.queued:
            self._delivered.set()
        if outgoing is None:
            if reply.get("type") in ("alert", "event"):
                for queue in self._subscriptions:
                    queue.put_nowait(reply)
            return
        if outgoing.reply is not None and not outgoing.reply.done():
            outgoing.reply.set_result(reply)
        elif reply.get("type") == "error":
            log.warning("jobmon refused %s: %s", outgoing.body.get("type"), reply.get("text"))

    def _warn_offline(self, text: str) -> None:
        if not self._offline_warned:
            log.warning("%s; events wait in a local queue (up to %d)", text, self.queue_limit)
            self._offline_warned = True

    # -- sending ---------------------------------------------------------------------
    def _enqueue(self, outgoing: _Outgoing) -> None:
        if len(self.queued) >= self.queue_limit:
            lost = self.queued.popleft()
            self.dropped += 1
            log.warning("jobmon client queue full: dropped the oldest event (%s)", lost.body)
            if lost.reply is not None and not lost.reply.done():
                lost.reply.set_result({"type": "dropped"})
        self.queued.append(outgoing)
        self._delivered.clear()
        self._wake.set()
        self._ensure_running()

    async def send_event(self, body: dict[str, Any], wait: bool = True) -> dict[str, Any] | None:
        """An event: sent now if connected, else queued. With ``wait``, and while
        connected, returns the reply (raising JobmonError for an error reply);
        queued events return None at once."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future() if wait and self.connected else None
        if "event_id" not in body:
            body = {**body, "event_id": new_event_id()}
        self._enqueue(_Outgoing(body, time.time(), reply))
        if reply is None:
            return None
        try:
            answer = await asyncio.wait_for(asyncio.shield(reply), self.reply_timeout_s)
        except TimeoutError:
            return None  # still in flight: it will be answered, or sent again
        if answer is _REQUEUED:
            return None  # the connection dropped: it is queued and will be sent again
        return checked(answer)

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A question; needs the connection: it waits up to the reply timeout
        for one, then raises JobmonUnavailable."""
        if body.get("type") in EVENT_TYPES:
            return await self.send_event(body) or {"type": "queued"}
        if not await self.start(self.reply_timeout_s):
            why = f" ({self.last_failure})" if self.last_failure else ""
            raise JobmonUnavailable(
                f"jobmon at {self.host}:{self.port} is unreachable{why}; "
                f"no connection within {self.reply_timeout_s:g} s"
            )
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        assert self._writer is not None
        self._delivered.clear()
        self._write(self._writer, _Outgoing(body, time.time(), reply))
        return checked(await reply)

    # -- pushed alerts and events ----------------------------------------------------
    async def subscribe(
        self, topics: tuple[str, ...] = ("alerts",)
    ) -> AsyncIterator[dict[str, Any]]:
        """Pushed alerts (and events, if asked) as they come, across reconnects."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscriptions.append(queue)
        new = set(topics) - self._topics
        self._topics |= set(topics)
        try:
            if new or not self.connected:
                await self.request({"type": "subscribe", "topics": sorted(self._topics)})
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item.get("alert") or item.get("event") or item
        finally:
            self._subscriptions.remove(queue)


def new_event_id() -> str:
    """A fresh id for one event (see ``event_id`` in the README)."""
    return uuid.uuid4().hex


async def _first(timeout_s: float, *events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set, at most ``timeout_s``."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
