"""Prometheus ``/metrics``: a custom prometheus-client collector over the store's
aggregates, read at scrape time (so there are no stale series to forget).

A scrape must not stall ingestion: the aggregates are copied in one go (they are
O(1)), the per-job rows in chunks with the loop free between them, and the text
is rendered in a worker thread from that copy.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .history import DURATION_BUCKETS_S, History
from .journal import FSYNC_BUCKETS_S

if TYPE_CHECKING:
    from .server import Server

CONTENT_TYPE = CONTENT_TYPE_LATEST
JOB_ROWS_PER_CHUNK = 5000  # per-job rows copied between two yields to the loop
last_success_at = History.last_success_at


@dataclass
class Reading:
    """Everything one scrape shows, copied out of the store task's state."""

    by_status: dict[str, int]
    received_by_type: dict[str, int]
    errors_replied: int
    event_id_repeats: int
    fired_by_kind: dict[str, int]
    firing_by_kind: dict[str, int]
    duration_buckets: list[int]
    duration_sum_s: float
    connections_open: int
    connections_total: int
    journal_bytes: int | None
    fsync_buckets: list[int] | None
    fsync_seconds_total: float
    job_series_limit: int
    jobs_total: int
    # (job_id, status, last success or None), for the first job_series_limit jobs.
    jobs: list[tuple[str, str, float | None]] = field(default_factory=list)
    # Apprise deliveries: (channel, outcome, count).
    notifications: list[tuple[str, str, int]] = field(default_factory=list)
    cluster: dict[str, Any] | None = None  # --redis: get_cluster's view
    # The integrations' own families (--celery...).
    integrations: list[Metric] = field(default_factory=list)


async def read(server: Server) -> Reading:
    store = server.node.store
    store.settle()
    engine = server.engine
    history = store.history
    data_dir = server.data_dir
    writer = data_dir.writer if data_dir is not None else None
    limit = server.config.metrics_job_series
    reading = Reading(
        by_status={status.value: n for status, n in store.count_by_status.items()},
        received_by_type=dict(engine.received_by_type),
        errors_replied=engine.errors_replied,
        event_id_repeats=store.seen_events.repeats,
        fired_by_kind=dict(history.fired_by_kind),
        firing_by_kind=dict(history.firing_by_kind),
        duration_buckets=list(history.duration_buckets),
        duration_sum_s=store.duration_sum_ms / 1000,
        connections_open=len(server.connections),
        connections_total=server.connections_total,
        journal_bytes=writer.size if writer is not None else None,
        fsync_buckets=list(data_dir.fsync_times.buckets) if data_dir is not None else None,
        fsync_seconds_total=data_dir.fsync_times.seconds_total if data_dir is not None else 0.0,
        job_series_limit=limit,
        jobs_total=len(store.jobs),
        notifications=server.apprise.counts() if server.apprise is not None else [],
        cluster=server.cluster.info() if server.cluster is not None else None,
        integrations=[m for i in server.integrations for m in i.metrics()],
    )
    job_ids = list(islice(store.jobs, limit))  # jobs are never removed: a stable set
    rows = reading.jobs
    for start in range(0, len(job_ids), JOB_ROWS_PER_CHUNK):
        if start:
            await asyncio.sleep(0)  # let the engine take a turn
        jobs = store.jobs
        for job_id in job_ids[start : start + JOB_ROWS_PER_CHUNK]:
            job = jobs[job_id]
            rows.append((job_id, job.status.value, last_success_at(job)))
    return reading


def _by_label(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    label: str,
    counts: dict[str, int],
) -> Metric:
    metric = family(name, doc, labels=[label])
    for value, count in counts.items():
        metric.add_metric([value], count)
    return metric


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    cumulative = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


def _cluster(info: dict[str, Any]) -> Iterator[Metric]:
    """--redis: this node's role, how far behind the log it is, and failovers."""
    role = GaugeMetricFamily(
        "jobmon_cluster_leader", "1 on the node holding the lease, else 0.", labels=["node_id"]
    )
    role.add_metric([info["node_id"]], 1 if info["role"] == "leader" else 0)
    yield role
    yield GaugeMetricFamily(
        "jobmon_cluster_caught_up", "1 once this node has read the log to its end.",
        1 if info["caught_up"] else 0,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "jobmon_cluster_redis_up", "1 while Redis answers this node.",
        1 if info["redis"] == "ok" else 0,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "jobmon_cluster_lag_seconds",
        "From the last applied entry's time (Redis's clock) to its apply on this node.",
        info["lag_ms"] / 1000,
    )
    yield GaugeMetricFamily(
        "jobmon_cluster_unapplied_entries", "Entries read, not yet applied.",
        info["unapplied_entries"],
    )  # fmt: skip
    yield CounterMetricFamily(
        "jobmon_cluster_leader_changes",
        "Changes of leader this node has seen (failovers), since start.",
        info["leader_changes_seen"],
    )
    yield GaugeMetricFamily(
        "jobmon_cluster_outbox_alerts",
        "Alerts fired or resolved that the leader has not yet confirmed as sent.",
        info["outbox"],
    )


