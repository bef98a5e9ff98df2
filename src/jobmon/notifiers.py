"""The seam between the store task and whatever delivers alerts outside: the
engine hands each turn's fired and resolved alerts to one ``AlertNotifier``;
``Fanout`` passes them to every implementation (``notify.Notifier``: webhooks
and Alertmanager; ``notify_apprise.AppriseNotifier``: Apprise's URLs)."""

from __future__ import annotations

from typing import Protocol

from .model import Alert


class AlertNotifier(Protocol):
    async def start(self, firing: list[Alert]) -> None:
        """Before the first turn; ``firing``: the alerts open at start."""
        ...

    def submit(self, alerts: list[Alert], alertmanager: bool = True) -> None:
        """In the store task, after a turn: queue, never wait. ``alertmanager``
        False: a --realert-ms reminder, which Alertmanager does not need."""
        ...

    async def stop(self) -> None: ...


class Fanout:
    def __init__(self, notifiers: list[AlertNotifier]) -> None:
        self.notifiers = notifiers

    async def start(self, firing: list[Alert]) -> None:
        for notifier in self.notifiers:
            await notifier.start(firing)

    def submit(self, alerts: list[Alert], alertmanager: bool = True) -> None:
        for notifier in self.notifiers:
            notifier.submit(alerts, alertmanager)

    async def stop(self) -> None:
        for notifier in self.notifiers:
            await notifier.stop()
