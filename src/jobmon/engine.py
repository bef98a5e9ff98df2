"""The store task: the one place job state changes.

Connections decode requests into their inboxes and queue themselves as ready.
Each turn the engine answers every ready connection (up to an output budget
each), applying requests in order with one clock reading, writes the turn's
journal records with one ``write``, fsyncs once if the policy is ``always``
(group commit), and only then releases the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter, _count_elements, deque  # type: ignore[attr-defined]
from typing import Any, Protocol

import orjson

from .batch import BatchSink, request_of
from .clock import Clock
from .commands import auth
from .connection import TURN_OUTPUT_BUDGET
from .errors import Code, RequestError
from .framing import LINE_BY_LINE, joined, joining
from .model import Alert
from .node import Node
from .notifiers import AlertNotifier
from .persistence import TICK_RECORD, WORKERS_GONE_RECORD, DataDir
from .protocol import Request, encode, error_body
from .publish import Publisher

log = logging.getLogger("jobmon.engine")
# A turn fires at most this many deadlines (and sends at most this many
# reminders); a storm of them is spread over turns. Settling stale heap entries
# (deadlines moved later) is bounded too. See bench/storm.py.
EXPIRE_SLICE = 1000
SETTLE_BUDGET = 20_000
# A burst of at least this many alerts fired (or reminded) leaves that many
# long-lived objects behind: they are moved out of the collector's sight, as at
# start and at each compaction, or the full collection they set off later scans
# every job and stalls every connection (150-300 ms at 100,000 jobs).
FREEZE_AFTER = 10_000
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_ENCODING_BUG = "internal error encoding the reply; logged"
_BARE = LINE_BY_LINE  # (framed, newline, pad) once replies go line by line
alert_log = logging.getLogger("jobmon.alert")


class Sink(Protocol):
    """A source of requests and the place their replies go (a connection)."""

    inbox: deque[Request]
    conn_id: int | None
    authenticated: bool  # sent the --token (see commands.auth)
    persistent: bool  # stays open, so lines can be pushed to it (subscribe)

    def deliver(self, data: bytes) -> None: ...

    def push(self, data: bytes) -> bool:
        """An unprompted line (a subscription); False when the sink is gone or too slow."""
        ...


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
        # Accepted messages by type, since this process started (/metrics).
        self.received_by_type: Counter[str] = Counter()
        # Bumped by every turn that changed state (SSE ``changes`` watches it).
        self.changes = 0
        self._wakeup: asyncio.Future[None] | None = None
        self._stopping = False
        self._idle = asyncio.Event()  # set by run() whenever it has nothing to do
        self._background: set[asyncio.Task[None]] = set()
        self.publisher = Publisher(node)
        self.notifier: AlertNotifier | None = None  # notifiers.Fanout (set by the server)
        self.realert_s: float | None = None  # --realert-ms
        self.burst = 0  # alerts fired and reminded in this run of back-to-back turns
        self.realerts: deque[tuple[float, Alert]] = deque()  # (send again at, alert), in order
        self.events: list[dict[str, Any]] | None = None  # this turn's, when subscribed
        self.timer_target: float | None = None
        self._timer_changed = asyncio.Event()
        # When this process started, if it recovered earlier state (alert texts
        # say a deadline was detected after a restart).
        self.restarted_at: float | None = None
        # Connections closed since the last turn, and (after a restart) the running
        # jobs whose connections the restart closed.
        self.closed_connections: list[int] = []
        self.orphaned_jobs: list[str] = []

    # -- called by connections -------------------------------------------
    def connection_closed(self, conn_id: int) -> None:
        """Its running jobs may have lost their worker: looked at in the next turn."""
        if self.node.store.reported_by.get(conn_id):
            self.closed_connections.append(conn_id)
            self.wake()

    def _lose_workers(self, now: float) -> None:
        store = self.node.store
        job_ids, self.orphaned_jobs = self.orphaned_jobs, []
        for conn_id in self.closed_connections:
            job_ids.extend(store.jobs_lost_with(conn_id))
        self.closed_connections = []
        if job_ids:
            armed = store.workers_gone(now, job_ids)
            writer = self.data_dir.writer if self.data_dir is not None else None
            if writer is not None and armed:
                writer.pending.append((WORKERS_GONE_RECORD, armed))

    def ready(self, sink: Sink) -> None:
        """``sink.inbox`` has requests; answer them in the next turn."""
        self.queue.append(sink)
        self._idle.clear()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def ask(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Protocol messages from inside the server; their replies, in order."""
        data = await self.ask_raw(bodies)
        return [orjson.loads(line) for line in data.splitlines()]

    async def ask_raw(
        self, bodies: list[dict[str, Any]], max_reply_bytes: int | None = None
    ) -> bytes:
        """The same, answered as the reply lines themselves (for HTTP to pass on)."""
        requests = [r for r in map(request_of, bodies) if r is not None]
        sink = BatchSink(requests, self, max_reply_bytes)
        self.ready(sink)
        return await sink.done

    # -- applying ------------------------------------------------------------
    def execute(
        self, inbox: deque[Request], now: float, budget: int = 1 << 62, sink: Sink | None = None
    ) -> bytes:
        """Apply requests from the inbox in order until it is empty or the replies
        reach ``budget`` bytes; returns the reply lines (journal records buffered)."""
        node = self.node
        node.sink = sink
        node.now = now
        node.store.reporter = sink.conn_id if sink is not None else None
        writer = self.data_dir.writer if self.data_dir is not None else None
        journal = writer.pending.append if writer is not None else None
        if self.events is None and node.subscriptions and self.publisher.wants_events():
            self.events = []
        events = self.events
        out: list[bytes] = []  # in the first request's frame: the bodies, joined at the end
        framed = inbox[0][0] if len(inbox) > 1 else None  # one reply: encoded as it is
        framed, newline, pad = _BARE if framed is None else joining(framed, node.node_id)
        size, queued, pop = 0, len(inbox), inbox.popleft
        names: list[str] = []  # counted once per call (Counter.update runs in C)
        received = names.append
        changed = False
        # --token: a connection that has not authenticated may only send auth.
        locked = node.token is not None and sink is not None and not sink.authenticated
        while inbox and size < budget:
            frame, msg_id, handler, args = pop()
            if handler is None:
                if locked:  # before auth, a malformed line is a failed attempt too
                    try:
                        auth.refuse(sink, "not authenticated")
                    except RequestError as exc:
                        args = exc
                body = error_body(msg_id, args.code, args.text)
                self.errors_replied += 1
            else:
                name = handler.name
                received(name)
                try:
                    if locked:
                        if name != "auth":
                            auth.refuse(sink, "not authenticated")
                        locked = False  # unless it fails, below
                    body = handler.apply(node, now, args, msg_id)
                    if handler.mutates:
                        changed = True
                        if journal is not None:
                            journal((handler.record, args))
                        if events is not None:
                            events.append(body)
                    elif events is None and name == "subscribe" and self.publisher.wants_events():
                        # Events pipelined after it, in this same turn, are its too.
                        events = self.events = []
                except RequestError as exc:
                    body = error_body(msg_id, exc.code, exc.text)
                    self.errors_replied += 1
                    if exc.code is Code.UNAUTHORIZED:
                        locked = True
                except Exception:
                    log.exception("bug while handling %s", handler.name)
                    # The command may have changed state before failing; journal it
                    # anyway so a replay ends in the same state as this process.
                    if journal is not None and handler.mutates:
                        journal((handler.record, args))
                    text = f"internal error while handling {handler.name}; logged"
                    body = error_body(msg_id, Code.CRASH, text)
                    self.errors_replied += 1
            try:
                if frame is framed:
                    line = _dumps(body, option=newline)
                else:  # another framing: the replies so far joined in theirs, then line by line
                    if framed is not None:
                        out, (framed, newline, pad) = [joined(out, framed, node.node_id)], _BARE
                    line = encode(frame, body, node.node_id)  # (init may change the id)
            except (TypeError, orjson.JSONEncodeError):
                log.exception("bug: reply could not be encoded")
                out, (framed, newline, pad) = [joined(out, framed, node.node_id)], _BARE
                line = _dumps(error_body(msg_id, Code.CRASH, _ENCODING_BUG), option=_NEWLINE)
            out.append(line)
            size += len(line) + pad
        node.store.settle()  # what the runs add that changes no reply (analytics.COMPLETED_RUN)
        self.requests_handled += queued - len(inbox)
        _count_elements(self.received_by_type, names)  # Counter.update's C loop, no ABC check
        if changed:
            self.changes += 1
        return b"".join(out) if framed is None else joined(out, framed, node.node_id)

    def publish(self, now: float) -> None:
        """After the turn is journaled and answered: alerts and events go out."""
        events, self.events = self.events, None
        alerts = self.node.store.drain_alerts()
        self.publisher.publish(alerts, events or [], now)
        if alerts and self.notifier is not None:
            self.notifier.submit(alerts)
        if self.realert_s is not None:
            for alert in alerts:
                if alert.resolved_at is None:
                    self.realerts.append((now + self.realert_s, alert))

    def remind(self, now: float) -> None:
        """``--realert-ms``: send alerts that are still firing again (not journaled:
        a reminder changes nothing)."""
        realerts = self.realerts
        again: list[Alert] = []
        while realerts and realerts[0][0] <= now and len(again) < EXPIRE_SLICE:
            _, alert = realerts.popleft()
            if alert.resolved_at is None:
                again.append(alert)
        if again:
            self.burst += len(again)
            assert self.realert_s is not None
            self.publisher.publish(again, [], now)
            if self.notifier is not None:
                self.notifier.submit(again, alertmanager=False)  # it has its own resend
            realerts.extend((now + self.realert_s, alert) for alert in again)

    # -- deadlines -------------------------------------------------------------
    def due(self, now: float) -> bool:
        """A deadline (or a reminder) has come."""
        return self.timer_target is not None and self.timer_target <= now

    def expire(self, now: float) -> None:
        """Fire what is due, at most EXPIRE_SLICE deadlines a turn (the rest in the
        next turns, so a storm of deadlines never stalls the other connections);
        journaled as a tick that says how many, since it changes state."""
        store = self.node.store
        store_due = store.next_deadline(SETTLE_BUDGET)
        if store_due is None or store_due > now:
            return
        handled = store.expire(now, self.restarted_at, EXPIRE_SLICE, SETTLE_BUDGET)
        self.burst += handled
        writer = self.data_dir.writer if self.data_dir is not None else None
        if handled and writer is not None:
            writer.pending.append((TICK_RECORD, [self.restarted_at, handled]))

    def retarget(self) -> None:
        target = self.node.store.next_deadline(SETTLE_BUDGET)
        if self.realerts and (target is None or self.realerts[0][0] < target):
            target = self.realerts[0][0]
        if target != self.timer_target:
            self.timer_target = target
            self._timer_changed.set()

    def wake(self) -> None:
        """Run a turn now: the timer says a deadline is due (or a test moved the clock)."""
        self._idle.clear()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def deadline_timer(self) -> None:
        """One timer for the earliest deadline of all; the engine moves it."""
        while True:
            self._timer_changed.clear()
            target = self.timer_target
            if target is None:
                await self._timer_changed.wait()
                continue
            delay = target - self.clock.now()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._timer_changed.wait(), delay)
                continue
            self.wake()
            # The engine expires it and moves the target; look again shortly in
            # case the clock it reads had not quite reached the deadline.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), 0.01)

    # -- the task --------------------------------------------------------------
    def _has_work(self) -> bool:
        return bool(
            self.queue
            or self.due(self.clock.now())
            or self.closed_connections
            or self.orphaned_jobs
        )

    def _may_idle(self) -> bool:
        """Nothing of this engine's is still in flight (``wait_idle`` may return)."""
        return True

    async def _wait_for_work(self) -> bool:
        """Idle until there is work; False once stopping with none left. (The
        caller asks ``_has_work`` first: a busy engine never awaits here.)"""
        while not self._has_work():
            if self._may_idle():
                self._idle.set()
                if self._stopping:
                    return False
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            self._wakeup = None
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        data_dir = self.data_dir
        self.retarget()
        while self._has_work() or await self._wait_for_work():
            sinks, self.queue = self.queue, deque()
            self.turns += 1
            self.connection_turns += len(sinks)
            now = self.clock.now()
            if self.closed_connections or self.orphaned_jobs:
                self._lose_workers(now)
                self.changes += 1
            if self.due(now):
                self.expire(now)
                self.remind(now)
                self.changes += 1
            replies = [(s, self.execute(s.inbox, now, TURN_OUTPUT_BUDGET, s)) for s in sinks]
            if data_dir is not None and data_dir.writer is not None:
                writer = data_dir.writer
                if writer.write(now) and self.fsync_always:
                    # Batches keep queueing while this thread fsyncs: the next turn
                    # commits all of them with one fsync.
                    await loop.run_in_executor(None, writer.fsync)
                if data_dir.should_compact():
                    self.track(data_dir.compact_in_background(self.node))
            for sink, data in replies:
                sink.deliver(data)
            self.publish(now)
            self.retarget()
            if self.due(self.clock.now()):
                # More deadlines are due than one turn fires: let the connections'
                # reads in before the next slice.
                await asyncio.sleep(0)
            elif self.burst:
                if self.burst >= FREEZE_AFTER:
                    gc.freeze()
                self.burst = 0

    def track(self, task: asyncio.Future[None]) -> None:
        self._background.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

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
