"""The seam between the store task and whatever delivers alerts outside: the
engine hands each turn's fired and resolved alerts to one ``AlertNotifier``;
``Fanout`` passes them to every implementation (``notify.Notifier``: webhooks
and Alertmanager; ``notify_apprise.AppriseNotifier``: Apprise's URLs).

In a cluster only the leader delivers (see ``cluster/``): every notifier asks
``gate`` before each attempt and drops what it holds once the answer is no;
alerts submitted with ``keys`` are reported to ``on_done`` once the notifier
has finished with them everywhere (delivered, given up after its retries, or
dropped), so the leader can record them as sent and a new leader resend the
rest. A key dropped because the gate closed is reported to ``on_abandon``
instead (``Fanout`` then stops waiting for it: the next leader sends it).

A key may be submitted again while an earlier delivery of it is still in
flight (a leader that lost its lease and won it back resends what was not
confirmed). Each submission gets a ticket (``Countdown.expect``) that its
deliveries report with, so a delivery of the earlier submission finishing late
never counts for the new one: the key is done only when every delivery of its
latest submission is.
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
    on_abandon: OnDone | None

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
        self.on_abandon: OnDone | None = None
        self.left: dict[str, tuple[int, int]] = {}  # key -> (ticket, deliveries left)
        self._last_ticket = 0

    def expect(self, keys: list[str], deliveries: int) -> int:
        """Each key now waits for this many deliveries (0: done at once); the
        ticket they report with. Set, not added: a key submitted again starts
        afresh, and the earlier submission's deliveries no longer count."""
        self._last_ticket += 1
        ticket = self._last_ticket
        if deliveries <= 0:
            for key in keys:
                self.left.pop(key, None)
            self._report(self.on_done, list(keys))
        else:
            for key in keys:
                self.left[key] = (ticket, deliveries)
        return ticket

    def finished(self, keys: list[str] | None, ticket: int | None = None) -> None:
        """One delivery of each of these keys is over (``ticket`` None: of the
        latest submission, for a notifier whose own countdown checked tickets)."""
        done = []
        for key in keys or ():
            entry = self.left.get(key)
            if entry is None or (ticket is not None and entry[0] != ticket):
                continue  # an earlier submission's delivery, finishing late
            if entry[1] > 1:
                self.left[key] = (entry[0], entry[1] - 1)
            else:
                del self.left[key]
                done.append(key)
        self._report(self.on_done, done)

    def abandon(self, keys: list[str] | None, ticket: int | None = None) -> None:
        """Not ours to send any more (the lease is gone): the next leader sends them."""
        dropped = []
        for key in keys or ():
            entry = self.left.get(key)
            if entry is not None and (ticket is None or entry[0] == ticket):
                del self.left[key]
                dropped.append(key)
        self._report(self.on_abandon, dropped)

    @staticmethod
    def _report(callback: OnDone | None, keys: list[str]) -> None:
        if keys and callback is not None:
            callback(keys)


class Confirming:
    """A notifier's side of the cluster's seam: the gate, and the countdown
    that tells ``on_done`` (and ``on_abandon``) about submitted keys."""

    def __init__(self) -> None:
        self.gate: Gate | None = None
        self.countdown = Countdown()

    @property
    def on_done(self) -> OnDone | None:
        return self.countdown.on_done

    @on_done.setter
    def on_done(self, callback: OnDone | None) -> None:
        self.countdown.on_done = callback

    @property
    def on_abandon(self) -> OnDone | None:
        return self.countdown.on_abandon

    @on_abandon.setter
    def on_abandon(self, callback: OnDone | None) -> None:
        self.countdown.on_abandon = callback

    def may_send(self) -> bool:
        """Asked before every attempt: in a cluster, only while this node leads."""
        return self.gate is None or self.gate()


class Fanout(Confirming):
    """Every notifier gets every alert; a key is done when all of them are
    (each notifier reports only its latest submission's deliveries, and every
    submission goes to all of them at once, so the latest is Fanout's too)."""

    def __init__(self, notifiers: list[AlertNotifier]) -> None:
        self.notifiers = notifiers
        super().__init__()
        for notifier in notifiers:
            notifier.on_done = self.countdown.finished
            notifier.on_abandon = self.countdown.abandon

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
            self.countdown.expect(keys, len(self.notifiers))
        for notifier in self.notifiers:
            notifier.submit(alerts, alertmanager, keys)

    def remember_firing(self, firing: list[Alert]) -> None:
        for notifier in self.notifiers:
            notifier.remember_firing(firing)

    async def stop(self) -> None:
        for notifier in self.notifiers:
            await notifier.stop()
