"""jobmon.client's first connection, its questions and its close, against real
servers: the README's Python snippets run as written, events sent right after
entering the block or left queued at its end are delivered, and a question
waits for a connection as long as its reply timeout, no longer."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import LineClient, ServerProcess, free_port, get_job
from jobmon.client import Client, JobmonUnavailable
from jobmon.server import Server

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT_S = 60.0  # generous: other suites share this machine's two cores


def readme_snippet(marker: str) -> str:
    """The README's ```python block that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"{len(found)} python blocks in the README contain {marker!r}"
    return found[0]


def on_port(code: str, port: int) -> str:
    assert '"127.0.0.1", 7070' in code  # the snippet names the default address
    return code.replace('"127.0.0.1", 7070', f'"127.0.0.1", {port}')


async def test_the_readmes_python_snippet_runs_as_written_and_delivers_everything(
    tmp_path: Path,
) -> None:
    code = readme_snippet("async def main()")
    with ServerProcess(tmp_path / "data") as server:
        result = subprocess.run(
            [sys.executable, "-c", on_port(code, server.port)],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "undelivered" not in result.stderr and "unreachable" not in result.stderr
        stats, job = result.stdout.splitlines()
        assert stats.startswith("{'type': 'job_stats', 'in_reply_to': ")
        assert "'total': 2, 'completed': 2, 'failed': 0," in stats
        assert job.startswith("{'job_id': 'nightly-backup', 'status': 'completed'")
        client = await LineClient.connect(server.port)
        for job_id in ("nightly-backup", "resize-images", "report"):
            record = await get_job(client, job_id)
            assert (record["status"], record["runs"], record["progress"]) == ("completed", 1, 100)
            assert "memory_mb" in record["resource_usage"]  # measured in the snippet's process
        assert (await get_job(client, "nightly-backup"))["max_retries"] == 3
        await client.close()
        assert server.terminate() == 0


async def test_the_readmes_alert_watcher_prints_alerts_as_they_fire(tmp_path: Path) -> None:
    code = readme_snippet("jobmon.subscribe(")
    with ServerProcess(tmp_path / "data") as server:
        watcher = subprocess.Popen(
            [sys.executable, "-c", on_port(code, server.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        try:
            client = await LineClient.connect(server.port)
            assert watcher.stdout is not None
            reader = asyncio.get_running_loop().run_in_executor(None, watcher.stdout.readline)
            # It is subscribed once it has connected: fire alerts until it prints one.
            deadline = time.monotonic() + WAIT_S
            for n in range(10_000):
                failed = {"type": "job_failed", "job_id": f"etl-{n}", "error": "disk full"}
                await client.request({**failed, "retries": 3})
                done, _ = await asyncio.wait([reader], timeout=0.2)
                if done or time.monotonic() > deadline:
                    break
            line = await asyncio.wait_for(reader, 1.0)
            assert re.fullmatch(r"firing etl-\d+ Job failed after 3 retries: disk full\n", line)
            await client.close()
        finally:
            watcher.terminate()
            watcher.wait(30)
        assert server.terminate() == 0


async def test_a_run_tracked_right_after_entering_is_delivered(server: Server) -> None:
    async with Client(port=server.port) as jobmon:
        assert jobmon.connected  # entering waited for the connection
        async with jobmon.track("x"):
            pass
        assert (await jobmon.get_job("x"))["status"] == "completed"
    reader = await LineClient.connect(server.port)
    assert (await get_job(reader, "x"))["runs"] == 1
    await reader.close()


async def test_leaving_the_block_delivers_what_waited_for_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobmon.client")
    port = free_port()
    server = None
    try:
        started = time.monotonic()
        async with Client(port=port, backoff_s=0.05, backoff_max_s=0.2) as jobmon:
            # Nothing listens: entering went on after the first refused attempt.
            assert not jobmon.connected and time.monotonic() - started < WAIT_S
            async with jobmon.track("late"):
                pass
            assert len(jobmon.queued) == 2
            server = ServerProcess(tmp_path / "data", "--port", str(port)).start()
        reader = await LineClient.connect(port)
        job = await get_job(reader, "late")
        assert (job["status"], job["runs"]) == ("completed", 1)
        await reader.close()
        assert not [r for r in caplog.records if "undelivered" in r.getMessage()]
    finally:
        if server is not None:
            server.terminate()


async def test_closing_with_nobody_listening_warns_with_the_count_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="jobmon.client")
    async with Client(port=free_port(), reply_timeout_s=0.3) as jobmon:
        async with jobmon.track("lost"):
            pass
        with pytest.raises(JobmonUnavailable, match=r"unreachable .*no connection within 0.3 s"):
            await jobmon.get_stats()
    warnings = [r.getMessage() for r in caplog.records if "undelivered" in r.getMessage()]
    assert warnings == ["jobmon client closing with 2 events undelivered"]


async def test_a_question_waits_for_a_connection_up_to_its_reply_timeout(tmp_path: Path) -> None:
    port = free_port()
    client = Client(port=port, backoff_s=0.05, backoff_max_s=0.2, reply_timeout_s=WAIT_S)
    await client.start()  # connecting in the background; nothing listens yet
    try:
        asking = asyncio.ensure_future(client.get_stats())
        done, _ = await asyncio.wait([asking], timeout=0.3)
        assert not done  # it waits rather than raising at once
        with ServerProcess(tmp_path / "data", "--port", str(port)) as server:
            stats = await asking
            assert stats["type"] == "job_stats" and stats["total"] == 0
            server.terminate()
    finally:
        await client.close()
