"""Healthchecks' pinging API on jobmon: exact answers, run ids (rid) for
overlapping runs (curl, as a crontab would), slug URLs with --ping-key and
?create=1, methods and manual_resume, bodies, and a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from helpers import LineClient, free_port
from jobmon import cli
from jobmon.clock import FakeClock
from jobmon.server import Server

KEY = "fqOOd6-F4MMNuCEnzTU01w"
RID_A = "123e4567-e89b-12d3-a456-426614174000"
RID_B = "223e4567-e89b-12d3-a456-426614174000"


class Hc:
    """The server's HTTP side, with the calls these tests make."""

    def __init__(self, server: Server, http: aiohttp.ClientSession) -> None:
        assert server.http is not None
        self.base = f"http://127.0.0.1:{server.http.port}"
        self.http = http

    async def create(self, **spec: Any) -> dict[str, Any]:
        async with self.http.post(f"{self.base}/api/v3/checks/", json=spec) as response:
            assert response.status == 201, await response.text()
            check: dict[str, Any] = await response.json()
            return check

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def ping(self, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, str]:
        async with self.http.request(method, f"{self.base}/ping/{path}", data=body) as response:
            return response.status, await response.text()


@pytest.fixture
async def hc(start_server: Any) -> AsyncIterator[tuple[Server, Hc]]:
    async with (
        start_server(http_port=free_port(), ping_key=KEY) as server,
        aiohttp.ClientSession() as http,
    ):
        yield server, Hc(server, http)


async def curl(*args: str) -> tuple[int, str]:
    """curl as a crontab line runs it; returns the HTTP status and the body."""
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-m",
        "30",
        "-w",
        "\n%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def test_the_answers_are_healthchecks_own(hc: tuple[Server, Hc]) -> None:
    server, api = hc
    check = await api.create(name="Backups", timeout=3600)
    uuid = check["uuid"]
    async with api.http.get(f"{api.base}/ping/{uuid}") as response:
        assert (response.status, await response.text()) == (200, "OK")
        assert response.headers["Ping-Body-Limit"] == "100000"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    async with api.http.head(f"{api.base}/ping/{uuid}/start") as response:
        assert response.status == 200
    assert await api.ping(uuid, "POST") == (200, "OK")
    missing = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    for path in (missing, f"{missing}/fail", f"{missing}/log", f"{missing}/3", "not-a-uuid"):
        assert await api.ping(path) == (404, "not found"), path
    assert await api.ping(f"{uuid}/256") == (400, "invalid url format")
    assert await api.ping(f"{uuid}?rid=12") == (400, "invalid uuid format")
    assert await api.ping(f"{uuid}/nonsense") == (404, "not found")
    pings = (await api.get(f"/api/v3/checks/{uuid}/pings/"))["pings"]
    assert [(p["type"], p["method"]) for p in pings] == [
        ("success", "POST"),
        ("start", "HEAD"),
        ("success", "GET"),
    ]


async def test_overlapping_runs_with_rid_are_measured_apart(
    hc: tuple[Server, Hc], clock: FakeClock
) -> None:
    server, api = hc
    uuid = (await api.create(name="etl", slug="etl", timeout=86400, grace=3600))["uuid"]
    url = f"{api.base}/ping/{uuid}"
    assert await curl(f"{url}/start?rid={RID_A}") == (200, "OK")
    clock.advance(10)
    assert await curl(f"{url}/start?rid={RID_B}") == (200, "OK")
    clock.advance(5)
    assert await curl("--data-raw", "a done", f"{url}?rid={RID_A}") == (200, "OK")
    check = await api.get(f"/api/v3/checks/{uuid}")
    assert check["status"] == "up" and check["started"] is True  # b still runs
    clock.advance(20)
    assert await curl("--data-raw", "b failed", f"{url}/1?rid={RID_B}") == (200, "OK")
    pings = (await api.get(f"/api/v3/checks/{uuid}/pings/"))["pings"]
    assert [(p["type"], p["rid"], p.get("duration")) for p in pings] == [
        ("fail", RID_B, 25.0),
        ("success", RID_A, 15.0),
        ("start", RID_B, None),
        ("start", RID_A, None),
    ]
    assert pings[0]["ua"].startswith("curl/")
    assert pings[0]["body_url"] == f"{api.base}/api/v3/checks/{uuid}/pings/4/body"
    async with api.http.get(pings[0]["body_url"]) as response:
        assert (response.status, await response.text()) == (200, "b failed")
    client = await LineClient.connect(server.port)
    job = (await client.request({"type": "get_job", "job_id": "etl"}))["job"]
    assert job["status"] == "failed"
    assert [
        (r["run_id"], r["status"], r["duration_ms"], r["output"]) for r in job["recent_runs"]
    ] == [
        (RID_B, "failed", 25000, "b failed"),
        (RID_A, "completed", 15000, "a done"),
    ]
    assert job["recent_runs"][0]["exit_code"] == 1
    await client.close()


