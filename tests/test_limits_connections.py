"""Issue 9, connections: capped as Redis caps clients, reclaimed when they never
authenticate or never finish a request, and the open-file limit raised to fit."""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import LineClient, Lines, WatchedServer, free_port, http_exchange
from jobmon.server import Server

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def closed_by_server(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """What the server sends until it closes the connection (within ``timeout``)."""
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(1 << 16):
        out += chunk
    return out


@contextlib.contextmanager
def open_files(wanted: int) -> Iterator[None]:
    """This test process may need more descriptors than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_past_max_connections_a_client_gets_an_error_line_and_is_closed(tmp_path: Path) -> None:
    port = free_port()
    with WatchedServer(
        tmp_path / "data", "--http-port", str(port), "--max-connections", "20"
    ) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
        extra = socket.create_connection(("127.0.0.1", srv.port))
        assert orjson.loads(closed_by_server(extra)) == {
            "type": "error",
            "code": 11,
            "text": "max number of clients reached (--max-connections 20): try again later",
        }
        assert http_exchange(port, HEALTHZ).startswith(b"HTTP/1.1 200 ")
        idle.pop().close()
        # A place is free again once the server has seen that close.
        for _ in range(1000):
            tcp = Lines(srv.port)
            reply = tcp.ask(b'{"type":"get_stats","msg_id":1}')
            if reply.get("code") != 11:
                break
            tcp.close()
        assert reply["in_reply_to"] == 1
        srv.wait_for_log("connection refused: at the cap")
        for sock in idle:
            sock.close()
        tcp.close()


def test_past_max_http_connections_a_client_gets_503(tmp_path: Path) -> None:
    port = free_port()
    with WatchedServer(
        tmp_path / "data", "--http-port", str(port), "--max-http-connections", "5"
    ) as srv:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        answer = http_exchange(port, HEALTHZ)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"code":11' in answer and b"--max-http-connections 5" in answer
        tcp = Lines(srv.port)  # TCP has its own places
        assert tcp.ask(b'{"type":"get_stats"}')["type"] == "job_stats"
        for sock in idle:
            sock.close()
        tcp.close()


def test_the_open_file_limit_is_raised_to_fit(tmp_path: Path) -> None:
    """1,100 idle connections under the usual soft limit of 1,024 locked every
    TCP and HTTP client out, /healthz included."""
    port = free_port()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    with (
        open_files(4096),
        WatchedServer(
            tmp_path / "data", "--http-port", str(port), preexec_fn=lower_soft_limit
        ) as srv,
    ):
        assert srv.proc is not None
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(1100)]
        assert http_exchange(port, HEALTHZ).startswith(b"HTTP/1.1 200 ")
        tcp = Lines(srv.port)
        assert tcp.ask(b'{"type":"get_stats"}')["type"] == "job_stats"
        tcp.close()
        for sock in idle:
            sock.close()
        limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
        (row,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        logged = orjson.loads(srv.wait_for_log('"msg":"open-file limit"'))
        assert int(row.split()[3]) == logged["soft"] > 2048


def test_connections_that_never_authenticate_are_closed(tmp_path: Path) -> None:
    with WatchedServer(tmp_path / "data", "--token", "t", "--auth-timeout-ms", "1000") as srv:
        silent = socket.create_connection(("127.0.0.1", srv.port))
        authed = Lines(srv.port)
        assert authed.ask(b'{"type":"auth","token":"t"}')["type"] == "auth_ok"
        reply = orjson.loads(closed_by_server(silent))
        assert reply["code"] == 14
        assert reply["text"].startswith("not authenticated within 1000 ms (--auth-timeout-ms)")
        # The one that authenticated is still served after the other was closed.
        assert authed.ask(b'{"type":"get_stats"}')["type"] == "job_stats"
        authed.close()


def test_http_headers_and_bodies_have_a_time_limit(tmp_path: Path) -> None:
    """Slowloris: connections that never finish their headers were kept forever."""
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port), "--http-timeout-ms", "500"):
        for partial in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(partial)
            assert closed_by_server(sock) == b""
            sock.close()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = closed_by_server(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert answer.endswith(
            b'{"error":{"code":12,"text":"the request body did not arrive within 500 ms '
            b'(--http-timeout-ms)"}}\n'
        )
        # A whole request on a kept-alive connection is answered, then the idle
        # connection is closed after the same time.
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = closed_by_server(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'{"status":"ok"}\n')


def test_malformed_http_requests_are_logged_as_one_line_each(tmp_path: Path) -> None:
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port), "--token", "t") as srv:
        before = len(srv.stderr_lines)
        for _ in range(50):
            answer = http_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")
            assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 "))
        srv.terminate()
    logged = srv.stderr_lines[before:]
    bad = [line for line in logged if "bad HTTP request" in line]
    assert len(bad) == 50
    assert not any('"exc"' in line or "Traceback" in line for line in logged)


@pytest.fixture
async def locked(start_server: Any) -> AsyncIterator[Server]:
    async with start_server(token="t") as server:
        yield server


async def test_before_auth_anything_else_counts_as_a_failure(locked: Server) -> None:
    """Item 8: malformed and unknown lines before auth were answered 12/10 and
    never counted, so the connection was never closed."""
    client = await LineClient.connect(locked.port)
    await client.send_raw(b'not json\n{"type":"bogus","msg_id":5}\n{"type":"get_stats"}\n')
    replies = [await client.read() for _ in range(3)]
    assert [r["code"] for r in replies] == [14, 14, 14]
    assert replies[1]["in_reply_to"] == 5
    assert [r["text"].rsplit("(", 1)[1] for r in replies] == [
        "failure 1 of 3 before the connection is closed)",
        "failure 2 of 3 before the connection is closed)",
        "failure 3 of 3 before the connection is closed)",
    ]
    assert await client.reader.read() == b""  # closed after the third
    await client.close()
