"""A deadline storm: N jobs whose schedules fall due in the same second.

1. Start `jobmon serve` (fsync everysec, --realert-ms R) and register N jobs with
   the schedule `* * * * *` and no grace, just after a minute starts: every
   one's missed_run deadline is the next minute's first second.
2. A probe connection sends `get_stats` request/reply in a loop from a second
   before that minute until every alert has reached a subscriber, then again
   through the reminders R ms later. Its worst wait is the stall the storm
   caused; also: when the last alert arrived, and the probe's worst wait with
   no storm (the second before it).

`--pythonpath DIR` runs the server from another source tree (a checkout of
main's `src/`) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

import servers

EXPR = "* * * * *"


class Logged:
    """The server with its stderr (an alert line per alert) going to a file, as
    under a service manager: a pipe drained by this process would stall it."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stderr=self.log, stdout=subprocess.DEVNULL)
        self.port = 0
        deadline = time.time() + 60
        while not self.port:
            match = re.search(rb"jobmon listening on [\d.]+:(\d+)", log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
            elif self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start; see {log_path}")
            else:
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        self.log.close()


async def register(port: int, count: int) -> float:
    """Register the jobs; returns the deadline they share (epoch seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    lines = [
        orjson.dumps(
            {
                "type": "register_job",
                "job_id": f"storm-{i}",
                "schedule": {"cron": EXPR},
                "grace_ms": 0,
            }
        )
        for i in range(count)
    ]
    expected: set[str] = set()

    async def read_all() -> None:
        got = 0
        while got < count:
            line = await reader.readline()
            if not line:
                raise RuntimeError("server closed the connection")
            expected.add(orjson.loads(line)["next_expected_at"])
            got += 1

    reading = asyncio.create_task(read_all())
    for start in range(0, count, 4000):
        writer.write(b"\n".join(lines[start : start + 4000]) + b"\n")
        await writer.drain()
    await reading
    writer.close()
    if len(expected) != 1:
        raise RuntimeError(f"registration crossed a minute: {sorted(expected)}")
    (at,) = expected
    from datetime import datetime

    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


async def subscriber(port: int, count: int, times: list[float]) -> None:
    """Counts alert lines as they arrive (by the chunk: parsing each in Python
    would take a core from the server on this 2-core machine)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(b'{"type":"subscribe","topics":["alerts"]}\n')
    await reader.readline()
    token = b'{"type":"alert"'
    tail = b""
    while len(times) < count:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        now = time.time()
        data = tail + chunk
        times.extend([now] * data.count(token))
        tail = data[-(len(token) - 1) :]  # a token cut in two is counted once, whole
    writer.close()


def probe(port: int, start_at: float, stop: Any, out: Any) -> None:
    """In a process of its own (the subscriber's parsing must not delay it):
    get_stats request/reply from ``start_at`` until ``stop`` is set."""
    time.sleep(max(0.0, start_at - time.time()))
    waits = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        while not stop.is_set():
            sent = time.time()
            sock.sendall(b'{"type":"get_stats"}\n')
            reader.readline()
            waits.append((sent, time.time() - sent))
            time.sleep(0.001)
    out.send(waits)


def worst(waits: list[tuple[float, float]], start: float, end: float) -> float:
    return max((w for at, w in waits if start <= at <= end), default=0.0) * 1000


async def one_run(args: argparse.Namespace) -> dict[str, float]:
    work = servers.scratch()
    server = Logged(
        servers.jobmon_argv(
            work / "data",
            "--fsync",
            "everysec",
            "--realert-ms",
            str(args.realert_ms),
            log_level=args.log_level,
        ),
        work / "jobmon.log",
    )
    try:
        second = time.time() % 60
        if not 1 <= second <= 45:  # register within one minute
            await asyncio.sleep((61 - second) % 60)
        deadline = await register(server.port, args.jobs)
        fired: list[float] = []
        listening = asyncio.create_task(subscriber(server.port, args.jobs * 2, fired))
        stop = multiprocessing.Event()
        results, sender = multiprocessing.Pipe(duplex=False)
        probing = multiprocessing.Process(
            target=probe, args=(server.port, deadline - 1.0, stop, sender)
        )
        probing.start()
        realert_at = deadline + args.realert_ms / 1000
        while len(fired) < 2 * args.jobs and time.time() < realert_at + 60:
            await asyncio.sleep(0.05)
        stop.set()
        waits = results.recv()
        probing.join()
        listening.cancel()
        first_storm = [t for t in fired if t < realert_at - 1.0]
        reminded = [t for t in fired if t >= realert_at - 1.0]
        return {
            "worst_wait_before_ms": worst(waits, deadline - 1.0, deadline - 0.05),
            "worst_wait_storm_ms": worst(waits, deadline, first_storm[-1]),
            "worst_wait_reminders_ms": worst(waits, realert_at, reminded[-1]) if reminded else 0,
            "last_alert_after_s": first_storm[-1] - deadline,
            "alerts": len(first_storm),
            "reminders": len(reminded),
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--realert-ms", type=int, default=10_000)
    parser.add_argument("--pythonpath", default=None, help="run the server from this src/")
    parser.add_argument(
        "--log-level", default="warning", help="the server's (warning: every alert is a line)"
    )
    args = parser.parse_args()
    if args.pythonpath:
        os.environ["PYTHONPATH"] = args.pythonpath
    for round_no in range(args.rounds):
        result = asyncio.run(one_run(args))
        print(
            f"round {round_no + 1}: {args.jobs:,} deadlines in one second: probe worst wait "
            f"{result['worst_wait_storm_ms']:.1f} ms during the storm, "
            f"{result['worst_wait_reminders_ms']:.1f} ms during the reminders "
            f"({result['worst_wait_before_ms']:.1f} ms the second before); last alert "
            f"{result['last_alert_after_s']:.2f} s after the deadline; "
            f"{result['alerts']:,} alerts, {result['reminders']:,} reminders",
            flush=True,
        )


if __name__ == "__main__":
    main()
