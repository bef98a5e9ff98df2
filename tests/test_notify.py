"""Alerts leave jobmon: webhooks to a local HTTP receiver, and a real Prometheus Alertmanager."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers import LineClient, free_port


class Receiver:
    """A real HTTP server that records what is POSTed to it; fails the first N posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.fail_first = fail_first
        self.posts = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.posts <= self.fail_first:
            return web.Response(status=503, text="try later")
        await self.received.put(await request.json())
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def serving(recv: Receiver, path: str) -> AsyncIterator[Receiver]:
    """Run the receiver's HTTP server on a free port; ``recv.url`` is its address."""
    app = web.Application()
    app.router.add_post(path, recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield recv
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver(fail_first=1), "/hook") as recv:
        yield recv


async def test_webhook_gets_firing_and_resolved_with_a_retry(
    start_server, receiver: Receiver
) -> None:  # type: ignore[no-untyped-def]
    async with start_server(webhooks=[receiver.url], notify_backoff_s=0.05) as server:
        client = await LineClient.connect(server.port)
        await client.request({"type": "register_job", "job_id": "etl", "labels": {"team": "data"}})
        await client.request({"type": "job_failed", "job_id": "etl", "error": "OOM", "retries": 3})
        firing = await asyncio.wait_for(receiver.received.get(), 10)
        assert firing["job_id"] == "etl" and firing["kind"] == "failed"
        assert firing["state"] == "firing" and firing["labels"] == {"team": "data"}
        assert firing["text"] == "Job failed after 3 retries: OOM"
        await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 1})
        resolved = await asyncio.wait_for(receiver.received.get(), 10)
        assert resolved["id"] == firing["id"] and resolved["state"] == "resolved"
        assert receiver.posts == 3  # the first attempt got a 503 and was retried
        (target,) = server.notifier.webhooks
        assert (target.delivered, target.failed) == (2, 0)
        await client.close()


async def test_an_unreachable_webhook_never_holds_up_the_store(start_server) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with start_server(webhooks=[f"http://127.0.0.1:{dead_port}/x"]) as server:
        client = await LineClient.connect(server.port)
        await client.request({"type": "job_failed", "job_id": "a", "error": "x", "retries": 3})
        await client.send(*({"type": "get_stats", "msg_id": i} for i in range(500)))
        assert [(await client.read())["in_reply_to"] for _ in range(500)] == list(range(500))
        await client.close()


def alertmanager_binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "Alertmanager is not installed: apt-get install prometheus-alertmanager (.ci/run does)"
    )


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            alertmanager_binary(),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            # An external process: its readiness can only be asked for (bounded).
            for _ in range(200):
                try:
                    async with session.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                await asyncio.sleep(0.05)
            else:
                pytest.fail("Alertmanager did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def alerts_in(url: str, job_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200
        found: list[dict[str, Any]] = await response.json()
    return [a for a in found if a["labels"].get("job_id") == job_id]


async def poll(url: str, job_id: str, want_present: bool) -> list[dict[str, Any]]:
    for _ in range(200):
        found = await alerts_in(url, job_id)
        if bool(found) == want_present:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"Alertmanager never {'showed' if want_present else 'dropped'} the alert")


async def test_alertmanager_receives_firing_then_resolved(start_server, alertmanager: str) -> None:  # type: ignore[no-untyped-def]
    async with start_server(alertmanager=alertmanager) as server:
        client = await LineClient.connect(server.port)
        await client.request(
            {"type": "register_job", "job_id": "backup", "labels": {"team": "ops"}}
        )
        await client.request(
            {"type": "job_failed", "job_id": "backup", "error": "disk full", "retries": 3}
        )
        (alert,) = await poll(alertmanager, "backup", want_present=True)
        assert alert["labels"] == {
            "alertname": "JobFailed",
            "job_id": "backup",
            "kind": "failed",
            "team": "ops",
        }
        assert alert["annotations"]["description"] == "Job failed after 3 retries: disk full"
        assert alert["status"]["state"] == "active"
        await client.request({"type": "job_completed", "job_id": "backup", "duration_ms": 3})
        await poll(alertmanager, "backup", want_present=False)
        assert server.notifier.alertmanager is not None
        assert server.notifier.alertmanager.failed == 0
        await client.close()


async def test_alertmanager_client_resends_firing_and_recently_resolved(start_server) -> None:  # type: ignore[no-untyped-def]
    async with (
        serving(Receiver(), "/api/v2/alerts") as recv,
        start_server(
            alertmanager=recv.url.removesuffix("/api/v2/alerts"), alertmanager_resend_s=0.05
        ) as server,
    ):
        client = await LineClient.connect(server.port)
        await client.request({"type": "job_failed", "job_id": "a", "error": "x", "retries": 3})
        await client.request({"type": "job_failed", "job_id": "b", "error": "y", "retries": 3})
        await client.request({"type": "job_completed", "job_id": "b", "duration_ms": 1})
        # Posts keep coming with the whole active set: a firing, b resolved with endsAt.
        while True:
            batch = await asyncio.wait_for(recv.received.get(), 10)
            by_job = {a["labels"]["job_id"]: a for a in batch}
            if set(by_job) == {"a", "b"}:
                break
        assert "endsAt" not in by_job["a"] and by_job["a"]["labels"]["alertname"] == "JobFailed"
        assert "endsAt" in by_job["b"]
        again = await asyncio.wait_for(recv.received.get(), 10)
        assert {a["labels"]["job_id"] for a in again} == {"a", "b"}
        await client.close()


async def test_a_subscriber_that_does_not_read_is_dropped_not_waited_for(server) -> None:  # type: ignore[no-untyped-def]
    # A raw socket that never reads (an asyncio client would buffer megabytes itself).
    sleeper = socket.create_connection(("127.0.0.1", server.port))
    sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sleeper.sendall(b'{"type":"subscribe","msg_id":1}\n')
    reply = await asyncio.to_thread(sleeper.recv, 4096)  # its one read: the reply
    assert reply.startswith(b'{"type":"subscribed"')
    assert len(server.node.subscriptions) == 1
    # Fire far more alerts than it may leave unread.
    worker = await LineClient.connect(server.port)
    count = 20_000
    await worker.send(
        *(
            {"type": "job_failed", "job_id": f"j{i}", "error": "e" * 2000, "retries": 3}
            for i in range(count)
        )
    )
    for _ in range(count):
        await worker.read()
    assert server.engine.publisher.subscribers_dropped == 1
    assert server.node.subscriptions == {}
    assert len(server.node.store.recent_alerts()) == 10_000  # history kept, ingestion went on
    await worker.close()
    sleeper.close()
