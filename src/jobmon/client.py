"""The worker side: report jobs to jobmon from Python.

``Client`` (asyncio) keeps one connection, pipelines requests and matches replies
by ``msg_id``; ``SyncClient`` wraps it for scripts. Events (status, completion,
failure, heartbeats) never fail because jobmon is unreachable: they wait in a
bounded queue, stamped with the time they happened (``at``), and go out in order
when the connection returns. An event in flight when the connection dropped is
sent again; every event carries an ``event_id``, so a resend that jobmon had
already applied is answered again and counted once. ``addresses``: the nodes
of a cluster (``--redis``); after a lost connection the client tries the next.

    async with Client(port=7070) as jobmon:
        async with jobmon.track("nightly-backup", max_retries=3) as run:
            await run.progress(40)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
import resource
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from .tls import client_context

log = logging.getLogger("jobmon.client")

EVENT_TYPES = frozenset({"update_status", "job_completed", "job_failed", "heartbeat"})
_REQUEUED: dict[str, Any] = {"type": "requeued"}  # an event's reply when its connection dropped
T = TypeVar("T")


class JobmonError(Exception):
    """jobmon answered a request with an error."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"jobmon error {code}: {text}")
        self.code = code
        self.text = text


class JobmonUnavailable(ConnectionError):
    """A question (not an event) could not be asked: jobmon is unreachable."""


@dataclass
class _Outgoing:
    body: dict[str, Any]
    happened_at: float  # when the caller sent it: ``at`` if it must wait
    reply: asyncio.Future[dict[str, Any]] | None = None
    sent_once: bool = field(default=False)


class Client:
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
        return _checked(answer)

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
        return _checked(await reply)

    # -- one method per message ----------------------------------------------------------
    async def update_status(
        self,
        job_id: str,
        status: str,
        progress: float | None = None,
        max_retries: int | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "update_status", "job_id": job_id, "status": status}
        _put(body, progress=progress, max_retries=max_retries, run_id=run_id)
        return await self.send_event(body)

    async def completed(
        self,
        job_id: str,
        duration_ms: float | None = None,
        resource_usage: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "job_completed", "job_id": job_id}
        _put(body, duration_ms=duration_ms, resource_usage=resource_usage, **extra)
        return await self.send_event(body)

    async def failed(
        self,
        job_id: str,
        error: str,
        retries: int = 0,
        max_retries: int | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "job_failed", "job_id": job_id, "error": error}
        _put(body, retries=retries, max_retries=max_retries, **extra)
        return await self.send_event(body)

    async def heartbeat(
        self, job_id: str, ttl_ms: int | None = None, run_id: str | None = None
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"type": "heartbeat", "job_id": job_id}
        _put(body, ttl_ms=ttl_ms, run_id=run_id)
        return await self.send_event(body)

    async def register_job(self, job_id: str, **settings: Any) -> dict[str, Any]:
        return await self.request({"type": "register_job", "job_id": job_id, **settings})

    async def unregister_job(self, job_id: str) -> dict[str, Any]:
        return await self.request({"type": "unregister_job", "job_id": job_id})

    async def pause_job(self, job_id: str, **settings: Any) -> dict[str, Any]:
        return await self.request({"type": "pause_job", "job_id": job_id, **settings})

    async def resume_job(self, job_id: str) -> dict[str, Any]:
        return await self.request({"type": "resume_job", "job_id": job_id})

    async def get_stats(self) -> dict[str, Any]:
        return await self.request({"type": "get_stats"})

    async def get_job(self, job_id: str) -> dict[str, Any]:
        reply = await self.request({"type": "get_job", "job_id": job_id})
        job: dict[str, Any] = reply["job"]
        return job

    async def list_jobs(self, **query: Any) -> dict[str, Any]:
        return await self.request({"type": "list_jobs", **query})

    async def get_alerts(self, **query: Any) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self.request({"type": "get_alerts", **query}))[
            "alerts"
        ]
        return alerts

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

    # -- tracking a run --------------------------------------------------------------------
    def track(
        self,
        job_id: str,
        max_retries: int | None = None,
        attempt: int = 0,
        retry_delay_s: float = 0.0,
    ) -> Tracker:
        return Tracker(self, job_id, max_retries, attempt, retry_delay_s)


