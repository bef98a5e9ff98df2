"""Real redis-server and redis-sentinel processes for the cluster tests, on free
ports (never 6379), and jobmon node processes over them; all always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_helpers import Where, cluster_name, eventually
from helpers import LineClient, ServerProcess, free_port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} did not answer on port {port}")


def _wait_tls(port: int, proc: subprocess.Popen[bytes], ca: Path, timeout_s: float = 30) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"redis-server exited with status {proc.returncode}"
        try:
            client = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=1)
            if client.ping():
                client.close()
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not answer over TLS on port {port}")


class RedisServer:
    """A redis-server with an append-only file (fsync always: as durable as Redis gets)."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *extra: str,
        tls: dict[str, Path] | None = None,
    ) -> None:
        self.tls = tls
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert shutil.which("redis-server"), "redis-server is not installed (.ci/run installs it)"
        listen = ["--port", str(self.port)]
        if self.tls is not None:  # TLS only: the plain port is off
            listen = ["--port", "0", "--tls-port", str(self.port),
                      "--tls-cert-file", str(self.tls["cert"]), "--tls-key-file",
                      str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                      "--tls-auth-clients", "no"]  # fmt: skip
        self.proc = subprocess.Popen(
            [
                "redis-server",
                *listen,
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--logfile", str(self.workdir / "redis.log"),
                "--repl-diskless-sync-delay", "0",  # replicas sync at once
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if self.tls is None:
            _wait_port(self.port, self.proc, "redis-server")
        else:
            _wait_tls(self.port, self.proc, self.tls["ca"])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Sentinel:
    def __init__(self, workdir: Path, master_port: int, quorum: int = 2) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = workdir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor jm 127.0.0.1 {master_port} {quorum}\n"
            "sentinel down-after-milliseconds jm 1000\n"
            "sentinel failover-timeout jm 5000\n"
            "sentinel parallel-syncs jm 1\n"
            f"logfile {workdir / 'sentinel.log'}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.proc = subprocess.Popen(
            ["redis-sentinel", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, self.proc, "redis-sentinel")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class NodeProcess(ServerProcess):
    """`jobmon serve --redis ...` as a child process (its stderr kept all along by
    ServerProcess, so a node logging many alerts never blocks on a full pipe)."""

    def __init__(self, name: str, *cluster_args: str) -> None:
        super().__init__(Path(os.devnull))
        self.name = name
        self.args = ["serve", "--port", "0", "--http-port", "0", "--node-id", name, *cluster_args]

    @property
    def lines(self) -> list[str]:
        return self.stderr_lines

    async def logged(self, text: str, timeout_s: float = 30) -> str:
        """The first stderr line with this text, once the node has written it."""
        found = await eventually(
            lambda: [line for line in self.stderr_lines if text in line],
            bool,
            f"node {self.name} to log {text!r}",
            timeout_s,
            every_s=0.02,
        )
        return found[0]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen node must be able to die
            self.proc.kill()
            self.proc.wait(30)
        self._drain()


@pytest.fixture(scope="module", name="shared_redis")
def shared_redis_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a module's tests (those that do not stop it)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(name="where")
def where_fixture(shared_redis: RedisServer, request: pytest.FixtureRequest) -> Where:
    """The shared Redis, and a cluster name of this test's own."""
    return Where(shared_redis.url, cluster_name(request.node.name))


LEASE_MS = "1000"  # node processes' --lease-ms: failover within about a second


@contextlib.contextmanager
def cluster(
    count: int, *args: str, per_node: list[list[str]] | None = None
) -> Iterator[list[NodeProcess]]:
    """``count`` node processes (n1 first, so n1 leads), always stopped;
    ``per_node``: flags of each node's own."""
    started: list[NodeProcess] = []
    try:
        for i in range(count):
            own = per_node[i] if per_node else []
            started.append(NodeProcess(f"n{i + 1}", "--lease-ms", LEASE_MS, *args, *own).start())
        yield started
    finally:
        for node in started:
            node.stop()


async def request(node: NodeProcess, body: dict[str, Any]) -> dict[str, Any]:
    conn = await LineClient.connect(node.port)
    try:
        return await conn.request(body)
    finally:
        await conn.close()


async def leader_among(nodes: list[NodeProcess], timeout_s: float = 30) -> NodeProcess:
    """The node every live node names as leader (polled until they agree)."""

    async def names() -> set[str | None]:
        return {(await request(n, {"type": "get_cluster"}))["leader"] for n in nodes}

    agreed = await eventually(
        names, lambda seen: len(seen) == 1 and None not in seen, "an agreed leader", timeout_s
    )
    (name,) = agreed
    return next(n for n in nodes if n.name == name)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca_key", "cert", "key")}
    csr = directory / "server.csr"
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=jobmon test CA",
        "-keyout",
        str(paths["ca_key"]),
        "-out",
        str(paths["ca"]),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(paths["key"]),
        "-out",
        str(csr),
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]), "-CAkey",
            str(paths["ca_key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext),
            "-out", str(paths["cert"]))  # fmt: skip
    return paths
