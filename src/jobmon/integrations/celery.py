"""``--celery URL``: watch a Celery cluster from its event stream, as Flower does,
with no change to its tasks or workers.

Three threads of ours per cluster, none of which ever waits for the store:

- the receiver runs Celery's own ``EventReceiver`` (it blocks), reconnecting
  with backoff across broker restarts. Its handler only appends to a bounded
  deque: past ``QUEUE_MAX`` events it drops and counts, because a Redis broker
  cuts off a subscriber that falls 32 MB behind, which would lose more;
- the enabler asks the workers to send task events (``enable_events``, so they
  need no ``-E``): every ``ENABLE_EVERY_S`` to all, as Flower does (a worker
  that starts later misses a broadcast), and at once, until it answers, to a
  worker heard of for the first time;
- on the event loop, one task translates what piled up (``celery_events``) and
  hands it to the engine as one batch of protocol messages, waits for the
  replies, then takes the next: a flood makes batches bigger, never the store's
  queue longer.

While the receiver is disconnected no heartbeat can arrive, so the workers it
knew are paused (``pause_job`` with an ``until`` it renews, so a pause never
outlives jobmon) and resumed on reconnect; the cluster's own job,
``celery-broker:<url>``, beats while connected and alerts ``missed_heartbeat``
when the feed has been gone for ``BROKER_TTL_S``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.events.receiver import EventReceiver
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..clock import iso
from . import celery_events
from .celery_events import Translator, broker_job, redact, worker_job

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("jobmon.celery")

QUEUE_MAX = 100_000  # events waiting for the loop; past it they are dropped (counted)
BATCH_MAX = 2000  # events translated and handed to the engine at a time
ENABLE_EVERY_S = 5.0  # Flower's events_enable_interval
TICK_S = 5.0  # the broker job's heartbeat; pauses renewed while disconnected
BROKER_TTL_S = 15.0
PAUSE_S = 15.0
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
JOIN_TIMEOUT_S = 5.0


class _Receiver(EventReceiver):  # type: ignore[misc]
    """Timestamps as the worker took them: Celery's receiver otherwise shifts
    them by the difference between the worker's time zone and ours."""

    def event_from_message(self, body: Any, localize: bool = False, **kwargs: Any) -> Any:
        return super().event_from_message(body, False, **kwargs)


