"""event_id: an event sent again gets its original reply and changes nothing (embedded mode;
tests/test_cluster.py covers a cluster)."""

from __future__ import annotations

import orjson

from helpers import LineClient
from jobmon import idempotency
from jobmon.clock import FakeClock


async def test_a_retransmission_gets_the_original_reply_and_changes_nothing(
    client: LineClient,
) -> None:
    first = {
        "type": "job_completed",
        "msg_id": 1,
        "job_id": "j",
        "duration_ms": 100,
        "event_id": "e-1",
    }
    await client.send(first)
    original = await client.read_line()
    assert (
        original
        == b'{"type":"job_completed","in_reply_to":1,"job_id":"j","duration_ms":100,"resource_usage":{}}\n'
    )
    # The same event again (a retry after a lost reply), with another msg_id and a new duration.
    await client.send({**first, "msg_id": 2, "duration_ms": 999})
    assert await client.read_line() == original.replace(b'"in_reply_to":1', b'"in_reply_to":2')
    # Without msg_id: the bare original.
    await client.send_raw(orjson.dumps({k: v for k, v in first.items() if k != "msg_id"}) + b"\n")
    assert (
        await client.read_line()
        == b'{"type":"job_completed","job_id":"j","duration_ms":100,"resource_usage":{}}\n'
    )
    job = (await client.request({"type": "get_job", "job_id": "j"}))["job"]
    assert job["runs"] == 1 and job["duration_ms"] == 100
    stats = await client.request({"type": "get_stats"})
    assert stats["avg_duration_ms"] == 100


async def test_enveloped_and_every_state_change_take_event_id(client: LineClient) -> None:
    env = {
        "src": "w",
        "dest": "monitor",
        "body": {
            "type": "job_failed",
            "msg_id": 5,
            "job_id": "f",
            "retries": 3,
            "error": "x",
            "event_id": "f-1",
        },
    }
    first = await client.request(env)
    again = await client.request(env)
    assert (
        first
        == again
        == {
            "src": "monitor",
            "dest": "w",
            "body": {
                "type": "alert_sent",
                "in_reply_to": 5,
                "job_id": "f",
                "alert": "Job failed after 3 retries: x",
            },
        }
    )
    alerts = (await client.request({"type": "get_alerts"}))["alerts"]
    assert len(alerts) == 1
    register = {
        "type": "register_job",
        "msg_id": 1,
        "job_id": "r",
        "max_runtime_ms": 1000,
        "event_id": "r-1",
    }
    assert (await client.request(register))["type"] == "job_registered"
    changed = {**register, "max_runtime_ms": 5000}
    await client.request(changed)  # the same event_id: not applied again
    job = (await client.request({"type": "get_job", "job_id": "r"}))["job"]
    assert job["monitor"]["max_runtime_ms"] == 1000


async def test_a_retransmission_is_no_event_for_subscribers(server) -> None:  # type: ignore[no-untyped-def]
    watcher = await LineClient.connect(server.port)
    await watcher.request({"type": "subscribe", "topics": ["events"]})
    sender = await LineClient.connect(server.port)
    event = {
        "type": "update_status",
        "msg_id": 1,
        "job_id": "s",
        "status": "running",
        "event_id": "s-1",
    }
    await sender.request(event)
    await sender.request(event)  # again: answered, not an event
    await sender.request({**event, "event_id": "s-2", "status": "queued"})
    pushed = [(await watcher.read())["event"]["status"] for _ in range(2)]
    assert pushed == ["running", "queued"]
    await watcher.close()
    await sender.close()


async def test_a_bad_event_id_is_refused_with_what_is_expected(client: LineClient) -> None:
    for bad in ("", "x" * 129, 7):
        reply = await client.request(
            {
                "type": "update_status",
                "msg_id": 1,
                "job_id": "j",
                "status": "running",
                "event_id": bad,
            }
        )
        assert reply["code"] == 12
        assert "event_id must be a string of 1 to 128 characters" in reply["text"]
    assert (await client.request({"type": "get_stats"}))["total"] == 0
    ok = await client.request(
        {
            "type": "update_status",
            "msg_id": 1,
            "job_id": "j",
            "status": "running",
            "event_id": "x" * 128,
        }
    )
    assert ok["type"] == "status_updated"


