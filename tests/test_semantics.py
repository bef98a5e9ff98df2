"""Lifecycle semantics: runs, retries, the failure alert, and the O(1) aggregates."""

from __future__ import annotations

from helpers import LineClient
from jobmon.clock import FakeClock, iso
from jobmon.server import Server


async def status(
    client: LineClient, job_id: str, status: str, **extra: object
) -> dict[str, object]:
    return await client.request(
        {"type": "update_status", "job_id": job_id, "status": status, **extra}
    )


async def get_job(client: LineClient, job_id: str) -> dict[str, object]:
    reply = await client.request({"type": "get_job", "msg_id": 1, "job_id": job_id})
    assert reply["type"] == "job", reply
    job: dict[str, object] = reply["job"]
    return job


async def stats(client: LineClient) -> dict[str, object]:
    reply = await client.request({"type": "get_stats"})
    reply.pop("type")
    return reply


async def test_progress_absent_reports_current_progress(client: LineClient) -> None:
    assert (await status(client, "a", "queued"))["progress"] == 0
    assert (await status(client, "a", "running", progress=40))["progress"] == 40
    assert (await status(client, "a", "running"))["progress"] == 40
    assert (await status(client, "a", "running", progress=72.5))["progress"] == 72.5
    assert (await status(client, "a", "completed"))["progress"] == 100


async def test_get_job_returns_the_whole_record(client: LineClient, clock: FakeClock) -> None:
    clock.current = 1_795_000_000.25
    await status(client, "backup", "running", progress=10, max_retries=5)
    clock.advance(90)
    await client.request(
        {
            "type": "job_completed",
            "job_id": "backup",
            "duration_ms": 90000,
            "resource_usage": {"cpu_percent": 180, "memory_mb": 512, "io_mb": 3},
        }
    )
    assert await get_job(client, "backup") == {
        "job_id": "backup",
        "status": "completed",
        "progress": 100,
        "created_at": "2026-11-18T11:06:40.250Z",
        "updated_at": "2026-11-18T11:08:10.250Z",
        "started_at": "2026-11-18T11:06:40.250Z",
        "finished_at": "2026-11-18T11:08:10.250Z",
        "runs": 1,
        "duration_ms": 90000,
        "resource_usage": {"cpu_percent": 180, "memory_mb": 512, "io_mb": 3},
        "error": None,
        "retries": 0,
        "max_retries": 5,
        "last_success_at": "2026-11-18T11:08:10.250Z",
        "recent_runs": [
            {
                "started_at": "2026-11-18T11:06:40.250Z",
                "finished_at": "2026-11-18T11:08:10.250Z",
                "status": "completed",
                "duration_ms": 90000,
                "retries": 0,
                "error": None,
            }
        ],
    }


async def test_recent_runs_keep_the_last_twenty_newest_first(
    client: LineClient, clock: FakeClock
) -> None:
    for run in range(25):
        await status(client, "etl", "running")
        clock.advance(run + 1)
        if run % 5 == 4:
            await client.request(
                {"type": "job_failed", "job_id": "etl", "error": f"boom {run}", "retries": 3}
            )
        else:
            await client.request({"type": "job_completed", "job_id": "etl"})
    job = await get_job(client, "etl")
    runs = job["recent_runs"]
    assert isinstance(runs, list)
    assert len(runs) == 20
    assert [r["duration_ms"] for r in runs] == [(n + 1) * 1000 for n in range(24, 4, -1)]
    assert runs[0] == {
        "started_at": runs[0]["started_at"],
        "finished_at": runs[0]["finished_at"],
        "status": "failed",
        "duration_ms": 25000,
        "retries": 3,
        "error": "boom 24",
    }
    assert [r["status"] for r in runs[:5]] == [
        "failed",
        "completed",
        "completed",
        "completed",
        "completed",
    ]
    assert job["runs"] == 25


async def test_duration_is_computed_from_running_when_absent(
    client: LineClient, clock: FakeClock
) -> None:
    await status(client, "etl", "queued")
    clock.advance(5)
    await status(client, "etl", "running")
    clock.advance(2.5)
    reply = await client.request({"type": "job_completed", "msg_id": 9, "job_id": "etl"})
    assert reply == {
        "type": "job_completed",
        "in_reply_to": 9,
        "job_id": "etl",
        "duration_ms": 2500,
        "resource_usage": {},
    }
    # A completed job has no running run any more: no duration can be computed.
    again = await client.request({"type": "job_completed", "msg_id": 10, "job_id": "etl"})
    assert again["type"] == "error" and again["code"] == 22


