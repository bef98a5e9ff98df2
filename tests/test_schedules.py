"""Schedules, runtime limits, stalls, pauses and thresholds, over real TCP on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from helpers import LineClient
from jobmon.clock import FakeClock, iso
from jobmon.server import Server
from test_alerting import advance, subscriber


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def alerts(client: LineClient, **query: Any) -> list[tuple[str, str, str]]:
    reply = await client.request({"type": "get_alerts", **query})
    return [(a["job_id"], a["kind"], a["state"]) for a in reply["alerts"]]


async def test_interval_schedule_missed_run_fires_and_resolves(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    watcher = await subscriber(server)
    registered = clock.now()
    reply = await client.request(
        {
            "type": "register_job",
            "msg_id": 2,
            "job_id": "hourly",
            "schedule": {"every_ms": 3_600_000},
            "grace_ms": 300_000,
            "labels": {"team": "data"},
        }
    )
    assert reply == {
        "type": "job_registered",
        "in_reply_to": 2,
        "job_id": "hourly",
        "next_expected_at": iso(registered + 3600),
    }
    await advance(server, clock, 3600 + 299)  # still within grace
    assert await alerts(client) == []
    await advance(server, clock, 2)
    alert = (await watcher.read())["alert"]
    assert alert["kind"] == "missed_run" and alert["labels"] == {"team": "data"}
    assert alert["text"] == (
        f"Job hourly did not start: a run was expected at {iso(registered + 3600)} "
        f"(every 3600000 ms, 300000 ms grace), none had started by {iso(registered + 3900)}; "
        "last seen never"
    )
    started = clock.now()
    await client.request({"type": "update_status", "job_id": "hourly", "status": "running"})
    assert (await watcher.read())["alert"]["state"] == "resolved"
    job = (await client.request({"type": "get_job", "job_id": "hourly"}))["job"]
    assert job["monitor"]["next_expected_at"] == iso(started + 3600)
    assert job["monitor"]["deadlines"] == {"missed_run": iso(started + 3900)}
    await watcher.close()


async def test_cron_in_a_time_zone_across_both_dst_changes(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    # Spring forward in Berlin: 2026-03-29 02:30 does not exist; cron runs it at 03:00.
    clock.current = at("2026-03-28T12:00:00+01:00")
    body = {
        "type": "register_job",
        "job_id": "nightly",
        "schedule": {"cron": "30 2 * * *", "tz": "Europe/Berlin"},
        "grace_ms": 600_000,
    }
    reply = await client.request(body)
    assert reply["next_expected_at"] == "2026-03-29T01:00:00.000Z"
    clock.current = at("2026-03-29T01:09:59+00:00")
    await advance(server, clock, 0)
    assert await alerts(client) == []
    await advance(server, clock, 2)
    assert await alerts(client) == [("nightly", "missed_run", "firing")]
    # The job runs; from then on 02:30 local is 00:30 UTC (summer time).
    await client.request({"type": "job_completed", "job_id": "nightly", "duration_ms": 5})
    job = (await client.request({"type": "get_job", "job_id": "nightly"}))["job"]
    assert job["monitor"]["next_expected_at"] == "2026-03-30T00:30:00.000Z"
    # Fall back: on 2026-10-25, 02:30 happens once (CEST), then 01:30 UTC from the 26th.
    clock.current = at("2026-10-24T12:00:00+02:00")
    await client.request({"type": "update_status", "job_id": "nightly", "status": "running"})
    job = (await client.request({"type": "get_job", "job_id": "nightly"}))["job"]
    assert job["monitor"]["next_expected_at"] == "2026-10-25T00:30:00.000Z"
    clock.current = at("2026-10-25T00:31:00+00:00")
    await client.request({"type": "job_completed", "job_id": "nightly", "duration_ms": 5})
    job = (await client.request({"type": "get_job", "job_id": "nightly"}))["job"]
    assert job["monitor"]["next_expected_at"] == "2026-10-26T01:30:00.000Z"


async def test_bad_schedules_are_refused_with_the_reason(client: LineClient) -> None:
    cases = [
        ({"cron": "61 * * * *"}, "is not a valid cron expression: Bad minute"),
        ({"cron": "0 2 * * *", "tz": "Mars/Olympus"}, "is not an IANA time zone"),
        ({"every_ms": 10}, "every_ms"),
        ("daily", "schedule must be an object"),
    ]
    for given, reason in cases:
        reply = await client.request(
            {"type": "register_job", "msg_id": 1, "job_id": "j", "schedule": given}
        )
        assert reply["code"] == 12 and reason in reply["text"], reply
    assert (await client.request({"type": "list_jobs"}))["jobs"] == []


async def test_overrun_fires_while_running_and_resolves_when_done(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "etl", "max_runtime_ms": 60_000})
    started = clock.now()
    await client.request({"type": "update_status", "job_id": "etl", "status": "running"})
    await advance(server, clock, 59)
    assert await alerts(client) == []
    await advance(server, clock, 2)
    reply = await client.request({"type": "get_alerts"})
    assert reply["alerts"][0]["text"] == (
        f"Job etl has run longer than its limit of 60000 ms: started at {iso(started)}, "
        f"still running at {iso(started + 60)}"
    )
    await client.request({"type": "job_completed", "job_id": "etl"})
    assert await alerts(client) == [("etl", "overrun", "resolved")]


async def test_stalled_progress_fires_and_moving_progress_resolves(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "copy", "stall_ms": 5000})
    await client.request(
        {"type": "update_status", "job_id": "copy", "status": "running", "progress": 10}
    )
    await advance(server, clock, 4)
    await client.request(
        {"type": "update_status", "job_id": "copy", "status": "running", "progress": 20}
    )
    await advance(server, clock, 4)
    # Reporting the same progress again is not progress.
    await client.request(
        {"type": "update_status", "job_id": "copy", "status": "running", "progress": 20}
    )
    assert await alerts(client) == []
    await advance(server, clock, 1.5)
    reply = await client.request({"type": "get_alerts"})
    assert reply["alerts"][0]["kind"] == "stalled"
    assert reply["alerts"][0]["text"].startswith("Job copy stalled at 20%")
    await client.request(
        {"type": "update_status", "job_id": "copy", "status": "running", "progress": 30}
    )
    assert await alerts(client) == [("copy", "stalled", "resolved")]


async def test_a_paused_job_raises_nothing_until_the_pause_ends(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "heartbeat", "job_id": "hb", "ttl_ms": 10_000})
    until = clock.now() + 100
    until_text = datetime.fromtimestamp(until, UTC).isoformat()
    reply = await client.request(
        {"type": "pause_job", "msg_id": 4, "job_id": "hb", "until": until_text}
    )
    assert reply == {"type": "job_paused", "in_reply_to": 4, "job_id": "hb", "until": iso(until)}
    await advance(server, clock, 50)
    assert await alerts(client) == []
    # The job failing for good while paused raises no alert either (the reply is unchanged).
    reply = await client.request({"type": "job_failed", "job_id": "hb", "error": "x", "retries": 3})
    assert reply["type"] == "alert_sent"
    assert await alerts(client) == []
    # After the pause, the worker gets one ttl to beat again; it does not.
    await advance(server, clock, 55)
    assert await alerts(client) == []
    await advance(server, clock, 10)
    assert await alerts(client) == [("hb", "missed_heartbeat", "firing")]


async def test_pause_without_end_lasts_until_resumed(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "r", "schedule": {"every_ms": 60_000}})
    await client.request({"type": "pause_job", "job_id": "r"})
    await advance(server, clock, 3600)
    assert await alerts(client) == []
    reply = await client.request({"type": "resume_job", "msg_id": 9, "job_id": "r"})
    assert reply == {"type": "job_resumed", "in_reply_to": 9, "job_id": "r"}
    await advance(server, clock, 61)
    assert await alerts(client) == [("r", "missed_run", "firing")]
    reply = await client.request({"type": "pause_job", "msg_id": 1, "job_id": "ghost"})
    assert reply["code"] == 20
    reply = await client.request({"type": "pause_job", "msg_id": 1, "job_id": "r", "until": "soon"})
    assert reply["code"] == 12 and "ISO-8601" in reply["text"]


async def test_failure_and_recovery_thresholds(client: LineClient) -> None:
    await client.request(
        {"type": "register_job", "job_id": "flaky", "failure_threshold": 2, "recovery_threshold": 2}
    )
    fail = {"type": "job_failed", "job_id": "flaky", "error": "boom", "retries": 3}
    assert (await client.request(fail))["type"] == "alert_sent"
    assert (await client.request(fail))["type"] == "alert_sent"  # same run again: counts once
    assert await alerts(client) == []
    await client.request({"type": "update_status", "job_id": "flaky", "status": "running"})
    await client.request(fail)
    assert await alerts(client) == [("flaky", "failed", "firing")]
    await client.request({"type": "job_completed", "job_id": "flaky", "duration_ms": 1})
    assert await alerts(client) == [("flaky", "failed", "firing")]
    await client.request({"type": "job_completed", "job_id": "flaky", "duration_ms": 1})
    assert await alerts(client) == [("flaky", "failed", "resolved")]


async def test_unregister_stops_watching_and_resolves(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "heartbeat", "job_id": "old", "ttl_ms": 1000})
    await advance(server, clock, 2)
    assert await alerts(client) == [("old", "missed_heartbeat", "firing")]
    reply = await client.request({"type": "unregister_job", "msg_id": 3, "job_id": "old"})
    assert reply == {"type": "job_unregistered", "in_reply_to": 3, "job_id": "old"}
    assert await alerts(client) == [("old", "missed_heartbeat", "resolved")]
    job = (await client.request({"type": "get_job", "job_id": "old"}))["job"]
    assert "monitor" not in job and job["job_id"] == "old"
    await advance(server, clock, 3600)
    assert len(await alerts(client)) == 1
    reply = await client.request({"type": "unregister_job", "msg_id": 4, "job_id": "nobody"})
    assert reply["code"] == 20


async def test_monitoring_survives_a_restart(start_server, data_dir, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, compact_min_bytes=1) as server:
        client = await LineClient.connect(server.port)
        await client.request(
            {
                "type": "register_job",
                "job_id": "nightly",
                "schedule": {"cron": "0 2 * * *", "tz": "UTC"},
                "labels": {"team": "ops"},
            }
        )
        await client.request({"type": "register_job", "job_id": "etl", "max_runtime_ms": 1000})
        await client.request({"type": "update_status", "job_id": "etl", "status": "running"})
        before = (await client.request({"type": "get_job", "job_id": "nightly"}))["job"]
        await client.close()
        await server.engine.wait_background()  # snapshots taken along the way
    clock.advance(2 * 86400)
    async with start_server(data_dir=data_dir) as server:
        await server.engine.wait_idle()
        client = await LineClient.connect(server.port)
        after = (await client.request({"type": "get_job", "job_id": "nightly"}))["job"]
        assert after["monitor"]["schedule"] == before["monitor"]["schedule"]
        assert after["monitor"]["labels"] == {"team": "ops"}
        found = (await client.request({"type": "get_alerts"}))["alerts"]
        assert sorted((a["job_id"], a["kind"]) for a in found) == [
            ("etl", "overrun"),
            ("nightly", "missed_run"),
        ]
        assert all(a["text"].endswith("(detected after a restart)") for a in found)
        await client.close()


async def test_every_kind_reaches_a_subscriber_firing_then_resolved(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    watcher = await subscriber(server)

    async def expect(kind: str, state: str) -> None:
        alert = (await watcher.read())["alert"]
        assert (alert["kind"], alert["state"]) == (kind, state), alert

    # failed
    await client.request({"type": "job_failed", "job_id": "f", "error": "e", "retries": 3})
    await expect("failed", "firing")
    await client.request({"type": "job_completed", "job_id": "f", "duration_ms": 1})
    await expect("failed", "resolved")
    # overrun and stalled, on one running job
    await client.request(
        {"type": "register_job", "job_id": "r", "max_runtime_ms": 10_000, "stall_ms": 4_000}
    )
    await client.request(
        {"type": "update_status", "job_id": "r", "status": "running", "progress": 1}
    )
    await advance(server, clock, 5)
    await expect("stalled", "firing")
    await client.request(
        {"type": "update_status", "job_id": "r", "status": "running", "progress": 2}
    )
    await expect("stalled", "resolved")
    await advance(server, clock, 3)
    await advance(server, clock, 3)  # 11 s in; progress moved 6 s ago
    await expect("stalled", "firing")
    await expect("overrun", "firing")
    await client.request({"type": "job_completed", "job_id": "r"})
    resolved = {(await watcher.read())["alert"]["kind"] for _ in range(2)}
    assert resolved == {"stalled", "overrun"}
    # worker_lost
    await client.request({"type": "register_job", "job_id": "w"})
    worker = await LineClient.connect(server.port)
    await worker.request({"type": "update_status", "job_id": "w", "status": "running"})
    newest = max(server.connections, key=lambda c: c.conn_id or 0)
    await worker.close()
    await newest.gone.wait()
    await server.engine.wait_idle()
    await advance(server, clock, 31)
    await expect("worker_lost", "firing")
    await client.request({"type": "update_status", "job_id": "w", "status": "running"})
    await expect("worker_lost", "resolved")
    await watcher.close()