class Run:
    """The run inside ``track``: report progress, add resource usage."""

    def __init__(self, client: Client, job_id: str, attempt: int) -> None:
        self.client = client
        self.job_id = job_id
        self.attempt = attempt
        self.resource_usage: dict[str, float] = {}

    async def progress(self, percent: float) -> None:
        await _quietly(self.client.update_status(self.job_id, "running", progress=percent))


class Tracker:
    """``async with client.track(job_id) as run`` or ``@client.track(job_id)``.

    Reports ``running`` on entry; on exit ``job_completed`` with the duration
    and resource usage measured here, or ``job_failed`` with the exception. The
    exception is never swallowed, and a reporting problem never raises.
    As a decorator it also retries: up to ``max_retries`` more attempts,
    ``retry_delay_s`` apart, each failure reported with its ``retries`` count.
    """

    def __init__(
        self,
        client: Client,
        job_id: str,
        max_retries: int | None,
        attempt: int,
        retry_delay_s: float,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.max_retries = max_retries
        self.attempt = attempt
        self.retry_delay_s = retry_delay_s
        self._measure: _Measure | None = None
        self._run: Run | None = None

    async def __aenter__(self) -> Run:
        self._measure = _Measure()
        self._run = Run(self.client, self.job_id, self.attempt)
        await _quietly(
            self.client.update_status(self.job_id, "running", max_retries=self.max_retries)
        )
        return self._run

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        assert self._measure is not None and self._run is not None
        duration_ms, usage = self._measure.done()
        usage.update(self._run.resource_usage)
        if exc is None:
            await _quietly(self.client.completed(self.job_id, duration_ms, usage))
        elif isinstance(exc, Exception):
            error = f"{type(exc).__name__}: {exc}"
            await _quietly(self.client.failed(self.job_id, error, self.attempt, self.max_retries))

    def __call__(self, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(func)
        async def tracked(*args: Any, **kwargs: Any) -> T:
            limit = self.max_retries or 0
            for attempt in range(limit + 1):
                tracker = Tracker(self.client, self.job_id, self.max_retries, attempt, 0)
                try:
                    async with tracker:
                        return await func(*args, **kwargs)
                except Exception:
                    if attempt == limit:
                        raise
                    await asyncio.sleep(self.retry_delay_s)
            raise AssertionError("unreachable")

        return tracked


class _Measure:
    """Wall time and this process's CPU and memory over a run."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_started = usage.ru_utime + usage.ru_stime

    def done(self) -> tuple[int, dict[str, float]]:
        wall = time.perf_counter() - self.started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - self.cpu_started
        return round(wall * 1000), {
            "cpu_percent": round(cpu / wall * 100, 1) if wall > 0 else 0.0,
            "memory_mb": round(_rss_mb(), 1),
        }


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak, as the OS keeps it (KiB on Linux and BSD)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def _put(body: dict[str, Any], **fields: Any) -> None:
    for name, value in fields.items():
        if value is not None:
            body[name] = value


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("type") == "error":
        raise JobmonError(reply.get("code", 0), reply.get("text", ""))
    return reply


async def _quietly(report: Awaitable[Any]) -> None:
    """Monitoring never breaks the job: a refused report is logged, not raised."""
    try:
        await report
    except JobmonError as exc:
        log.warning("jobmon refused a report: %s", exc.text)


# -- the blocking client ---------------------------------------------------------------


class SyncClient:
    """``Client`` for code without an event loop: a private loop in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 7070, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: Client = self._call(_make_client(host, port, options))
        self._call(self._client.start(options.get("connect_timeout_s", 5.0)))

    def _call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def client(self) -> Client:
        return self._client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._call(method(*args, **kwargs))

        return blocking

    @contextlib.contextmanager
    def track(
        self, job_id: str, max_retries: int | None = None, attempt: int = 0
    ) -> Iterator[SyncRun]:
        tracker = self._client.track(job_id, max_retries, attempt)
        run = self._call(tracker.__aenter__())
        try:
            yield SyncRun(self, run)
        except BaseException as exc:
            self._call(tracker.__aexit__(type(exc), exc, None))
            raise
        self._call(tracker.__aexit__(None, None, None))


class SyncRun:
    def __init__(self, owner: SyncClient, run: Run) -> None:
        self._owner = owner
        self._run = run
        self.resource_usage = run.resource_usage

    def progress(self, percent: float) -> None:
        self._owner._call(self._run.progress(percent))


async def _make_client(host: str, port: int, options: dict[str, Any]) -> Client:
    return Client(host, port, **options)