async def test_a_finished_job_reported_again_starts_a_new_run(client: LineClient) -> None:
    await status(client, "nightly", "running", progress=50)
    await client.request({"type": "job_completed", "job_id": "nightly", "duration_ms": 100})
    assert (await get_job(client, "nightly"))["runs"] == 1
    reply = await status(client, "nightly", "running")
    assert reply["progress"] == 0  # a new run starts from zero
    job = await get_job(client, "nightly")
    assert job["runs"] == 2 and job["status"] == "running" and job["finished_at"] is None
    await client.request({"type": "job_completed", "job_id": "nightly", "duration_ms": 300})
    # A job_completed for a completed job is another completed run (at-least-once delivery).
    await client.request({"type": "job_completed", "job_id": "nightly", "duration_ms": 500})
    job = await get_job(client, "nightly")
    assert job["runs"] == 3 and job["duration_ms"] == 500
    assert await stats(client) == {"total": 1, "completed": 1, "failed": 0, "avg_duration_ms": 300}


async def test_repeated_status_is_idempotent(client: LineClient) -> None:
    await status(client, "x", "completed")
    await status(client, "x", "completed")
    job = await get_job(client, "x")
    assert job["runs"] == 1 and job["progress"] == 100


async def test_status_set_completed_counts_but_adds_no_duration(client: LineClient) -> None:
    await client.request({"type": "job_completed", "job_id": "a", "duration_ms": 1000})
    await status(client, "b", "completed")
    assert await stats(client) == {"total": 2, "completed": 2, "failed": 0, "avg_duration_ms": 1000}


async def test_retries_then_failure_alert(client: LineClient, server: Server) -> None:
    reply = await client.request(
        {
            "type": "job_failed",
            "msg_id": 1,
            "job_id": "sync",
            "error": "Connection timeout",
            "retries": 1,
        }
    )
    assert reply == {
        "type": "job_failed",
        "in_reply_to": 1,
        "job_id": "sync",
        "error": "Connection timeout",
        "retries": 1,
        "will_retry": True,
    }
    assert (await get_job(client, "sync"))["status"] == "retrying"
    assert server.node.store.recent_alerts() == []
    reply = await client.request(
        {
            "type": "job_failed",
            "msg_id": 2,
            "job_id": "sync",
            "error": "Connection timeout",
            "retries": 3,
        }
    )
    assert reply == {
        "type": "alert_sent",
        "in_reply_to": 2,
        "job_id": "sync",
        "alert": "Job failed after 3 retries: Connection timeout",
    }
    job = await get_job(client, "sync")
    assert (
        job["status"] == "failed" and job["error"] == "Connection timeout" and job["retries"] == 3
    )
    alerts = server.node.store.recent_alerts()
    assert [(a.job_id, a.kind, a.text) for a in alerts] == [
        ("sync", "failed", "Job failed after 3 retries: Connection timeout")
    ]


async def test_repeated_exhausted_failure_is_one_incident(
    client: LineClient, server: Server
) -> None:
    for msg_id in (1, 2, 3):
        reply = await client.request(
            {"type": "job_failed", "msg_id": msg_id, "job_id": "j", "error": "boom", "retries": 3}
        )
        assert reply["type"] == "alert_sent"
    assert len(server.node.store.recent_alerts()) == 1
    assert (await get_job(client, "j"))["runs"] == 1
    # Success resolves the incident; the next exhausted failure is a new one.
    await client.request({"type": "job_completed", "job_id": "j", "duration_ms": 10})
    first = server.node.store.recent_alerts()[0]
    assert first.resolved_at is not None
    await client.request({"type": "job_failed", "job_id": "j", "error": "boom again", "retries": 3})
    alerts = server.node.store.recent_alerts()
    assert len(alerts) == 2 and alerts[1].text == "Job failed after 3 retries: boom again"
    assert alerts[1].resolved_at is None


async def test_max_retries_per_job_and_per_request(client: LineClient) -> None:
    await status(client, "a", "running", max_retries=1)
    assert (await client.request({"type": "job_failed", "job_id": "a", "retries": 1}))[
        "type"
    ] == "alert_sent"
    reply = await client.request(
        {"type": "job_failed", "job_id": "b", "retries": 4, "max_retries": 5}
    )
    assert reply["will_retry"] is True
    assert (await get_job(client, "b"))["max_retries"] == 5
    reply = await client.request(
        {"type": "job_failed", "job_id": "c", "error": "x", "retries": 0, "max_retries": 0}
    )
    assert reply["alert"] == "Job failed after 0 retries: x"


async def test_server_default_max_retries(start_server) -> None:  # type: ignore[no-untyped-def]
    async with start_server(max_retries=1) as server:
        client = await LineClient.connect(server.port)
        reply = await client.request(
            {"type": "job_failed", "job_id": "a", "error": "e", "retries": 1}
        )
        assert reply["type"] == "alert_sent"
        assert (await get_job(client, "a"))["max_retries"] == 1
        await client.close()


