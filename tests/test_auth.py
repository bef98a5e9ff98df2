"""--token on TCP (auth first, error 14, closed after repeated failures) and HTTP
(Bearer, or the dashboard's cookie; /healthz open)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from helpers import LineClient, free_port
from jobmon.client import Client
from jobmon.server import Server

TOKEN = "s3cret-token"


@pytest.fixture
async def locked(start_server: Any) -> AsyncIterator[Server]:
    async with start_server(token=TOKEN, http_port=free_port()) as server:
        yield server


async def test_tcp_requires_auth_first(locked: Server) -> None:
    tcp = await LineClient.connect(locked.port)
    refused = await tcp.request(
        {"type": "update_status", "msg_id": 1, "job_id": "a", "status": "running"}
    )
    assert refused["code"] == 14
    assert refused["text"].startswith("not authenticated: this server requires")
    assert await tcp.request({"type": "auth", "msg_id": 2, "token": TOKEN}) == {
        "type": "auth_ok",
        "in_reply_to": 2,
    }
    ok = await tcp.request(
        {"type": "update_status", "msg_id": 3, "job_id": "a", "status": "running"}
    )
    assert ok["type"] == "status_updated"
    stats = await tcp.request({"type": "get_stats"})
    assert stats["total"] == 1  # the refused update changed nothing
    await tcp.close()


async def test_a_pipelined_auth_unlocks_what_follows_it(locked: Server) -> None:
    tcp = await LineClient.connect(locked.port)
    replies = await tcp.pipeline(
        [
            {"type": "auth", "token": TOKEN},
            {"type": "update_status", "job_id": "b", "status": "running"},
            {"type": "get_stats"},
        ]
    )
    assert [r["type"] for r in replies] == ["auth_ok", "status_updated", "job_stats"]
    await tcp.close()


async def test_repeated_failures_close_the_connection(locked: Server) -> None:
    tcp = await LineClient.connect(locked.port)
    for attempt in (1, 2, 3):
        reply = await tcp.request({"type": "auth", "token": f"guess-{attempt}"})
        assert reply["code"] == 14
        assert f"failure {attempt} of 3" in reply["text"]
    assert await tcp.reader.read() == b""  # closed by the server
    await tcp.close()


async def test_the_client_authenticates_with_its_token(locked: Server) -> None:
    async with Client(port=locked.port, token=TOKEN) as client:
        assert await client.start(5)
        assert (await client.update_status("c", "running"))["type"] == "status_updated"
        assert (await client.get_stats())["total"] == 1


async def test_a_client_with_a_wrong_token_never_connects(locked: Server) -> None:
    client = Client(port=locked.port, token="wrong", backoff_s=0.05, backoff_max_s=0.1)
    assert not await client.start(0.5)
    assert await client.update_status("d", "running") is None  # queued, not raised
    await client.close(flush_s=0)
    tcp = await LineClient.connect(locked.port)
    await tcp.request({"type": "auth", "token": TOKEN})
    assert (await tcp.request({"type": "get_stats"}))["total"] == 0
    await tcp.close()


async def test_http_requires_the_bearer_token_except_healthz(locked: Server) -> None:
    assert locked.http is not None
    base = f"http://127.0.0.1:{locked.http.port}"
    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.get("/healthz") as response:
            assert response.status == 200
        async with http.get("/api/stats") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="jobmon"'
            body = await response.json()
            assert body["error"]["code"] == 14
            assert "Authorization: Bearer" in body["error"]["text"]
        async with http.get("/metrics", headers={"Authorization": "Bearer nope"}) as response:
            assert response.status == 401
            assert (await response.json())["error"]["text"] == "the token is wrong"
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post("/api/jobs/nightly/start", headers=bearer) as response:
            assert response.status == 200
        async with http.get("/api/stats", headers=bearer) as response:
            assert (await response.json())["total"] == 1
        async with http.get("/") as response:  # the page holds no data; it asks for the token
            assert response.status == 200


async def test_the_dashboard_signs_in_with_a_cookie(locked: Server) -> None:
    assert locked.http is not None
    base = f"http://127.0.0.1:{locked.http.port}"
    # unsafe: aiohttp keeps cookies for IP-address hosts only when told to (browsers do).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
        async with http.post("/api/session", json={"token": "wrong"}) as response:
            assert response.status == 401
        async with http.post("/api/session", json={"token": TOKEN}) as response:
            assert response.status == 200
            cookie = response.cookies["jobmon_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert TOKEN not in cookie.value  # a derived value, not the token
        async with http.get("/api/stats") as response:  # the session cookie is sent
            assert response.status == 200
        async with http.get("/api/stream", params={"topics": "changes"}) as response:
            assert response.status == 200
            assert await asyncio.wait_for(response.content.readline(), 10) == b": subscribed\n"


async def test_requests_pipelined_after_the_third_failure_go_unanswered(locked: Server) -> None:
    tcp = await LineClient.connect(locked.port)
    await tcp.send(*({"type": "get_stats", "msg_id": n} for n in range(6)))
    replies = []
    while line := await tcp.reader.readline():
        replies.append(line)
    assert len(replies) == 3  # three refusals, then the connection closed
    assert b"failure 3 of 3" in replies[-1]
    await tcp.close()


async def test_the_cookie_reads_but_never_writes(locked: Server) -> None:
    """A page on another local port is the same site to a browser: a form POST
    from it would carry the cookie. Writes need the Bearer token."""
    assert locked.http is not None
    jar = aiohttp.CookieJar(unsafe=True)
    base = f"http://127.0.0.1:{locked.http.port}"
    async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
        async with http.post("/api/session", json={"token": TOKEN}) as response:
            assert response.status == 200
        async with http.get("/api/stats") as response:
            assert response.status == 200
        async with http.post(
            "/api/events",
            data='{"type":"update_status","job_id":"csrf","status":"running"}',
            headers={"Content-Type": "text/plain"},
        ) as response:
            assert response.status == 401
        async with http.get("/api/stats") as response:
            assert (await response.json())["total"] == 0


async def test_a_wrong_token_is_told_so_and_counted(locked: Server) -> None:
    tcp = await LineClient.connect(locked.port)
    reply = await tcp.request({"type": "auth", "msg_id": 1, "token": "nope"})
    assert reply == {
        "type": "error",
        "in_reply_to": 1,
        "code": 14,
        "text": "the token is wrong (failure 1 of 3 before the connection is closed)",
    }
    reply = await tcp.request({"type": "get_stats", "msg_id": 2})
    assert reply["text"] == (
        'not authenticated: this server requires {"type":"auth","token":"..."} as the '
        "first message (failure 2 of 3 before the connection is closed)"
    )
    await tcp.close()
