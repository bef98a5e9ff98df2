"""Start a server under test as a subprocess on a free port; shared by the bench scripts."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


class Spawned:
    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.proc.stderr is not None
        self.port = 0
        for line in self.proc.stderr:
            self.log.write(line)
            match = re.search(rb"^(?:jobmon|ceiling) listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError(f"{argv} exited before listening; see {log_path}")
        self.ready_after = time.perf_counter() - self.started
        # Keep draining stderr into the log so the server never blocks on it.
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.write(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.drainer.join(10)
        self.log.close()


def jobmon_argv(data_dir: Path | None, *extra: str, log_level: str = "warning") -> list[str]:
    argv = [sys.executable, "-m", "jobmon", "serve", "--log-level", log_level, "--port", "0"]
    argv += ["--http-port", "0"]
    if data_dir is None:
        argv.append("--in-memory")
    else:
        argv += ["--data-dir", str(data_dir)]
    return argv + list(extra)


def jobmon(
    data_dir: Path | None, *extra: str, log_dir: Path, log_level: str = "warning"
) -> Spawned:
    return Spawned(jobmon_argv(data_dir, *extra, log_level=log_level), log_dir / "jobmon.log")


def ceiling(log_dir: Path) -> Spawned:
    return Spawned(
        [sys.executable, str(BENCH / "ceiling.py"), "--port", "0"], log_dir / "ceiling.log"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tls_certs(directory: Path) -> tuple[Path, list[str]]:
    """A CA made for the run and a server certificate for 127.0.0.1: (CA file, serve flags)."""
    import trustme  # the test extra's; only a --tls bench needs it

    ca = trustme.CA()
    ca_path, both = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    # One PEM holding the key and the chain serves as both files.
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(both))
    return ca_path, ["--tls-cert", str(both), "--tls-key", str(both)]


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="jobmon-bench-"))


def run_load(
    port: int,
    window: int,
    duration: float,
    conns: int = 50,
    server_pid: int | None = None,
    tls_ca: Path | None = None,
    framing: str = "bare",
) -> dict[str, float]:
    """bench/load.py in its own process (the other core); its JSON result."""
    argv = [
        sys.executable,
        str(BENCH / "load.py"),
        "--port",
        str(port),
        "--conns",
        str(conns),
        "--window",
        str(window),
        "--duration",
        str(duration),
        "--framing",
        framing,
    ]
    if server_pid is not None:
        argv += ["--server-pid", str(server_pid)]
    if tls_ca is not None:
        argv += ["--tls-ca", str(tls_ca)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
