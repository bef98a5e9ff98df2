"""The HTTP API against the real server: the same events and state as TCP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from helpers import LineClient, ServerProcess, free_port
from jobmon.server import Server


@pytest.fixture
async def http_server(start_server) -> AsyncIterator[Server]:  # type: ignore[no-untyped-def]
    async with start_server(http_port=free_port(), max_line_bytes=64 * 1024) as server:
        yield server


@pytest.fixture
async def api(http_server: Server) -> AsyncIterator[Any]:
    assert http_server.http is not None
    base = f"http://127.0.0.1:{http_server.http.port}"
    async with aiohttp.ClientSession(base_url=base) as session:
        yield session


async def call(api: Any, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with api.request(method, path, **kwargs) as response:
        return response.status, await response.json()


async def test_an_event_over_http_is_the_same_event_as_over_tcp(
    api: Any, http_server: Server
) -> None:
    status, reply = await call(
        api,
        "POST",
        "/api/events",
        json={"type": "update_status", "job_id": "web", "status": "running", "progress": 40},
    )
    assert (status, reply) == (
        200,
        {"type": "status_updated", "job_id": "web", "status": "running", "progress": 40},
    )
    tcp = await LineClient.connect(http_server.port)
    job = (await tcp.request({"type": "get_job", "job_id": "web"}))["job"]
    assert job["status"] == "running" and job["progress"] == 40
    await tcp.request({"type": "job_completed", "job_id": "web", "duration_ms": 1500})
    await tcp.close()
    status, reply = await call(api, "GET", "/api/jobs/web")
    assert status == 200 and reply["job"]["status"] == "completed"


async def test_a_batch_of_events_gets_its_replies_in_order(api: Any) -> None:
    batch = [
        {"type": "update_status", "msg_id": 1, "job_id": "a", "status": "queued"},
        {"type": "bogus", "msg_id": 2},
        {"type": "get_stats", "msg_id": 3},
    ]
    status, replies = await call(api, "POST", "/api/events", json=batch)
    assert status == 200
    assert [r.get("in_reply_to") for r in replies] == [1, 2, 3]
    assert replies[1]["type"] == "error" and replies[1]["code"] == 10
    assert replies[2]["total"] == 1


async def test_crontab_shortcuts_with_empty_bodies(api: Any) -> None:
    status, reply = await call(api, "POST", "/api/jobs/backup/start")
    assert status == 200 and reply["status"] == "running"
    status, reply = await call(api, "POST", "/api/jobs/backup/complete")
    assert status == 200 and reply["type"] == "job_completed"
    # A `complete` with no start before it still records a completed run.
    status, reply = await call(api, "POST", "/api/jobs/nightly/complete")
    assert (status, reply["status"]) == (200, "completed")
    status, reply = await call(api, "POST", "/api/jobs/etl/fail", json={"error": "x", "retries": 3})
    assert status == 200 and reply["alert"] == "Job failed after 3 retries: x"
    status, reply = await call(api, "POST", "/api/jobs/hb/heartbeat", json={"ttl_ms": 60000})
    assert status == 200 and reply["type"] == "heartbeat_ok"
    status, reply = await call(api, "POST", "/api/jobs/backup/explode")
    assert (
        status == 404
        and "expected one of start, complete, fail, heartbeat" in reply["error"]["text"]
    )


async def test_reads_stats_jobs_and_alerts(api: Any) -> None:
    for job_id, job_status in (("alpha", "running"), ("beta", "completed"), ("alphabet", "failed")):
        await call(
            api,
            "POST",
            "/api/events",
            json={"type": "update_status", "job_id": job_id, "status": job_status},
        )
    await call(api, "POST", "/api/jobs/gamma/fail", json={"error": "e", "retries": 3})
    status, stats = await call(api, "GET", "/api/stats")
    assert status == 200
    assert stats["total"] == 4 and stats["completed"] == 1 and stats["failed"] == 2
    assert stats["by_status"]["running"] == 1 and stats["by_status"]["failed"] == 2
    status, page = await call(api, "GET", "/api/jobs", params={"q": "alpha"})
    assert [j["job_id"] for j in page["jobs"]] == ["alpha", "alphabet"]
    status, page = await call(api, "GET", "/api/jobs", params={"status": "failed", "limit": "1"})
    assert [j["job_id"] for j in page["jobs"]] == ["alphabet"] and page["next_cursor"]
    status, alerts = await call(api, "GET", "/api/alerts", params={"state": "firing"})
    assert [a["job_id"] for a in alerts["alerts"]] == ["gamma"]


async def test_errors_are_json_with_the_right_status(api: Any) -> None:
    cases = [
        ("GET", "/api/jobs/nobody", {}, 404, 20),
        ("POST", "/api/events", {"data": b"{not json"}, 400, 12),
        (
            "POST",
            "/api/events",
            {"json": {"type": "update_status", "job_id": "j", "status": "x"}},
            400,
            12,
        ),
        ("POST", "/api/events", {"json": {"type": "job_completed", "job_id": "never"}}, 409, 22),
        ("POST", "/api/events", {"json": []}, 400, 12),
        ("GET", "/api/jobs", {"params": {"limit": "lots"}}, 400, 12),
        ("GET", "/api/alerts", {"params": {"limit": "9" * 5000}}, 400, 12),
        ("DELETE", "/api/stats", {}, 405, 10),  # not supported
        ("GET", "/nowhere", {}, 404, 20),  # not found, as an unknown job
        ("POST", "/api/events", {"data": b"[" + b"1," * 40_000 + b"1]"}, 413, 12),
    ]
    for method, path, kwargs, want_status, want_code in cases:
        status, reply = await call(api, method, path, **kwargs)
        assert status == want_status, (method, path, reply)
        assert reply["error"]["code"] == want_code and len(reply["error"]["text"]) > 10


async def test_health_and_readiness(api: Any) -> None:
    assert await call(api, "GET", "/healthz") == (200, {"status": "ok"})
    assert await call(api, "GET", "/readyz") == (200, {"status": "ready"})


async def test_every_route_is_in_the_openapi_description(api: Any, http_server: Server) -> None:
    status, spec = await call(api, "GET", "/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert http_server.http is not None
    served = set()
    for route in http_server.http.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        served.add((path, route.method.lower()))
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served == documented
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert "200" in op["responses"], path


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Every documented endpoint fuzzed from the OpenAPI description; never a 500."""
    http_port = free_port()
    # The last --http-port wins: ServerProcess turns HTTP off, this test needs it.
    # Under a token, with one allowed command, so POST /api/jobs is fuzzed with
    # requests it accepts too (true: a program that does nothing).
    with ServerProcess(
        tmp_path / "data",
        "--http-port",
        str(http_port),
        "--token",
        "fuzz",
        "--allow-command",
        "true=/bin/true",
    ) as server:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"http://127.0.0.1:{http_port}/api/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--exclude-path",
                "/api/stream",  # a stream never ends; tested on its own below
                "--header",
                "Authorization: Bearer fuzz",
                "--header",
                "X-Api-Key: fuzz",  # Healthchecks' management API
                # It cannot know a badge key or which checks exist (404s it warns
                # of); what this test asks is that nothing answers a 500.
                "--warnings",
                "off",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its cache stays out of the repository
        )
        server.terminate()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    # aiohttp logs malformed requests it refuses itself (400s); a bug of ours
    # would be logged by jobmon.http.
    assert '"logger":"jobmon.http"' not in server.stderr


