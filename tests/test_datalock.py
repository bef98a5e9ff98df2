"""One process per data directory (datalock): a second `jobmon serve`, or a
`jobmon compact`, on a running server's --data-dir refuses to start, names the
directory and the holder's pid, exits non-zero and changes nothing; the lock
of a server killed with SIGKILL does not block its restart. Real processes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import LineClient, ServerProcess, jobmon_cmd

WAIT_S = 60.0


def listing(data_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of the directory: size, modification time and contents."""
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(data_dir.iterdir())
    }


async def report(port: int, job_id: str) -> None:
    client = await LineClient.connect(port)
    reply = await client.request({"type": "job_completed", "job_id": job_id, "duration_ms": 5})
    assert reply["type"] == "job_completed", reply
    await client.close()


async def jobs_of(port: int) -> list[str]:
    client = await LineClient.connect(port)
    reply = await client.request({"type": "list_jobs"})
    await client.close()
    return [job["job_id"] for job in reply["jobs"]]


def refused(result: subprocess.CompletedProcess[str], prefix: str, data: Path, pid: int) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stderr
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith(
        f"{prefix}: the data directory {data.resolve()} is in use by process {pid} (it holds LOCK)"
    ), said


async def test_a_second_server_on_the_same_data_dir_refuses_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, "--fsync", "always") as first:
        assert first.proc is not None
        await report(first.port, "before")
        files = listing(data)
        assert files["LOCK"][2] == f"{first.proc.pid}\n".encode()
        second = subprocess.run(
            jobmon_cmd("serve", "--port", "0", "--http-port", "0", "--data-dir", str(data)),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        refused(second, "jobmon: cannot start", data, first.proc.pid)
        assert second.stderr.strip().endswith("stop it first, or give this one another --data-dir")
        assert listing(data) == files
        # The first one goes on, and everything it acknowledged survives its restart.
        await report(first.port, "after")
        assert first.terminate() == 0
    with ServerProcess(data) as again:
        assert await jobs_of(again.port) == ["before", "after"]
        assert again.terminate() == 0


async def test_compact_refuses_a_running_servers_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, "--fsync", "always") as server:
        assert server.proc is not None
        await report(server.port, "kept")
        files = listing(data)
        compact = subprocess.run(
            jobmon_cmd("compact", "--data-dir", str(data)),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        refused(compact, "jobmon compact", data, server.proc.pid)
        assert compact.stderr.strip().endswith("compact a stopped server's data")
        assert listing(data) == files  # no snapshot written, no journal started or deleted
        assert server.terminate() == 0
    # Stopped, it compacts.
    compact = subprocess.run(
        jobmon_cmd("compact", "--data-dir", str(data)),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert compact.returncode == 0, compact.stderr
    assert "compacted 1 jobs into snapshot 1" in compact.stderr


async def test_a_killed_servers_lock_does_not_block_the_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, "--fsync", "always").start()
    assert first.proc is not None
    await report(first.port, "acknowledged")
    first.kill9()  # its LOCK file stays, with its pid; the kernel dropped the flock
    assert (data / "LOCK").read_text() == f"{first.proc.pid}\n"
    with ServerProcess(data) as second:
        assert second.proc is not None
        assert (data / "LOCK").read_text() == f"{second.proc.pid}\n"
        assert await jobs_of(second.port) == ["acknowledged"]
        assert second.terminate() == 0