class CeleryWatcher:
    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.cluster = redact(url)
        self.name = f"celery {self.cluster}"
        self.engine = engine
        self.app = Celery(broker=url, set_as_current=False)
        self.app.conf.broker_connection_timeout = 2.0
        self.app.conf.broker_connection_retry_on_startup = False
        self.translator = Translator()
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.connected = False
        self.unconfirmed: set[str] = set()  # workers not yet known to send task events
        self.paused: set[str] = set()  # worker jobs this watcher paused
        # received, dropped, applied (events); messages, refused (to the engine); connects
        self.counts = collections.Counter[str](
            dict.fromkeys(("received", "dropped", "applied", "messages", "refused", "connects"), 0)
        )
        self._stop = threading.Event()
        self._enable_now = threading.Event()
        self._receiver: _Receiver | None = None
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._last_problem = ""

    # -- the seam ----------------------------------------------------------
    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        seeded = self.translator.seed(self.engine.node.store.live_runs)
        for target, what in ((self._receive, "receiver"), (self._enable, "enabler")):
            thread = threading.Thread(target=target, name=f"jobmon-celery-{what}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._tasks.append(loop.create_task(self._consume(), name="jobmon-celery-consume"))
        self._tasks.append(loop.create_task(self._tick(), name="jobmon-celery-tick"))
        log.info("watching", extra={"fields": {"cluster": self.cluster, "runs_known": seeded}})

    async def stop(self) -> None:
        started = time.perf_counter()
        self._stop.set()
        self._enable_now.set()
        receiver = self._receiver
        if receiver is not None:
            receiver.should_stop = True  # capture() looks at it about once a second
        loop = asyncio.get_running_loop()
        for thread in self._threads:
            await loop.run_in_executor(None, thread.join, JOIN_TIMEOUT_S)
        stuck = [t.name for t in self._threads if t.is_alive()]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._apply_queued()  # what had been received still reaches the journal
        fields = {"cluster": self.cluster, **self.counts}
        fields["unnamed_task_events"] = self.translator.unnamed
        fields["seconds"] = round(time.perf_counter() - started, 3)
        if stuck:
            fields["threads_not_stopped"] = stuck
        log.info("stopped watching", extra={"fields": fields})

    def metrics(self) -> list[Metric]:
        events = CounterMetricFamily(
            "jobmon_celery_events",
            "Celery events (--celery), by cluster and outcome: received from the broker, "
            "dropped (the loop was too far behind), applied to the store.",
            labels=["cluster", "outcome"],
        )
        for outcome in ("received", "dropped", "applied"):
            events.add_metric([self.cluster, outcome], self.counts[outcome])
        connected = GaugeMetricFamily(
            "jobmon_celery_connected",
            "1 while the Celery event receiver is connected to the broker.",
            labels=["cluster"],
        )
        connected.add_metric([self.cluster], 1 if self.connected else 0)
        return [events, connected]

    # -- the receiver thread -----------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """Celery's handler, on the receiver thread: O(1), never waits."""
        self.counts["received"] += 1
        queue = self.queue
        if len(queue) >= QUEUE_MAX:
            self.counts["dropped"] += 1
            return
        queue.append(event)
        if not self._wake_pending:
            self._wake_pending = True
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False  # before the queue is read: no wake-up is lost
        self._ready.set()

    def _receive(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    # Fails at once when the broker refuses (building a receiver
                    # first would block about 6 s in kombu's own retries).
                    conn.ensure_connection(max_retries=0)
                    receiver = _Receiver(conn, handlers={"*": self._on_event}, app=self.app)
                    receiver.connect_max_retries = 0
                    self._receiver = receiver
                    if self._stop.is_set():
                        break
                    self._connection_changed(True, "connected")
                    backoff = BACKOFF_FIRST_S
                    # wakeup: every worker is asked for a heartbeat at once.
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # redis ConnectionError, kombu OperationalError, OSError
                if self._stop.is_set():
                    break
                self._connection_changed(False, f"{type(exc).__name__}: {exc}")
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.connected = False

    def _connection_changed(self, connected: bool, why: str) -> None:
        was = self.connected
        self.connected = connected
        if connected:
            self.counts["connects"] += 1
            with_workers = self.translator.online_workers()
            self.unconfirmed.update(with_workers)
            self._enable_now.set()
        if connected != was or (not connected and why != self._last_problem):
            level = logging.INFO if connected else logging.WARNING
            log.log(
                level,
                "broker connected" if connected else "broker unreachable; retrying",
                extra={"fields": {"cluster": self.cluster, "why": why}},
            )
        self._last_problem = why
        if self._loop is not None and connected != was:
            self._loop.call_soon_threadsafe(self._ready.set)  # pause or resume now

    # -- the enabler thread ------------------------------------------------
    def _enable(self) -> None:
        next_broadcast = 0.0
        while not self._stop.is_set():
            pending = sorted(self.unconfirmed)
            try:
                if self.connected and pending:
                    self._enable_some(pending)
                elif self.connected and time.monotonic() >= next_broadcast:
                    self.app.control.enable_events()
                    next_broadcast = time.monotonic() + ENABLE_EVERY_S
            except Exception as exc:  # the broker went away meanwhile: next time
                log.debug("enable_events failed: %s", exc)
            if self.unconfirmed:
                wait = 0.5
            elif self.connected:
                wait = max(0.05, next_broadcast - time.monotonic())
            else:
                wait = ENABLE_EVERY_S  # a connection sets _enable_now
            self._enable_now.wait(wait)
            self._enable_now.clear()

    def _enable_some(self, hosts: list[str]) -> None:
        """Ask these workers, and wait a second for their answers: a worker that
        just came online may not listen yet, so it is asked again until it says."""
        replies = self.app.control.enable_events(destination=hosts, reply=True, timeout=1.0)
        for reply in replies or ():
            for host, answer in reply.items():
                self.unconfirmed.discard(host)
                if isinstance(answer, dict) and "ok" not in answer:
                    log.warning(
                        "worker will not send task events",
                        extra={"fields": {"cluster": self.cluster, "worker": host, **answer}},
                    )

    # -- on the event loop ---------------------------------------------------
    async def _consume(self) -> None:
        was_connected = False
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self.connected != was_connected:
                was_connected = self.connected
                await self._pause_or_resume(was_connected)
            await self._apply_queued()

    async def _apply_queued(self) -> None:
        queue = self.queue
        translate = self.translator.translate
        while queue:
            n = min(len(queue), BATCH_MAX)
            bodies: list[dict[str, Any]] = []
            for _ in range(n):
                event = queue.popleft()
                if event.get("type") in ("worker-online", "worker-heartbeat"):
                    self._note_worker(event)
                bodies.extend(translate(event))
            self.counts["applied"] += n
            if bodies:
                await self._ask(bodies)

    def _note_worker(self, event: dict[str, Any]) -> None:
        known = self.translator.workers.get(event["hostname"])
        if event["type"] == "worker-online" or known is None or known[1] != event.get("pid"):
            self.unconfirmed.add(event["hostname"])  # (re)started: it must be asked
            self._enable_now.set()

    async def _ask(self, bodies: list[dict[str, Any]]) -> None:
        self.counts["messages"] += len(bodies)
        replies = await self.engine.ask(bodies)
        refused = [(b, r) for b, r in zip(bodies, replies, strict=False) if r["type"] == "error"]
        if refused:
            self.counts["refused"] += len(refused)
            body, reply = refused[0]
            log.warning(
                "messages from Celery events refused",
                extra={
                    "fields": {
                        "cluster": self.cluster,
                        "refused": len(refused),
                        "first": str(body),
                        "reply": str(reply),
                    }
                },
            )

    async def _tick(self) -> None:
        """The broker job beats while connected; pauses are renewed while not."""
        job_id = broker_job(self.url)[:256]
        ttl = round(BROKER_TTL_S * 1000)
        # From start, a connection is expected within the broker job's ttl.
        await self._ask([{"type": "heartbeat", "job_id": job_id, "ttl_ms": ttl}])
        while True:
            await asyncio.sleep(TICK_S)
            if self.connected:
                await self._ask([{"type": "heartbeat", "job_id": job_id, "ttl_ms": ttl}])
            elif self.paused:
                await self._pause_or_resume(False)

    async def _pause_or_resume(self, connected: bool) -> None:
        """Disconnected: no worker can be heard, so none is called missing; the
        pause lapses by itself PAUSE_S after the last renewal."""
        bodies: list[dict[str, Any]]
        if connected:
            bodies = [{"type": "resume_job", "job_id": job} for job in sorted(self.paused)]
            self.paused.clear()
        else:
            jobs = self.engine.node.store.jobs
            until = iso(self.engine.clock.now() + PAUSE_S)
            bodies = []
            for host in self.translator.online_workers():
                job_id = worker_job(host)[:256]
                job = jobs.get(job_id)
                monitor = job.monitor if job is not None else None
                if monitor is None or (monitor.paused and job_id not in self.paused):
                    continue  # nothing to watch, or paused by someone else
                self.paused.add(job_id)
                bodies.append({"type": "pause_job", "job_id": job_id, "until": until})
        if bodies:
            await self._ask(bodies)


__all__ = ["CeleryWatcher", "celery_events"]
