"""Negative alerting over real TCP, on a fake clock: heartbeats, pushed alerts, get_alerts."""

from __future__ import annotations

from pathlib import Path

from helpers import LineClient
from jobmon.clock import FakeClock, iso
from jobmon.server import Server


async def advance(server: Server, clock: FakeClock, seconds: float) -> None:
    """Move the fake clock, let the engine's timer act, and wait until it has."""
    clock.advance(seconds)
    server.engine.wake()
    await server.engine.wait_idle()


async def close_and_wait(server: Server, client: LineClient) -> None:
    """Close a client and wait until the server has seen the connection go."""
    newest = max(server.connections, key=lambda c: c.conn_id or 0)
    await client.close()
    await newest.gone.wait()
    await server.engine.wait_idle()


async def subscriber(server: Server, topics: list[str] | None = None) -> LineClient:
    client = await LineClient.connect(server.port)
    body: dict[str, object] = {"type": "subscribe", "msg_id": 1}
    if topics is not None:
        body["topics"] = topics
    reply = await client.request(body)
    assert reply == {"type": "subscribed", "in_reply_to": 1, "topics": topics or ["alerts"]}
    return client


async def test_heartbeat_sets_a_deadline(client: LineClient, clock: FakeClock) -> None:
    reply = await client.request(
        {"type": "heartbeat", "msg_id": 1, "job_id": "db-sync", "ttl_ms": 60000}
    )
    assert reply == {
        "type": "heartbeat_ok",
        "in_reply_to": 1,
        "job_id": "db-sync",
        "deadline_at": iso(clock.now() + 60),
    }
    clock.advance(10)
    # ttl_ms may be left out once the job has one.
    reply = await client.request({"type": "heartbeat", "job_id": "db-sync"})
    assert reply["deadline_at"] == iso(clock.now() + 60)


async def test_first_heartbeat_needs_a_ttl(client: LineClient, server: Server) -> None:
    reply = await client.request({"type": "heartbeat", "msg_id": 3, "job_id": "new"})
    assert reply["code"] == 12 and "ttl_ms is missing" in reply["text"]
    assert "new" not in server.node.store.jobs
    reply = await client.request({"type": "heartbeat", "msg_id": 4, "job_id": "x", "ttl_ms": 0})
    assert reply["code"] == 12


