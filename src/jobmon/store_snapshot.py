"""The store as a snapshot and back: every job, alert and aggregate as rows
for orjson (``model.snapshot_default`` writes alerts), read straight back
into jobs at start (a file snapshot's rows are ``Job`` structs already)."""

from __future__ import annotations

from collections import Counter, deque
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .model import SNAPSHOT_ROW, STATUS_BY_NAME, Alert, Job, Monitor, Status

if TYPE_CHECKING:
    from .store import Store

ALERT_HISTORY = 10_000
STATUS_OF = attrgetter("status")


def _job_of_row(row: list[Any]) -> Job:
    """A snapshot row as orjson reads it (a cluster's snapshot); older rows are shorter."""
    job = Job(*row)
    job.status = STATUS_BY_NAME[row[1]]
    return job


def dump(self: Store) -> dict[str, Any]:
    """Everything, as rows for orjson (``model.snapshot_default`` writes alerts)."""
    self.settle()
    alerts = {a.alert_id: a for a in self.alert_history}
    for job in self.jobs.values():
        if job.alerts is not None:
            for alert in job.alerts.values():
                alerts[alert.alert_id] = alert
    return {
        "default_max_retries": self.default_max_retries,
        "settings": self.settings(),
        "timed_runs": self.timed_runs,
        "duration_sum_ms": self.duration_sum_ms,
        "next_alert_id": self.next_alert_id,
        "alerts": [a.to_row() for a in sorted(alerts.values(), key=lambda a: a.alert_id)],
        "alert_history": [a.alert_id for a in self.alert_history],
        "jobs": list(map(SNAPSHOT_ROW, self.jobs.values())),
        "history": self.history.to_snapshot(),
        "analytics": self.analytics.to_snapshot(),
        "live_runs": self.live_runs_snapshot(),
        "checks": self.checks.to_snapshot(),
        "seen_events": self.seen_events.to_snapshot(),
    }


def load(self: Store, snap: dict[str, Any]) -> None:
    alerts = {row[0]: Alert.from_row(row) for row in snap["alerts"]}
    self.default_max_retries = snap["default_max_retries"]
    self.apply_settings(snap.get("settings", {}))
    self.timed_runs = snap["timed_runs"]
    self.duration_sum_ms = snap["duration_sum_ms"]
    self.next_alert_id = snap["next_alert_id"]
    self.alert_history = deque((alerts[i] for i in snap["alert_history"]), maxlen=ALERT_HISTORY)
    rows = snap["jobs"]
    if rows and type(rows[0]) is not Job:  # rows as orjson reads them (a cluster's)
        rows = [_job_of_row(row) for row in rows]
    # Once per job at every start: the rows are jobs already (model.JOB_ROWS).
    for seq, job in enumerate(rows):
        job.seq = seq
        if job.alerts is not None:
            job.alerts = {k: alerts[i] for k, i in job.alerts.items()}
        if job.monitor is not None:
            job.monitor = Monitor.from_row(job.monitor)
    jobs = {job.job_id: job for job in rows}
    counts = {s: 0 for s in Status}
    counts.update(Counter(map(STATUS_OF, rows)))
    self.jobs = jobs
    self.count_by_status = counts
    self.status_index.rebuild(jobs)
    self.history.load_snapshot(snap.get("history"), jobs)
    self.analytics.jobs = jobs
    self.analytics.load_snapshot(snap.get("analytics"))
    self.load_live_runs(snap.get("live_runs"))
    self.checks.load_snapshot(snap.get("checks"))
    self.seen_events.load_snapshot(snap.get("seen_events"))
    self.deadlines.rebuild(jobs)