async def test_slug_urls_the_ping_key_and_create(hc: tuple[Server, Hc]) -> None:
    server, api = hc
    assert await api.ping(f"{KEY}/db-backup") == (404, "not found")
    assert await api.ping(f"{KEY}/db-backup?create=1") == (201, "Created")
    assert await api.ping(f"{KEY}/db-backup/start?create=1") == (200, "OK")
    assert await api.ping("wrong-key/db-backup?create=1") == (404, "not found")
    assert await api.ping(f"{KEY}/DB-Backup") == (400, "invalid url format")
    (check,) = (await api.get("/api/v3/checks/?slug=db-backup"))["checks"]
    # Healthchecks' defaults for a check made by its first ping.
    assert (check["name"], check["timeout"], check["grace"]) == ("db-backup", 86400, 3600)
    assert check["n_pings"] == 2 and check["started"] is True
    await api.create(name="twin", slug="twin")
    await api.create(name="twin 2", slug="twin")
    assert await api.ping(f"{KEY}/twin") == (409, "ambiguous slug")
    client = await LineClient.connect(server.port)
    job = (await client.request({"type": "get_job", "job_id": "db-backup"}))["job"]
    assert job["status"] == "running"  # a check is a job: its slug is its job_id
    await client.close()


async def test_post_only_log_pings_and_a_body_cut_at_100_kb(hc: tuple[Server, Hc]) -> None:
    server, api = hc
    uuid = (await api.create(name="strict", methods="POST"))["uuid"]
    assert await api.ping(uuid, "GET") == (200, "OK")  # kept, but ignored
    assert await api.ping(f"{uuid}/log", "POST", b"just saying") == (200, "OK")
    check = await api.get(f"/api/v3/checks/{uuid}")
    assert check["status"] == "new" and check["n_pings"] == 2
    big = b"x" * 150_000
    assert await api.ping(uuid, "POST", big) == (200, "OK")
    pings = (await api.get(f"/api/v3/checks/{uuid}/pings/"))["pings"]
    assert [p["type"] for p in pings] == ["success", "log", "ign"]
    async with api.http.get(pings[0]["body_url"]) as response:
        assert len(await response.text()) == 100_000
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "up"


async def test_pause_manual_resume_and_resume(hc: tuple[Server, Hc], clock: FakeClock) -> None:
    server, api = hc
    auto = (await api.create(name="auto", timeout=60, grace=60))["uuid"]
    manual = (await api.create(name="manual", timeout=60, grace=60, manual_resume=True))["uuid"]
    for uuid in (auto, manual):
        async with api.http.post(f"{api.base}/api/v3/checks/{uuid}/resume") as response:
            assert (response.status, await response.text()) == (409, "check is not paused")
        await api.ping(uuid)
        async with api.http.post(f"{api.base}/api/v3/checks/{uuid}/pause") as response:
            assert (await response.json())["status"] == "paused"
    clock.advance(500)  # paused: no alert, however late
    await api.ping(auto)  # a ping resumes it...
    await api.ping(manual)  # ...unless manual_resume: ignored
    assert (await api.get(f"/api/v3/checks/{auto}"))["status"] == "up"
    assert (await api.get(f"/api/v3/checks/{manual}"))["status"] == "paused"
    async with api.http.post(f"{api.base}/api/v3/checks/{manual}/resume") as response:
        assert (await response.json())["status"] == "new"
    flips = await api.get(f"/api/v3/checks/{manual}/flips/")
    assert [f["up"] for f in flips] == [0, 0, 1]  # new, paused, up (newest first)


async def test_resuming_a_check_that_was_down_makes_it_new_as_healthchecks_does(
    hc: tuple[Server, Hc], clock: FakeClock
) -> None:
    # Healthchecks' resume (hc/api/views.py): status "new", a flip to new, and
    # the incident over: the next failure is news again, the next success is not.
    server, api = hc
    uuid = (await api.create(name="Backups", timeout=3600, grace=60))["uuid"]
    tcp = await LineClient.connect(server.port)

    async def alerts(state: str) -> list[tuple[str, str]]:
        reply = await tcp.request({"type": "get_alerts", "job_id": uuid, "state": state})
        return [(a["kind"], a["state"]) for a in reply["alerts"]]

    assert await api.ping(f"{uuid}/fail") == (200, "OK")
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "down"
    assert await alerts("firing") == [("failed", "firing")]
    clock.advance(60)
    async with api.http.post(f"{api.base}/api/v3/checks/{uuid}/pause") as response:
        assert (await response.json())["status"] == "paused"
    clock.advance(60)
    async with api.http.post(f"{api.base}/api/v3/checks/{uuid}/resume") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "new"
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "new"
    assert await alerts("firing") == []
    flips = await api.get(f"/api/v3/checks/{uuid}/flips/")
    assert [f["up"] for f in flips] == [0, 0, 0]  # new, paused, down (newest first)
    clock.advance(60)
    assert await api.ping(f"{uuid}/fail") == (200, "OK")  # a new incident: a new alert
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "down"
    assert await alerts("all") == [("failed", "firing"), ("failed", "resolved")]
    clock.advance(60)
    assert await api.ping(uuid) == (200, "OK")
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "up"
    await tcp.close()


