"""Inputs that once broke jobmon (found in review), each kept as a regression test."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from helpers import LineClient
from jobmon.connection import Connection
from jobmon.server import Server
from jobmon.store import Store


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("line", "expected_text"),
    [
        (
            b'{"type":"job_completed","msg_id":1,"job_id":"a","duration_ms":18446744073709551615}',
            "duration_ms must be between 0 and 9007199254740992",
        ),
        (
            b'{"type":"job_completed","msg_id":1,"job_id":"a","duration_ms":1.7e308}',
            "duration_ms must be between 0 and 9007199254740992",
        ),
        (
            b'{"type":"job_completed","msg_id":1,"job_id":"a","duration_ms":1,'
            b'"resource_usage":{"memory_mb":1e300}}',
            "resource_usage.memory_mb must be between 0 and 9007199254740992",
        ),
        (
            b'{"type":"job_failed","msg_id":1,"job_id":"a","retries":18446744073709551615}',
            "retries must be an integer between 0 and 9007199254740992",
        ),
        (b'{"type":"list_jobs","msg_id":1,"cursor":"\xc2\xb2"}', "cursor must be"),
        (b'{"type":"list_jobs","msg_id":1,"cursor":"99999999999999999999999"}', "cursor must be"),
        (
            b'{"type":"get_job","msg_id":1,"job_id":' + nested(300).encode() + b"}",
            "too deeply nested to show",
        ),
    ],
)
async def test_out_of_range_and_odd_values_are_refused(
    client: LineClient, server: Server, line: bytes, expected_text: str
) -> None:
    await client.send_raw(line + b"\n")
    reply = await client.read()
    assert reply["code"] == 12 and expected_text in reply["text"], reply
    assert await client.request({"type": "get_stats", "msg_id": 2}) == {
        "type": "job_stats",
        "in_reply_to": 2,
        "total": 0,
        "completed": 0,
        "failed": 0,
        "avg_duration_ms": 0,
    }


async def test_envelope_with_odd_addresses_is_refused_bare(client: LineClient) -> None:
    for src in (nested(300), '{"a":1}', "7"):
        line = '{"src":' + src + ',"dest":"monitor","body":{"type":"get_stats","msg_id":1}}'
        await client.send_raw(line.encode() + b"\n")
        reply = await client.read()
        assert reply == {
            "type": "error",
            "code": 12,
            "text": "the envelope's src and dest must be strings",
        }
    # Still serving, and still answering envelopes.
    reply = await client.request({"src": "w", "dest": "m", "body": {"type": "get_stats"}})
    assert reply["src"] == "m" and reply["body"]["type"] == "job_stats"


async def test_update_status_completed_resolves_the_failure_alert(
    client: LineClient, server: Server
) -> None:
    await client.request({"type": "job_failed", "job_id": "j", "error": "e1", "retries": 3})
    await client.request({"type": "update_status", "job_id": "j", "status": "running"})
    await client.request({"type": "update_status", "job_id": "j", "status": "completed"})
    first = server.node.store.recent_alerts()[0]
    assert first.resolved_at is not None
    await client.request({"type": "job_failed", "job_id": "j", "error": "e2", "retries": 3})
    alerts = server.node.store.recent_alerts()
    assert [a.text for a in alerts] == [
        "Job failed after 3 retries: e1",
        "Job failed after 3 retries: e2",
    ]


async def test_a_closed_connection_keeps_its_facts_and_drops_its_questions(
    server: Server,
) -> None:
    conn = Connection(server.engine, 1 << 20, set())
    transport_side = await LineClient.connect(server.port)  # only to get a real transport
    conn.transport = transport_side.writer.transport  # type: ignore[assignment]
    conn.scheduled = True  # hold it out of the engine while the inbox is filled
    data = b"".join(
        orjson.dumps(body) + b"\n"
        for body in [
            {"type": "list_jobs", "limit": 1000},
            {"type": "update_status", "job_id": "fact", "status": "running"},
            {"type": "bogus"},
            {"type": "get_stats"},
        ]
    )
    conn.data_received(data)
    conn.connection_lost(None)
    assert [r[2].name for r in conn.inbox if r[2] is not None] == ["update_status"]
    conn.deliver(b"")  # its turn comes: the fact is applied, nothing is written
    await server.engine.wait_idle()
    assert server.node.store.jobs["fact"].status.value == "running"
    await transport_side.close()


async def test_a_bug_mid_command_leaves_replay_in_the_same_state(
    start_server, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    real_complete = Store.complete

    def complete_then_crash(self: Store, *args: object) -> object:
        real_complete(self, *args)  # type: ignore[arg-type]
        raise RuntimeError("simulated bug after the state changed")

    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        monkeypatch.setattr(Store, "complete", complete_then_crash)
        reply = await client.request(
            {"type": "job_completed", "msg_id": 1, "job_id": "c", "duration_ms": 5}
        )
        assert reply["code"] == 13
        monkeypatch.setattr(Store, "complete", real_complete)
        live = await client.request({"type": "get_job", "job_id": "c"})
        stats = await client.request({"type": "get_stats"})
        await client.close()
    monkeypatch.setattr(Store, "complete", complete_then_crash)  # replay meets the same bug
    async with start_server(data_dir=data_dir) as restarted:
        monkeypatch.setattr(Store, "complete", real_complete)
        client = await LineClient.connect(restarted.port)
        assert await client.request({"type": "get_job", "job_id": "c"}) == live
        assert await client.request({"type": "get_stats"}) == stats
        await client.close()
