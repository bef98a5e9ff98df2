"""The wire protocol over real TCP: the seed cases byte for byte, framing, and every error path."""

from __future__ import annotations

import orjson
import pytest

from helpers import SEED, SEED_SAMPLE_CASES, LineClient
from jobmon.server import Server


async def test_seed_messages_reply_exact_bytes(client: LineClient) -> None:
    for request, expected in SEED:
        await client.send_raw(request + b"\n")
        assert await client.read_line() == expected + b"\n"
    await client.send_raw(b'{"type":"get_stats","msg_id":4}\n')
    # After the three seed events: one job, now failed; one timed run of 60000 ms.
    assert await client.read_line() == (
        b'{"type":"job_stats","in_reply_to":4,"total":1,"completed":0,"failed":1,'
        b'"avg_duration_ms":60000}\n'
    )


async def test_seed_cases_in_maelstrom_envelopes(client: LineClient) -> None:
    for request, expected_body in SEED_SAMPLE_CASES:
        await client.send(request)
        assert await client.read() == {"src": "monitor", "dest": "worker", "body": expected_body}


async def test_reply_without_msg_id_has_no_in_reply_to(client: LineClient) -> None:
    reply = await client.request({"type": "update_status", "job_id": "a", "status": "queued"})
    assert reply == {"type": "status_updated", "job_id": "a", "status": "queued", "progress": 0}


async def test_blank_lines_are_ignored_and_a_last_line_without_newline_counts(
    server: Server,
) -> None:
    client = await LineClient.connect(server.port)
    await client.send_raw(
        b'\n  \n{"type":"get_stats","msg_id":7}\n\n{"type":"get_stats","msg_id":8}'
    )
    client.writer.write_eof()
    assert (await client.read())["in_reply_to"] == 7
    assert (await client.read())["in_reply_to"] == 8
    assert await client.reader.read() == b""  # the server closes after answering
    await client.close()


async def test_init_names_the_node(client: LineClient, server: Server) -> None:
    reply = await client.request(
        {
            "src": "c1",
            "dest": "n1",
            "body": {"type": "init", "msg_id": 1, "node_id": "n1", "node_ids": ["n1", "n2"]},
        }
    )
    assert reply == {"src": "n1", "dest": "c1", "body": {"type": "init_ok", "in_reply_to": 1}}
    assert server.node.node_id == "n1"
    assert server.node.node_ids == ["n1", "n2"]


BAD_REQUESTS = [
    # (request line, expected reply)
    (b"not json", {"type": "error", "code": 12}),
    (b"[1, 2]", {"type": "error", "code": 12}),
    (b'"a string"', {"type": "error", "code": 12}),
    (b'{"msg_id": 5}', {"type": "error", "in_reply_to": 5, "code": 12}),
    (b'{"type": 7, "msg_id": 5}', {"type": "error", "in_reply_to": 5, "code": 12}),
    (b'{"type": "frobnicate", "msg_id": 5}', {"type": "error", "in_reply_to": 5, "code": 10}),
    (b'{"type": "get_stats", "msg_id": "5"}', {"type": "error", "code": 12}),
    (b'{"type": "get_stats", "msg_id": -1}', {"type": "error", "code": 12}),
    (b'{"type": "get_stats", "msg_id": 1.5}', {"type": "error", "code": 12}),
    (
        b'{"type": "update_status", "msg_id": 1, "status": "running"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "", "status": "running"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": 42, "status": "running"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": "sleeping"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": ["running"]}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": "running", "progress": 150}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": "running", "progress": -1}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": "running", "progress": true}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "update_status", "msg_id": 1, "job_id": "j", "status": "running", "max_retries": -2}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "j", "duration_ms": -5}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "j", "duration_ms": "5"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "j", "duration_ms": 5, "resource_usage": [1]}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "j", "duration_ms": 5,'
        b' "resource_usage": {"memory_mb": -1}}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "j", "duration_ms": 5,'
        b' "resource_usage": {"cpu_percent": "high"}}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_completed", "msg_id": 1, "job_id": "never-ran"}',
        {"type": "error", "in_reply_to": 1, "code": 22},
    ),
    (
        b'{"type": "job_failed", "msg_id": 1, "job_id": "j", "retries": -1}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_failed", "msg_id": 1, "job_id": "j", "retries": 1.5}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "job_failed", "msg_id": 1, "job_id": "j", "error": 404}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "get_job", "msg_id": 1, "job_id": "nobody"}',
        {"type": "error", "in_reply_to": 1, "code": 20},
    ),
    (
        b'{"type": "list_jobs", "msg_id": 1, "limit": 0}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "list_jobs", "msg_id": 1, "status": "weird"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (
        b'{"type": "list_jobs", "msg_id": 1, "cursor": "abc"}',
        {"type": "error", "in_reply_to": 1, "code": 12},
    ),
    (b'{"type": "init", "msg_id": 1}', {"type": "error", "in_reply_to": 1, "code": 12}),
]


