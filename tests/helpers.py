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


def jobmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobmon", *args]


class ServerProcess:
    """`jobmon serve` as a child process on a free port."""

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

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            jobmon_cmd(*self.args),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode()
            self.stderr_lines.append(line)
            match = re.match(r"jobmon listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                return self
        raise AssertionError("server exited before listening:\n" + "".join(self.stderr_lines))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._drain()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._drain()
        return code

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        self.stderr_lines.extend(raw.decode() for raw in self.proc.stderr)
        self.proc.stderr.close()

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
