"""Edge cases of negative alerting found in review, each kept as a regression test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import LineClient
from jobmon.clock import FakeClock
from jobmon.server import Server
from test_alerting import advance, close_and_wait


async def alert_rows(client: LineClient) -> list[tuple[int, str, str, str]]:
    found = (await client.request({"type": "get_alerts"}))["alerts"]
    return [(a["id"], a["job_id"], a["kind"], a["state"]) for a in found]


async def test_a_pause_to_the_end_of_the_calendar_does_not_stop_the_store(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "c", "schedule": {"cron": "* * * * *"}})
    await client.request({"type": "pause_job", "job_id": "c", "until": "9999-12-31T23:59:59Z"})
    await advance(server, clock, 120)
    assert (await client.request({"type": "get_stats", "msg_id": 1}))["in_reply_to"] == 1
    assert await alert_rows(client) == []
    job = (await client.request({"type": "get_job", "job_id": "c"}))["job"]
    assert job["monitor"]["deadlines"] == {}


async def test_deadlines_at_the_same_instant_fire_in_the_same_order_after_replay(
    start_server, data_dir: Path, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    every_minute = {"cron": "* * * * *"}
    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        for body in (
            {"job_id": "A", "grace_ms": 0},
            {"job_id": "A", "grace_ms": 5000},
            {"job_id": "B", "grace_ms": 5000},
        ):
            await client.request({"type": "register_job", "schedule": every_minute, **body})
        await advance(server, clock, 120)
        live = await alert_rows(client)
        await client.close()
    assert sorted(row[1] for row in live) == ["A", "B"]
    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        assert await alert_rows(client) == live
        await client.close()


async def test_worker_lost_replays_with_the_grace_it_was_armed_with(
    start_server, data_dir: Path, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, lost_grace_ms=500) as server:
        client = await LineClient.connect(server.port)
        await client.request({"type": "register_job", "job_id": "w"})
        worker = await LineClient.connect(server.port)
        await worker.request({"type": "update_status", "job_id": "w", "status": "running"})
        await close_and_wait(server, worker)
        await advance(server, clock, 1)
        live = await alert_rows(client)
        assert [row[2] for row in live] == ["worker_lost"]
        await client.close()
    async with start_server(data_dir=data_dir, lost_grace_ms=0) as server:
        client = await LineClient.connect(server.port)
        assert await alert_rows(client) == live
        await client.close()


async def test_worker_lost_during_an_open_pause_is_looked_at_after_resume(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "j", "lost_grace_ms": 1000})
    worker = await LineClient.connect(server.port)
    await worker.request({"type": "update_status", "job_id": "j", "status": "running"})
    await client.request({"type": "pause_job", "job_id": "j"})
    await close_and_wait(server, worker)
    await advance(server, clock, 60)
    assert await alert_rows(client) == []
    await client.request({"type": "resume_job", "job_id": "j"})
    await advance(server, clock, 0.5)
    assert await alert_rows(client) == []
    await advance(server, clock, 1)
    assert [row[2:] for row in await alert_rows(client)] == [("worker_lost", "firing")]


async def test_taking_a_promise_back_resolves_its_alert(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    body: dict[str, Any] = {
        "type": "register_job",
        "job_id": "r",
        "schedule": {"every_ms": 1000},
        "max_runtime_ms": 1000,
    }
    await client.request(body)
    await client.request({"type": "update_status", "job_id": "r", "status": "running"})
    await advance(server, clock, 1.5)
    await client.request({"type": "register_job", "job_id": "r", "max_runtime_ms": None})
    await advance(server, clock, 2.5)  # the schedule (still set) is missed now
    kinds = {(row[2], row[3]) for row in await alert_rows(client)}
    assert kinds == {("overrun", "resolved"), ("missed_run", "firing")}
    await client.request({"type": "register_job", "job_id": "r", "schedule": None})
    kinds = {(row[2], row[3]) for row in await alert_rows(client)}
    assert kinds == {("overrun", "resolved"), ("missed_run", "resolved")}


async def test_stale_heap_entries_do_not_pile_up(server: Server, client: LineClient) -> None:
    await client.request({"type": "heartbeat", "job_id": "anchor", "ttl_ms": 1000})
    for _ in range(3000):
        await client.send(
            {"type": "heartbeat", "job_id": "churn", "ttl_ms": 3_600_000},
            {"type": "unregister_job", "job_id": "churn"},
        )
        await client.read()
        await client.read()
    jobs = len(server.node.store.jobs)
    assert len(server.node.store.deadlines) <= 5 * jobs + 1024 + 2
