"""``--celery URL``: watch a Celery cluster from its event stream, as Flower does,
with no change to its tasks or workers.

Celery's receiver runs in a child process (``celery_receiver``), which writes
each event as a JSON line. Here, on the event loop, one task reads what piled
up (at most ``READ_MAX`` bytes at a time), translates it (``celery_events``)
and hands it to the engine as one batch of protocol messages, waits for the
replies, then reads again: a flood makes batches bigger, never the store's
queue longer; the pipe and the child's bounded queue hold the rest.

While the receiver is disconnected no heartbeat can arrive, so the workers it
knew are paused (``pause_job`` with an ``until`` it renews, so a pause never
outlives jobmon) and resumed on reconnect; the cluster's own job,
``celery-broker:<url>``, beats while connected and alerts ``missed_heartbeat``
when the feed has been gone for ``BROKER_TTL_S``. When jobmon stops, the
workers are paused for ``RESTART_PAUSE_S``: the heartbeats they send while it
is down are lost, and a restart must not call every one of them missing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..batch import BatchSink
from ..clock import iso
from ..model import Status
from ..protocol import decode
from .celery_events import Translator, broker_job, redact, worker_job

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("jobmon.celery")

# Bytes of events (some 700) translated and handed to the engine at a time: about
# one engine turn's reply budget, and a few ms of the loop.
READ_MAX = 256 << 10
TICK_S = 5.0  # the broker job's heartbeat; pauses renewed while disconnected
BROKER_TTL_S = 15.0
PAUSE_S = 15.0
RESTART_PAUSE_S = 60.0  # the workers' pause when jobmon stops
RESTART_BACKOFF_S = (0.5, 10.0)
STOP_TIMEOUT_S = 5.0


class CeleryWatcher:
    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.cluster = redact(url)
        self.name = f"celery {self.cluster}"
        self.engine = engine
        self.translator = Translator(worker_live=self._worker_live)
        self.connected = False
        self.paused: set[str] = set()  # worker jobs this watcher paused
        # received, dropped (by the child), applied (events), messages and
        # refused (to the engine), child restarts
        self.counts = collections.Counter[str](
            dict.fromkeys(("received", "dropped", "applied", "messages", "refused"), 0)
        )
        self._child: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._tail = b""

    def _worker_live(self, job_id: str) -> bool:
        job = self.engine.node.store.jobs.get(job_id)
        return job is not None and job.status is Status.RUNNING

    # -- the seam ----------------------------------------------------------
    async def start(self) -> None:
        seeded = self.translator.seed(self.engine.node.store.live_runs)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name="jobmon-celery-follow"))
        self._tasks.append(loop.create_task(self._tick(), name="jobmon-celery-tick"))
        log.info("watching", extra={"fields": {"cluster": self.cluster, "runs_known": seeded}})

    async def stop(self) -> None:
        """Close the child's stdin: it stops receiving and writes what it had;
        that is read and applied before this returns."""
        started = time.perf_counter()
        self._stopping = True
        if not self._tasks:
            return  # never started (the server failed to start before it)
        self._tasks[1].cancel()
        child = self._child
        follow = self._tasks[0]
        if child is None or child.returncode is not None:
            follow.cancel()  # between two children: nothing to read
        elif child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(follow), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("celery receiver did not stop in time; killed")
            if child is not None and child.returncode is None:
                child.kill()
            follow.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Heartbeats sent while jobmon is down are lost (pub/sub): a restart
        # must not call every worker missing.
        await self._pause(RESTART_PAUSE_S)
        fields: dict[str, Any] = {"cluster": self.cluster, **self.counts}
        fields["unnamed_task_events"] = self.translator.unnamed
        fields["seconds"] = round(time.perf_counter() - started, 3)
        log.info("stopped watching", extra={"fields": fields})

    def metrics(self) -> list[Metric]:
        events = CounterMetricFamily(
            "jobmon_celery_events",
            "Celery events (--celery), by cluster and outcome: received from the broker, "
            "dropped (jobmon was too far behind), applied to the store.",
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

    # -- the child -----------------------------------------------------------
    async def _follow(self) -> None:
        """Run the receiver; start it again if it dies (not when stopping)."""
        backoff, backoff_max = RESTART_BACKOFF_S
        while True:
            started = time.monotonic()
            code = await self._run_child()
            if self._stopping:
                return
            if self.connected:
                await self._connection(False, f"receiver exited ({code})")
            log.error(
                "celery receiver exited; starting it again",
                extra={"fields": {"cluster": self.cluster, "code": code}},
            )
            self.counts["child_restarts"] += 1
            if time.monotonic() - started > backoff_max:
                backoff = RESTART_BACKOFF_S[0]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)

    async def _run_child(self) -> int | None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        child = self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jobmon.integrations.celery_receiver",
            level,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=READ_MAX,
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(self.url.encode() + b"\n")  # not in argv, where ps shows it
        if self._stopping:
            child.stdin.close()
        self._tail = b""
        read = child.stdout.read
        while chunk := await read(READ_MAX):
            await self._lines(chunk)
        return await child.wait()

    async def _lines(self, chunk: bytes) -> None:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        bodies: list[dict[str, Any]] = []
        translate = self.translator.translate
        loads = orjson.loads
        events = 0
        for line in lines:
            try:
                event = loads(line)
            except orjson.JSONDecodeError:
                self.counts["unreadable"] += 1
                continue
            if "jobmon" in event:  # the child's status
                self.counts["received"] = event["received"]
                self.counts["dropped"] = event["dropped"]
                if event["connected"] != self.connected:
                    if bodies:
                        await self._ask(bodies)  # in order: what came before the change
                        bodies = []
                    await self._connection(event["connected"], event["why"])
                continue
            events += 1
            bodies.extend(translate(event))
        self.counts["applied"] += events
        if bodies:
            await self._ask(bodies)

    async def _connection(self, connected: bool, why: str) -> None:
        """The broker job beats at both ends of an outage (it alerts when one
        lasts BROKER_TTL_S); the workers are paused or resumed."""
        self.connected = connected
        if connected:
            self.counts["connects"] += 1
        await self._ask([self._broker_beat()])
        await self._pause_or_resume(connected)

    def _broker_beat(self) -> dict[str, Any]:
        job_id = broker_job(self.url)[:256]
        return {"type": "heartbeat", "job_id": job_id, "ttl_ms": round(BROKER_TTL_S * 1000)}

    async def _ask(self, bodies: list[dict[str, Any]]) -> None:
        """As ``Engine.ask``, minus reading back replies when none is an error.
        Its events (run_id, event_id, at) take the fast path (``protocol.decode``)."""
        self.counts["messages"] += len(bodies)
        requests = [r for r in (decode(orjson.dumps(b)) for b in bodies) if r is not None]
        sink = BatchSink(requests, self.engine)
        self.engine.ready(sink)
        data = await sink.done
        if b'"type":"error"' not in data:
            return
        replies = [orjson.loads(line) for line in data.splitlines()]
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

    # -- the cluster's own job, and the pauses ------------------------------------
    async def _tick(self) -> None:
        """The broker job beats while connected; pauses are renewed while not."""
        # From start, a connection is expected within the broker job's ttl.
        await self._ask([self._broker_beat()])
        while True:
            await asyncio.sleep(TICK_S)
            if self.connected:
                await self._ask([self._broker_beat()])
            elif self.paused:
                await self._pause_or_resume(False)

    async def _pause_or_resume(self, connected: bool) -> None:
        if connected:
            bodies = [{"type": "resume_job", "job_id": job} for job in sorted(self.paused)]
            self.paused.clear()
            if bodies:
                await self._ask(bodies)
        else:
            await self._pause(PAUSE_S)

    async def _pause(self, seconds: float) -> None:
        """No worker can be heard (disconnected, or jobmon stopping), so none is
        called missing for ``seconds``: the pause lapses by itself, unless renewed."""
        jobs = self.engine.node.store.jobs
        until = iso(self.engine.clock.now() + seconds)
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
