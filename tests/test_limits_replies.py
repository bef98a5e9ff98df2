"""Issue 9, what a reply may cost: bounded pages and batches, SSE subscribers
dropped when they stop reading, no subscription left behind by HTTP."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from helpers import Lines, WatchedServer, free_port, proc_status_mb
from jobmon.server import Server

PAGE_BYTES = 1 << 20  # PAGE_BYTES, spelled out: the README promises it
# About 6 KB of kept resource_usage per job: 32 fields of 128-character strings.
BIG_USAGE = {f"field-{i:02d}": "u" * 128 for i in range(32)}


def fill(tcp: Lines, count: int, prefix: str = "job") -> None:
    lines = [
        orjson.dumps(
            {
                "type": "job_completed",
                "job_id": f"{prefix}-{i:05d}",
                "duration_ms": 5,
                "resource_usage": BIG_USAGE,
            }
        )
        for i in range(count)
    ]
    tcp.send(*lines)
    for _ in lines:
        assert tcp.read()["type"] == "job_completed"


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        answer = b""
        while chunk := sock.recv(1 << 20):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def test_a_small_request_never_builds_a_huge_reply(tmp_path: Path) -> None:
    """Item 3: a 38 KB batch of list_jobs made a 308 MB response (RSS 2.2 GB)."""
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port), "--log-level", "error") as srv:
        assert srv.proc is not None
        tcp = Lines(srv.port)
        fill(tcp, 2000)
        # TCP: a page stops at 1 MiB; its cursor goes on; every job comes exactly once.
        seen: list[str] = []
        cursor = None
        while True:
            line = orjson.dumps({"type": "list_jobs", "limit": 1000, "cursor": cursor})
            tcp.send(line)
            raw = tcp.reader.readline()
            assert len(raw) < PAGE_BYTES + 20_000
            page = orjson.loads(raw)
            seen += [job["job_id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"job-{i:05d}" for i in range(2000)]
        # HTTP: a batch's replies stop at 8 MiB; the questions after that get error 12.
        peak = proc_status_mb(srv.proc.pid, "VmHWM")
        batch = orjson.dumps([{"type": "list_jobs", "limit": 1000}] * 30 + [{"type": "get_stats"}])
        status, payload = post(port, "/api/events", batch)
        assert status == 200
        assert len(payload) < 8 * 2**20 + 2 * PAGE_BYTES
        replies = orjson.loads(payload)
        assert len(replies) == 31 and replies[0]["type"] == "jobs"
        refused = [r for r in replies if r["type"] == "error"]
        assert refused and refused[-1] == {
            "type": "error",
            "code": 12,
            "text": "not answered: the replies to this batch passed 8388608 bytes; "
            "ask again in a smaller batch",
        }
        assert proc_status_mb(srv.proc.pid, "VmHWM") - peak < 150
        # More than 10,000 messages in one batch are refused whole.
        status, payload = post(port, "/api/events", orjson.dumps([{"type": "get_stats"}] * 10_001))
        assert status == 400 and b"a batch holds at most 10000 messages" in payload
        tcp.close()


def test_alerts_with_large_labels_come_in_pages(tmp_path: Path) -> None:
    """Item 3: get_alerts over alerts with large labels returned a 960 MB line."""
    labels = {f"label-{i:02d}": "v" * 256 for i in range(32)}
    with WatchedServer(tmp_path / "data", "--log-level", "error") as srv:
        tcp = Lines(srv.port)
        lines = []
        for i in range(1000):
            job = f"alerting-{i:04d}"
            lines.append(orjson.dumps({"type": "register_job", "job_id": job, "labels": labels}))
            lines.append(orjson.dumps({"type": "job_failed", "job_id": job, "retries": 3}))
        tcp.send(*lines)
        for _ in lines:
            assert tcp.read()["type"] in ("job_registered", "alert_sent")
        ids: list[int] = []
        before = None
        while True:
            tcp.send(orjson.dumps({"type": "get_alerts", "limit": 1000, "before": before}))
            raw = tcp.reader.readline()
            assert len(raw) < PAGE_BYTES + 20_000
            page = orjson.loads(raw)
            ids += [alert["id"] for alert in page["alerts"]]
            before = page.get("next_before")
            if before is None:
                break
        assert ids == list(range(1000, 0, -1))  # newest first, each once
        tcp.close()


def stream_client(port: int) -> socket.socket:
    """An SSE client that never reads, with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/stream?topics=events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def test_a_stream_client_that_never_reads_is_dropped(tmp_path: Path) -> None:
    """Item 2: a never-reading /api/stream client grew the server without a byte
    bound, was never dropped, and held SIGTERM for 121 s."""
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port), "--log-level", "info") as srv:
        assert srv.proc is not None
        stuck = stream_client(port)
        tcp = Lines(srv.port)
        tcp.ask(b'{"type":"get_stats"}')
        peak = proc_status_mb(srv.proc.pid, "VmHWM")
        for _ in range(10):  # 20,000 events of 6 KB: 120 MB unread
            fill(tcp, 2000)
        line = srv.wait_for_log("stream subscriber dropped: too slow", 60)
        # Over 4 MiB by at most what one turn pushed.
        assert orjson.loads(line)["unsent_bytes"] <= 5 * 2**20
        grown = proc_status_mb(srv.proc.pid, "VmHWM") - peak
        assert grown < 64, f"peak RSS grew {grown:.0f} MB"
        # A second one stuck mid-write when SIGTERM comes: the stop does not wait for it.
        second = stream_client(port)
        fill(tcp, 500, "late")
        tcp.close()
        assert srv.proc is not None
        srv.proc.terminate()
        assert srv.proc.wait(30) == 0
        stuck.close()
        second.close()


def test_sigterm_is_not_held_by_a_stuck_stream(tmp_path: Path) -> None:
    """Item 2, the shutdown: with a stream stuck on a client that stopped reading."""
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port)) as srv:
        stuck = stream_client(port)
        tcp = Lines(srv.port)
        fill(tcp, 2000)  # 12 MB: more than the socket buffers hold, so a write waits
        tcp.close()
        assert srv.proc is not None
        srv.proc.terminate()
        try:
            assert srv.proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM waited on a stream client that does not read")
        finally:
            stuck.close()


@pytest.fixture
async def api(start_server: Any) -> AsyncIterator[tuple[Server, aiohttp.ClientSession]]:
    async with start_server(http_port=free_port()) as server:
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        async with aiohttp.ClientSession(base_url=base) as session:
            yield server, session


async def test_subscribe_over_http_leaves_nothing_behind(
    api: tuple[Server, aiohttp.ClientSession],
) -> None:
    """Item 5: each POSTed subscribe stayed subscribed (30,000 slowed every turn 30x)."""
    server, session = api
    for batch in ([{"type": "subscribe"}], {"type": "subscribe", "topics": ["events"]}):
        for _ in range(300):
            async with session.post("/api/events", data=orjson.dumps(batch)) as response:
                reply = await response.json()
                if isinstance(batch, list):
                    assert response.status == 200
                    (reply,) = reply
                else:
                    assert response.status == 400
                    reply = reply["error"]
                assert reply["code"] == 10 and "GET /api/stream" in reply["text"], reply
    assert server.node.subscriptions == {} and server.node.event_subscribers == 0
