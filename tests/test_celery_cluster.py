"""--celery on every node of a cluster: each node's receiver hears every Celery
event and proposes it; the events carry event_ids made from the Celery event
alone, so the log applies each once. One run per task, one alert per failure,
the same on every node (two jobmon node subprocesses, one real redis-server for
the cluster's log and the broker, a real prefork worker started without -E)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_support import RedisServer, Worker, client_app
from helpers import LineClient, ServerProcess, free_port
from test_celery import WAIT_S, Watch, alert, alerts_of, ended, get_job, watching


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def metric(http_port: int, name: str, labels: str = "") -> float:
    """The sum of a family's samples whose labels contain ``labels``, on this node."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def repeats_seen(http_port: int, at_least: int) -> None:
    """The other node's proposals of the same events have been applied here too."""
    deadline = time.monotonic() + WAIT_S
    while metric(http_port, "jobmon_event_id_repeats_total") < at_least:
        assert time.monotonic() < deadline, "the second node's proposals never arrived"
        await asyncio.sleep(0.05)


async def test_every_node_hears_celery_and_each_event_counts_once(
    redis: RedisServer, tmp_path: Path
) -> None:
    log_url = redis.url.rsplit("/", 1)[0] + "/0"
    broker = redis.url.rsplit("/", 1)[0] + "/1"
    (tmp_path / "worker").mkdir()
    worker = Worker(tmp_path / "worker", broker, "w1@test")
    http_ports = [free_port(), free_port()]
    nodes = [
        ServerProcess(
            tmp_path / f"n{i}",
            "--redis",
            log_url,
            "--node-id",
            f"n{i}",
            "--celery",
            broker,
            "--http-port",  # given again: argparse takes the last, a port known here
            str(http_ports[i - 1]),
            "--log-level",
            "warning",
        )
        for i in (1, 2)
    ]
    try:
        for node in nodes:
            node.start()
        clients = [await LineClient.connect(n.port) for n in nodes]
        watches = [await Watch.connect(n.port) for n in nodes]
        for client in clients:
            await watching(client, worker)  # both receivers consume
        app = client_app(broker)
        ok = app.send_task("tasks.ok", args=[2])
        boom = app.send_task("tasks.boom")
        for watch in watches:
            await watch.until(ended(ok.id))
            await watch.until(alert("tasks.boom", "failed"))
        # Each task's received, started and outcome came from both receivers: the
        # second of each pair is answered from memory (6 at least, with heartbeats).
        for port in http_ports:
            await repeats_seen(port, 6)
        ids = set()
        for client, watch in zip(clients, watches, strict=True):
            completions = [
                e
                for e in watch.events_of("tasks.ok")
                if e["run_id"] == ok.id and e["type"] == "job_completed"
            ]
            assert len(completions) == 1, completions  # the repeat is no event
            job = await get_job(client, "tasks.ok")
            runs = [r for r in job["recent_runs"] if r["run_id"] == ok.id]
            assert len(runs) == 1 and runs[0]["status"] == "completed", job
            assert job["runs"] == 1, job
            failed = await get_job(client, "tasks.boom")
            assert [r["run_id"] for r in failed["recent_runs"]] == [boom.id], failed
            (fired,) = await alerts_of(client, "tasks.boom")
            assert fired["text"] == "Job failed after 0 retries: ValueError('kaboom')"
            ids.add(fired["id"])
            # Pushed once to this node's subscriber, though both nodes proposed it.
            assert len(watch.alerts_of("tasks.boom")) == 1
        assert len(ids) == 1  # one incident, one id, on every node
        for port in http_ports:  # each node's receiver did its part
            assert metric(port, "jobmon_celery_events_total", 'outcome="applied"') > 0
        for client in clients:
            await client.close()
        for watch in watches:
            await watch.client.close()
    finally:
        worker.stop()
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.terminate()