async def test_status_follows_the_clock_and_the_alert_fires(
    hc: tuple[Server, Hc], clock: FakeClock
) -> None:
    server, api = hc
    uuid = (await api.create(name="tick", timeout=60, grace=60))["uuid"]
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "new"
    await api.ping(f"{uuid}/start")
    assert (await api.get(f"/api/v1/checks/{uuid}"))["status"] == "started"  # v1 says so
    started = await api.get(f"/api/v3/checks/{uuid}")
    assert (started["status"], started["started"]) == ("new", True)  # new until its success
    await api.ping(uuid)
    check = await api.get(f"/api/v3/checks/{uuid}")
    assert check["status"] == "up" and check["next_ping"] is not None
    clock.advance(61)
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "grace"
    clock.advance(60)
    server.engine.wake()
    client = await LineClient.connect(server.port)
    alerts = await client.request({"type": "get_alerts", "job_id": uuid})
    assert [a["kind"] for a in alerts["alerts"]] == ["missed_run"]
    assert (await api.get(f"/api/v3/checks/{uuid}"))["status"] == "down"
    assert [f["up"] for f in await api.get(f"/api/v3/checks/{uuid}/flips/")] == [0, 1]
    await client.close()


async def test_checks_pings_and_live_runs_survive_a_restart(
    start_server: Any, data_dir: Any
) -> None:
    async with (
        start_server(http_port=free_port(), data_dir=data_dir) as server,
        aiohttp.ClientSession() as http,
    ):
        api = Hc(server, http)
        uuid = (await api.create(name="kept", slug="kept", tags="a b"))["uuid"]
        await api.ping(f"{uuid}/start?rid={RID_A}")
        await api.ping(f"{uuid}?rid={RID_A}", "POST", b"hello")
        await api.ping(f"{uuid}/start?rid={RID_B}")  # still live at the restart
        before = await api.get(f"/api/v3/checks/{uuid}")
        pings = await api.get(f"/api/v3/checks/{uuid}/pings/")
    # From a snapshot this time (jobmon compact), not the journal.
    assert cli.main(["compact", "--data-dir", str(data_dir)]) == 0
    async with (
        start_server(http_port=free_port(), data_dir=data_dir) as server,
        aiohttp.ClientSession() as http,
    ):
        api = Hc(server, http)
        after = await api.get(f"/api/v3/checks/{uuid}")
        for url_field in ("ping_url", "update_url", "pause_url", "resume_url"):
            before.pop(url_field), after.pop(url_field)  # the port changed
        assert after == before
        again = await api.get(f"/api/v3/checks/{uuid}/pings/")
        assert [p["n"] for p in again["pings"]] == [p["n"] for p in pings["pings"]]
        async with http.get(f"{api.base}/api/v3/checks/{uuid}/pings/2/body") as response:
            assert await response.text() == "hello"
        client = await LineClient.connect(server.port)
        job = (await client.request({"type": "get_job", "job_id": "kept"}))["job"]
        assert [r["run_id"] for r in job["live_runs"]] == [RID_B]
        assert job["recent_runs"][0]["run_id"] == RID_A
        assert await api.ping(f"{uuid}?rid={RID_B}") == (200, "OK")
        await client.close()


async def test_a_ping_body_past_the_request_limit_is_cut_not_refused(
    hc: tuple[Server, Hc],
) -> None:
    # Other routes refuse a body past --max-line-bytes (413); a ping reads its own
    # first 100 KB, as Healthchecks keeps a ping's first part whatever its size.
    server, api = hc
    uuid = (await api.create(name="loud"))["uuid"]
    huge = b"y" * (server.config.max_line_bytes + 500_000)
    assert await api.ping(uuid, "POST", huge) == (200, "OK")
    pings = (await api.get(f"/api/v3/checks/{uuid}/pings/"))["pings"]
    async with api.http.get(pings[0]["body_url"]) as response:
        assert await response.text() == "y" * 100_000


async def test_a_ping_body_that_never_ends_gets_408(start_server: Any) -> None:
    async with start_server(http_port=free_port(), http_timeout_ms=300) as server:
        assert server.http is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http.port)
        writer.write(
            f"POST /ping/{RID_A} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        writer.close()