async def test_missed_heartbeat_fires_once_then_resolves(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    watcher = await subscriber(server)
    started = clock.now()
    await client.request({"type": "heartbeat", "job_id": "db-sync", "ttl_ms": 60000})
    await advance(server, clock, 59.999)
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []
    await advance(server, clock, 0.002)
    pushed = await watcher.read()
    assert pushed == {
        "type": "alert",
        "alert": {
            "id": 1,
            "job_id": "db-sync",
            "kind": "missed_heartbeat",
            "state": "firing",
            "text": (
                "Job db-sync missed its heartbeat: expected one every 60000 ms, "
                f"the last came at {iso(started)}, none by {iso(started + 60)}"
            ),
            "fired_at": iso(started + 60.001),
            "resolved_at": None,
            "labels": {},
        },
    }
    # Still missing later: the same incident, no second alert.
    await advance(server, clock, 600)
    assert len((await client.request({"type": "get_alerts"}))["alerts"]) == 1
    # A heartbeat clears it.
    await client.request({"type": "heartbeat", "job_id": "db-sync"})
    resolved = (await watcher.read())["alert"]
    assert resolved["id"] == 1 and resolved["state"] == "resolved"
    assert resolved["resolved_at"] == iso(clock.now())
    await watcher.close()


async def test_failure_alerts_are_pushed_too_and_envelopes_stay_envelopes(
    server: Server, client: LineClient
) -> None:
    watcher = await LineClient.connect(server.port)
    reply = await watcher.request(
        {"src": "pager", "dest": "monitor", "body": {"type": "subscribe", "topics": ["alerts"]}}
    )
    assert reply == {
        "src": "monitor",
        "dest": "pager",
        "body": {"type": "subscribed", "topics": ["alerts"]},
    }
    await client.request({"type": "job_failed", "job_id": "etl", "error": "OOM", "retries": 3})
    pushed = await watcher.read()
    assert pushed["src"] == "monitor" and pushed["dest"] == "pager"
    assert pushed["body"]["type"] == "alert"
    assert pushed["body"]["alert"]["kind"] == "failed"
    assert pushed["body"]["alert"]["text"] == "Job failed after 3 retries: OOM"
    await watcher.close()


async def test_events_topic_streams_accepted_job_events(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    watcher = await subscriber(server, ["events"])
    await client.request(
        {"type": "update_status", "msg_id": 5, "job_id": "a", "status": "running", "progress": 5}
    )
    await client.request({"type": "update_status", "job_id": "a", "status": "nonsense"})
    await client.request({"type": "get_stats"})  # a question, not an event
    await client.request({"type": "job_completed", "job_id": "a", "duration_ms": 9})
    first = await watcher.read()
    assert first == {
        "type": "event",
        "event": {
            "type": "status_updated",
            "job_id": "a",
            "status": "running",
            "progress": 5,
            "at": iso(clock.now()),
        },
    }
    second = await watcher.read()
    assert second["event"]["type"] == "job_completed" and second["event"]["duration_ms"] == 9
    await watcher.close()


async def test_events_pipelined_after_a_subscribe_on_one_connection_are_pushed(
    client: LineClient,
) -> None:
    # One write: the subscribe and the events after it arrive in the same turn.
    await client.send(
        {"type": "subscribe", "msg_id": 1, "topics": ["events"]},
        {"type": "update_status", "msg_id": 2, "job_id": "p", "status": "running"},
        {"type": "job_completed", "msg_id": 3, "job_id": "p", "duration_ms": 4},
    )
    lines = [await client.read() for _ in range(5)]
    replies = [line for line in lines if line.get("type") != "event"]
    pushed = [line["event"] for line in lines if line.get("type") == "event"]
    assert [r["in_reply_to"] for r in replies] == [1, 2, 3]
    assert [(e["type"], e["job_id"]) for e in pushed] == [
        ("status_updated", "p"),
        ("job_completed", "p"),
    ]


async def test_get_alerts_filters_newest_first(client: LineClient) -> None:
    for job_id in ("a", "b", "c"):
        await client.request({"type": "job_failed", "job_id": job_id, "error": "x", "retries": 3})
    await client.request({"type": "job_completed", "job_id": "b", "duration_ms": 1})
    every = (await client.request({"type": "get_alerts"}))["alerts"]
    assert [(a["job_id"], a["state"]) for a in every] == [
        ("c", "firing"),
        ("b", "resolved"),
        ("a", "firing"),
    ]
    firing = await client.request({"type": "get_alerts", "state": "firing", "limit": 1})
    assert [a["job_id"] for a in firing["alerts"]] == ["c"]
    resolved = await client.request({"type": "get_alerts", "state": "resolved"})
    assert [a["job_id"] for a in resolved["alerts"]] == ["b"]
    only_a = await client.request({"type": "get_alerts", "job_id": "a"})
    assert [a["id"] for a in only_a["alerts"]] == [1]
    bad = await client.request({"type": "get_alerts", "msg_id": 2, "state": "open"})
    assert bad["code"] == 12 and "firing, resolved, all" in bad["text"]


async def test_subscribe_refuses_unknown_topics(client: LineClient) -> None:
    reply = await client.request({"type": "subscribe", "msg_id": 1, "topics": ["gossip"]})
    assert reply["code"] == 12 and "alerts, events" in reply["text"]


async def test_a_deadline_passed_while_down_fires_at_start_once(
    start_server, data_dir: Path, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        await client.request({"type": "heartbeat", "job_id": "db-sync", "ttl_ms": 60000})
        await client.request({"type": "heartbeat", "job_id": "alive", "ttl_ms": 600000})
        await client.close()
    clock.advance(120)  # jobmon is down while db-sync's deadline passes
    async with start_server(data_dir=data_dir) as server:
        await server.engine.wait_idle()
        alerts = server.node.store.recent_alerts()
        assert [(a.job_id, a.kind) for a in alerts] == [("db-sync", "missed_heartbeat")]
        assert alerts[0].text.endswith("(detected after a restart)")
        assert alerts[0].fired_at == clock.now()
    clock.advance(1)
    async with start_server(data_dir=data_dir) as server:
        await server.engine.wait_idle()
        # Replayed, not fired again: still one alert, still firing.
        alerts = server.node.store.recent_alerts()
        assert [(a.alert_id, a.state.value) for a in alerts] == [(1, "firing")]
        # The other job's deadline is still pending, and still fires on time.
        await advance(server, clock, 600)
        assert [a.job_id for a in server.node.store.recent_alerts()] == ["db-sync", "alive"]
        assert not server.node.store.recent_alerts()[1].text.endswith("restart)")


async def test_worker_lost_when_the_reporting_connection_closes(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "ingest"})
    await client.request({"type": "register_job", "job_id": "quick", "lost_grace_ms": 0})
    worker = await LineClient.connect(server.port)
    for job_id in ("ingest", "quick"):
        await worker.request({"type": "update_status", "job_id": job_id, "status": "running"})
    closed_at = clock.now()
    await close_and_wait(server, worker)
    await advance(server, clock, 29.9)
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []
    await advance(server, clock, 0.2)
    found = (await client.request({"type": "get_alerts"}))["alerts"]
    assert [(a["job_id"], a["kind"]) for a in found] == [("ingest", "worker_lost")]
    assert found[0]["text"] == (
        f"Job ingest lost its worker: the connection that reported it running closed at "
        f"{iso(closed_at)} and nothing reported on the job within 30000 ms"
    )
    # A worker reconnecting and reporting resolves it.
    await client.request(
        {"type": "update_status", "job_id": "ingest", "status": "running", "progress": 50}
    )
    found = (await client.request({"type": "get_alerts"}))["alerts"]
    assert found[0]["state"] == "resolved"


async def test_a_report_within_grace_means_no_worker_lost(
    server: Server, client: LineClient, clock: FakeClock
) -> None:
    await client.request({"type": "register_job", "job_id": "ingest"})
    worker = await LineClient.connect(server.port)
    await worker.request({"type": "update_status", "job_id": "ingest", "status": "running"})
    await close_and_wait(server, worker)
    await advance(server, clock, 10)
    await client.request({"type": "heartbeat", "job_id": "ingest", "ttl_ms": 600_000})
    await advance(server, clock, 60)
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []


async def test_realert_repeats_a_firing_alert_until_it_resolves(
    start_server, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    async with start_server(realert_ms=600_000) as server:
        watcher = await subscriber(server)
        client = await LineClient.connect(server.port)
        await client.request({"type": "job_failed", "job_id": "a", "error": "x", "retries": 3})
        first = (await watcher.read())["alert"]
        await advance(server, clock, 599)
        await advance(server, clock, 2)
        again = (await watcher.read())["alert"]
        assert again == first  # the same alert, still firing
        await client.request({"type": "job_completed", "job_id": "a", "duration_ms": 1})
        assert (await watcher.read())["alert"]["state"] == "resolved"
        await advance(server, clock, 3600)
        # Nothing more is pushed once resolved: the next line is a fresh alert.
        await client.request({"type": "job_failed", "job_id": "b", "error": "y", "retries": 3})
        assert (await watcher.read())["alert"]["job_id"] == "b"
        await client.close()
        await watcher.close()


async def test_a_runs_heartbeats_end_with_the_run(
    client: LineClient, server: Server, clock: FakeClock
) -> None:
    """jobmon run's heartbeats (for_run) are not expected after the run ends;
    a plain heartbeat contract is."""
    for job_id, for_run in (("wrapped", True), ("consumer", False)):
        await client.request({"type": "update_status", "job_id": job_id, "status": "running"})
        beat = {"type": "heartbeat", "job_id": job_id, "ttl_ms": 3000, "for_run": for_run}
        assert (await client.request(beat))["type"] == "heartbeat_ok"
        await client.request({"type": "job_completed", "job_id": job_id, "duration_ms": 10})
    await advance(server, clock, 10)
    alerts = (await client.request({"type": "get_alerts", "state": "firing"}))["alerts"]
    assert [(a["job_id"], a["kind"]) for a in alerts] == [("consumer", "missed_heartbeat")]
    job = (await client.request({"type": "get_job", "job_id": "wrapped"}))["job"]
    assert "missed_heartbeat" not in job["monitor"]["deadlines"]
    bad = await client.request({"type": "heartbeat", "job_id": "x", "ttl_ms": 5, "for_run": 1})
    assert (
        bad["text"]
        == "for_run must be true or false (true: the heartbeats end with the run), got an integer 1"
    )


async def test_a_run_heartbeat_that_crosses_the_outcome_arms_nothing(
    client: LineClient, server: Server, clock: FakeClock
) -> None:
    await client.request({"type": "update_status", "job_id": "w", "status": "running"})
    await client.request({"type": "heartbeat", "job_id": "w", "ttl_ms": 100, "for_run": True})
    await client.request({"type": "job_completed", "job_id": "w", "duration_ms": 5})
    late = await client.request(
        {"type": "heartbeat", "job_id": "w", "ttl_ms": 100, "for_run": True}
    )
    assert late["type"] == "heartbeat_ok"
    await advance(server, clock, 5)
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []
