"""Alerts through Apprise (--notify): email to a real SMTP server (aiosmtpd) by
mailto://, JSON posts to a local receiver by json://, routed per job by its
channels; failed deliveries retried, logged and counted in /metrics."""

from __future__ import annotations

import asyncio
import email
import email.policy
import queue
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from helpers import LineClient, free_port
from jobmon.config import Config
from jobmon.server import Server
from test_notify import Receiver, serving

PUBLIC = "https://jobmon.example.com"


class Inbox:
    """What a real SMTP server (aiosmtpd, in its own thread) received."""

    def __init__(self) -> None:
        self.mails: queue.Queue[email.message.EmailMessage] = queue.Queue()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.put(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    async def next(self) -> tuple[str, str]:
        mail = await asyncio.to_thread(self.mails.get, timeout=30)
        body = mail.get_body(("plain",))
        assert body is not None
        return str(mail["Subject"]), body.get_content()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver(), "/all") as recv:
        yield recv


def mailto(port: int) -> str:
    return f"mailto://127.0.0.1:{port}?from=jobmon@example.com&to=ops@example.com"


async def test_email_and_json_routed_by_the_jobs_channels(
    start_server: Any, smtp: tuple[Inbox, int], receiver: Receiver
) -> None:
    inbox, smtp_port = smtp
    json_url = receiver.url.replace("http://", "json://")
    async with start_server(
        notify=[f"ops={mailto(smtp_port)}", json_url], public_url=PUBLIC
    ) as server:
        client = await LineClient.connect(server.port)
        await client.request({"type": "register_job", "job_id": "db", "channels": ["ops"]})
        # web names no channel: only the unnamed URL hears of it. It fails first,
        # so the first mail is db's only if web's was not sent by mail.
        await client.request({"type": "job_failed", "job_id": "web", "error": "502", "retries": 3})
        await client.request(
            {"type": "job_failed", "job_id": "db", "error": "disk full", "retries": 3}
        )
        subject, body = await inbox.next()
        assert subject == "[jobmon] db: failed firing"
        lines = body.strip().splitlines()
        assert lines[0] == "Job: db"
        assert lines[1].startswith("Alert: failed, firing since ")
        assert lines[2] == "Expected: a successful run (within 3 retries)"
        assert lines[3] == "What happened: Job failed after 3 retries: disk full"
        assert lines[-1] == f"Dashboard: {PUBLIC}/#job=db"
        posted = [await asyncio.wait_for(receiver.received.get(), 30) for _ in range(2)]
        assert [p["title"] for p in posted] == [
            "[jobmon] web: failed firing",
            "[jobmon] db: failed firing",
        ]
        assert posted[0]["type"] == "failure" and "Job: web" in posted[0]["message"]
        await client.request({"type": "job_completed", "job_id": "db", "duration_ms": 5})
        subject, body = await inbox.next()
        assert subject == "[jobmon] db: failed resolved" and "resolved at " in body
        resolved = await asyncio.wait_for(receiver.received.get(), 30)
        assert resolved["type"] == "success"
        await client.close()


async def test_a_checks_channels_route_its_alerts(
    start_server: Any, smtp: tuple[Inbox, int]
) -> None:
    inbox, smtp_port = smtp
    async with start_server(
        http_port=free_port(), notify=[f"ops={mailto(smtp_port)}"], public_url=PUBLIC
    ) as server:
        assert server.http is not None
        base = f"http://127.0.0.1:{server.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/api/v3/checks/",
                json={"name": "Backups", "slug": "backups", "channels": "ops"},
            ) as response:
                assert response.status == 201
                check = await response.json()
            assert check["channels"] == server.apprise.outboxes[0].channel.id  # type: ignore[union-attr]
            async with http.post(f"{base}/ping/{check['uuid']}/fail", data="no space left") as r:
                assert (r.status, await r.text()) == (200, "OK")
            subject, body = await inbox.next()
            # Named by its name; the body says its uuid and its job (its slug).
            assert subject == "[jobmon] Backups: failed firing"
            assert body.strip().splitlines()[:2] == [
                f"Check: Backups (uuid {check['uuid']})",
                "Job: backups",
            ]
            assert "What happened: Job failed after 0 retries: failure signal" in body
            assert f"Dashboard: {PUBLIC}/#job=backups" in body
            # A name and no slug: its job_id is its uuid, its title still its name.
            async with http.post(
                f"{base}/api/v3/checks/", json={"name": "Nightly DB", "channels": "ops"}
            ) as response:
                unslugged = (await response.json())["uuid"]
            async with http.post(f"{base}/ping/{unslugged}/fail") as r:
                assert (r.status, await r.text()) == (200, "OK")
            subject, body = await inbox.next()
            assert subject == "[jobmon] Nightly DB: failed firing"
            assert body.strip().splitlines()[:2] == [
                f"Check: Nightly DB (uuid {unslugged})",
                f"Job: {unslugged}",
            ]


async def metric(server: Server, line: str) -> None:
    """Wait (polling /metrics, 30 s at most) until the page has this line."""
    assert server.http is not None
    url = f"http://127.0.0.1:{server.http.port}/metrics"
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url) as response:
                page = await response.text()
            if line in page.splitlines():
                return
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.05)


async def test_failed_deliveries_are_retried_logged_and_counted(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(Receiver(fail_first=2), "/flaky") as flaky:
        dead = f"json://127.0.0.1:{free_port()}/nobody"
        async with start_server(
            http_port=free_port(),
            notify=[flaky.url.replace("http://", "json://"), f"gone={dead}"],
            notify_backoff_s=0.01,
        ) as server:
            client = await LineClient.connect(server.port)
            await client.request({"type": "register_job", "job_id": "j", "channels": ["gone"]})
            await client.request({"type": "job_failed", "job_id": "j", "error": "x", "retries": 3})
            posted = await asyncio.wait_for(flaky.received.get(), 30)
            assert posted["title"] == "[jobmon] j: failed firing" and flaky.posts == 3
            await metric(
                server,
                'jobmon_apprise_notifications_total{channel="unnamed:json",outcome="delivered"} 1.0',
            )
            await metric(
                server, 'jobmon_apprise_notifications_total{channel="gone",outcome="failed"} 1.0'
            )
            await client.close()
    given_up = [r for r in caplog.records if r.getMessage() == "notification given up"]
    assert len(given_up) == 1


def test_a_url_apprise_cannot_use_stops_the_start() -> None:
    with pytest.raises(ValueError, match="Apprise does not understand"):
        Server(Config(port=0, in_memory=True, notify=["ops=nosuchservice://x"]))


async def test_register_job_refuses_a_channel_the_server_does_not_have(start_server: Any) -> None:
    dead = f"json://127.0.0.1:{free_port()}/nobody"
    async with start_server(notify=[f"ops={dead}", dead]) as server:
        client = await LineClient.connect(server.port)
        reply = await client.request(
            {"type": "register_job", "msg_id": 1, "job_id": "j", "channels": ["ops", "opps"]}
        )
        assert reply == {
            "type": "error",
            "in_reply_to": 1,
            "code": 12,
            "text": "unknown channel 'opps' in channels: this server's named channels are ops",
        }
        assert "j" not in server.node.store.jobs  # and nothing was journaled
        ok = await client.request({"type": "register_job", "job_id": "j", "channels": ["ops"]})
        assert ok["type"] == "job_registered"
        assert server.node.store.jobs["j"].monitor.channels == ["ops"]
        check = {"type": "create_check", "uuid": "5a0c3d4e-6a37-4c84-9a4e-7c0d9f1b2e62"}
        refused = await client.request({**check, "channels": ["opps"]})
        assert refused["code"] == 12 and "unknown channel 'opps'" in refused["text"]
        assert len(server.node.store.checks.by_uuid) == 0
        await client.close()
    async with start_server() as server:  # no named channel at all
        client = await LineClient.connect(server.port)
        reply = await client.request({"type": "register_job", "job_id": "k", "channels": ["ops"]})
        assert reply["code"] == 12 and "none: no --notify NAME=URL was given" in reply["text"]
        await client.close()
