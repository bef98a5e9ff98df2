"""--celery: a real Celery worker (prefork, two processes, started without -E) on
a real redis-server; jobmon (`jobmon serve --celery URL`, a subprocess) turns
its events into runs, durations, statuses and alerts, read back over TCP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from celery_support import ENABLED_LINE, RedisServer, Worker, client_app, stopped
from helpers import LineClient, ServerProcess, free_port, get_job, jobmon_cmd
from jobmon.clock import FakeClock

WAIT_S = 60.0  # generous: other suites share this machine's two cores


@pytest.fixture(scope="module")
def celery_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("celery")


@pytest.fixture(scope="module")
def redis(celery_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(celery_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker(celery_dir: Path, redis: RedisServer) -> Iterator[Worker]:
    w1 = Worker(celery_dir, redis.url, "w1@test")
    yield w1
    w1.stop()


def jobmon(data_dir: Path, redis: RedisServer, *extra: str) -> ServerProcess:
    return ServerProcess(data_dir, "--celery", redis.url, "--log-level", "warning", *extra)


class Watch:
    """A subscriber to events and alerts; everything pushed so far is kept."""

    def __init__(self, client: LineClient) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> Watch:
        client = await LineClient.connect(port)
        reply = await client.request({"type": "subscribe", "topics": ["alerts", "events"]})
        assert reply == {"type": "subscribed", "topics": ["alerts", "events"]}
        return cls(client)

    async def until(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for line in self.seen:
            if wanted(line):
                return line
        deadline = time.monotonic() + WAIT_S
        while True:
            line = await self.client.read(max(0.1, deadline - time.monotonic()))
            self.seen.append(line)
            if wanted(line):
                return line

    def events_of(self, job_id: str) -> list[dict[str, Any]]:
        return [
            e["event"] for e in self.seen if e["type"] == "event" and e["event"]["job_id"] == job_id
        ]

    def alerts_of(self, job_id: str) -> list[dict[str, Any]]:
        return [
            a["alert"] for a in self.seen if a["type"] == "alert" and a["alert"]["job_id"] == job_id
        ]


def ended(run_id: str) -> Callable[[dict[str, Any]], bool]:
    def wanted(line: dict[str, Any]) -> bool:
        event = line.get("event") or {}
        return event.get("run_id") == run_id and event["type"] in ("job_completed", "alert_sent")

    return wanted


def alert(job_id: str, kind: str) -> Callable[[dict[str, Any]], bool]:
    def wanted(line: dict[str, Any]) -> bool:
        found = line.get("alert") or {}
        return found.get("job_id") == job_id and found.get("kind") == kind

    return wanted


async def job_when(
    client: LineClient, job_id: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """get_job until ``ready`` says yes (state that comes from another process)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        reply = await client.request({"type": "get_job", "job_id": job_id})
        if reply["type"] == "job" and ready(reply["job"]):
            job: dict[str, Any] = reply["job"]
            return job
        assert time.monotonic() < deadline, f"{job_id} never got there: {reply}"
        await asyncio.sleep(0.05)


async def alerts_of(client: LineClient, job_id: str) -> list[dict[str, Any]]:
    reply = await client.request({"type": "get_alerts", "job_id": job_id})
    found: list[dict[str, Any]] = reply["alerts"]
    return found


async def watching(client: LineClient, worker: Worker) -> None:
    """This jobmon hears the worker (so its receiver is consuming: the worker job
    moves), and has asked it for task events (its log says so: the worker was
    started without -E)."""
    since = time.time()
    await job_when(
        client,
        f"celery-worker:{worker.name}",
        lambda j: (
            j["status"] == "running" and _time(j["updated_at"]) >= since and regular(j, worker)
        ),
    )
    deadline = time.monotonic() + WAIT_S
    while ENABLED_LINE not in worker.log():
        assert time.monotonic() < deadline, worker.log()
        await asyncio.sleep(0.05)


