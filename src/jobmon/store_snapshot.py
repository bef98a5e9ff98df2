"""The store as a snapshot and back: every job, alert and aggregate as rows
for orjson (``model.snapshot_default`` writes alerts), read straight back
into jobs at start (a file snapshot's rows are ``Job`` structs already,
``jobrows``). A restart's work per job is in C: the jobs by status come back
as the index's own counts, and only jobs with a ``more`` are visited."""

from __future__ import annotations

from collections import deque
from itertools import compress
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from . import jobrows
from .model import MORE_OF, Alert, Job, Monitor, Status

if TYPE_CHECKING:
    from .store import Store

ALERT_HISTORY = 10_000
JOB_ID_OF = attrgetter("job_id")


def dump(self: Store) -> dict[str, Any]:
    """Everything, as rows for orjson (``model.snapshot_default`` writes alerts)."""
    self.settle()
    alerts = {a.alert_id: a for a in self.alert_history}
    for more in filter(None, map(MORE_OF, self.jobs.values())):
        if more.alerts is not None:
            for alert in more.alerts.values():
                alerts[alert.alert_id] = alert
    return {
        "job_rows": jobrows.ROW_FORMAT,  # first: the reader knows the rows at once (jobrows)
        "default_max_retries": self.default_max_retries,
        "settings": self.settings(),
        "timed_runs": self.timed_runs,
        "duration_sum_ms": self.duration_sum_ms,
        "next_alert_id": self.next_alert_id,
        "alerts": [a.to_row() for a in sorted(alerts.values(), key=lambda a: a.alert_id)],
        "alert_history": [a.alert_id for a in self.alert_history],
        "jobs": list(map(jobrows.ROW, self.jobs.values())),
        "status_blocks": {s.value: counts for s, counts in self.status_index.blocks.items()},
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
        rows = jobrows.jobs_of_lists(rows, snap.get("job_rows"))
    # Only the jobs with a ``more`` (open alerts, a monitor...) are visited:
    # each other job's row is all it is (seq included).
    watched = []  # those with open alerts or a monitor: for the history and the deadlines
    for job in compress(rows, map(MORE_OF, rows)):
        more = job.more
        assert more is not None
        if more.alerts is not None:
            more.alerts = {k: alerts[i] for k, i in more.alerts.items()}
        if more.monitor is not None:
            more.monitor = Monitor.from_row(more.monitor)
        elif more.alerts is None:
            continue
        watched.append(job)
    jobs = dict(zip(map(JOB_ID_OF, rows), rows, strict=True))
    self.jobs = jobs
    self.status_index.restore(rows, snap.get("status_blocks"))
    self.count_by_status = {s: sum(self.status_index.blocks[s]) for s in Status}
    self.history.load_snapshot(snap.get("history"), watched)
    self.analytics.jobs = jobs
    self.analytics.load_snapshot(snap.get("analytics"))
    self.load_live_runs(snap.get("live_runs"))
    self.checks.load_snapshot(snap.get("checks"))
    self.seen_events.load_snapshot(snap.get("seen_events"))
    self.deadlines.rebuild(watched)
