"""TLS end to end: a real `jobmon serve --tls-cert --tls-key` process, spoken to with
Python's ssl, `jobmon send`, `jobmon run`, the Client (and its reconnect), and HTTPS."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from certs import Certs, make_certs
from helpers import SEED, SEED_SAMPLE_CASES, LineClient, ServerProcess, free_port, jobmon_cmd
from jobmon.client import Client, SyncClient

TOKEN = "tls-token"
# The seed's three events and a get_stats: the replies byte for byte, as over plain TCP.
SEED_BYTES = [
    *SEED,
    (
        b'{"type":"get_stats","msg_id":4}',
        b'{"type":"job_stats","in_reply_to":4,"total":1,"completed":0,"failed":1,'
        b'"avg_duration_ms":60000}',
    ),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


class TlsServer(ServerProcess):
    """`jobmon serve` over TLS, with its HTTP port known."""

    def __init__(self, data_dir: Path, certs: Certs, *extra: str) -> None:
        self.http_port = free_port()
        super().__init__(
            data_dir, "--http-port", str(self.http_port), *certs.server_flags(), *extra
        )


@pytest.fixture
def server(tmp_path: Path, certs: Certs) -> Iterator[TlsServer]:
    with TlsServer(tmp_path / "data", certs) as proc:
        yield proc


async def tls_line_client(
    port: int, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> LineClient:
    reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=1 << 24)
    return LineClient(reader, writer)


async def test_the_seed_replies_are_the_same_bytes_over_tls(
    server: TlsServer, certs: Certs
) -> None:
    assert "(TLS)" in server.stderr  # the start-up line says so
    client = await tls_line_client(server.port, certs.client_context())
    ssl_object = client.writer.get_extra_info("ssl_object")
    assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    for request, expected in SEED_BYTES:
        await client.send_raw(request + b"\n")
        assert await client.read_line() == expected + b"\n"
    # A line longer than the server's TLS read buffer (256 KiB) arrives whole.
    padded = b'{"type":"get_stats",' + b" " * 700_000 + b'"msg_id":5}\n'
    await client.send_raw(padded * 2)
    for _ in range(2):
        assert await client.read_line() == SEED_BYTES[-1][1].replace(b":4,", b":5,") + b"\n"
    await client.close()
    # The sample cases in their Maelstrom envelopes, by name as well as by address.
    client = await tls_line_client(server.port, certs.client_context(), host="localhost")
    for request, body in SEED_SAMPLE_CASES:
        await client.send(request)
        assert await client.read_line() == (
            b'{"src":"monitor","dest":"worker","body":' + orjson.dumps(body) + b"}\n"
        )
    await client.close()


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        jobmon_cmd(*args),
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_jobmon_send_over_tls(server: TlsServer, certs: Certs) -> None:
    port = str(server.port)
    lines = [request.decode() for request, _ in SEED_BYTES]
    result = run_cli("send", "--port", port, "--tls-ca", str(certs.ca), *lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(expected + b"\n" for _, expected in SEED_BYTES)
    # JOBMON_TLS_CA does the same; lines from stdin; a subscription's pushes are not
    # mistaken for answers (TLS has no half-close: send stops at the last answer).
    pushed_and_answered = run_cli(
        "send",
        "--port",
        port,
        env={"JOBMON_TLS_CA": str(certs.ca)},
        stdin=b'{"type":"subscribe","msg_id":1,"topics":["alerts"]}\n'
        b'{"type":"job_failed","msg_id":2,"job_id":"pushed","error":"boom","retries":3}\n',
    )
    assert pushed_and_answered.returncode == 0, pushed_and_answered.stderr
    replies = [orjson.loads(line) for line in pushed_and_answered.stdout.splitlines()]
    answers = [r for r in replies if "in_reply_to" in r]
    assert [a["in_reply_to"] for a in answers] == [1, 2]
    assert answers[1] == {
        "type": "alert_sent",
        "in_reply_to": 2,
        "job_id": "pushed",
        "alert": "Job failed after 3 retries: boom",
    }
    assert all(r["type"] == "alert" for r in replies if "in_reply_to" not in r)


def test_jobmon_run_over_tls(server: TlsServer, certs: Certs) -> None:
    script = "print('ran over tls')"
    result = run_cli(
        "run", "--port", str(server.port), "--tls-ca", str(certs.ca), "--job-id", "tls-run", "--",
        sys.executable, "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ran over tls\n"
    assert b"unreachable" not in result.stderr and b"could not be delivered" not in result.stderr
    asked = run_cli(
        "send", "--port", str(server.port), "--tls-ca", str(certs.ca),
        '{"type":"get_job","msg_id":1,"job_id":"tls-run"}',
    )  # fmt: skip
    job = orjson.loads(asked.stdout)["job"]
    assert job["status"] == "completed"
    assert job["recent_runs"][0]["exit_code"] == 0


async def test_the_client_over_tls_reconnects_across_a_restart(
    tmp_path: Path, certs: Certs
) -> None:
    port = free_port()
    data = tmp_path / "data"
    server = TlsServer(data, certs, "--port", str(port), "--fsync", "always").start()
    client = Client(port=port, tls_ca=certs.ca, backoff_s=0.05, backoff_max_s=0.2)
    try:
        assert await client.start(10)
        for n in range(20):
            reply = await client.update_status(f"t{n}", "running")
            assert reply is not None and reply["type"] == "status_updated"
        server.terminate()
        await client.disconnected()
        for n in range(20):
            await client.completed(f"t{n}", duration_ms=n)  # queued while it is down
        server = TlsServer(data, certs, "--port", str(port), "--fsync", "always").start()
        assert await client.delivered(30)
        stats = await client.get_stats()
        assert (stats["total"], stats["completed"]) == (20, 20)
    finally:
        await client.close()
        server.terminate()


def test_the_sync_client_over_tls(server: TlsServer, certs: Certs) -> None:
    with SyncClient(port=server.port, tls_ca=str(certs.ca)) as jobmon:
        reply: Any = jobmon.update_status("sync-tls", "running", progress=5)
        assert reply == {
            "type": "status_updated",
            "job_id": "sync-tls",
            "status": "running",
            "progress": 5,
            "in_reply_to": reply["in_reply_to"],
        }
        assert jobmon.get_job("sync-tls")["progress"] == 5


async def test_https_serves_the_api_and_the_dashboard(server: TlsServer, certs: Certs) -> None:
    base = f"https://127.0.0.1:{server.http_port}"
    context = certs.client_context()
    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.post("/api/jobs/over-https/start", ssl=context) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "running"
        async with http.get("/api/stats", ssl=context) as response:
            assert (await response.json())["total"] == 1
        async with http.get("/", ssl=context) as response:
            assert response.status == 200
            assert "text/html" in response.headers["Content-Type"]
        async with http.get("/metrics", ssl=context) as response:
            assert "jobmon_jobs" in await response.text()
    # The plain port is not also open: http:// to it gets no HTTP answer.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{server.http_port}/healthz"):
                pass


async def test_the_token_still_guards_both_ports_over_tls(tmp_path: Path, certs: Certs) -> None:
    with TlsServer(tmp_path / "data", certs, "--token", TOKEN) as server:
        context = certs.client_context()
        tcp = await tls_line_client(server.port, context)
        refused = await tcp.request({"type": "get_stats", "msg_id": 1})
        assert refused["code"] == 14
        assert await tcp.request({"type": "auth", "msg_id": 2, "token": TOKEN}) == {
            "type": "auth_ok",
            "in_reply_to": 2,
        }
        assert (await tcp.request({"type": "get_stats", "msg_id": 3}))["total"] == 0
        await tcp.close()
        async with Client(port=server.port, token=TOKEN, tls_ca=certs.ca) as client:
            assert await client.start(10)
            assert (await client.update_status("locked", "running"))["type"] == "status_updated"
        base = f"https://127.0.0.1:{server.http_port}"
        async with aiohttp.ClientSession(base_url=base) as http:
            async with http.get("/api/stats", ssl=context) as response:
                assert response.status == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get("/api/stats", ssl=context, headers=bearer) as response:
                assert (await response.json())["total"] == 1
            # The dashboard's cookie is Secure over https: never sent back over http.
            async with http.post("/api/session", ssl=context, json={"token": TOKEN}) as response:
                assert response.status == 200
                assert "Secure" in response.headers["Set-Cookie"]
