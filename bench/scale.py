"""A million jobs: memory per job, get_stats cost, compaction stall, and restart time.

1. Start `jobmon serve` (fsync everysec) on a fresh data dir.
2. Report 1,000,000 distinct jobs as issue 11 fills them: each set running, then
   completed with a duration and resource usage (a tenth with an argument list);
   a quarter of them first ran and failed (retries spent: a failed run, an alert
   that the completion resolves). About 2,500,000 messages, pipelined over 8
   connections.
3. Memory per job: (RSS after - RSS at start) / jobs.
4. get_stats latency, request/response, at 0 and at 1,000,000 jobs (O(1): the same).
5. Restart from the journal (replay), then `jobmon compact` and restart from the
   snapshot: time from spawn until `listening` (median of 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

import servers


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def job_lines(i: int) -> list[bytes]:
    """Issue 11's fill, one job: a quarter fail a run first; every one then completes
    one (a tenth with an argument list)."""
    job_id = f"job-{i:07d}"
    running = {"type": "update_status", "job_id": job_id, "status": "running", "progress": 50}
    lines = []
    if i % 4 == 0:
        failed = {"type": "job_failed", "job_id": job_id, "error": "disk full", "retries": 3}
        lines += [orjson.dumps(running), orjson.dumps(failed)]
    completed: dict[str, object] = {
        "type": "job_completed",
        "job_id": job_id,
        "duration_ms": 1000 + i % 5000,
        "resource_usage": {"cpu_percent": i % 400, "memory_mb": 64 + i % 4096},
    }
    if i % 10 == 0:
        completed["arguments"] = ["--part", str(i % 97), "--mode", "full"]
    return lines + [orjson.dumps(running), orjson.dumps(completed)]


async def fill(port: int, jobs: int, conns: int) -> tuple[float, int]:
    """Seconds, and messages sent."""
    sent = [0] * conns

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        mine = range(index, jobs, conns)
        expected = sum(4 if i % 4 == 0 else 2 for i in mine)
        sent[index] = expected

        async def read_all() -> None:
            seen = 0
            while seen < expected:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                seen += chunk.count(b"\n")
                if b'"error"' in chunk:
                    raise RuntimeError(chunk[:500])

        reading = asyncio.create_task(read_all())
        batch: list[bytes] = []
        for i in mine:
            batch += job_lines(i)
            if len(batch) >= 4000:
                writer.write(b"\n".join(batch) + b"\n")
                batch.clear()
                await writer.drain()
        if batch:
            writer.write(b"\n".join(batch) + b"\n")
        await writer.drain()
        await reading
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(conns)))
    return time.perf_counter() - started, sum(sent)


async def stats_latency(port: int, count: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = []
    reply = b""
    for msg_id in range(count):
        started = time.perf_counter()
        writer.write(b'{"type":"get_stats","msg_id":%d}\n' % msg_id)
        reply = await reader.readline()
        samples.append(time.perf_counter() - started)
    writer.close()
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2] * 1000, 3),
        "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3),
        "reply": orjson.loads(reply),
    }


def restart(data_dir: Path, work: Path) -> tuple[float, dict[str, object]]:
    server = servers.jobmon(data_dir, log_dir=work, log_level="info")
    seconds = server.ready_after
    server.stop()
    recovered = {}
    for line in server.log_path.read_text().splitlines():
        if '"msg":"recovered"' in line:
            recovered = json.loads(line)
    return seconds, recovered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="copy the compacted data dir here (bench/recovery.py)",
    )
    args = parser.parse_args()
    work = servers.scratch()
    data_dir = work / "data"
    # Logs at info, to read the compaction stall lines.
    server = servers.jobmon(data_dir, log_dir=work, log_level="info")
    time.sleep(0.5)
    base_rss = rss_mb(server.pid)
    empty = asyncio.run(stats_latency(server.port, 2000))
    fill_seconds, messages = asyncio.run(fill(server.port, args.jobs, args.conns))
    full_rss = rss_mb(server.pid)
    full = asyncio.run(stats_latency(server.port, 2000))
    server.stop()
    stalls = [
        json.loads(line)["stall_ms"]
        for line in server.log_path.read_text().splitlines()
        if '"compaction started"' in line
    ]
    per_job = (full_rss - base_rss) * 1024 * 1024 / args.jobs
    print(
        f"filled {args.jobs:,} jobs ({messages:,} messages) in {fill_seconds:.1f} s "
        f"= {messages / fill_seconds:,.0f} msgs/s"
    )
    print(
        f"RSS {base_rss:.0f} MB at start, {full_rss:.0f} MB at {args.jobs:,} jobs: "
        f"{per_job:.0f} bytes per job"
    )
    print(
        f"get_stats req/rep at 0 jobs: p50 {empty['p50_ms']} ms p99 {empty['p99_ms']} ms; "
        f"at {args.jobs:,}: p50 {full['p50_ms']} ms p99 {full['p99_ms']} ms"
    )
    print(f"  reply at {args.jobs:,}: {full['reply']}")
    print(f"compactions during the fill: {len(stalls)}, store-task stall each (ms): {stalls}")
    journal_bytes = sum(p.stat().st_size for p in data_dir.glob("journal-*.log"))
    replay = [restart(data_dir, work) for _ in range(1)]
    print(
        f"restart replaying {journal_bytes / 1e6:.0f} MB of journal (+ snapshot): "
        f"{replay[0][0]:.2f} s to listening ({replay[0][1].get('records_replayed')} records)"
    )
    subprocess.run(
        [sys.executable, "-m", "jobmon", "compact", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    snap = sorted(data_dir.glob("snapshot-*.json"))[-1]
    runs = [restart(data_dir, work) for _ in range(args.restarts)]
    times = [seconds for seconds, _ in runs]
    # The server's own "recovered" log line: loading the snapshot (and the journal
    # after it) into the store; the rest of the time is the interpreter, imports,
    # and binding the listeners.
    loads = [float(str(recovered.get("seconds", "nan"))) for _, recovered in runs]
    print(
        f"restart after compaction ({snap.stat().st_size / 1e6:.0f} MB snapshot): "
        f"median {statistics.median(times):.2f} s to listening, runs {[round(t, 2) for t in times]}"
        f"; of which recovering the state {statistics.median(loads):.2f} s"
    )
    if args.keep is not None:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.copytree(data_dir, args.keep)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
