"""/metrics: the exposition read back with prometheus-client's parser, and a real
Prometheus (Debian's package) scraping jobmon and answering a query about it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import LineClient, free_port, jobmon_cmd
from jobmon import metrics
from jobmon.clock import FakeClock
from jobmon.history import DURATION_BUCKETS_S
from jobmon.server import Server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: Server) -> tuple[str, Samples]:
    assert server.http is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.http.port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def report_some_jobs(tcp: LineClient, clock: FakeClock) -> None:
    for job_id, duration_ms in (("backup", 90_000), ("etl", 2_000), ("report", 400)):
        await tcp.request({"type": "update_status", "job_id": job_id, "status": "running"})
        clock.advance(1)
        await tcp.request({"type": "job_completed", "job_id": job_id, "duration_ms": duration_ms})
    await tcp.request({"type": "update_status", "job_id": "resize", "status": "running"})
    await tcp.request({"type": "job_failed", "job_id": "mail", "error": "smtp down", "retries": 3})
    await tcp.request({"type": "heartbeat", "job_id": "consumer", "ttl_ms": 5_000})
    await tcp.request({"type": "update_status", "job_id": "nope", "status": "sideways"})  # refused


async def test_metrics_show_the_store_at_scrape_time(
    start_server: Any, clock: FakeClock, tmp_path: Path
) -> None:
    async with start_server(
        http_port=free_port(), data_dir=tmp_path / "data", fsync="always", metrics_job_series=4
    ) as server:
        tcp = await LineClient.connect(server.port)
        await report_some_jobs(tcp, clock)
        clock.advance(6)  # the consumer's heartbeat is now late
        server.engine.wake()
        await server.engine.wait_idle()
        text, samples = await scrape(server)
        await tcp.close()

    by_status = {
        status: value(samples, "jobmon_jobs", status=status)
        for status in ("pending", "running", "completed", "failed")
    }
    assert by_status == {"pending": 1, "running": 1, "completed": 3, "failed": 1}
    assert value(samples, "jobmon_events_received_total", type="update_status") == 4
    assert value(samples, "jobmon_events_received_total", type="job_completed") == 3
    assert value(samples, "jobmon_error_replies_total") == 1
    assert value(samples, "jobmon_alerts_fired_total", kind="failed") == 1
    assert value(samples, "jobmon_alerts_fired_total", kind="missed_heartbeat") == 1
    assert value(samples, "jobmon_alerts_firing", kind="missed_heartbeat") == 1
    # Durations 0.4 s, 2 s, 90 s: cumulative buckets, sum in seconds.
    assert value(samples, "jobmon_run_duration_seconds_bucket", le="0.5") == 1
    assert value(samples, "jobmon_run_duration_seconds_bucket", le="5.0") == 2
    assert value(samples, "jobmon_run_duration_seconds_bucket", le="60.0") == 2
    assert value(samples, "jobmon_run_duration_seconds_bucket", le="300.0") == 3
    assert value(samples, "jobmon_run_duration_seconds_count") == 3
    assert value(samples, "jobmon_run_duration_seconds_sum") == pytest.approx(92.4)
    assert value(samples, "jobmon_connections") == 1
    assert value(samples, "jobmon_journal_size_bytes") > 0
    assert value(samples, "jobmon_journal_fsync_seconds_count") >= 1
    # Per-job series: the first 4 jobs seen (the cap), the rest counted as omitted.
    per_job = {labels: v for (name, labels), v in samples.items() if name == "jobmon_job_status"}
    assert per_job == {
        (("job_id", "backup"), ("status", "completed")): 1,
        (("job_id", "etl"), ("status", "completed")): 1,
        (("job_id", "report"), ("status", "completed")): 1,
        (("job_id", "resize"), ("status", "running")): 1,
    }
    assert value(samples, "jobmon_job_series_omitted") == 2  # mail, consumer ("nope" was refused)
    backup_done = value(samples, "jobmon_job_last_success_timestamp_seconds", job_id="backup")
    assert backup_done == pytest.approx(FakeClock().current + 1)
    assert "# TYPE jobmon_run_duration_seconds histogram" in text


async def test_per_job_series_can_be_turned_off(start_server: Any) -> None:
    async with start_server(http_port=free_port(), metrics_job_series=0) as server:
        tcp = await LineClient.connect(server.port)
        await tcp.request({"type": "update_status", "job_id": "a", "status": "running"})
        _, samples = await scrape(server)
        await tcp.close()
    assert not [name for name, _ in samples if name.startswith("jobmon_job_status")]
    assert value(samples, "jobmon_job_series_omitted") == 1


async def test_history_and_counters_survive_a_restart(
    start_server: Any, clock: FakeClock, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    async with start_server(http_port=free_port(), data_dir=data_dir) as server:
        tcp = await LineClient.connect(server.port)
        await report_some_jobs(tcp, clock)
        _, before = await scrape(server)
        await tcp.close()
    # Once from the journal, then from a snapshot (`jobmon compact`, offline).
    for compact in (False, True):
        if compact:
            subprocess.run(jobmon_cmd("compact", "--data-dir", str(data_dir)), check=True)
            assert list(data_dir.glob("snapshot-*"))
        async with start_server(http_port=free_port(), data_dir=data_dir) as server:
            _, after = await scrape(server)
        kept = {
            key: v
            for key, v in before.items()
            if key[0].startswith(
                ("jobmon_jobs", "jobmon_alerts", "jobmon_run_duration", "jobmon_job_")
            )
        }
        assert {key: after[key] for key in kept} == kept


# -- a real Prometheus ------------------------------------------------------------


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    assert found, "prometheus is not installed: .ci/run installs Debian's package"
    return found


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus scraping the given jobmon port every second."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(jobmon_http_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: jobmon\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{jobmon_http_port}']\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


async def query_until(base: str, query: str, wanted: float, seconds: float = 60) -> float:
    """Ask Prometheus until the query gives the wanted value (it scrapes every
    second: there is no event to wait for, so this polls, with a deadline)."""
    deadline = time.monotonic() + seconds
    last: Any = None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/api/v1/query", params={"query": query}) as resp:
                    body = await resp.json()
                result = body["data"]["result"]
                if result:
                    last = float(result[0]["value"][1])
                    if last == wanted:
                        return last
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus never gave {wanted} for {query}; last {last}")


async def test_a_real_prometheus_scrapes_jobmon_and_answers_queries(
    start_server: Any, clock: FakeClock, prometheus: Any
) -> None:
    async with start_server(http_port=free_port()) as server:
        assert server.http is not None
        base = prometheus(server.http.port)
        tcp = await LineClient.connect(server.port)
        await report_some_jobs(tcp, clock)
        assert await query_until(base, 'up{job="jobmon"}', 1) == 1
        assert await query_until(base, 'jobmon_jobs{status="completed"}', 3) == 3
        succeeded_at = FakeClock().current + 1
        assert (
            await query_until(
                base, 'jobmon_job_last_success_timestamp_seconds{job_id="backup"}', succeeded_at
            )
            == succeeded_at
        )
        assert await query_until(base, "sum(jobmon_run_duration_seconds_count)", 3) == 3
        # A change over TCP shows in Prometheus at the next scrape.
        await tcp.request({"type": "job_completed", "job_id": "resize", "duration_ms": 10})
        assert await query_until(base, 'jobmon_jobs{status="completed"}', 4) == 4
        await tcp.close()


def test_a_page_rendered_in_pieces_is_one_valid_page() -> None:
    """More jobs than one rendering piece: each family's HELP and TYPE once, every job once."""
    jobs = [
        (f"job-{n}", "completed" if n % 3 else "failed", 1000.0 + n if n % 3 else None)
        for n in range(2 * metrics.JOB_ROWS_PER_CHUNK + 17)
    ]
    reading = metrics.Reading(
        by_status={"completed": 0},
        received_by_type={},
        errors_replied=0,
        event_id_repeats=0,
        fired_by_kind={},
        firing_by_kind={},
        duration_buckets=[0] * (len(DURATION_BUCKETS_S) + 1),
        duration_sum_s=0.0,
        connections_open=0,
        connections_total=0,
        journal_bytes=None,
        fsync_buckets=None,
        fsync_seconds_total=0.0,
        job_series_limit=len(jobs),
        jobs_total=len(jobs),
        jobs=jobs,
    )
    text = metrics.render(reading).decode()
    assert text.count("# TYPE jobmon_job_status gauge") == 1
    assert text.count("# HELP jobmon_job_last_success_timestamp_seconds ") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    statuses = {
        (s.labels["job_id"], s.labels["status"]) for s in families["jobmon_job_status"].samples
    }
    assert statuses == {(job_id, status) for job_id, status, _ in jobs}
    successes = {
        s.labels["job_id"]: s.value
        for s in families["jobmon_job_last_success_timestamp_seconds"].samples
    }
    assert successes == {job_id: at for job_id, _, at in jobs if at is not None}
