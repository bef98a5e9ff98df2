"""jobmon.client against the real server: replies matched by msg_id, errors raised,
track() measuring runs, the offline queue, reconnects across a server restart."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import ServerProcess, free_port
from jobmon.client import Client, JobmonError, JobmonUnavailable, SyncClient
from jobmon.server import Server


async def test_requests_are_pipelined_and_matched_by_msg_id(server: Server) -> None:
    async with Client(port=server.port) as client:
        assert await client.start(5)
        replies = await asyncio.gather(
            *(client.update_status(f"job-{n}", "running", progress=n % 101) for n in range(200))
        )
        assert [r["job_id"] for r in replies if r] == [f"job-{n}" for n in range(200)]
        assert [r["progress"] for r in replies if r] == [n % 101 for n in range(200)]
        stats = await client.get_stats()
        assert stats["total"] == 200
        job = await client.get_job("job-7")
        assert job["status"] == "running" and job["progress"] == 7
        with pytest.raises(JobmonError) as raised:
            await client.get_job("nobody")
        assert raised.value.code == 20
        assert raised.value.text == "no job with job_id 'nobody' is tracked"
        with pytest.raises(JobmonError) as refused:
            await client.update_status("x", "sideways")
        assert refused.value.code == 12


async def test_track_reports_a_run_with_its_duration_and_usage(server: Server) -> None:
    async with Client(port=server.port) as client:
        await client.start(5)
        async with client.track("etl", max_retries=2) as run:
            await run.progress(40)
            job = await client.get_job("etl")
            assert (job["status"], job["progress"], job["max_retries"]) == ("running", 40, 2)
            run.resource_usage["rows"] = 1234
        job = await client.get_job("etl")
        assert job["status"] == "completed"
        assert job["duration_ms"] >= 0
        usage = job["resource_usage"]
        assert usage["rows"] == 1234
        assert usage["memory_mb"] > 10  # this Python process
        assert 0 <= usage["cpu_percent"] <= 100 * 64

        with pytest.raises(ValueError, match="bad row 17"):
            async with client.track("etl", max_retries=0):
                raise ValueError("bad row 17")
        job = await client.get_job("etl")
        assert job["status"] == "failed"
        assert job["error"] == "ValueError: bad row 17"
        alerts = await client.get_alerts(state="firing")
        assert [a["kind"] for a in alerts] == ["failed"]


async def test_the_decorator_retries_and_reports_each_attempt(server: Server) -> None:
    async with Client(port=server.port) as client:
        await client.start(5)
        attempts: list[int] = []

        @client.track("flaky", max_retries=3)
        async def flaky() -> str:
            attempts.append(len(attempts))
            if len(attempts) < 3:
                raise RuntimeError(f"attempt {len(attempts)} failed")
            return "done"

        assert await flaky() == "done"
        assert attempts == [0, 1, 2]
        job = await client.get_job("flaky")
        assert job["status"] == "completed"
        statuses = [r["status"] for r in job["recent_runs"]]
        assert statuses[0] == "completed"
        assert await client.get_alerts(state="firing") == []  # retries never alerted


async def test_events_wait_offline_and_arrive_with_their_times(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is down when the job runs; it comes up later; nothing is lost,
    and each event keeps the time it happened."""
    port = free_port()
    caplog.set_level(logging.WARNING, logger="jobmon.client")
    client = Client(port=port, backoff_s=0.05, backoff_max_s=0.2)
    assert not await client.start(0.2)
    started_at = time.time()
    assert await client.update_status("offline-job", "running") is None  # queued
    await asyncio.sleep(1.1)  # the run itself takes a while: its duration comes from `at`
    assert await client.completed("offline-job") is None
    assert len(client.queued) == 2
    assert any("events wait in a local queue" in r.message for r in caplog.records)
    with ServerProcess(tmp_path / "data", "--port", str(port)):
        assert await client.delivered(30)  # once connected
        delivered_s = time.time() - started_at
        job = await client.get_job("offline-job")
    await client.close()
    assert job["status"] == "completed"
    # From the first event's own time: at least the sleep, at most until delivered
    # (an event that waited under 0.5 s carries no `at`: the server's clock is as good).
    assert 1100 <= job["duration_ms"] <= delivered_s * 1000 + 1
    started = time.mktime(time.strptime(job["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs((started - time.timezone) - started_at) < 2


async def test_reconnects_across_a_server_restart_without_losing_events(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    server = ServerProcess(data, "--port", str(port), "--fsync", "always").start()
    # While the server is down a question waits this long for it, then raises.
    client = Client(port=port, backoff_s=0.05, backoff_max_s=0.2, reply_timeout_s=1.0)
    try:
        assert await client.start(5)
        for n in range(50):
            await client.update_status(f"j{n}", "running")
        server.terminate()
        await client.disconnected()
        for n in range(50):
            await client.completed(f"j{n}", duration_ms=n)  # queued: the server is down
        with pytest.raises(JobmonUnavailable):
            await client.get_stats()
        server = ServerProcess(data, "--port", str(port), "--fsync", "always").start()
        assert await client.delivered(30)
        stats = await client.get_stats()
        assert stats["total"] == 50 and stats["completed"] == 50
    finally:
        await client.close()
        server.terminate()


def test_sync_client_for_scripts(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server, SyncClient(port=server.port) as jobmon:
        reply: Any = jobmon.update_status("script", "running", progress=10)
        assert reply["progress"] == 10
        with jobmon.track("script-run") as run:
            run.progress(50)
            assert jobmon.get_job("script-run")["progress"] == 50
        assert jobmon.get_job("script-run")["status"] == "completed"
        with pytest.raises(KeyError), jobmon.track("script-run"):
            raise KeyError("missing")
        assert jobmon.get_job("script-run")["error"] == "KeyError: 'missing'"
        assert jobmon.get_stats()["total"] == 2
