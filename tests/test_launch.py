"""Jobs the server starts itself: allowed commands only, arguments never through a
shell, reported like any other job (exit code and output kept with the run)."""

from __future__ import annotations

import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import LineClient, free_port
from jobmon.config import Config
from jobmon.server import Server

TOKEN = "launch-token"


def script(path: Path, body: str) -> str:
    """An executable Python script (what an operator would allow)."""
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
async def launcher(start_server: Any, tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    commands = {
        "echo-args": script(
            tmp_path / "echo_args.py",
            "import sys, json, pathlib\n"
            "pathlib.Path(sys.argv[1]).write_text(json.dumps(sys.argv[2:]))\n"
            "print('resized', len(sys.argv) - 2, 'images')\n",
        ),
        "crash": script(
            tmp_path / "crash.py",
            "import sys\nsys.stderr.write('cannot open input\\n')\nsys.exit(3)\n",
        ),
    }
    async with start_server(
        token=TOKEN, allowed_commands=commands, http_port=free_port()
    ) as server:
        yield server, tmp_path


async def authed(server: Server) -> LineClient:
    tcp = await LineClient.connect(server.port)
    assert (await tcp.request({"type": "auth", "token": TOKEN}))["type"] == "auth_ok"
    return tcp


async def wait_for_status(
    tcp: LineClient, server: Server, job_id: str, status: str
) -> dict[str, Any]:
    """The run reports through the engine: look at the job after each of its
    events (pushed to this subscribed connection) until it has the status."""
    await tcp.request({"type": "subscribe", "msg_id": 0, "topics": ["events"]})
    for msg_id in range(1, 1000):
        await tcp.send({"type": "get_job", "msg_id": msg_id, "job_id": job_id})
        reply = await tcp.read(timeout=30)
        pushed = 0
        while reply.get("in_reply_to") != msg_id:  # an event pushed before the reply
            pushed += 1
            reply = await tcp.read(timeout=30)
        job = reply.get("job")
        if job is not None and job["status"] == status:
            return job
        if not pushed:  # nothing happened yet: wait for the job's next event
            while True:
                line = await tcp.read(timeout=30)
                if line.get("type") == "event" and line["event"].get("job_id") == job_id:
                    break
    raise AssertionError(f"{job_id} never became {status}")


async def test_an_allowed_command_runs_with_its_arguments_as_a_list(
    launcher: tuple[Server, Path],
) -> None:
    server, tmp_path = launcher
    out = tmp_path / "argv.json"
    hostile = ["; touch pwned", "$(touch pwned2)", "`id`", "a b", "--width", "800"]
    watcher = await authed(server)
    tcp = await authed(server)
    reply = await tcp.request(
        {
            "type": "start_job",
            "job_id": "resize-images",
            "command": "echo-args",
            "arguments": [str(out), *hostile],
            "max_retries": 2,
            "retry_delay_ms": 10,
        }
    )
    assert reply == {
        "type": "job_started",
        "job_id": "resize-images",
        "command": "echo-args",
        "arguments": [str(out), *hostile],
    }
    job = await wait_for_status(watcher, server, "resize-images", "completed")
    assert (
        out.read_text() == '["; touch pwned", "$(touch pwned2)", "`id`", "a b", "--width", "800"]'
    )
    assert not list(tmp_path.glob("pwned*"))  # nothing went through a shell
    run = job["recent_runs"][0]
    assert run["status"] == "completed" and run["exit_code"] == 0
    assert run["arguments"] == [str(out), *hostile]
    # Its reports were stamped with event_ids (running, completed): each applied once.
    assert len(server.node.store.seen_events) >= 2
    await tcp.close()
    await watcher.close()


async def test_a_failing_command_is_retried_then_alerts_with_its_output(
    launcher: tuple[Server, Path],
) -> None:
    server, _ = launcher
    watcher = await authed(server)
    async with aiohttp.ClientSession() as http:
        assert server.http is not None
        async with http.post(
            f"http://127.0.0.1:{server.http.port}/api/jobs",
            json={"job_id": "nightly", "command": "crash", "max_retries": 1, "retry_delay_ms": 10},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            assert response.status == 200
            assert (await response.json())["type"] == "job_started"
    job = await wait_for_status(watcher, server, "nightly", "failed")
    assert job["retries"] == 1
    assert job["error"].startswith("exit status 3")
    run = job["recent_runs"][0]
    assert run["exit_code"] == 3
    assert "cannot open input" in run["output"]
    alerts = (await watcher.request({"type": "get_alerts", "state": "firing"}))["alerts"]
    assert [a["kind"] for a in alerts] == ["failed"]
    await watcher.close()


async def test_an_unlisted_command_is_refused_and_nothing_runs(
    launcher: tuple[Server, Path],
) -> None:
    server, _ = launcher
    tcp = await authed(server)
    reply = await tcp.request(
        {"type": "start_job", "job_id": "x", "command": "/bin/sh", "arguments": ["-c", "id"]}
    )
    assert reply["code"] == 10
    assert reply["text"] == (
        "command '/bin/sh' is not allowed: this server runs only the commands its operator "
        "listed with --allow-command NAME=PATH (allowed: crash, echo-args)"
    )
    assert (await tcp.request({"type": "get_job", "job_id": "x"}))["code"] == 20
    await tcp.close()


async def test_without_allowed_commands_start_job_is_refused(client: LineClient) -> None:
    reply = await client.request({"type": "start_job", "job_id": "x", "command": "anything"})
    assert reply["code"] == 10
    assert reply["text"] == (
        "command 'anything' is not allowed: this server allows no commands "
        "(its operator allows them with --allow-command NAME=PATH, with --token)"
    )


def test_allowed_commands_need_a_token() -> None:
    with pytest.raises(ValueError, match="needs --token"):
        Server(Config(port=0, in_memory=True, allowed_commands={"x": "/bin/true"}))


def test_an_allowed_command_must_be_an_executable_file() -> None:
    with pytest.raises(ValueError, match="/nonexistent/resize is not an executable file"):
        Server(
            Config(
                port=0,
                in_memory=True,
                token="t",
                allowed_commands={"resize": "/nonexistent/resize"},
            )
        )


async def test_an_argument_with_a_nul_byte_is_refused(launcher: tuple[Server, Path]) -> None:
    server, _ = launcher
    tcp = await authed(server)
    reply = await tcp.request(
        {"type": "start_job", "job_id": "nul", "command": "crash", "arguments": ["a\x00b"]}
    )
    assert reply["code"] == 12 and "without NUL" in reply["text"]
    assert (await tcp.request({"type": "get_job", "job_id": "nul"}))["code"] == 20
    await tcp.close()
