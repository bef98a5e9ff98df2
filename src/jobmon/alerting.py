"""Alerts, as the Store's methods: one open alert per kind per job (an incident),
its resolution, and the kept history that ``get_alerts`` and the notifiers read.

Mixed into ``Store`` ahead of ``Monitoring`` and ``RunIds`` (their ``_fire`` and
``_resolve`` are declarations of these); they run only in the store task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .model import Alert, Job, JobMore

if TYPE_CHECKING:
    from collections import deque

    from .hc.registry import Checks
    from .history import History


class Alerting:
    next_alert_id: int
    alert_history: deque[Alert]
    # Alerts fired or resolved since the engine last drained them.
    alert_outbox: list[Alert]
    history: History
    checks: Checks

    def _fire(self, job: Job, kind: str, text: str, now: float) -> Alert | None:
        """Open an alert of this kind for the job, unless one is open already
        or the job is paused (a maintenance window)."""
        more = job.more
        if more is None:
            more = job.more = JobMore()
        monitor = more.monitor
        if monitor is not None and monitor.is_paused(now):
            return None
        alerts = more.alerts
        if alerts is None:
            alerts = more.alerts = {}
        elif kind in alerts:
            return None
        labels = monitor.labels if monitor is not None else {}
        alert = Alert(self.next_alert_id, job.job_id, kind, text, now, labels)
        self.next_alert_id += 1
        alerts[kind] = alert
        self.alert_history.append(alert)
        self.history.alert_fired(kind)
        self.alert_outbox.append(alert)
        if self.checks.by_job:
            self.checks.alert_changed(job, now)
        return alert

    def _resolve(self, job: Job, kind: str, now: float) -> None:
        more = job.more
        alerts = more.alerts if more is not None else None
        if alerts is None:
            return
        alert = alerts.pop(kind, None)
        if alert is None:
            return
        if not alerts:
            assert more is not None
            more.alerts = None
            if more.is_empty():
                job.more = None
        alert.resolved_at = now
        self.alert_outbox.append(alert)
        self.history.alert_resolved(kind)
        if self.checks.by_job:
            self.checks.alert_changed(job, now)

    def watch_memory(
        self, job: Job, usage: dict[str, Any], info: dict[str, Any] | None, now: float
    ) -> bool:
        """A ``memory`` alert when the run used more than the memory_limit_mb its
        report gave; True when it did. The next run completed within it resolves it."""
        limit = info.get("memory_limit_mb") if info is not None else None
        used = usage.get("memory_mb")
        if limit is None or used is None or used <= limit:
            return False
        self._fire(
            job,
            "memory",
            f"Job {job.job_id} used {used:g} MB of memory, over its limit of {limit:g} MB",
            now,
        )
        return True

    # -- alerts ------------------------------------------------------------
    def drain_alerts(self) -> list[Alert]:
        out, self.alert_outbox = self.alert_outbox, []
        return out

    def recent_alerts(self) -> list[Alert]:
        return list(self.alert_history)

    def find_alerts(
        self, state: str, job_id: str | None, limit: int, before: int | None = None
    ) -> list[Alert]:
        """Newest first, from the kept history (the last ALERT_HISTORY alerts);
        ``before``: only alerts with a smaller id."""
        out = []
        for alert in reversed(self.alert_history):
            if before is not None and alert.alert_id >= before:
                continue
            if job_id is not None and alert.job_id != job_id:
                continue
            if state != "all" and alert.state.value != state:
                continue
            out.append(alert)
            if len(out) == limit:
                break
        return out