async def test_a_refused_event_is_not_remembered(client: LineClient) -> None:
    # job_completed without duration for a job never running: refused (22), so a
    # retry once the job runs is applied.
    done = {"type": "job_completed", "msg_id": 1, "job_id": "j", "event_id": "done-1"}
    assert (await client.request(done))["code"] == 22
    await client.request({"type": "update_status", "msg_id": 2, "job_id": "j", "status": "running"})
    assert (await client.request(done))["type"] == "job_completed"


async def test_ids_survive_a_restart_through_the_journal_and_the_snapshot(
    start_server, data_dir
) -> None:  # type: ignore[no-untyped-def]
    event = {"type": "heartbeat", "msg_id": 1, "job_id": "h", "ttl_ms": 60000, "event_id": "hb-1"}
    async with start_server(data_dir=data_dir) as server:
        conn = await LineClient.connect(server.port)
        original = await conn.request(event)
        await conn.close()
    async with start_server(data_dir=data_dir) as server:  # replayed from the journal
        conn = await LineClient.connect(server.port)
        assert await conn.request(event) == original
        await conn.close()
        server.data_dir.compact_now(server.node)
    async with start_server(data_dir=data_dir) as server:  # loaded from the snapshot
        conn = await LineClient.connect(server.port)
        assert await conn.request(event) == original
        assert len(server.node.store.seen_events) == 1
        await conn.close()


async def test_ids_are_forgotten_after_a_day(client: LineClient, clock: FakeClock) -> None:
    event = {
        "type": "update_status",
        "msg_id": 1,
        "job_id": "j",
        "status": "running",
        "progress": 10,
        "event_id": "old",
    }
    await client.request(event)
    clock.advance(idempotency.KEEP_S + 1)
    await client.request(
        {
            "type": "update_status",
            "msg_id": 2,
            "job_id": "k",
            "status": "running",
            "event_id": "new",
        }
    )
    reply = await client.request({**event, "progress": 20})  # forgotten: applied anew
    assert reply["progress"] == 20


def test_memory_is_bounded() -> None:
    seen = idempotency.SeenEvents()
    for i in range(idempotency.MAX_KEPT + 10):
        seen.remember(f"e{i}", 1000.0 + i / 1000, {"type": "x"})
    assert len(seen) == idempotency.MAX_KEPT
    assert seen.reply_of("e0") is None and seen.reply_of(f"e{idempotency.MAX_KEPT + 9}") is not None
    assert seen.forgotten_early == 10


async def test_the_bound_is_a_recorded_setting(start_server, data_dir) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, event_ids_kept=2) as server:
        conn = await LineClient.connect(server.port)
        for i in range(3):
            await conn.request(
                {"type": "heartbeat", "job_id": "b", "ttl_ms": 1000, "event_id": f"b{i}"}
            )
        assert list(server.node.store.seen_events.replies) == ["b1", "b2"]
        await conn.close()
    async with start_server(data_dir=data_dir, event_ids_kept=2) as server:  # replayed alike
        assert list(server.node.store.seen_events.replies) == ["b1", "b2"]
        assert server.node.store.seen_events.max_kept == 2


async def test_the_client_stamps_every_event_and_a_resend_counts_once(server) -> None:  # type: ignore[no-untyped-def]
    from jobmon.client import Client

    async with Client(port=server.port) as client:
        await client.update_status("c", "running")
        await client.completed("c", duration_ms=10)
        assert await client.delivered(10)
        assert len(server.node.store.seen_events) == 2
        # What the client resends after a lost reply: the same body, the same event_id.
        (event_id,) = [e for e in list(server.node.store.seen_events.replies)[1:]]
        again = await client.send_event(
            {"type": "job_completed", "job_id": "c", "duration_ms": 99, "event_id": event_id}
        )
        assert again is not None and again["duration_ms"] == 10
    assert server.node.store.jobs["c"].runs == 1
