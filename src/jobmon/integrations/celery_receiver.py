"""The Celery event receiver, a child process of jobmon (one per ``--celery`` URL):
``python -m jobmon.integrations.celery_receiver``, the broker URL on its first
stdin line (not in argv, where ``ps`` would show its password).

It runs Celery's own ``EventReceiver`` and writes every event to stdout as one
JSON line, plus status lines (``{"jobmon": "connected", ...}``). Decoding
Celery's messages is kombu's Python, some 40 us an event: in a process of its
own it neither takes the store's core nor contends for its GIL.

Three threads:

- the receiver (blocks in ``capture``), reconnecting with backoff across broker
  restarts. Its handler only appends to a bounded deque: past ``QUEUE_MAX``
  events it drops and counts, because a Redis broker cuts off a subscriber
  that falls 32 MB behind, which would lose more;
- the enabler asks workers to send task events (``enable_events``, so they need
  no ``-E``): every ``ENABLE_EVERY_S`` to all, as Flower does (a worker that
  starts later misses a broadcast), and at once, until it answers, to a worker
  that came online;
- the main thread writes the deque to stdout, blocking when jobmon is busy (the
  pipe fills, the deque takes the rest). Its stdin closing (jobmon stopped or
  died) stops everything within about a second.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Any

import orjson
from celery.events.receiver import EventReceiver

from celery import Celery

from .. import logs
from .celery_events import redact

log = logging.getLogger("jobmon.celery")

QUEUE_MAX = 100_000  # events waiting for jobmon; past it they are dropped (counted)
WRITE_MAX = 1000  # events per write
STATUS_EVERY_S = 1.0
ENABLE_EVERY_S = 5.0  # Flower's events_enable_interval
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0


class _Receiver(EventReceiver):  # type: ignore[misc]
    """Timestamps as the worker took them: Celery's receiver otherwise shifts
    them by the difference between the worker's time zone and ours."""

    def event_from_message(self, body: Any, localize: bool = False, **kwargs: Any) -> Any:
        return super().event_from_message(body, False, **kwargs)


class Feed:
    def __init__(self, url: str) -> None:
        self.cluster = redact(url)
        self.app = Celery(broker=url, set_as_current=False)
        self.app.conf.broker_connection_timeout = 2.0
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.received = self.dropped = 0
        self.connected = False
        self.why = "starting"
        self.status_changed = True
        self.pids: dict[str, Any] = {}  # worker -> main pid, to see restarts
        self.unconfirmed: set[str] = set()  # workers not yet known to send task events
        self.stop = threading.Event()
        self.done = threading.Event()  # the receiver has stopped: write the rest, exit
        self.wake = threading.Event()  # for the writer
        self.enable_now = threading.Event()
        self.receiver: _Receiver | None = None

    # -- the receiver thread -------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        """Celery's handler: O(1), never waits."""
        self.received += 1
        if len(self.queue) >= QUEUE_MAX:
            self.dropped += 1
            return
        kind = event.get("type")
        host = event.get("hostname")
        if kind in ("worker-online", "worker-heartbeat") and type(host) is str:
            pid = event.get("pid")
            if kind == "worker-online" or self.pids.get(host) != pid:
                self.pids[host] = pid  # (re)started: it must be asked
                self.unconfirmed.add(host)
                self.enable_now.set()
        self.queue.append(event)
        self.wake.set()

    def receive(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self.stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    # Fails at once when the broker refuses (building a receiver
                    # first would block about 6 s in kombu's own retries).
                    conn.ensure_connection(max_retries=0)
                    receiver = _Receiver(conn, handlers={"*": self.on_event}, app=self.app)
                    receiver.connect_max_retries = 0
                    self.receiver = receiver
                    if self.stop.is_set():
                        break
                    self.set_status(True, "connected")
                    backoff = BACKOFF_FIRST_S
                    # wakeup: every worker is asked for a heartbeat at once.
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # redis ConnectionError, kombu OperationalError, OSError
                if self.stop.is_set():
                    break
                self.set_status(False, f"{type(exc).__name__}: {exc}")
                if self.stop.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def set_status(self, connected: bool, why: str) -> None:
        if connected != self.connected or why != self.why:
            log.log(
                logging.INFO if connected else logging.WARNING,
                "broker connected" if connected else "broker unreachable; retrying",
                extra={"fields": {"cluster": self.cluster, "why": why}},
            )
        if connected:
            self.unconfirmed.update(self.pids)  # asked again after a reconnect
            self.enable_now.set()
        self.connected, self.why = connected, why
        self.status_changed = True
        self.wake.set()

    # -- the enabler thread ----------------------------------------------------
    def enable(self) -> None:
        next_broadcast = 0.0
        while not self.stop.is_set():
            try:
                if self.connected and self.unconfirmed:
                    self.enable_some(sorted(self.unconfirmed))
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
                wait = ENABLE_EVERY_S  # a connection sets enable_now
            self.enable_now.wait(wait)
            self.enable_now.clear()

    def enable_some(self, hosts: list[str]) -> None:
        """Ask these workers and wait a second for answers: one that just came
        online may not listen yet, so it is asked again until it says."""
        replies = self.app.control.enable_events(destination=hosts, reply=True, timeout=1.0)
        for reply in replies or ():
            for host, answer in reply.items():
                self.unconfirmed.discard(host)
                if isinstance(answer, dict) and "ok" not in answer:
                    log.warning(
                        "worker will not send task events",
                        extra={"fields": {"cluster": self.cluster, "worker": host, **answer}},
                    )

    # -- the main thread -----------------------------------------------------------
    def write(self, out: Any) -> None:
        """Until stopped: events and status lines to jobmon, in order."""
        queue = self.queue
        dumps = orjson.dumps
        next_status = 0.0
        while True:
            stopping = self.done.is_set()
            self.wake.wait(STATUS_EVERY_S)
            self.wake.clear()
            while queue:
                n = min(len(queue), WRITE_MAX)
                out.write(b"".join(dumps(queue.popleft()) + b"\n" for _ in range(n)))
            if self.status_changed or stopping or time.monotonic() >= next_status:
                self.status_changed = False
                next_status = time.monotonic() + STATUS_EVERY_S
                status = {
                    "jobmon": "status",
                    "connected": self.connected,
                    "why": self.why,
                    "received": self.received,
                    "dropped": self.dropped,
                }
                out.write(dumps(status) + b"\n")
            out.flush()
            if stopping:
                return

    def close(self) -> None:
        self.stop.set()
        self.enable_now.set()
        if self.receiver is not None:
            self.receiver.should_stop = True  # capture() looks about once a second


def main() -> int:
    logs.setup(sys.argv[1] if len(sys.argv) > 1 else "info")
    logging.getLogger("kombu").setLevel(logging.WARNING)  # "Connected to", said by us
    url = sys.stdin.readline().strip()
    feed = Feed(url)
    receiver = threading.Thread(target=feed.receive, name="celery-receiver", daemon=True)
    enabler = threading.Thread(target=feed.enable, name="celery-enabler", daemon=True)

    def until_stdin_closes() -> None:
        sys.stdin.read()  # jobmon closes it to stop us (or died)
        feed.close()
        receiver.join(5)  # its last events are written before we exit
        feed.done.set()
        feed.wake.set()

    closer = threading.Thread(target=until_stdin_closes, name="celery-stdin", daemon=True)
    for thread in (receiver, enabler, closer):
        thread.start()
    try:
        feed.write(sys.stdout.buffer)
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
