"""Test helpers: a line-oriented TCP client and a real `jobmon serve` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

# The seed's three events as bare lines, and the exact replies.
SEED = [
    (
        b'{"type":"update_status","msg_id":1,"job_id":"job-123","status":"running","progress":25}',
        b'{"type":"status_updated","in_reply_to":1,"job_id":"job-123","status":"running","progress":25}',
    ),
    (
        b'{"type":"job_completed","msg_id":2,"job_id":"job-123","duration_ms":60000,'
        b'"resource_usage":{"cpu_percent":75,"memory_mb":1024}}',
        b'{"type":"job_completed","in_reply_to":2,"job_id":"job-123","duration_ms":60000,'
        b'"resource_usage":{"cpu_percent":75,"memory_mb":1024}}',
    ),
    (
        b'{"type":"job_failed","msg_id":3,"job_id":"job-123","error":"Connection timeout","retries":3}',
        b'{"type":"alert_sent","in_reply_to":3,"job_id":"job-123",'
        b'"alert":"Job failed after 3 retries: Connection timeout"}',
    ),
]

# The original harness's sample cases (seed 000): an enveloped request and the
# exact body expected back.
SEED_SAMPLE_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "src": "worker",
            "dest": "monitor",
            "body": {
                "type": "update_status",
                "msg_id": 1,
                "job_id": "job-123",
                "status": "running",
                "progress": 25,
            },
        },
        {
            "type": "status_updated",
            "in_reply_to": 1,
            "job_id": "job-123",
            "status": "running",
            "progress": 25,
        },
    ),
    (
        {
            "src": "worker",
            "dest": "monitor",
            "body": {
                "type": "job_completed",
                "msg_id": 1,
                "job_id": "job-123",
                "duration_ms": 60000,
                "resource_usage": {"cpu_percent": 75, "memory_mb": 1024},
            },
        },
        {
            "type": "job_completed",
            "in_reply_to": 1,
            "job_id": "job-123",
            "duration_ms": 60000,
            "resource_usage": {"cpu_percent": 75, "memory_mb": 1024},
        },
    ),
]


def free_port() -> int:
    """A port nothing listens on now (for servers that take a port, not 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LineClient:
    """Speaks NDJSON to a server: send lines, read reply lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> LineClient:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, *bodies: dict[str, Any]) -> None:
        await self.send_raw(b"".join(orjson.dumps(b) + b"\n" for b in bodies))

    async def read_line(self, timeout: float = 10.0) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line.endswith(b"\n"), f"connection closed, got {line!r}"
        return line

    async def read(self, timeout: float = 10.0) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(await self.read_line(timeout))
        return value

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.send(body)
        return await self.read()

    async def pipeline(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send them all, then read as many replies."""
        await self.send(*bodies)
        return [await self.read() for _ in bodies]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def get_job(client: LineClient, job_id: str) -> dict[str, Any]:
    reply = await client.request({"type": "get_job", "job_id": job_id})
    assert reply["type"] == "job", reply
    job: dict[str, Any] = reply["job"]
    return job


def jobmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobmon", *args]


def compact_offline(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`jobmon compact` on a stopped server's data directory; asserts it succeeded."""
    result = subprocess.run(
        jobmon_cmd("compact", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


async def communicate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """`proc.communicate()` within ``timeout``; a child still running after it is killed."""
    try:
        return await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class ServerProcess:
    """`jobmon serve` as a child process on a free port; its stderr read all along (kept in
    `stderr_lines`, waited for with `wait_for_log`) so its logging never blocks on a full pipe."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.args = [
            "serve",
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data_dir),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    def _spawn(self, **popen: Any) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            jobmon_cmd(*self.args),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **popen,
        )
        return self.proc

    def start(self) -> ServerProcess:
        self._spawn()
        # Read stderr all along: a server logging more than a pipe holds must never block.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for_log("jobmon listening on", 60)
        listening = re.search(r"jobmon listening on [\d.]+:(\d+)", line)
        assert listening is not None, line
        self.port = int(listening.group(1))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.stderr_lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """The first stderr line containing ``text`` (waits for it)."""
        assert self.proc is not None
        with self._changed:
            found = self._changed.wait_for(
                lambda: (
                    any(text in line for line in self.stderr_lines)
                    or self.proc is None
                    or self.proc.poll() is not None
                ),
                timeout,
            )
            for line in self.stderr_lines:
                if text in line:
                    return line
        raise AssertionError(
            f"no log line with {text!r} ({'exited' if found else 'timed out'}):\n"
            + "".join(self.stderr_lines[-30:])
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._drain()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave it running
            self.proc.wait(30)
            self._drain()
            raise AssertionError(
                "the server did not exit within 60 s of SIGTERM (killed):\n"
                + "".join(self.stderr_lines[-30:])
            ) from None
        self._drain()
        return code

    def _drain(self) -> None:
        if self._reader is not None:
            self._reader.join(30)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
            self._drain()


class WatchedServer(ServerProcess):
    """`jobmon serve` with extra Popen arguments, and its HTTP port when it serves HTTP."""

    def __init__(self, data_dir: Path, *extra: str, **popen: Any) -> None:
        super().__init__(data_dir, *extra)
        self.popen = popen
        self.http_port = 0

    def _spawn(self, **popen: Any) -> subprocess.Popen[bytes]:
        return super()._spawn(**self.popen, **popen)

    def start(self) -> WatchedServer:
        super().start()
        with self._changed:  # logged before the line `start` waited for
            for line in self.stderr_lines:
                if match := re.match(r"jobmon http listening on [\d.]+:(\d+)", line):
                    self.http_port = int(match.group(1))
        return self

    def __enter__(self) -> WatchedServer:
        return self.start()


def proc_status_mb(pid: int, field: str) -> float:
    """A size from /proc/PID/status in MB: VmRSS (now) or VmHWM (the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def http_exchange(port: int, request: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes to an HTTP port; everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(1 << 16):
            out += chunk
        return out


class Lines:
    """A blocking NDJSON client for a subprocess server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.reader = self.sock.makefile("rb")

    def send(self, *lines: bytes) -> None:
        self.sock.sendall(b"".join(line + b"\n" for line in lines))

    def read(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line.endswith(b"\n"), f"the server closed the connection ({line!r})"
        value: dict[str, Any] = orjson.loads(line)
        return value

    def ask(self, line: bytes) -> dict[str, Any]:
        self.send(line)
        return self.read()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
