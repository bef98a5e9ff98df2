"""What only a cluster records, applied by every node alike, and the replicated outbox.

An entry of the log is a list of groups ``[reporter, [[name, args], ...]]``:
``reporter`` is the connection the records came from (a cluster-wide key, see
``conn_key``), or None. Besides the commands' own records and ``_tick``:

- ``_conn_closed [conn, default_grace_ms]``: a node's connection closed; its
  running jobs arm ``worker_lost`` unless another connection took them over by
  the time the record is applied.
- ``_node_gone [incarnation, default_grace_ms]``: the leader saw a node stop
  renewing its membership: the same, for all of that node's connections.
- ``_reattached [[conn, [job_id, ...]], ...]``: a node judged gone while it was
  alive (see membership.py) says these connections of its own are still open:
  each job still waiting for its worker_lost (nothing reported on it since) is
  theirs again, and the alert is not armed any more.
- ``_notified [key, ...]``: the leader delivered these alerts (or gave up on
  them after its retries): they leave the outbox.
- ``_config settings``: what replay depends on (``Store.settings``).

The outbox holds every alert fired or resolved and not yet confirmed by the
leader, in every node: a new leader sends what its predecessor had not
confirmed (at least once; receivers drop repeats by the alert id).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from itertools import compress
from pathlib import Path
from typing import Any

from ..errors import RequestError
from ..journal import CorruptData
from ..model import MORE_OF, Alert, Status
from ..node import Node
from ..persistence import CONFIG_RECORD, TICK_RECORD, WORKERS_GONE_RECORD, _replay, apply_command
from ..store import Store

log = logging.getLogger("jobmon.cluster")

CONN_CLOSED_RECORD = "_conn_closed"
NODE_GONE_RECORD = "_node_gone"
REATTACHED_RECORD = "_reattached"
NOTIFIED_RECORD = "_notified"
OUTBOX_LIMIT = 10_000
SOURCE = Path("<the cluster's log>")  # named in errors about records


def conn_key(incarnation: int, conn_number: int) -> int:
    """A connection's id across the cluster: this process's incarnation, then its number."""
    return (incarnation << 32) | conn_number


def incarnation_of(key: int) -> int:
    return key >> 32


def alert_key(alert: Alert) -> str:
    return f"{alert.alert_id}:{alert.state.value}"


class Outbox:
    def __init__(self) -> None:
        self.pending: OrderedDict[str, Alert] = OrderedDict()
        self.dropped = 0

    def add(self, alerts: list[Alert]) -> list[str]:
        keys = []
        for alert in alerts:
            key = alert_key(alert)
            # A copy: the store's alert changes when it resolves.
            self.pending[key] = Alert.from_row(alert.to_row())
            keys.append(key)
        while len(self.pending) > OUTBOX_LIMIT:
            self.pending.popitem(last=False)
            self.dropped += 1
        return keys

    def confirm(self, keys: list[str]) -> None:
        for key in keys:
            self.pending.pop(key, None)

    def to_snapshot(self) -> list[list[Any]]:
        return [[key, alert.to_row()] for key, alert in self.pending.items()]

    def load_snapshot(self, rows: list[list[Any]]) -> None:
        self.pending = OrderedDict((key, Alert.from_row(row)) for key, row in rows)


def apply_group(
    node: Node, outbox: Outbox, ts: float, reporter: int | None, records: list[Any]
) -> list[dict[str, Any]]:
    """Apply one group of records from the log; the reply bodies of its commands
    (events for subscribers)."""
    store = node.store
    store.reporter = reporter
    node.sink = None
    node.now = ts
    bodies = []
    for name, args in records:
        if name == CONN_CLOSED_RECORD:
            conn, grace_ms = args
            store.workers_gone(ts, store.jobs_lost_with(conn), grace_ms)
        elif name == NODE_GONE_RECORD:
            incarnation, grace_ms = args
            for conn in [c for c in store.reported_by if incarnation_of(c) == incarnation]:
                store.workers_gone(ts, store.jobs_lost_with(conn), grace_ms)
        elif name == REATTACHED_RECORD:
            for conn, job_ids in args:
                reattach(store, conn, job_ids)
        elif name == NOTIFIED_RECORD:
            outbox.confirm(args)
        elif name == CONFIG_RECORD:
            store.apply_settings(args)
        elif name in (TICK_RECORD, WORKERS_GONE_RECORD):
            _replay(node, ts, name, args, SOURCE)
        else:
            try:
                bodies.append(apply_command(node, ts, name, args, SOURCE))
            except (RequestError, CorruptData) as exc:
                if isinstance(exc, CorruptData):
                    raise  # a record this version does not know: stop, never guess
                # Refused: every node refuses it alike, and nothing changed.
            except Exception:
                # A bug: it hit the proposer as it hits us (same code, same record).
                log.exception("applying a %s record failed; continuing", name)
    store.reporter = None
    return bodies


def reattach(store: Store, conn: int, job_ids: list[str]) -> None:
    """These jobs' connection is open after all: theirs again, unless something
    reported on them since they were called lost (the worker moved, or ended)."""
    for job_id in job_ids:
        job = store.jobs.get(job_id)
        monitor = job.monitor if job is not None else None
        if (
            job is None
            or monitor is None
            or job.status is not Status.RUNNING
            or monitor.reporter is not None
            or monitor.lost_at is None
        ):
            continue
        store._set_reporter(job, monitor, conn)
        monitor.lost_at = None
        store.deadlines.clear(monitor, "worker_lost")


def extras_to_snapshot(node: Node, outbox: Outbox) -> dict[str, Any]:
    """What a cluster snapshot adds to the store's: who reports each running job
    (so a node gone can be told), and the outbox."""
    jobs = node.store.jobs.values()
    reporters = {
        job.job_id: job.monitor.reporter
        for job in compress(jobs, map(MORE_OF, jobs))  # only these can have a monitor
        if job.monitor is not None and job.monitor.reporter is not None
    }
    return {"reporters": reporters, "outbox": outbox.to_snapshot()}


def load_extras(node: Node, outbox: Outbox, extras: dict[str, Any]) -> None:
    store = node.store
    for job_id, reporter in extras.get("reporters", {}).items():
        job = store.jobs.get(job_id)
        if job is not None and job.monitor is not None:
            store._set_reporter(job, job.monitor, reporter)
    outbox.load_snapshot(extras.get("outbox", []))
