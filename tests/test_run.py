"""`jobmon run` as a real process, wrapping real commands, reporting to a real `jobmon serve`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import LineClient, ServerProcess, jobmon_cmd
from jobmon.client import Client
from jobmon.runner import RunSpec, discard, run

PY = sys.executable
UNREACHABLE = "the command runs anyway"


@pytest.fixture(scope="module")
def jobmon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("run-data")) as server:
        yield server


class Wrapped:
    """One `jobmon run` process: its exit code, output and how long it took."""

    def __init__(self, code: int, stdout: str, stderr: str, seconds: float) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds


async def start_wrapper(
    port: int, flags: list[str], command: list[str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *jobmon_cmd("run", "--port", str(port), *flags, "--", *command),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (what a failed test must not leave running)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


async def stop_wrapper(proc: asyncio.subprocess.Process) -> None:
    """A wrapper still running when its test ends (a wait timed out): kill it and its command."""
    if proc.returncode is None:
        kill_tree(proc.pid)
        await asyncio.wait_for(proc.wait(), 30)


async def run_wrapper(port: int, flags: list[str], command: list[str]) -> Wrapped:
    started = time.monotonic()
    proc = await start_wrapper(port, flags, command)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop_wrapper(proc)
    assert proc.returncode is not None
    return Wrapped(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


async def ask(port: int, body: dict[str, Any]) -> dict[str, Any]:
    conn = await LineClient.connect(port)
    try:
        return await conn.request(body)
    finally:
        await conn.close()


async def get_job(port: int, job_id: str) -> dict[str, Any]:
    reply = await ask(port, {"type": "get_job", "msg_id": 1, "job_id": job_id})
    assert reply["type"] == "job", reply
    job: dict[str, Any] = reply["job"]
    return job


async def alerts_of(port: int, job_id: str) -> dict[str, dict[str, Any]]:
    reply = await ask(port, {"type": "get_alerts", "msg_id": 1, "job_id": job_id, "state": "all"})
    return {alert["kind"]: alert for alert in reply["alerts"]}


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_success_is_reported_with_arguments_exit_code_and_the_tree_usage(
    jobmon: ServerProcess,
) -> None:
    # The command's CPU is burnt in a child process (the tree is measured, not one process).
    script = (
        "import subprocess, sys, time\n"
        "print('out', sys.argv[1:], flush=True)\n"
        "print('note on stderr', file=sys.stderr, flush=True)\n"
        "burn = 'import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass'\n"
        "subprocess.run([sys.executable, '-c', burn], check=True)\n"
        "time.sleep(0.1)\n"
    )
    result = await run_wrapper(
        jobmon.port, ["--job-id", "run-ok", "--heartbeat-ms", "100"], [PY, "-c", script, "x", "y z"]
    )
    assert result.code == 0, result.stderr
    assert result.stdout == "out ['x', 'y z']\n"
    assert "note on stderr\n" in result.stderr
    assert UNREACHABLE not in result.stderr

    job = await get_job(jobmon.port, "run-ok")
    assert job["status"] == "completed"
    assert job["runs"] == 1
    assert job["max_retries"] == 0
    assert job["monitor"]["heartbeat_ttl_ms"] == 300  # 3 x --heartbeat-ms
    assert 500 <= job["duration_ms"] <= result.seconds * 1000  # within the wrapper's lifetime
    usage = job["resource_usage"]
    assert set(usage) == {"cpu_percent", "memory_mb"}
    # The CPU seconds behind the percentage: at least the grandchild's 0.4 s busy loop
    # (less 0.01 s for the percentage's rounding to one decimal).
    cpu_s = usage["cpu_percent"] / 100 * job["duration_ms"] / 1000
    assert cpu_s >= 0.39, usage
    assert 5 < usage["memory_mb"] < 1000  # at least one Python interpreter's RSS
    [run] = job["recent_runs"]
    assert run["status"] == "completed"
    assert run["arguments"] == ["-c", script, "x", "y z"]
    assert run["exit_code"] == 0
    assert "output" not in run and "memory_limit_mb" not in run


async def test_failures_are_retried_and_the_last_raises_the_failed_alert(
    jobmon: ServerProcess,
) -> None:
    watcher = await LineClient.connect(jobmon.port)
    subscribed = await watcher.request(
        {"type": "subscribe", "msg_id": 1, "topics": ["events", "alerts"]}
    )
    assert subscribed["type"] == "subscribed"
    script = "import sys\nprint('attempt failed: disk full', file=sys.stderr)\nsys.exit(3)"
    result = await run_wrapper(
        jobmon.port,
        ["--job-id", "run-fails", "--retries", "2", "--retry-delay-ms", "50"],
        [PY, "-c", script],
    )
    assert result.code == 3  # the command's own exit code
    assert result.stderr.count("attempt failed: disk full\n") == 3  # 1 + 2 retries, passed through

    # What the server was told, in order: running, failed (will retry), ... then the alert.
    seen: list[dict[str, Any]] = []
    alert: dict[str, Any] | None = None
    while alert is None:
        line = await watcher.read(timeout=10)
        if line["type"] == "alert" and line["alert"]["job_id"] == "run-fails":
            alert = line["alert"]
        elif line["type"] == "event" and line["event"]["job_id"] == "run-fails":
            seen.append(line["event"])
    await watcher.close()
    outcomes = [(e["type"], e.get("retries"), e.get("status")) for e in seen]
    assert outcomes == [
        ("status_updated", None, "running"),
        ("job_failed", 0, None),
        ("status_updated", None, "running"),
        ("job_failed", 1, None),
        ("status_updated", None, "running"),
        ("alert_sent", None, None),
    ]
    error = "exit status 3: attempt failed: disk full"
    assert seen[-1]["alert"] == f"Job failed after 2 retries: {error}"
    assert alert["kind"] == "failed" and alert["state"] == "firing"
    assert alert["text"] == f"Job failed after 2 retries: {error}"

    job = await get_job(jobmon.port, "run-fails")
    assert job["status"] == "failed"
    assert (job["retries"], job["max_retries"]) == (2, 2)
    assert job["error"] == error
    assert job["alerts"] == ["failed"]
    run = job["recent_runs"][0]
    assert run["exit_code"] == 3
    assert run["arguments"] == ["-c", script]
    assert run["output"] == "attempt failed: disk full"
    assert run["resource_usage"]["memory_mb"] > 0


async def test_a_memory_hog_is_killed_at_the_limit(jobmon: ServerProcess) -> None:
    # 300 MB in a child of the command: only a measure of the whole tree sees it.
    hog = "import time\nx = b'x' * (300 * 2**20)\ntime.sleep(3600)"
    script = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {hog!r}])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    result = await run_wrapper(
        jobmon.port,
        ["--job-id", "run-hog", "--memory-limit-mb", "100", "--memory-action", "kill"],
        [PY, "-c", script],
    )
    assert result.code == 128 + signal.SIGTERM, result.stderr  # killed: not the hour it sleeps
    assert gone(int(result.stdout.split()[0]))

    job = await get_job(jobmon.port, "run-hog")
    assert job["status"] == "failed"
    assert re.fullmatch(r"killed: memory (\d+) MB over the limit of 100 MB", job["error"])
    assert sorted(job["alerts"]) == ["failed", "memory"]
    run = job["recent_runs"][0]
    assert run["memory_limit_mb"] == 100
    assert run["exit_code"] == 143
    assert run["resource_usage"]["memory_mb"] > 100
    alerts = await alerts_of(jobmon.port, "run-hog")
    assert re.fullmatch(
        r"Job run-hog used [\d.]+ MB of memory, over its limit of 100 MB", alerts["memory"]["text"]
    )
    assert alerts["failed"]["text"] == f"Job failed after 0 retries: {job['error']}"


async def test_over_the_memory_limit_with_alert_the_command_runs_on(jobmon: ServerProcess) -> None:
    script = "import time\nx = b'x' * (150 * 2**20)\ntime.sleep(0.5)\nprint('done')"
    result = await run_wrapper(
        jobmon.port, ["--job-id", "run-big", "--memory-limit-mb", "50"], [PY, "-c", script]
    )
    assert result.code == 0, result.stderr
    assert result.stdout == "done\n"
    job = await get_job(jobmon.port, "run-big")
    assert job["status"] == "completed"
    assert job["alerts"] == ["memory"]
    assert job["resource_usage"]["memory_mb"] > 150
    assert job["recent_runs"][0]["memory_limit_mb"] == 50
    alerts = await alerts_of(jobmon.port, "run-big")
    assert alerts["memory"]["state"] == "firing"


async def test_a_timeout_stops_the_whole_tree(jobmon: ServerProcess) -> None:
    # A grandchild that ignores SIGTERM: it gets SIGKILL 2 s later.
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "import os\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(3600)"
    )
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {stubborn!r}])\n"
        "time.sleep(3600)\n"
    )
    result = await run_wrapper(
        jobmon.port, ["--job-id", "run-slow", "--timeout", "1.5"], [PY, "-c", script]
    )
    assert result.code == 124  # stopped at the timeout, not the hour the command sleeps
    assert result.seconds >= 1.5
    assert gone(int(result.stdout.split()[0]))
    job = await get_job(jobmon.port, "run-slow")
    assert job["status"] == "failed"
    assert job["error"] == "timed out after 1.5 s"
    assert job["alerts"] == ["failed"]
    run = job["recent_runs"][0]
    assert run["exit_code"] == 124
    assert 1500 <= run["duration_ms"] <= result.seconds * 1000


async def test_ctrl_c_reaches_the_command_and_the_run_is_cancelled(jobmon: ServerProcess) -> None:
    script = "import time\nprint('ready', flush=True)\ntime.sleep(3600)"
    proc = await start_wrapper(jobmon.port, ["--job-id", "run-stopped"], [PY, "-c", script])
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        # The command is in a session of its own: the wrapper passes SIGINT on.
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await stop_wrapper(proc)
    assert proc.returncode == 128 + signal.SIGINT
    assert b"KeyboardInterrupt" in err  # the command's own reaction
    job = await get_job(jobmon.port, "run-stopped")
    assert job["status"] == "cancelled"
    assert "alerts" not in job


async def test_with_jobmon_down_the_command_still_runs(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = "import sys\nprint('ran anyway')\nsys.exit(5)"
    result = await run_wrapper(port, ["--job-id", "run-offline"], [PY, "-c", script])
    assert result.code == 5
    assert result.stdout == "ran anyway\n"
    assert result.stderr.count(UNREACHABLE) == 1
    assert f"jobmon run: jobmon at 127.0.0.1:{port} is unreachable (" in result.stderr


async def test_a_cancelled_run_stops_its_tree_and_reports_cancelled(jobmon: ServerProcess) -> None:
    """The runner as the server's launcher uses it: cancelling the run (a shutdown) stops the command."""
    started = asyncio.Event()
    printed: list[bytes] = []

    def out(data: bytes) -> None:
        printed.append(data)
        started.set()

    script = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(3600)"
    spec = RunSpec("run-cancelled", [PY, "-c", script], retries=2)
    async with Client(port=jobmon.port) as client:
        task = asyncio.create_task(run(spec, client.send_event, out, discard))
        command: psutil.Process | None = None
        try:
            await asyncio.wait_for(started.wait(), 60)
            command = psutil.Process(int(b"".join(printed).split()[0]))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 60)
            assert gone(command.pid)
        finally:  # a wait timed out: stop the runner, and the command if it lives on
            task.cancel()
            await asyncio.wait({task}, timeout=60)
            if command is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    command.kill()  # psutil checks the pid was not reused
    job = await get_job(jobmon.port, "run-cancelled")
    assert job["status"] == "cancelled"
    assert job["max_retries"] == 2


def test_a_command_that_cannot_start_is_reported_and_jobmon_is_not_called_unreachable(
    tmp_path: Path,
) -> None:
    with ServerProcess(tmp_path / "data") as server:
        result = subprocess.run(
            jobmon_cmd("run", "--job-id", "ghost", "--port", str(server.port), "--", "/nonexistent/cmd"),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 127
        assert UNREACHABLE not in result.stderr
        assert "cannot run '/nonexistent/cmd'" in result.stderr
