"""The seam between the store task and whatever delivers alerts outside: the
engine hands each turn's fired and resolved alerts to one ``AlertNotifier``;
``Fanout`` passes them to every implementation (``notify.Notifier``: webhooks
and Alertmanager; ``notify_apprise.AppriseNotifier``: Apprise's URLs).

In a cluster only the leader delivers (see ``cluster/``): every notifier asks
``gate`` before each attempt and drops what it holds once the answer is no;
alerts submitted with ``keys`` are reported to ``on_done`` once the notifier
has finished with them everywhere (delivered, given up after its retries, or
dropped), so the leader can record them as sent and a new leader resend the
rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .model import Alert

Gate = Callable[[], bool]
OnDone = Callable[[list[str]], None]


class AlertNotifier(Protocol):
    gate: Gate | None
    on_done: OnDone | None

    async def start(self, firing: list[Alert]) -> None:
        """Before the first turn; ``firing``: the alerts open at start."""
        ...

    def submit(
        self, alerts: list[Alert], alertmanager: bool = True, keys: list[str] | None = None
    ) -> None:
        """In the store task, after a turn: queue, never wait. ``alertmanager``
        False: a --realert-ms reminder, which Alertmanager does not need.
        ``keys``, one per alert: report each to ``on_done`` once finished."""
        ...

    def remember_firing(self, firing: list[Alert]) -> None:
        """A node that just became the cluster's leader: these are open."""
        ...

    async def stop(self) -> None: ...


class Countdown:
    """Which submitted alerts still have deliveries to finish, by key; calls
    ``on_done`` with the keys whose last delivery just finished."""

    def __init__(self) -> None:
        self.on_done: OnDone | None = None
        self.left: dict[str, int] = {}

    def expect(self, keys: list[str], deliveries: int) -> None:
        """Each key now waits for this many deliveries (0: done at once). Set,
        not added: a key submitted again (a new leader's resend) starts afresh."""
        if deliveries <= 0:
            self.finished(keys)
            return
        for key in keys:
            self.left[key] = deliveries

    def finished(self, keys: list[str] | None) -> None:
        """One delivery of each of these keys is over."""
        if not keys:
            return
        done = []
        for key in keys:
            left = self.left.get(key, 1) - 1
            if left > 0:
                self.left[key] = left
            else:
                self.left.pop(key, None)
                done.append(key)
        if done and self.on_done is not None:
            self.on_done(done)

    def abandon(self, keys: list[str] | None) -> None:
        """Not ours to send any more (the lease is gone): the next leader sends them."""
        for key in keys or ():
            self.left.pop(key, None)


class Fanout:
    """Every notifier gets every alert; a key is done when all of them are."""

    def __init__(self, notifiers: list[AlertNotifier]) -> None:
        self.notifiers = notifiers
        self._countdown = Countdown()
        self._gate: Gate | None = None
        for notifier in notifiers:
            notifier.on_done = self._countdown.finished

    @property
    def on_done(self) -> OnDone | None:
        return self._countdown.on_done

    @on_done.setter
    def on_done(self, callback: OnDone | None) -> None:
        self._countdown.on_done = callback

    @property
    def gate(self) -> Gate | None:
        return self._gate

    @gate.setter
    def gate(self, gate: Gate | None) -> None:
        self._gate = gate
        for notifier in self.notifiers:
            notifier.gate = gate

    async def start(self, firing: list[Alert]) -> None:
        for notifier in self.notifiers:
            await notifier.start(firing)

    def submit(
        self, alerts: list[Alert], alertmanager: bool = True, keys: list[str] | None = None
    ) -> None:
        if keys is not None:
            self._countdown.expect(keys, len(self.notifiers))
        for notifier in self.notifiers:
            notifier.submit(alerts, alertmanager, keys)

    def remember_firing(self, firing: list[Alert]) -> None:
        for notifier in self.notifiers:
            notifier.remember_firing(firing)

    async def stop(self) -> None:
        for notifier in self.notifiers:
            await notifier.stop()
