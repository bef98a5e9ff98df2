"""Many connections, deep pipelines, and backpressure against a client that stops reading."""

from __future__ import annotations

import asyncio

import orjson

from helpers import LineClient
from jobmon.connection import MAX_INBOX, TURN_OUTPUT_BUDGET, WRITE_HIGH_WATER
from jobmon.server import Server


async def pipeline(port: int, conn_index: int, count: int) -> list[int]:
    client = await LineClient.connect(port)
    lines = []
    for msg_id in range(count):
        kind = msg_id % 4
        if kind == 0:
            body = {
                "type": "update_status",
                "msg_id": msg_id,
                "job_id": f"c{conn_index}-{msg_id % 50}",
                "status": "running",
                "progress": msg_id % 101,
            }
        elif kind == 1:
            body = {
                "type": "job_completed",
                "msg_id": msg_id,
                "job_id": f"c{conn_index}-{msg_id % 50}",
                "duration_ms": 10,
            }
        elif kind == 2:
            body = {"type": "bogus", "msg_id": msg_id}  # errors must keep their place too
        else:
            body = {"type": "get_stats", "msg_id": msg_id}
        lines.append(orjson.dumps(body) + b"\n")
    await client.send_raw(b"".join(lines))
    got = [(await client.read())["in_reply_to"] for _ in range(count)]
    await client.close()
    return got


async def test_replies_come_back_in_order_across_many_pipelining_connections(
    server: Server,
) -> None:
    count = 3000
    results = await asyncio.gather(*(pipeline(server.port, i, count) for i in range(20)))
    for got in results:
        assert got == list(range(count))
    assert server.node.store.stats()["total"] == 20 * 50


async def test_a_client_that_stops_reading_is_paused_not_buffered(server: Server) -> None:
    client = await LineClient.connect(server.port)
    request = orjson.dumps({"type": "list_jobs", "msg_id": 1}) + b"\n"
    # Fill some jobs so every list_jobs reply is large.
    await client.send(
        *({"type": "update_status", "job_id": f"job-{i}", "status": "running"} for i in range(100))
    )
    for _ in range(100):
        await client.read()
    reply_size = len(await client.read_line()) if await client.send_raw(request) is None else 0
    assert reply_size > 10_000

    writer_task = asyncio.create_task(client.send_raw(request * 5_000))  # ~140 MB of replies owed
    (conn,) = server.connections
    await asyncio.wait_for(conn.paused.wait(), 30)
    # Reading is paused: the server holds at most about the high-water mark of replies.
    assert conn.transport is not None
    held = conn.transport.get_write_buffer_size()
    assert WRITE_HIGH_WATER <= held <= WRITE_HIGH_WATER + TURN_OUTPUT_BUDGET + reply_size
    assert conn.congested
    # What is read but not yet answered is bounded too (one read chunk past the limit).
    assert len(conn.inbox) <= MAX_INBOX + (256 << 10) // len(request)

    # Once the client reads again, every reply arrives, in order.
    received = 0
    while received < 5_000:
        line = await client.read_line(timeout=60)
        assert line.startswith(b'{"type":"jobs","in_reply_to":1,')
        received += 1
    await writer_task
    assert not conn.paused.is_set()
    await client.close()


async def test_server_survives_abrupt_disconnects(server: Server) -> None:
    for _ in range(5):
        client = await LineClient.connect(server.port)
        await client.send_raw(
            b'{"type":"update_status","job_id":"x","status":"running"}\n{"type":"get_'
        )
        client.writer.transport.abort()
    survivor = await LineClient.connect(server.port)
    reply = await survivor.request({"type": "get_job", "msg_id": 1, "job_id": "x"})
    assert reply["job"]["status"] == "running"
    await survivor.close()