class ReadingCollector(Collector):
    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        if r.cluster is not None:
            yield from _cluster(r.cluster)
        yield _by_label(
            GaugeMetricFamily, "jobmon_jobs", "Jobs tracked, by status.", "status", r.by_status
        )
        yield _by_label(
            CounterMetricFamily,
            "jobmon_events_received",
            "Messages accepted, by type, since start.",
            "type",
            r.received_by_type,
        )
        yield CounterMetricFamily(
            "jobmon_error_replies",
            "Requests answered with an error, since start.",
            r.errors_replied,
        )
        yield CounterMetricFamily(
            "jobmon_event_id_repeats",
            "Events whose event_id was applied already: answered with the original "
            "reply, nothing changed, since start.",
            r.event_id_repeats,
        )
        yield _by_label(
            CounterMetricFamily,
            "jobmon_alerts_fired",
            "Alerts fired, by kind.",
            "kind",
            r.fired_by_kind,
        )
        yield _by_label(
            GaugeMetricFamily,
            "jobmon_alerts_firing",
            "Alerts firing now, by kind.",
            "kind",
            r.firing_by_kind,
        )
        yield _histogram(
            "jobmon_run_duration_seconds",
            "Durations of completed runs (job_completed).",
            DURATION_BUCKETS_S,
            r.duration_buckets,
            r.duration_sum_s,
        )
        yield GaugeMetricFamily(
            "jobmon_connections", "TCP connections open now.", r.connections_open
        )
        yield CounterMetricFamily(
            "jobmon_connections_accepted",
            "TCP connections accepted since start.",
            r.connections_total,
        )
        if r.journal_bytes is not None:
            yield GaugeMetricFamily(
                "jobmon_journal_size_bytes", "Size of the current journal file.", r.journal_bytes
            )
        if r.fsync_buckets is not None:
            yield _histogram(
                "jobmon_journal_fsync_seconds",
                "Time each journal fsync took.",
                FSYNC_BUCKETS_S,
                r.fsync_buckets,
                r.fsync_seconds_total,
            )
        if r.notifications:
            sent = CounterMetricFamily(
                "jobmon_apprise_notifications",
                "Apprise notifications (--notify), by channel and outcome.",
                labels=["channel", "outcome"],
            )
            for channel, outcome, count in r.notifications:
                sent.add_metric([channel, outcome], count)
            yield sent
        yield from r.integrations
        yield GaugeMetricFamily(
            "jobmon_job_series_omitted",
            "Jobs left out of the per-job series by --metrics-job-series.",
            r.jobs_total - len(r.jobs),
        )


class JobSeriesCollector(Collector):
    """The per-job families for a slice of the jobs (see ``render``)."""

    def __init__(self, jobs: list[tuple[str, str, float | None]]) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        job_status = GaugeMetricFamily(
            "jobmon_job_status",
            "1 for each job's current status (the first --metrics-job-series jobs).",
            labels=["job_id", "status"],
        )
        last_success = GaugeMetricFamily(
            "jobmon_job_last_success_timestamp_seconds",
            "When each job last completed (the first --metrics-job-series jobs).",
            labels=["job_id"],
        )
        for job_id, status, succeeded_at in self.jobs:
            job_status.add_metric([job_id, status], 1)
            if succeeded_at is not None:
                last_success.add_metric([job_id], succeeded_at)
        yield job_status
        yield last_success


def _text(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


def render(reading: Reading) -> bytes:
    """The page, rendered by prometheus-client in pieces of JOB_ROWS_PER_CHUNK
    jobs: its final join holds the GIL, and one join of a 100,000-job page would
    hold it (and so the event loop) for tens of milliseconds."""
    parts = [_text(ReadingCollector(reading))]
    jobs = reading.jobs
    per_family: tuple[list[bytes], list[bytes]] = ([], [])
    for start in range(0, max(len(jobs), 1), JOB_ROWS_PER_CHUNK):
        text = _text(JobSeriesCollector(jobs[start : start + JOB_ROWS_PER_CHUNK]))
        status_part, success_part = _split_families(text)
        if start:  # HELP and TYPE once per family
            status_part = status_part.split(b"\n", 2)[2]
            success_part = success_part.split(b"\n", 2)[2]
        per_family[0].append(status_part)
        per_family[1].append(success_part)
    return b"".join(parts + per_family[0] + per_family[1])


def _split_families(text: bytes) -> tuple[bytes, bytes]:
    """The two per-job families of one piece, apart (the second starts at its HELP)."""
    at = text.index(b"# HELP jobmon_job_last_success_timestamp_seconds ")
    return text[:at], text[at:]


class _NoCycleCollection:
    """The cyclic collector paused while any page renders. A render allocates
    millions of short-lived objects (freed by reference counting); counted by
    the collector, they set off full collections, each of which walks every job
    in the heap with the GIL held: 50 ms and more at 100,000 jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._renders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._renders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._renders += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._renders -= 1
            if self._renders == 0 and self._was_enabled:
                gc.enable()


_no_cycle_collection = _NoCycleCollection()


def _render_in_thread(reading: Reading) -> bytes:
    with _no_cycle_collection:
        return render(reading)


async def scrape(server: Server) -> bytes:
    reading = await read(server)
    # Rendering costs about 8 us per job series: off the loop, which then waits
    # at most one GIL switch interval (5 ms) at a time for the thread.
    return await asyncio.get_running_loop().run_in_executor(None, _render_in_thread, reading)