@pytest.mark.parametrize(
    ("line", "expected"), BAD_REQUESTS, ids=[r[0].decode()[:60] for r in BAD_REQUESTS]
)
async def test_bad_input_gets_an_error_and_changes_nothing(
    client: LineClient, server: Server, line: bytes, expected: dict[str, object]
) -> None:
    before = await client.request({"type": "list_jobs"})
    await client.send_raw(line + b"\n")
    reply = await client.read()
    text = reply.pop("text")
    assert reply == expected
    assert isinstance(text, str) and len(text) > 15  # says what was wrong and what is expected
    assert await client.request({"type": "list_jobs"}) == before
    assert server.node.store.stats()["total"] == 0
    # The connection carries on.
    assert (await client.request({"type": "get_stats", "msg_id": 99}))["in_reply_to"] == 99


async def test_error_texts_name_the_problem(client: LineClient) -> None:
    reply = await client.request(
        {"type": "update_status", "msg_id": 1, "job_id": "j", "status": "running", "progress": 150}
    )
    assert reply["text"] == "progress must be between 0 and 100, got 150"
    reply = await client.request(
        {"type": "update_status", "msg_id": 2, "job_id": "j", "status": "zzz"}
    )
    assert reply["text"] == (
        'unknown status "zzz": expected one of '
        "pending, queued, running, retrying, completed, failed, cancelled"
    )
    reply = await client.request({"type": "list_jobs", "msg_id": 2, "status": "done"})
    assert reply["text"].startswith('unknown status "done": expected one of pending, ')
    # A limit's error says its real range, whichever side it is off.
    for type_ in ("list_jobs", "get_alerts"):
        for limit in (0, 5000, "ten"):
            reply = await client.request({"type": type_, "msg_id": 2, "limit": limit})
            assert reply["code"] == 12
            assert reply["text"] == (
                'limit must be an integer >= 1, got a string "ten"'
                if limit == "ten"
                else f"limit must be an integer between 1 and 1000, got {limit}"
            )
    reply = await client.request({"type": "nope", "msg_id": 3})
    assert reply["code"] == 10 and "unknown message type 'nope'" in reply["text"]
    reply = await client.request({"type": "get_job", "msg_id": 4, "job_id": "ghost"})
    assert reply["text"] == "no job with job_id 'ghost' is tracked"


async def test_errors_in_envelopes_are_enveloped(client: LineClient) -> None:
    reply = await client.request({"src": "w1", "dest": "monitor", "body": [1]})
    assert reply["src"] == "monitor" and reply["dest"] == "w1"
    assert reply["body"]["type"] == "error" and reply["body"]["code"] == 12
    reply = await client.request(
        {"src": "w1", "dest": "monitor", "body": {"type": "nope", "msg_id": 3}}
    )
    assert reply["dest"] == "w1"
    assert reply["body"]["code"] == 10 and reply["body"]["in_reply_to"] == 3


async def test_too_long_line_is_refused_and_the_connection_carries_on(start_server) -> None:  # type: ignore[no-untyped-def]
    async with start_server(max_line_bytes=1000) as server:
        client = await LineClient.connect(server.port)
        long_body = {
            "type": "update_status",
            "msg_id": 1,
            "job_id": "j",
            "status": "running",
            "pad": "x" * 5000,
        }
        # Sent in small pieces, so the server sees the line grow past the limit.
        data = orjson.dumps(long_body) + b"\n" + b'{"type":"get_stats","msg_id":2}\n'
        for start in range(0, len(data), 700):
            await client.send_raw(data[start : start + 700])
        reply = await client.read()
        assert reply["code"] == 12 and "longer than 1000 bytes" in reply["text"]
        assert "in_reply_to" not in reply
        assert await client.read() == {
            "type": "job_stats",
            "in_reply_to": 2,
            "total": 0,
            "completed": 0,
            "failed": 0,
            "avg_duration_ms": 0,
        }
        # A too-long line arriving in one piece is refused the same way.
        await client.send_raw(orjson.dumps(long_body) + b'\n{"type":"get_stats","msg_id":3}\n')
        assert (await client.read())["code"] == 12
        assert (await client.read())["in_reply_to"] == 3
        assert server.node.store.stats()["total"] == 0
        await client.close()


async def test_invalid_utf8_is_refused(client: LineClient) -> None:
    await client.send_raw(b'{"type":"get_stats","msg_id":1,"x":"\xff"}\n')
    reply = await client.read()
    assert reply["code"] == 12 and "invalid JSON" in reply["text"]
