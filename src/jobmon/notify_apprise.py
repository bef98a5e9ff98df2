"""Alerts through Apprise (``--notify [NAME=]URL``): email (``mailto://``),
Slack, Teams, Discord, Telegram, PagerDuty, Opsgenie, ntfy, Matrix, JSON
posts and a hundred more, by URL.

An unnamed URL gets every alert; a named channel gets the alerts of the jobs
whose ``channels`` (register_job, or a check's) name it. Each message is
written when the alert is submitted, in the store task, from the job's state
then: the title names the job, the kind and firing or resolved; the body what
was expected, what happened, and a link to the job on the dashboard
(``--public-url``). Each channel has a bounded queue and one delivery task;
Apprise's ``notify`` blocks, so it runs in threads of its own (never the
store's, nor the pool the journal's fsyncs use). Failed deliveries are tried
again with exponential backoff, logged, and counted for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import schedule
from .channels import Channel
from .clock import iso
from .model import Alert, Monitor
from .notifiers import Countdown, Gate, OnDone
from .notify import ATTEMPTS, QUEUE_LIMIT

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("jobmon.notify")
OUTCOMES = ("delivered", "failed", "dropped")
CALL_TIMEOUT_S = 30.0


@dataclass
class Message:
    title: str
    body: str
    firing: bool
    keys: list[str] | None = None  # the alert's key in a cluster (notifiers.Countdown)


class Outbox:
    """One channel: its Apprise object, queue, delivery task and counters."""

    def __init__(self, channel: Channel, apprise_obj: Any) -> None:
        self.channel = channel
        self.apprise = apprise_obj
        self.label = channel.name or f"unnamed:{channel.kind}"
        self.queue: asyncio.Queue[Message] | None = None
        self.counts = dict.fromkeys(OUTCOMES, 0)


def check_urls(channels: list[Channel]) -> list[Any]:
    """One Apprise object per channel; ValueError (at start) for a URL it cannot use."""
    import apprise

    objects = []
    for channel in channels:
        obj = apprise.Apprise()
        if not obj.add(channel.url):
            raise ValueError(
                f"--notify {channel.name + '=' if channel.name else ''}{channel.kind}://...: "
                "Apprise does not understand this URL (see its list of services)"
            )
        objects.append(obj)
    return objects


class AppriseNotifier:
    def __init__(
        self,
        channels: list[Channel],
        store: Store,
        base_url: Callable[[], str],
        backoff: float = 0.5,
    ) -> None:
        self.outboxes = [
            Outbox(c, obj) for c, obj in zip(channels, check_urls(channels), strict=True)
        ]
        self.store = store
        self.base_url = base_url
        self.backoff = backoff
        self._pool = ThreadPoolExecutor(
            max_workers=min(8, max(1, len(channels))), thread_name_prefix="jobmon-apprise"
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.gate: Gate | None = None  # a cluster's leader-only delivery (notifiers)
        self._countdown = Countdown()

    @property
    def on_done(self) -> OnDone | None:
        return self._countdown.on_done

    @on_done.setter
    def on_done(self, callback: OnDone | None) -> None:
        self._countdown.on_done = callback

    def remember_firing(self, firing: list[Alert]) -> None:
        pass  # Apprise's services keep no list of open alerts to refresh

    async def start(self, firing: list[Alert]) -> None:
        for outbox in self.outboxes:
            outbox.queue = asyncio.Queue()
            self._tasks.append(asyncio.create_task(self._deliver(outbox)))

    def submit(
        self, alerts: list[Alert], alertmanager: bool = True, keys: list[str] | None = None
    ) -> None:
        for index, alert in enumerate(alerts):
            wanted = self._channels_of(alert.job_id)
            chosen = [
                outbox
                for outbox in self.outboxes
                if outbox.channel.name is None or outbox.channel.name in wanted
            ]
            key = None if keys is None else [keys[index]]
            if key is not None:
                self._countdown.expect(key, len(chosen))
            if chosen:
                message = self.message(alert)
                message.keys = key
                for outbox in chosen:
                    self._put(outbox, message)

    def _channels_of(self, job_id: str) -> list[str]:
        job = self.store.jobs.get(job_id)
        monitor = job.monitor if job is not None else None
        return (monitor.channels or []) if monitor is not None else []

    def _put(self, outbox: Outbox, message: Message) -> None:
        queue = outbox.queue
        if queue is None:
            return
        if queue.qsize() >= QUEUE_LIMIT:
            self._countdown.finished(queue.get_nowait().keys)
            outbox.counts["dropped"] += 1
            log.warning(
                "notification queue full; oldest dropped",
                extra={"fields": {"channel": outbox.label}},
            )
        queue.put_nowait(message)

    # -- the words ----------------------------------------------------------------
    def message(self, alert: Alert) -> Message:
        job = self.store.jobs.get(alert.job_id)
        monitor = job.monitor if job is not None else None
        firing = alert.resolved_at is None
        state = "firing" if firing else "resolved"
        when = (
            f"firing since {iso(alert.fired_at)}"
            if firing
            else f"resolved at {iso(alert.resolved_at)} (fired at {iso(alert.fired_at)})"
        )
        max_retries = self.store.max_retries_of(job)
        # A Healthchecks check is named by its name (its job_id may be its uuid).
        checks = self.store.checks
        check = checks.by_uuid.get(checks.by_job.get(alert.job_id, ""))
        name = check.name if check is not None and check.name else alert.job_id
        lines = [f"Check: {name} (uuid {check.uuid})"] if check is not None else []
        lines += [
            f"Job: {alert.job_id}",
            f"Alert: {alert.kind}, {when}",
            f"Expected: {expected(alert.kind, monitor, max_retries)}",
            f"What happened: {alert.text}",
        ]
        if alert.labels:
            lines.append(
                "Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
            )
        lines.append(
            f"Dashboard: {self.base_url().rstrip('/')}/#job={quote(alert.job_id, safe='')}"
        )
        return Message(f"[jobmon] {name}: {alert.kind} {state}", "\n".join(lines), firing)

    # -- delivery -----------------------------------------------------------------
    async def _deliver(self, outbox: Outbox) -> None:
        assert outbox.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            message = await outbox.queue.get()
            delay = self.backoff
            for attempt in range(1, ATTEMPTS + 1):
                if self.gate is not None and not self.gate():
                    self._countdown.abandon(message.keys)  # the next leader sends it
                    break
                try:
                    ok = await loop.run_in_executor(self._pool, self._notify, outbox, message)
                    reason = "Apprise reported the delivery failed"
                except Exception as exc:  # noqa: BLE001 - a plugin's bug is a failed delivery
                    ok, reason = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    outbox.counts["delivered"] += 1
                    self._countdown.finished(message.keys)
                    break
                log.warning(
                    "notification not delivered",
                    extra={
                        "fields": {"channel": outbox.label, "attempt": attempt, "reason": reason}
                    },
                )
                if attempt < ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay *= 2
            else:
                outbox.counts["failed"] += 1
                self._countdown.finished(message.keys)
                log.error(
                    "notification given up",
                    extra={"fields": {"channel": outbox.label, "attempts": ATTEMPTS}},
                )

    @staticmethod
    def _notify(outbox: Outbox, message: Message) -> bool:
        import apprise

        kind = apprise.NotifyType.FAILURE if message.firing else apprise.NotifyType.SUCCESS
        result = outbox.apprise.notify(
            body=message.body,
            title=message.title,
            notify_type=kind,
            body_format=apprise.NotifyFormat.TEXT,
            timeout=CALL_TIMEOUT_S,
        )
        return bool(result)

    def counts(self) -> list[tuple[str, str, int]]:
        """(channel, outcome, count) for /metrics."""
        return [(o.label, outcome, n) for o in self.outboxes for outcome, n in o.counts.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        unsent = sum(o.queue.qsize() for o in self.outboxes if o.queue is not None)
        totals = {outcome: sum(o.counts[outcome] for o in self.outboxes) for outcome in OUTCOMES}
        log.info("apprise notifications stopped", extra={"fields": {**totals, "unsent": unsent}})


def expected(kind: str, monitor: Monitor | None, max_retries: int) -> str:
    """What the job had promised, in words, for an alert of this kind."""
    m = monitor
    if kind == "failed":
        return f"a successful run (within {max_retries} retries)"
    if kind == "missed_heartbeat" and m is not None:
        return f"a heartbeat at least every {m.heartbeat_ttl_ms} ms"
    if kind == "missed_run" and m is not None and m.schedule is not None:
        return f"a run {schedule.describe(m.schedule)}, with {m.grace_ms} ms grace"
    if kind == "overrun" and m is not None:
        return f"each run to finish within {m.max_runtime_ms} ms"
    if kind == "stalled" and m is not None:
        return f"progress at least every {m.stall_ms} ms while running"
    if kind == "worker_lost":
        return "the worker that reported the run to stay connected, or report again"
    if kind == "memory":
        return "each run to stay within its memory limit"
    if kind == "slow_run":
        return "runs no slower than --slow-run-factor x the job's p95 duration"
    return "what the job promised"
