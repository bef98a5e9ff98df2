"""run_id: several runs of one job live at once, each with its own start,
progress and outcome; without run_id nothing changes."""

from __future__ import annotations

from typing import Any

from helpers import LineClient
from jobmon.clock import FakeClock
from jobmon.server import Server


async def job_of(client: LineClient, job_id: str) -> dict[str, Any]:
    reply = await client.request({"type": "get_job", "job_id": job_id})
    assert reply["type"] == "job", reply
    job: dict[str, Any] = reply["job"]
    return job


async def test_overlapping_runs_are_measured_apart(client: LineClient, clock: FakeClock) -> None:
    start = {"type": "update_status", "job_id": "etl", "status": "running"}
    assert await client.request({**start, "msg_id": 1, "run_id": "a"}) == {
        "type": "status_updated",
        "in_reply_to": 1,
        "job_id": "etl",
        "status": "running",
        "progress": 0,
        "run_id": "a",
    }
    clock.advance(10)
    await client.request({**start, "run_id": "b", "progress": 5})
    clock.advance(5)
    # a ends after 15 s; b (started 5 s ago) is still live, so the job runs on.
    done = await client.request({"type": "job_completed", "job_id": "etl", "run_id": "a"})
    assert done == {
        "type": "job_completed",
        "job_id": "etl",
        "duration_ms": 15000,
        "resource_usage": {},
        "run_id": "a",
    }
    job = await job_of(client, "etl")
    assert job["status"] == "running" and job["runs"] == 2
    assert [r["run_id"] for r in job["live_runs"]] == ["b"]
    assert job["live_runs"][0]["progress"] == 5
    assert job["recent_runs"][0]["run_id"] == "a"
    assert job["recent_runs"][0]["duration_ms"] == 15000
    clock.advance(20)
    await client.request({"type": "job_completed", "job_id": "etl", "run_id": "b"})
    job = await job_of(client, "etl")
    assert job["status"] == "completed" and "live_runs" not in job
    assert [(r["run_id"], r["duration_ms"]) for r in job["recent_runs"]] == [
        ("b", 25000),
        ("a", 15000),
    ]
    stats = await client.request({"type": "get_stats"})
    assert stats["avg_duration_ms"] == 20000 and stats["completed"] == 1


async def test_one_run_fails_while_another_runs(client: LineClient, clock: FakeClock) -> None:
    start = {"type": "update_status", "job_id": "sync", "status": "running"}
    await client.request({**start, "run_id": "r1"})
    await client.request({**start, "run_id": "r2"})
    reply = await client.request(
        {"type": "job_failed", "job_id": "sync", "run_id": "r1", "error": "boom", "retries": 3}
    )
    assert reply == {
        "type": "alert_sent",
        "job_id": "sync",
        "alert": "Job failed after 3 retries: boom",
        "run_id": "r1",
    }
    job = await job_of(client, "sync")
    assert job["status"] == "running" and job["alerts"] == ["failed"]
    assert job["recent_runs"][0]["status"] == "failed"
    again = {"type": "job_failed", "job_id": "sync", "run_id": "r1", "error": "boom", "retries": 3}
    assert await client.request(again) == reply  # the same report again: counted once
    assert (await job_of(client, "sync"))["status"] == "running"
    assert job["recent_runs"][0]["run_id"] == "r1"
    clock.advance(3)
    await client.request({"type": "job_completed", "job_id": "sync", "run_id": "r2"})
    job = await job_of(client, "sync")
    assert job["status"] == "completed" and "alerts" not in job  # the success resolves it


async def test_a_retry_of_one_run_keeps_the_job_running(client: LineClient) -> None:
    start = {"type": "update_status", "job_id": "q", "status": "running"}
    await client.request({**start, "run_id": "x"})
    await client.request({**start, "run_id": "y"})
    reply = await client.request(
        {"type": "job_failed", "job_id": "q", "run_id": "x", "error": "flaky", "retries": 0}
    )
    assert reply["will_retry"] is True and reply["run_id"] == "x"
    job = await job_of(client, "q")
    assert job["status"] == "running"
    assert {r["run_id"]: r["status"] for r in job["live_runs"]} == {
        "x": "retrying",
        "y": "running",
    }


async def test_a_repeated_outcome_is_counted_once(client: LineClient) -> None:
    await client.request(
        {"type": "update_status", "job_id": "dup", "status": "running", "run_id": "r"}
    )
    done = {"type": "job_completed", "job_id": "dup", "run_id": "r", "duration_ms": 5}
    first = await client.request(done)
    again = await client.request(done)
    assert first == again
    job = await job_of(client, "dup")
    assert job["runs"] == 1 and len(job["recent_runs"]) == 1
    assert (await client.request({"type": "get_stats"}))["avg_duration_ms"] == 5


