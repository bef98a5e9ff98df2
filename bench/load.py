"""Load generator: many connections, a window of in-flight requests each, a realistic mix.

Mix over a pool of job ids (issue 11's): 75% update_status, 19% job_completed
(with a duration and resource usage), 5% job_failed (retries 0-3, so about a
quarter exhaust and alert), 1% get_stats. ``--framing envelope`` sends the same
bodies in Maelstrom envelopes (``{"src","dest","body"}``). Prints one JSON line:
msgs/s, latency p50/p99 (ms), errors, and the server's peak RSS when
--server-pid is given.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import ssl
import sys
import time
from collections import deque

import orjson
import uvloop

BUCKETS_PER_DECADE = 50


FRAMINGS = ("bare", "envelope")


def make_lines(count: int, jobs: int, seed: int, framing: str = "bare") -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for msg_id in range(count):
        job_id = f"job-{rng.randrange(jobs)}"
        roll = rng.random()
        body: dict[str, object]
        if roll < 0.75:
            body = {
                "type": "update_status",
                "msg_id": msg_id,
                "job_id": job_id,
                "status": rng.choice(("queued", "running", "running", "running")),
                "progress": rng.randrange(101),
            }
        elif roll < 0.94:
            body = {
                "type": "job_completed",
                "msg_id": msg_id,
                "job_id": job_id,
                "duration_ms": rng.randrange(100, 120_000),
                "resource_usage": {
                    "cpu_percent": rng.randrange(1, 400),
                    "memory_mb": rng.randrange(16, 8192),
                },
            }
        elif roll < 0.99:
            body = {
                "type": "job_failed",
                "msg_id": msg_id,
                "job_id": job_id,
                "error": "Connection timeout",
                "retries": rng.randrange(4),
            }
        else:
            body = {"type": "get_stats", "msg_id": msg_id}
        if framing == "envelope":
            body = {"src": "worker", "dest": "monitor", "body": body}
        lines.append(orjson.dumps(body) + b"\n")
    return lines


class Histogram:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, seconds: float, n: int) -> None:
        bucket = int(math.log10(max(seconds, 1e-7)) * BUCKETS_PER_DECADE)
        self.counts[bucket] = self.counts.get(bucket, 0) + n
        self.total += n

    def quantile(self, q: float) -> float:
        rank = q * self.total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return 10 ** ((bucket + 0.5) / BUCKETS_PER_DECADE)
        return float("nan")


class Run:
    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.received = 0
        self.errors = 0
        self.hist = Histogram()


class LoadConn(asyncio.Protocol):
    def __init__(self, lines: list[bytes], start: int, window: int, run: Run) -> None:
        self.lines = lines
        self.position = start
        self.window = window
        self.run = run
        self.sent: deque[list[float]] = deque()  # [send time, replies outstanding]
        self.tail = b""
        self.closed = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.send(self.window)

    def send(self, n: int) -> None:
        lines = self.lines
        start = self.position
        end = start + n
        if end <= len(lines):
            chunk = b"".join(lines[start:end])
        else:
            end -= len(lines)
            chunk = b"".join(lines[start:]) + b"".join(lines[:end])
        self.position = end
        self.sent.append([time.perf_counter(), n])
        self.transport.write(chunk)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        n = data.count(b"\n")
        if not n:
            return
        run = self.run
        now = time.perf_counter()
        if run.measuring:
            run.received += n
            if b'"error"' in data:
                run.errors += data.count(b'"type":"error"')
        left = n
        sent = self.sent
        while left:
            head = sent[0]
            take = head[1] if head[1] <= left else left
            if run.measuring:
                run.hist.add(now - head[0], take)
            head[1] -= take
            left -= take
            if not head[1]:
                sent.popleft()
        if not run.stopping:
            self.send(n)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def server_cpu_s(pid: int | None) -> float:
    """The server's user + system CPU seconds so far (0 without --server-pid)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def main(args: argparse.Namespace) -> dict[str, float | int | None]:
    loop = asyncio.get_running_loop()
    lines = make_lines(args.lines, args.jobs, args.seed, args.framing)
    run = Run()
    conns = []
    context = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    for i in range(args.conns):
        _, proto = await loop.create_connection(
            lambda i=i: LoadConn(lines, (i * 7919) % len(lines), args.window, run),
            args.host,
            args.port,
            ssl=context,
        )
        conns.append(proto)
    await asyncio.sleep(args.warmup)
    server_cpu = server_cpu_s(args.server_pid)
    own_cpu = time.process_time()
    run.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    run.measuring = False
    elapsed = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu
    server_cpu = server_cpu_s(args.server_pid) - server_cpu
    run.stopping = True
    for conn in conns:
        conn.transport.close()  # type: ignore[attr-defined]
    return {
        "conns": args.conns,
        "window": args.window,
        "framing": args.framing,
        "msgs_per_s": round(run.received / elapsed),
        "p50_ms": round(run.hist.quantile(0.50) * 1000, 3),
        "p99_ms": round(run.hist.quantile(0.99) * 1000, 3),
        "errors": run.errors,
        "server_peak_rss_mb": peak_rss_mb(args.server_pid) if args.server_pid else None,
        # CPU per reply, which a loaded machine disturbs less than the rate does.
        "server_cpu_us_per_msg": round(server_cpu / max(run.received, 1) * 1e6, 3),
        "load_cpu_us_per_msg": round(own_cpu / max(run.received, 1) * 1e6, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--window", type=int, default=64, help="in-flight requests per connection")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=10_000, help="size of the job id pool")
    parser.add_argument("--lines", type=int, default=200_000, help="distinct request lines")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--tls-ca", help="connect over TLS, trusting this CA (PEM)")
    parser.add_argument("--framing", choices=FRAMINGS, default="bare")
    result = uvloop.run(main(parser.parse_args()))
    print(orjson.dumps(result).decode())
    sys.stdout.flush()
