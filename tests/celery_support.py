"""Real parts for the Celery tests: Debian's redis-server on a free port, and a
real Celery worker (prefork, two processes, started without -E) running the
tasks below from a temporary directory."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def stable_port() -> int:
    """A free port below the kernel's ephemeral range: the broker restarts on
    it, and no port-0 bind elsewhere (other tests, other suites) can take it
    in between."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


# The worker's tasks (written to its directory as tasks.py). `pair` runs two
# at once for sure: each waits for the other to have started.
TASKS = """
import os, time
from pathlib import Path
from celery import Celery

app = Celery("tasks", broker=os.environ["BROKER"])
app.conf.broker_connection_retry_on_startup = True


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


@app.task
def ok(x):
    time.sleep(0.3)
    return x * 2


@app.task
def boom():
    raise ValueError("kaboom")


@app.task(autoretry_for=(RuntimeError,), max_retries=2, default_retry_delay=0.2)
def flaky():
    raise RuntimeError("still broken")


@app.task
def pair(me, other, seconds):
    Path(me).touch()
    wait_for(other)
    time.sleep(seconds)
    return seconds


@app.task
def gate(path):
    wait_for(path)
    return path
"""

ENABLED_LINE = "Events of group {task} enabled by remote"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on a free port, no persistence; restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = stable_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while not _ping(self.port):
            assert self.proc.poll() is None, "redis-server exited; see its log"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Worker:
    """``celery -A tasks worker`` as a child process; ``pid`` is celery's own."""

    def __init__(self, workdir: Path, broker: str, name: str, heartbeat_s: int = 2) -> None:
        (workdir / "tasks.py").write_text(TASKS)
        self.name = name
        self.ttl_ms = 2 * heartbeat_s * 1000  # Celery calls it offline then
        self.log_path = workdir / f"worker-{name}.log"
        argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker"]
        argv += ["--pool=prefork", "--concurrency=2", "--without-mingle", "--without-gossip"]
        argv += [f"--heartbeat-interval={heartbeat_s}", "-n", name, "--loglevel=INFO"]
        env = {**os.environ, "BROKER": broker, "PYTHONPATH": str(workdir)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


def client_app(broker: str):  # type: ignore[no-untyped-def]
    """A Celery app that sends the tasks by name (the test imports no tasks module)."""
    from celery import Celery

    app = Celery("test-client", broker=broker, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    return app


@contextlib.contextmanager
def stopped(*workers: Worker):  # type: ignore[no-untyped-def]
    try:
        yield
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL)
