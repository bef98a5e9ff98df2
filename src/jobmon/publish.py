"""Where alerts and job events go once a turn is journaled and answered: a
structured log line on stderr for every alert, and a pushed line to each
subscribed connection (a slow subscriber is dropped, never waited for)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

from .clock import iso
from .commands.once import Repeated
from .model import Alert
from .node import Node, Subscription

log = logging.getLogger("jobmon.publish")
alert_log = logging.getLogger("jobmon.alert")
_NEWLINE = orjson.OPT_APPEND_NEWLINE


class Publisher:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.pushed = 0
        self.subscribers_dropped = 0

    def wants_events(self) -> bool:
        return self.node.event_subscribers > 0

    def publish(self, alerts: list[Alert], events: list[dict[str, Any]], now: float) -> None:
        if alerts:
            log_alerts(alerts)
        # Events first: a subscriber to both sees what happened, then the alert it raised.
        if events:
            at = iso(now)
            bodies = []
            for reply in events:
                if type(reply) is Repeated:  # a retransmission changed nothing
                    continue
                event = {k: v for k, v in reply.items() if k != "in_reply_to"}
                event["at"] = at
                bodies.append({"type": "event", "event": event})
            if bodies:
                self._push("events", bodies)
        if alerts and self.node.subscriptions:
            self._push("alerts", [{"type": "alert", "alert": alert.to_wire()} for alert in alerts])

    def _push(self, topic: str, bodies: list[dict[str, Any]]) -> None:
        subscribers = self.node.subscribers(topic)
        if not subscribers:
            return
        bare = b"".join(orjson.dumps(body, option=_NEWLINE) for body in bodies)
        for subscription in subscribers:
            data = bare if subscription.frame is None else self._enveloped(subscription, bodies)
            if subscription.sink.push(data):
                self.pushed += len(bodies)
            else:
                self.forget(subscription.sink)
                self.subscribers_dropped += 1

    def _enveloped(self, subscription: Subscription, bodies: list[dict[str, Any]]) -> bytes:
        assert subscription.frame is not None
        dest = subscription.frame[1]
        src = self.node.node_id
        return b"".join(
            orjson.dumps({"src": src, "dest": dest, "body": body}, option=_NEWLINE)
            for body in bodies
        )

    def forget(self, sink: Any) -> None:
        self.node.unsubscribe(sink)


def log_alerts(alerts: list[Alert]) -> None:
    """One JSON line per alert (the format of ``logs.JsonFormatter``), in one write:
    the logging module costs tens of microseconds a line, too much for a turn."""
    if not alert_log.isEnabledFor(logging.WARNING):
        return
    ts = iso(time.time())
    lines = b"".join(
        orjson.dumps(
            {
                "ts": ts,
                "level": "warning",
                "logger": "jobmon.alert",
                "msg": "alert",
                "alert_id": alert.alert_id,
                "job_id": alert.job_id,
                "kind": alert.kind,
                "state": alert.state.value,
                "text": alert.text,
                "fired_at": iso(alert.fired_at),
                "resolved_at": iso(alert.resolved_at),
                "labels": alert.labels,
            },
            option=_NEWLINE,
        )
        for alert in alerts
    )
    try:
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), lines)
    except OSError as exc:  # a closed stderr must not stop the store
        log.debug("alert log line not written: %s", exc)
