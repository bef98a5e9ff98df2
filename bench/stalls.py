"""Does any question stall ingestion? 1,000,000 jobs, a probe's worst wait per question.

1. Start `jobmon serve` (--fsync everysec, a data dir, HTTP on) and fill it as
   bench/scale.py does (issue 11's fill: each job one completed run, a quarter a
   failed one before it, a tenth an argument list).
2. A probe, in a process of its own, sends `update_status` request/reply in a
   loop on its own connection: each reply's wait is how long ingestion waited.
3. This process asks each question --repeat times, one after another: over TCP
   `get_analytics`, `list_jobs` by status (`failed`: a quarter of the jobs, and
   `running`: only the probe's), `get_alerts`, `get_stats`; over HTTP with curl
   (another process, as a browser or Prometheus is) `/metrics`,
   `/api/analytics` and `/api/jobs?status=failed`.
4. Per question: the probe's worst wait among its requests that overlapped the
   question (the bar: <= 50 ms), the question's own time, and the probe's worst
   wait in the quiet two seconds before the first question.

`--pythonpath DIR` runs another source tree's server (main's `src/`).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import time
from typing import Any

import orjson

import servers
from scale import fill

TCP_QUESTIONS: dict[str, dict[str, Any]] = {
    "get_analytics": {"type": "get_analytics"},
    "list_jobs status=failed": {"type": "list_jobs", "status": "failed"},
    "list_jobs status=running": {"type": "list_jobs", "status": "running"},
    "get_alerts": {"type": "get_alerts"},
    "get_stats": {"type": "get_stats"},
}
HTTP_QUESTIONS = {
    "GET /metrics": "/metrics",
    "GET /api/analytics": "/api/analytics",
    "GET /api/jobs?status=failed": "/api/jobs?status=failed",
}


def probe(port: int, stop: Any, out: Any) -> None:
    """update_status request/reply until ``stop`` is set; sends (sent, waited) pairs."""
    waits = []
    n = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        while not stop.is_set():
            line = b'{"type":"update_status","job_id":"probe-%d","status":"running"}\n' % (n % 100)
            sent = time.monotonic()
            sock.sendall(line)
            reply = reader.readline()
            waits.append((sent, time.monotonic() - sent))
            assert b"status_updated" in reply, reply
            n += 1
    out.send(waits)


async def ask_tcp(port: int, body: dict[str, Any]) -> tuple[float, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
    started = time.monotonic()
    writer.write(orjson.dumps(body) + b"\n")
    reply = await reader.readline()
    ended = time.monotonic()
    writer.close()
    if b'"type":"error"' in reply[:40]:
        raise RuntimeError(reply[:300])
    return started, ended


def ask_http(http_port: int, path: str) -> tuple[float, float]:
    started = time.monotonic()
    subprocess.run(
        ["curl", "-fsS", "-o", os.devnull, f"http://127.0.0.1:{http_port}{path}"], check=True
    )
    return started, time.monotonic()


def worst_during(waits: list[tuple[float, float]], start: float, end: float) -> float:
    """The longest wait of a probe request that overlapped [start, end], in ms."""
    during = [w for sent, w in waits if sent <= end and sent + w >= start]
    return max(during, default=0.0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pythonpath", default=None)
    args = parser.parse_args()
    if args.pythonpath:
        os.environ["PYTHONPATH"] = args.pythonpath
    work = servers.scratch()
    http_port = servers.free_port()
    server = servers.jobmon(
        work / "data", "--http-port", str(http_port), log_dir=work, log_level="warning"
    )
    try:
        seconds, messages = asyncio.run(fill(server.port, args.jobs, 8))
        print(f"filled {args.jobs:,} jobs ({messages:,} messages) in {seconds:.1f} s", flush=True)
        time.sleep(2.0)  # let a compaction the fill started finish
        stop = multiprocessing.Event()
        results, sender = multiprocessing.Pipe(duplex=False)
        probing = multiprocessing.Process(target=probe, args=(server.port, stop, sender))
        probing.start()
        time.sleep(0.5)
        quiet = (time.monotonic(), time.monotonic() + 2.0)
        time.sleep(2.0)
        windows: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.repeat):
            for name, body in TCP_QUESTIONS.items():
                windows.setdefault(name, []).append(asyncio.run(ask_tcp(server.port, body)))
                time.sleep(0.2)
            for name, path in HTTP_QUESTIONS.items():
                windows.setdefault(name, []).append(ask_http(http_port, path))
                time.sleep(0.2)
        stop.set()
        waits = results.recv()
        probing.join()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{args.jobs:,} jobs; probe's worst wait in the quiet 2 s before: "
        f"{worst_during(waits, *quiet):.1f} ms ({len(waits):,} probe requests in all)"
    )
    print(
        f"| question | probe's worst wait, ms (median of {args.repeat}) | max | question's own ms |"
    )
    print("|---|---|---|---|")
    for name, spans in windows.items():
        worst = [worst_during(waits, start, end) for start, end in spans]
        own = statistics.median((end - start) * 1000 for start, end in spans)
        print(f"| {name} | {statistics.median(worst):.1f} | {max(worst):.1f} | {own:.1f} |")


if __name__ == "__main__":
    main()