def deadline_moved(job: dict[str, Any]) -> bool:
    """The heartbeat deadline met a pause and was set again past it."""
    monitor = job["monitor"]
    due = monitor["deadlines"].get("missed_heartbeat")
    if due is None or not monitor["paused"]:
        return False
    late = _time(due) - _time(monitor["last_seen_at"])
    return late * 1000 > monitor["heartbeat_ttl_ms"]


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def regular(job: dict[str, Any], worker: Worker) -> bool:
    """Its ttl is Celery's, 2 x --heartbeat-interval: a regular heartbeat came
    (the one jobmon's receiver asks for when it connects says freq=5 whatever
    the interval, so until then the ttl is 10 s)."""
    return bool(job["monitor"]["heartbeat_ttl_ms"] == worker.ttl_ms)


def running(job: dict[str, Any]) -> bool:
    return job["status"] == "running" and "missed_heartbeat" in job["monitor"]["deadlines"]


def test_celery_without_the_extra_is_a_clear_error(tmp_path: Path) -> None:
    # As if celery were not installed: jobmon still imports; --celery says what to do.
    code = (
        "import sys; sys.modules['celery'] = None\n"
        "from jobmon.cli import main\n"
        "sys.exit(main(['serve', '--in-memory', '--port', '0', '--http-port', '0',"
        " '--celery', 'redis://127.0.0.1:1/0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "jobmon: cannot start: --celery needs the celery package" in done.stderr
    assert "pip install 'jobmon[celery]'" in done.stderr
    serve = ["serve", "--in-memory", "--port", "0", "--http-port", "0", "--celery", "6379"]
    done = subprocess.run(jobmon_cmd(*serve), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--celery expects a broker URL such as redis://HOST:6379/0, got '6379'" in done.stderr


async def test_tasks_are_runs_of_their_names(
    redis: RedisServer, worker: Worker, tmp_path: Path, celery_dir: Path
) -> None:
    with jobmon(tmp_path / "data", redis) as server:
        client = await LineClient.connect(server.port)
        watch = await Watch.connect(server.port)
        await watching(client, worker)
        app = client_app(redis.url)
        ok = app.send_task("tasks.ok", args=[2])
        boom = app.send_task("tasks.boom")
        flaky = app.send_task("tasks.flaky")

        await watch.until(ended(ok.id))
        job = await get_job(client, "tasks.ok")
        assert job["status"] == "completed" and job["error"] is None
        run = job["recent_runs"][0]
        assert run["run_id"] == ok.id and run["status"] == "completed"
        # Celery's own runtime: the task sleeps 0.3 s.
        assert 300 <= run["duration_ms"] == job["duration_ms"] < 60_000

        found = await watch.until(alert("tasks.boom", "failed"))
        assert found["alert"]["text"] == "Job failed after 0 retries: ValueError('kaboom')"
        job = await get_job(client, "tasks.boom")
        assert (job["status"], job["error"], job["retries"]) == (
            "failed",
            "ValueError('kaboom')",
            0,
        )
        assert job["recent_runs"][0]["run_id"] == boom.id

        # Two retries, then Celery gives up: one alert, after the last attempt.
        found = await watch.until(alert("tasks.flaky", "failed"))
        assert found["alert"]["text"] == "Job failed after 2 retries: RuntimeError('still broken')"
        steps = [
            (e["type"], e.get("status", e.get("retries")))
            for e in watch.events_of("tasks.flaky")
            if e["run_id"] == flaky.id
        ]
        assert steps == [
            ("status_updated", "queued"),
            ("status_updated", "running"),
            ("job_failed", 0),  # retrying: no alert
            ("status_updated", "running"),
            ("job_failed", 1),
            ("status_updated", "running"),
            ("alert_sent", None),
        ]
        retrying = [e for e in watch.events_of("tasks.flaky") if e["type"] == "job_failed"]
        assert all(
            e["will_retry"] and e["error"] == "RuntimeError('still broken')" for e in retrying
        )
        assert len(watch.alerts_of("tasks.flaky")) == 1
        job = await get_job(client, "tasks.flaky")
        assert (job["status"], job["retries"], job["runs"]) == ("failed", 2, 1)

        # Two runs of one task name at once (each waits for the other to start).
        one, two = celery_dir / f"{tmp_path.name}-1", celery_dir / f"{tmp_path.name}-2"
        short = app.send_task("tasks.pair", args=[str(one), str(two), 0.5])
        long = app.send_task("tasks.pair", args=[str(two), str(one), 1.2])
        await watch.until(ended(short.id))
        await watch.until(ended(long.id))
        events = watch.events_of("tasks.pair")
        order = [(e["type"], e.get("status"), e["run_id"]) for e in events]
        first_end = next(i for i, e in enumerate(order) if e[0] == "job_completed")
        assert {r for t, s, r in order[:first_end] if s == "running"} == {short.id, long.id}
        job = await get_job(client, "tasks.pair")
        runs = {r["run_id"]: r for r in job["recent_runs"]}
        assert set(runs) == {short.id, long.id} and job["runs"] == 2
        assert all(r["status"] == "completed" for r in runs.values())
        assert 500 <= runs[short.id]["duration_ms"] < runs[long.id]["duration_ms"]
        assert runs[long.id]["duration_ms"] >= 1200
        assert job["status"] == "completed" and "live_runs" not in job
        await client.close()
        await watch.client.close()
        assert server.terminate() == 0


async def test_a_killed_worker_alerts_a_stopped_one_does_not_a_restart_is_a_new_run(
    redis: RedisServer, tmp_path: Path, celery_dir: Path
) -> None:
    killed = Worker(celery_dir, redis.url, "killed@test")
    clean = Worker(celery_dir, redis.url, "clean@test")
    with stopped(killed, clean), jobmon(tmp_path / "data", redis) as server:
        client = await LineClient.connect(server.port)
        watch = await Watch.connect(server.port)
        killed_job, clean_job = "celery-worker:killed@test", "celery-worker:clean@test"
        for job_id in (killed_job, clean_job):
            # Celery's own time-to-live: 2 x --heartbeat-interval (2 s).
            await job_when(client, job_id, lambda j: running(j) and regular(j, killed))

        assert clean.stop(signal.SIGTERM) == 0  # warm shutdown: worker-offline
        job = await job_when(client, clean_job, lambda j: j["status"] == "completed")
        assert job["monitor"]["deadlines"] == {}  # nothing is expected of it any more

        killed.stop(signal.SIGKILL)  # no worker-offline: its heartbeats just stop
        found = await watch.until(alert(killed_job, "missed_heartbeat"))
        assert found["alert"]["text"].startswith(
            f"Job {killed_job} missed its heartbeat: expected one every 4000 ms, the last came at "
        )
        # The clean worker's last heartbeat came before the killed one's, with
        # the same ttl: its deadline would have passed by now, and none was set.
        assert await alerts_of(client, clean_job) == []
        assert [a["kind"] for a in await alerts_of(client, killed_job)] == ["missed_heartbeat"]
        job = await get_job(client, killed_job)
        assert job["status"] == "running" and job["alerts"] == ["missed_heartbeat"]
        first_start = job["started_at"]
        # Started again under its name: its run is its uptime, so the killed
        # one's ends (cancelled) and a new one starts; the alert resolves.
        restarted = Worker(celery_dir, redis.url, "killed@test")
        with stopped(restarted):
            job = await job_when(client, killed_job, lambda j: j["runs"] == 2 and running(j))
            assert job["started_at"] != first_start and "alerts" not in job
            assert [r["status"] for r in job["recent_runs"]] == ["cancelled"]
            assert job["recent_runs"][0]["started_at"] == first_start
            states = [(a["kind"], a["state"]) for a in await alerts_of(client, killed_job)]
            assert states == [("missed_heartbeat", "resolved")]  # one incident, nothing else
        await client.close()
        await watch.client.close()
        assert server.terminate() == 0


async def test_a_jobmon_restart_keeps_the_tasks_going_on(
    redis: RedisServer, worker: Worker, tmp_path: Path, celery_dir: Path
) -> None:
    gate = celery_dir / f"{tmp_path.name}-gate"
    app = client_app(redis.url)
    worker_job = f"celery-worker:{worker.name}"
    with jobmon(tmp_path / "data", redis) as first:
        client = await LineClient.connect(first.port)
        await watching(client, worker)
        task = app.send_task("tasks.gate", args=[str(gate)])
        await job_when(client, "tasks.gate", lambda j: j["status"] == "running")
        ttl_s = (await get_job(client, worker_job))["monitor"]["heartbeat_ttl_ms"] / 1000
        await client.close()
        assert first.terminate() == 0
    # jobmon stays down past the worker's deadline: the heartbeats sent
    # meanwhile are lost, and the worker must not be called missing for it.
    down_until = time.time() + ttl_s + 0.5
    while time.time() < down_until:
        await asyncio.sleep(0.05)
    # A new process on the same data: the task ends only once it listens.
    with jobmon(tmp_path / "data", redis) as second:
        client = await LineClient.connect(second.port)
        await watching(client, worker)
        assert await alerts_of(client, worker_job) == []
        job = await get_job(client, worker_job)
        assert job["monitor"]["paused"] and job["monitor"]["paused_until"] is not None
        gate.touch()
        job = await job_when(client, "tasks.gate", lambda j: j["status"] == "completed")
        # Its task-succeeded names no task: the name came from the journal's live run.
        assert job["recent_runs"][0]["run_id"] == task.id
        assert job["runs"] == 1 and "live_runs" not in job
        reply = await client.request({"type": "get_job", "job_id": "celery-unnamed-task"})
        assert reply["type"] == "error", reply
        assert await alerts_of(client, worker_job) == []
        await client.close()
        assert second.terminate() == 0


async def test_a_broker_restart_pauses_the_workers_and_loses_no_worker(
    redis: RedisServer, worker: Worker, tmp_path: Path
) -> None:
    worker_job = f"celery-worker:{worker.name}"
    broker_job = f"celery-broker:{redis.url}"
    http_port = free_port()
    with jobmon(tmp_path / "data", redis, "--http-port", str(http_port)) as server:
        client = await LineClient.connect(server.port)
        await watching(client, worker)
        job = await job_when(client, broker_job, lambda j: "monitor" in j)
        assert job["monitor"]["heartbeat_ttl_ms"] == 15000
        redis.stop()
        job = await job_when(client, worker_job, lambda j: j["monitor"]["paused"])
        # Its heartbeat deadline passes during the outage: moved past the pause, no alert.
        await job_when(client, worker_job, deadline_moved)
        redis.start()
        job = await job_when(client, worker_job, lambda j: not j["monitor"]["paused"])
        # The worker reconnects by itself, its task events still on.
        ok = client_app(redis.url).send_task("tasks.ok", args=[1])
        job = await job_when(
            client, "tasks.ok", lambda j: any(r["run_id"] == ok.id for r in j["recent_runs"])
        )
        assert await alerts_of(client, worker_job) == []
        assert await alerts_of(client, broker_job) == []
        metrics = await asyncio.to_thread(_metrics, http_port)
        assert f'jobmon_celery_connected{{cluster="{redis.url}"}} 1.0' in metrics
        assert (
            f'jobmon_celery_events_total{{cluster="{redis.url}",outcome="dropped"}} 0.0' in metrics
        )
        await client.close()
        assert server.terminate() == 0
    assert "broker unreachable; retrying" in server.stderr


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as page:
        return str(page.read().decode())


async def test_a_broker_out_of_reach_alerts_on_the_broker_job(
    start_server: Callable[..., Any], clock: FakeClock
) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    broker_job = url.replace(":secret@", "")
    async with start_server(celery=[url]) as server:
        client = await LineClient.connect(server.port)
        job = await job_when(client, f"celery-broker:{broker_job}", lambda j: "monitor" in j)
        assert job["monitor"]["heartbeat_ttl_ms"] == 15000  # a connection is expected by then
        clock.advance(16)
        server.engine.wake()
        await server.engine.wait_idle()
        (found,) = await alerts_of(client, f"celery-broker:{broker_job}")
        assert found["kind"] == "missed_heartbeat"
        assert found["text"].startswith(f"Job celery-broker:{broker_job} missed its heartbeat")
        assert "secret" not in str(await client.request({"type": "list_jobs"}))
        await client.close()
