"""Alerts to the outside: webhooks and Prometheus Alertmanager, off the store task.

The engine hands every fired or resolved alert to ``Notifier.submit``, which
only queues it (a bounded queue per target; when full, the oldest is dropped
and counted). One task per target posts with retries and exponential backoff;
failures are logged and counted, never waited for by the store.

In a cluster (``--redis``) only the leader sends: ``gate`` is asked before every
attempt (a node that lost its lease, or froze past it, drops what it holds),
and ``on_done`` hears which alerts every target has finished with (delivered,
or given up on after its retries), so the leader can record them as sent.
Every payload carries the alert id, so a receiver can drop a repeat.

Alertmanager (v2 API, ``POST /api/v2/alerts``) expects its clients to resend
firing alerts periodically and resolved ones (with ``endsAt``) for a while
after, so that a restarted Alertmanager learns them again: every
``resend_interval`` seconds the whole active set is posted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .clock import iso
from .model import Alert, AlertState
from .notifiers import Confirming

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("jobmon.notify")

ALERTNAMES = {
    "failed": "JobFailed",
    "missed_heartbeat": "JobMissedHeartbeat",
    "missed_run": "JobMissedRun",
    "overrun": "JobOverrun",
    "stalled": "JobStalled",
    "worker_lost": "JobWorkerLost",
    "memory": "JobMemoryExceeded",
    "slow_run": "JobSlowRun",
}
QUEUE_LIMIT = 10_000
ATTEMPTS = 6  # 0.5 + 1 + 2 + 4 + 8 s of backoff between them
RESOLVED_RESEND_SECONDS = 300.0


class Target:
    """One destination: a queue, a delivery task, and its counters."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: deque[Any] = deque()
        self.ready = asyncio.Event()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def put(
        self, payload: Any, keys: list[str] | None = None, ticket: int = 0
    ) -> tuple[list[str] | None, int]:
        """Queue it; the keys (and ticket) of the payload dropped to make room, if any."""
        lost: tuple[list[str] | None, int] = (None, 0)
        if len(self.queue) >= QUEUE_LIMIT:
            _, lost_keys, lost_ticket = self.queue.popleft()
            lost = (lost_keys, lost_ticket)
            self.dropped += 1
            log.warning(
                "notification queue full; oldest dropped", extra={"fields": {"url": self.url}}
            )
        self.queue.append((payload, keys, ticket))
        self.ready.set()
        return lost


class Notifier(Confirming):
    def __init__(
        self,
        webhooks: list[str],
        alertmanager: str | None,
        resend_interval: float = 60.0,
        backoff: float = 0.5,
    ) -> None:
        self.webhooks = [Target(url) for url in webhooks]
        self.alertmanager = (
            Target(alertmanager.rstrip("/") + "/api/v2/alerts") if alertmanager else None
        )
        self.resend_interval = resend_interval
        self.backoff = backoff
        # Alertmanager's view: alert id -> (payload, resend until; None while firing).
        self.active: dict[int, tuple[dict[str, Any], float | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        super().__init__()  # a cluster's leader-only delivery (see the module's doc)

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks) or self.alertmanager is not None

    def targets(self) -> list[Target]:
        return [*self.webhooks, *([self.alertmanager] if self.alertmanager else [])]

    async def start(self, firing: list[Alert]) -> None:
        if not self.enabled:
            return
        import aiohttp  # only when there is somewhere to send to: it costs 0.15 s at start

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for target in self.targets():
            self._tasks.append(asyncio.create_task(self._deliver(target)))
        if self.alertmanager is not None:
            self.remember_firing(firing)  # after a restart Alertmanager hears them again
            self._tasks.append(asyncio.create_task(self._resend()))
            self._post_active()

    def remember_firing(self, firing: list[Alert]) -> None:
        if self.alertmanager is not None:
            for alert in firing:
                self.active[alert.alert_id] = (alertmanager_payload(alert), None)

    def submit(
        self, alerts: list[Alert], alertmanager: bool = True, keys: list[str] | None = None
    ) -> None:
        """Called by the engine after a turn: queue, never wait. ``keys`` (one per
        alert): report them to ``on_done`` once every target is done with them."""
        if not alerts:
            return
        ticket = 0
        if keys is not None:
            targets = len(self.webhooks) + (1 if self.alertmanager and alertmanager else 0)
            ticket = self.countdown.expect(keys, targets)
            if not targets:
                return
        for target in self.webhooks:
            for index, alert in enumerate(alerts):
                key = None if keys is None else [keys[index]]
                self.countdown.finished(*target.put(alert.to_wire(), key, ticket))
        if self.alertmanager is not None and alertmanager:
            now = time.time()
            for alert in alerts:
                until = None if alert.state is AlertState.FIRING else now + RESOLVED_RESEND_SECONDS
                self.active[alert.alert_id] = (alertmanager_payload(alert), until)
            payloads = [alertmanager_payload(alert) for alert in alerts]
            self.countdown.finished(*self.alertmanager.put(payloads, keys, ticket))

    def _post_active(self) -> None:
        assert self.alertmanager is not None
        if not self.may_send():
            return
        now = time.time()
        for alert_id, (_, until) in list(self.active.items()):
            if until is not None and until < now:
                del self.active[alert_id]
        if self.active:
            self.alertmanager.put([payload for payload, _ in self.active.values()])

    async def _resend(self) -> None:
        while True:
            await asyncio.sleep(self.resend_interval)
            self._post_active()

    async def _deliver(self, target: Target) -> None:
        while True:
            while not target.queue:
                target.ready.clear()
                await target.ready.wait()
            payload, keys, ticket = target.queue.popleft()
            if await self._post(target, payload):
                self.countdown.finished(keys, ticket)
            else:  # not ours to send any more (the lease is gone): the next leader sends it
                self.countdown.abandon(keys, ticket)

    async def _post(self, target: Target, payload: Any) -> bool:
        """Deliver with retries; False when this node may no longer send."""
        import aiohttp

        assert self._session is not None
        delay = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            if not self.may_send():
                return False
            try:
                async with self._session.post(target.url, json=payload) as response:
                    if response.status < 300:
                        target.delivered += 1
                        return True
                    reason = f"HTTP {response.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "notification not delivered",
                extra={"fields": {"url": target.url, "attempt": attempt, "reason": reason}},
            )
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        target.failed += 1
        log.error(
            "notification given up", extra={"fields": {"url": target.url, "attempts": ATTEMPTS}}
        )
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def alertmanager_payload(alert: Alert) -> dict[str, Any]:
    """One alert in Alertmanager's v2 format (postableAlert)."""
    labels = {
        **alert.labels,
        "alertname": ALERTNAMES.get(alert.kind, "Job" + alert.kind.title().replace("_", "")),
        "job_id": alert.job_id,
        "kind": alert.kind,
    }
    payload: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": f"{labels['alertname']}: {alert.job_id}",
            "description": alert.text,
            "alert_id": str(alert.alert_id),  # one incident, one id: receivers drop repeats
        },
        "startsAt": iso(alert.fired_at),
    }
    if alert.resolved_at is not None:
        payload["endsAt"] = iso(alert.resolved_at)
    return payload