async def test_stream_sends_job_events_and_alerts_as_they_happen(
    api: Any, http_server: Server
) -> None:
    async with api.get("/api/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert await response.content.readline() == b": subscribed\n"
        tcp = await LineClient.connect(http_server.port)
        await tcp.request({"type": "update_status", "job_id": "live", "status": "running"})
        await tcp.request({"type": "job_failed", "job_id": "live", "error": "x", "retries": 3})
        await tcp.close()
        seen: list[tuple[str, Any]] = []
        while len(seen) < 3:
            line = (await response.content.readline()).decode()
            if line.startswith("event: "):
                kind = line[7:].strip()
                data = (await response.content.readline()).decode()
                assert data.startswith("data: ")
                seen.append((kind, orjson.loads(data[6:])))
        assert [(kind, body["type"]) for kind, body in seen] == [
            ("event", "event"),
            ("event", "event"),
            ("alert", "alert"),
        ]
        assert seen[0][1]["event"]["job_id"] == "live"
        assert seen[2][1]["alert"]["kind"] == "failed"
    status, reply = await call(api, "GET", "/api/stream", params={"topics": "gossip"})
    assert status == 400
    assert reply["error"]["text"] == (
        "topics must be drawn from alerts, events, changes (comma-separated)"
    )


async def test_stream_changes_says_that_state_changed_not_what(
    api: Any, http_server: Server
) -> None:
    engine = http_server.engine
    tcp = await LineClient.connect(http_server.port)
    before = engine.changes
    await tcp.request({"type": "get_stats"})
    await tcp.request({"type": "get_job", "job_id": "nothing"})
    assert engine.changes == before  # reads change nothing
    async with api.get("/api/stream", params={"topics": "changes"}) as response:
        assert await response.content.readline() == b": subscribed\n"
        assert await response.content.readline() == b"\n"
        burst = [
            {"type": "update_status", "job_id": f"j{n}", "status": "running"} for n in range(2000)
        ]
        replies = await tcp.pipeline(burst)
        assert {r["type"] for r in replies} == {"status_updated"}
        assert engine.changes > before
        # One line pair however many jobs changed; no per-job events.
        assert await response.content.readline() == b"event: changed\n"
        assert await response.content.readline() == b"data: {}\n"
    await tcp.close()


async def test_a_batch_whose_replies_outgrow_one_turn_is_answered_in_full(
    api: Any, http_server: Server
) -> None:
    """A turn answers up to 256 KiB per sink: a big batch takes several turns."""
    jobs = [{"type": "update_status", "job_id": f"j{n}", "status": "running"} for n in range(100)]
    pages = [{"type": "list_jobs", "limit": 100}] * 20  # about 30 KB of reply each
    last = {"type": "update_status", "job_id": "after-the-cut", "status": "running"}
    status, replies = await call(api, "POST", "/api/events", json=[*jobs, *pages, last])
    assert status == 200 and len(replies) == 121
    assert replies[-1]["job_id"] == "after-the-cut"
    status, job = await call(api, "GET", "/api/jobs/after-the-cut")
    assert job["job"]["status"] == "running"


async def test_a_time_zone_name_that_is_a_directory_is_a_400(api: Any) -> None:
    for zone in ("America", "Etc", "../../etc/passwd"):
        status, reply = await call(api, "GET", "/api/analytics", params={"tz": zone})
        assert status == 400, zone
        assert reply["error"]["text"].startswith(f"unknown time zone {zone!r}")


async def test_json_bodies_end_their_line_and_healthchecks_text_is_as_it_was(
    api: Any, http_server: Server
) -> None:
    json_calls = [
        ("GET", "/api/stats", {}),
        ("GET", "/api/jobs", {}),
        ("GET", "/api/jobs/nobody", {}),  # an error
        ("GET", "/nowhere", {}),  # aiohttp's 404, worded by jobmon
        ("DELETE", "/api/stats", {}),
        ("POST", "/api/events", {"json": {"type": "get_stats", "msg_id": 1}}),
        ("POST", "/api/events", {"json": [{"type": "get_stats"}, {"type": "get_stats"}]}),
        ("POST", "/api/jobs/nightly/start", {}),
        ("GET", "/api/openapi.json", {}),
        ("GET", "/healthz", {}),
        ("GET", "/api/v3/checks/", {}),
    ]
    for method, path, kwargs in json_calls:
        async with api.request(method, path, **kwargs) as response:
            assert response.content_type == "application/json", path
            body = await response.read()
            assert body.endswith(b"\n") and body.count(b"\n") == 1, (path, body[-40:])
            orjson.loads(body)
    async with api.post("/api/v3/checks/", json={"name": "x"}) as response:
        uuid = (await response.json())["uuid"]
    # Healthchecks' plain-text answers are byte for byte its own.
    for path, want in ((f"/ping/{uuid}", (200, b"OK")), ("/ping/nobody", (404, b"not found"))):
        async with api.get(path) as response:
            assert (response.status, await response.read()) == want, path
    async with api.post(f"/api/v3/checks/{uuid}/resume") as response:
        assert (response.status, await response.read()) == (409, b"check is not paused")
    # As a shell shows it: curl's output ends its line.
    assert http_server.http is not None
    # (curl runs beside the server's own event loop, which must keep serving.)
    curl = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        f"http://127.0.0.1:{http_server.http.port}/api/stats",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(curl.communicate(), timeout=60)
    assert (
        curl.returncode == 0
        and stdout.startswith(b'{"type":"job_stats",')
        and stdout.endswith(b"}\n")
    )
