"""Deadlines at scale: 1,000,000 heartbeat jobs pending, 10,000 of them expiring in one second.

1. Start `jobmon serve` (fsync everysec) and send one heartbeat (ttl 1 hour) for
   each of 1,000,000 jobs, pipelined: the heartbeat ingest rate, and RSS.
2. Subscribe to alerts, then give 10,000 more jobs deadlines spread over one
   second (ttl 4,000 ms + i x 0.1 ms). Lateness of each alert = the time its line
   reaches the subscriber minus its deadline_at: p50/p99.
3. The core's throughput (bench/load.py, the realistic mix, window 64) against
   this server with 1,000,000 deadlines pending, against one holding 1,000,000
   plain jobs (no deadlines: what a big store costs by itself), and against a
   fresh one; rounds alternate between them; medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from datetime import datetime

import orjson

import servers
from scale import fill, rss_mb


async def heartbeats(port: int, job_ids: list[str], ttl_ms: list[int], conns: int) -> list[bytes]:
    """Pipelined heartbeats; returns every reply line in order of job_ids."""
    replies: list[list[bytes]] = [[] for _ in range(conns)]

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        mine = range(index, len(job_ids), conns)
        lines = [
            orjson.dumps({"type": "heartbeat", "job_id": job_ids[i], "ttl_ms": ttl_ms[i]})
            for i in mine
        ]

        async def read_all() -> None:
            expected = len(mine)
            tail = b""
            while len(replies[index]) < expected:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                replies[index].extend(lines)

        reading = asyncio.create_task(read_all())
        for start in range(0, len(lines), 4000):
            writer.write(b"\n".join(lines[start : start + 4000]) + b"\n")
            await writer.drain()
        await reading
        writer.close()

    await asyncio.gather(*(one(i) for i in range(conns)))
    ordered: list[bytes] = [b""] * len(job_ids)
    for index in range(conns):
        for position, line in zip(range(index, len(job_ids), conns), replies[index], strict=True):
            ordered[position] = line
    return ordered


async def lateness(port: int, count: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(b'{"type":"subscribe","topics":["alerts"]}\n')
    assert b"subscribed" in await reader.readline()
    job_ids = [f"soon-{i:05d}" for i in range(count)]
    ttls = [4000 + i // 10 for i in range(count)]  # 0.1 ms apart: one second in all
    replies = await heartbeats(port, job_ids, ttls, 4)
    deadline_of = {}
    for job_id, line in zip(job_ids, replies, strict=True):
        reply = orjson.loads(line)
        deadline_of[job_id] = datetime.fromisoformat(reply["deadline_at"]).timestamp()
    late = []
    while len(late) < count:
        line = await reader.readline()
        received = time.time()
        alert = orjson.loads(line)["alert"]
        if alert["state"] == "firing" and alert["job_id"] in deadline_of:
            late.append(received - deadline_of[alert["job_id"]])
    writer.close()
    return sorted(late)


def load(port: int, duration: float) -> float:
    return servers.run_load(port, 64, duration)["msgs_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--expiring", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args()
    work = servers.scratch()
    loaded = servers.jobmon(work / "loaded", log_dir=work)
    base_rss = rss_mb(loaded.pid)
    job_ids = [f"hb-{i:07d}" for i in range(args.jobs)]
    started = time.perf_counter()
    asyncio.run(heartbeats(loaded.port, job_ids, [3_600_000] * args.jobs, 8))
    ingest = args.jobs / (time.perf_counter() - started)
    rss = rss_mb(loaded.pid)
    print(
        f"{args.jobs:,} heartbeat jobs registered at {ingest:,.0f} heartbeats/s; "
        f"RSS {base_rss:.0f} -> {rss:.0f} MB ({(rss - base_rss) * 1048576 / args.jobs:.0f} B/job)"
    )
    late = asyncio.run(lateness(loaded.port, args.expiring))
    p50 = late[len(late) // 2] * 1000
    p99 = late[int(len(late) * 0.99)] * 1000
    print(
        f"alert lateness, {args.expiring:,} deadlines within one second, {args.jobs:,} pending: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {late[-1] * 1000:.1f} ms"
    )
    plain = servers.jobmon(work / "plain", log_dir=work)
    asyncio.run(fill(plain.port, args.jobs, 8))
    with_deadlines, big_plain, fresh_runs = [], [], []
    for _ in range(args.rounds):
        with_deadlines.append(load(loaded.port, args.duration))
        big_plain.append(load(plain.port, args.duration))
        shutil.rmtree(work / "fresh", ignore_errors=True)
        fresh = servers.jobmon(work / "fresh", log_dir=work)
        try:
            fresh_runs.append(load(fresh.port, args.duration))
        finally:
            fresh.stop()
    loaded.stop()
    plain.stop()
    a = statistics.median(with_deadlines)
    p = statistics.median(big_plain)
    f = statistics.median(fresh_runs)
    print(
        f"core throughput, medians of {args.rounds}: {args.jobs:,} deadlines pending {a:,.0f} "
        f"msgs/s; {args.jobs:,} plain jobs {p:,.0f}; empty server {f:,.0f}"
    )
    print(
        f"  deadlines vs plain jobs of the same number: {a / p:.2f}; vs empty server: {a / f:.2f}"
    )
    print(
        f"  rounds: {[round(x) for x in with_deadlines]} / {[round(x) for x in big_plain]} "
        f"/ {[round(x) for x in fresh_runs]}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