async def test_a_repeated_outcome_while_other_runs_go_on_is_counted_once(
    client: LineClient,
) -> None:
    start = {"type": "update_status", "job_id": "dup2", "status": "running"}
    await client.request({**start, "run_id": "a"})
    await client.request({**start, "run_id": "b"})
    done = {"type": "job_completed", "job_id": "dup2", "run_id": "a"}
    first = await client.request(done)
    assert first["duration_ms"] == 0 and await client.request(done) == first
    job = await job_of(client, "dup2")
    assert job["status"] == "running" and len(job["recent_runs"]) == 1


async def test_completion_of_an_unknown_run_needs_a_duration(client: LineClient) -> None:
    reply = await client.request(
        {"type": "job_completed", "msg_id": 4, "job_id": "j", "run_id": "nope"}
    )
    assert reply["type"] == "error" and reply["code"] == 22 and "nope" in reply["text"]
    reply = await client.request({"type": "get_job", "job_id": "j"})
    assert reply["code"] == 20  # nothing changed


async def test_bad_run_ids_are_refused(client: LineClient) -> None:
    for bad in (5, "", "x" * 129, None):
        body = {"type": "heartbeat", "job_id": "h", "ttl_ms": 1000, "run_id": bad}
        reply = await client.request(body)
        if bad is None:
            assert reply["type"] == "heartbeat_ok" and "run_id" not in reply
        else:
            assert reply["type"] == "error" and reply["code"] == 12
            assert "run_id must be a non-empty string" in reply["text"]


async def test_a_stale_run_is_abandoned_when_another_starts(
    client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "cron", "max_runtime_ms": 60_000})
    start = {"type": "update_status", "job_id": "cron", "status": "running"}
    await client.request({**start, "run_id": "crashed"})
    clock.advance(61)
    await client.request({"type": "heartbeat", "job_id": "tick", "ttl_ms": 1000})  # a turn
    assert (await job_of(client, "cron"))["alerts"] == ["overrun"]
    await client.request({**start, "run_id": "next"})
    job = await job_of(client, "cron")
    assert [r["run_id"] for r in job["live_runs"]] == ["next"]
    assert "alerts" not in job  # the overrun was the abandoned run's
    abandoned = job["recent_runs"][0]
    assert abandoned["run_id"] == "crashed" and abandoned["status"] == "cancelled"
    assert abandoned["error"].startswith("abandoned when run 'next' started")


async def test_heartbeats_of_runs_and_a_restart_keep_live_runs(
    start_server: Any, data_dir: Any, clock: FakeClock
) -> None:
    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        start = {"type": "update_status", "job_id": "w", "status": "running"}
        await client.request({**start, "run_id": "1"})
        await client.request({**start, "run_id": "2", "progress": 50})
        beat = await client.request(
            {"type": "heartbeat", "job_id": "w", "ttl_ms": 30_000, "run_id": "2"}
        )
        assert beat["run_id"] == "2"
        await client.request({"type": "job_completed", "job_id": "w", "run_id": "1"})
        before = await job_of(client, "w")
        await client.close()
    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        after = await job_of(client, "w")
        # The restart closed the reporting connection: worker_lost is armed (as always).
        assert after["monitor"]["deadlines"].pop("worker_lost")
        assert after == before
        assert after["monitor"]["deadlines"] == {"missed_heartbeat": beat["deadline_at"]}
        assert [r["run_id"] for r in after["live_runs"]] == ["2"]
        await client.close()


async def test_without_run_id_the_replies_are_unchanged(server: Server) -> None:
    client = await LineClient.connect(server.port)
    await client.send_raw(
        b'{"type":"update_status","msg_id":1,"job_id":"job-123","status":"running","progress":25}\n'
        b'{"type":"job_completed","msg_id":2,"job_id":"job-123","duration_ms":60000}\n'
    )
    assert await client.read_line() == (
        b'{"type":"status_updated","in_reply_to":1,"job_id":"job-123","status":"running",'
        b'"progress":25}\n'
    )
    assert await client.read_line() == (
        b'{"type":"job_completed","in_reply_to":2,"job_id":"job-123","duration_ms":60000,'
        b'"resource_usage":{}}\n'
    )
    await client.close()


async def test_the_python_client_reports_runs_by_run_id(server: Server) -> None:
    from jobmon.client import Client

    async with Client("127.0.0.1", server.port) as jobmon:
        assert await jobmon.start(5)
        await jobmon.update_status("batch", "running", run_id="one")
        await jobmon.update_status("batch", "running", run_id="two")
        await jobmon.heartbeat("batch", ttl_ms=60_000, run_id="two")
        await jobmon.completed("batch", duration_ms=10, run_id="one")
        job = await jobmon.get_job("batch")
    assert job["status"] == "running"
    assert [r["run_id"] for r in job["live_runs"]] == ["two"]
    assert job["recent_runs"][0]["run_id"] == "one"
