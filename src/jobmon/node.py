"""What one command may touch: the store, the node's identity, and who asked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:
    from .launcher import Launcher

TOPICS = ("alerts", "events")


class Subscription:
    """A connection that asked for pushed lines, framed as it framed its subscribe."""

    __slots__ = ("sink", "topics", "frame")

    def __init__(self, sink: Any, topics: frozenset[str], frame: tuple[Any, Any] | None) -> None:
        self.sink = sink
        self.topics = topics
        self.frame = frame  # None: bare lines; else (our src, the subscriber's src)


class Node:
    def __init__(self, store: Store, node_id: str = "monitor") -> None:
        self.store = store
        self.node_id = node_id
        self.node_ids: list[str] = [node_id]
        # The connection whose requests are being applied (set by the engine).
        self.sink: Any = None
        self.subscriptions: dict[Any, Subscription] = {}
        self.event_subscribers = 0  # of them, those with "events" (read every turn)
        self.now = 0.0  # the clock reading of the turn being applied
        # --token: connections must send it (``auth``) before anything else.
        self.token: str | None = None
        # Starts --allow-command jobs (start_job); None when none are allowed.
        self.launcher: Launcher | None = None
        # --redis: this node's membership of a cluster (cluster.node.Member).
        self.cluster: Any = None
        # The --notify NAME=URL names a job's channels may pick; None: not checked
        # (replay, a cluster's apply: what the log holds was checked when it came in).
        self.channels: frozenset[str] | None = None

    def subscribe(self, sink: Any, subscription: Subscription) -> None:
        self.unsubscribe(sink)  # a second subscribe replaces the first
        self.subscriptions[sink] = subscription
        self.event_subscribers += "events" in subscription.topics

    def unsubscribe(self, sink: Any) -> None:
        subscription = self.subscriptions.pop(sink, None)
        if subscription is not None:
            self.event_subscribers -= "events" in subscription.topics

    def subscribers(self, topic: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if topic in s.topics]