async def test_failed_job_that_fails_softly_starts_a_new_attempt(client: LineClient) -> None:
    await client.request({"type": "job_failed", "job_id": "j", "error": "e", "retries": 3})
    reply = await client.request({"type": "job_failed", "job_id": "j", "error": "e", "retries": 0})
    assert reply["will_retry"] is True
    job = await get_job(client, "j")
    assert job["status"] == "retrying" and job["runs"] == 2


async def test_stats_mean_is_integer_when_whole_else_exact(client: LineClient) -> None:
    assert await stats(client) == {"total": 0, "completed": 0, "failed": 0, "avg_duration_ms": 0}
    await client.request({"type": "job_completed", "job_id": "a", "duration_ms": 100})
    await client.request({"type": "job_completed", "job_id": "b", "duration_ms": 201})
    result = await stats(client)
    assert result["avg_duration_ms"] == 150.5
    await client.request({"type": "job_completed", "job_id": "c", "duration_ms": 299})
    result = await stats(client)
    assert result["avg_duration_ms"] == 200 and isinstance(result["avg_duration_ms"], int)
    await client.request({"type": "job_failed", "job_id": "c", "retries": 9})
    assert await stats(client) == {"total": 3, "completed": 2, "failed": 1, "avg_duration_ms": 200}


async def test_stats_counts_follow_every_transition(client: LineClient, server: Server) -> None:
    sequence = [
        "pending",
        "queued",
        "running",
        "retrying",
        "running",
        "failed",
        "queued",
        "running",
        "cancelled",
        "running",
        "completed",
    ]
    for index, name in enumerate(sequence):
        await status(client, f"j{index % 3}", name)
    store = server.node.store
    # The kept counts equal a recount over every job.
    recount: dict[str, int] = {}
    for job in store.jobs.values():
        recount[job.status.value] = recount.get(job.status.value, 0) + 1
    kept = {s.value: n for s, n in store.count_by_status.items() if n}
    assert kept == recount


async def test_list_jobs_pages_with_a_cursor(client: LineClient) -> None:
    for i in range(25):
        await status(client, f"job-{i:02d}", "completed" if i % 2 else "running")
    seen: list[str] = []
    cursor = None
    while True:
        body: dict[str, object] = {"type": "list_jobs", "limit": 10}
        if cursor:
            body["cursor"] = cursor
        reply = await client.request(body)
        seen += [job["job_id"] for job in reply["jobs"]]
        cursor = reply["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"job-{i:02d}" for i in range(25)]
    reply = await client.request({"type": "list_jobs", "status": "completed", "limit": 5})
    assert [job["job_id"] for job in reply["jobs"]] == [
        "job-01",
        "job-03",
        "job-05",
        "job-07",
        "job-09",
    ]
    rest = await client.request(
        {"type": "list_jobs", "status": "completed", "cursor": reply["next_cursor"]}
    )
    assert [job["job_id"] for job in rest["jobs"]] == [f"job-{i:02d}" for i in range(11, 25, 2)]
    assert rest["next_cursor"] is None
    default = await client.request({"type": "list_jobs"})
    assert len(default["jobs"]) == 25 and default["next_cursor"] is None


async def test_at_records_when_a_queued_event_happened(
    client: LineClient, clock: FakeClock
) -> None:
    started = clock.current - 600
    await client.request(
        {"type": "update_status", "job_id": "q", "status": "running", "at": started}
    )
    reply = await client.request({"type": "job_completed", "job_id": "q", "at": started + 42.5})
    assert reply["duration_ms"] == 42_500  # between the two original times, not now
    job = await get_job(client, "q")
    assert job["started_at"] == iso(started)
    assert job["finished_at"] == iso(started + 42.5)
    # A clock ahead of the server's reads as now.
    await client.request(
        {"type": "update_status", "job_id": "q", "status": "running", "at": clock.current + 3600}
    )
    assert (await get_job(client, "q"))["updated_at"] == iso(clock.current)


async def test_an_event_older_than_a_week_is_refused_and_changes_nothing(
    client: LineClient, clock: FakeClock
) -> None:
    reply = await client.request(
        {
            "type": "job_failed",
            "msg_id": 3,
            "job_id": "old",
            "error": "x",
            "at": clock.current - 8 * 86400,
        }
    )
    assert reply["type"] == "error" and reply["code"] == 12
    assert (
        reply["text"].startswith("at ")
        and "more than 7 days before the server's clock" in reply["text"]
    )
    assert (await client.request({"type": "get_job", "job_id": "old"}))["type"] == "error"
    bad = await client.request({"type": "heartbeat", "job_id": "h", "ttl_ms": 5, "at": "yesterday"})
    assert bad["text"] == 'at must be a number, got a string "yesterday"'
