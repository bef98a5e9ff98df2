"""Does a Prometheus scrape stall ingestion? 100,000 jobs, /metrics scraped back to back.

1. Start `jobmon serve` (in memory) with HTTP on, and report 100,000 jobs (each
   running, then completed), pipelined.
2. A probe connection sends update_status request/reply in a loop: each reply's
   latency is how long ingestion waited. First with no scrapes (the baseline),
   then while curl (a separate process, as Prometheus would be) fetches /metrics
   back to back.
3. The stall: the probe's worst latency during scrapes (and its p99), against the
   baseline's worst. Once with the default per-job series cap (1,000 jobs), once
   with every job's series (--metrics-job-series 100000: a 13 MB page).
Each configuration runs --rounds times; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import time

import orjson

import servers
from scale import fill


async def probe(port: int, until: asyncio.Event) -> list[float]:
    """Request/reply update_status until told to stop; latencies in ms."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    n = 0
    while not until.is_set():
        line = orjson.dumps(
            {"type": "update_status", "job_id": f"probe-{n % 100}", "status": "running"}
        )
        started = time.perf_counter()
        writer.write(line + b"\n")
        reply = await reader.readline()
        latencies.append((time.perf_counter() - started) * 1000)
        assert b"status_updated" in reply, reply
        n += 1
    writer.close()
    return latencies


async def scrapes(http_port: int, count: int) -> tuple[list[float], int]:
    """curl /metrics ``count`` times in a row: each scrape's seconds, and the page size."""
    seconds = []
    size = 0
    for _ in range(count):
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
            f"http://127.0.0.1:{http_port}/metrics",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        seconds.append(time.perf_counter() - started)
        size = int(out)
    return seconds, size


async def measure(port: int, http_port: int, scrape_count: int, baseline_s: float) -> dict:
    stop = asyncio.Event()
    task = asyncio.create_task(probe(port, stop))
    await asyncio.sleep(baseline_s)
    stop.set()
    baseline = await task
    stop = asyncio.Event()
    task = asyncio.create_task(probe(port, stop))
    scrape_seconds, size = await scrapes(http_port, scrape_count)
    stop.set()
    during = await task
    q = statistics.quantiles
    return {
        "baseline_max_ms": max(baseline),
        "baseline_p99_ms": q(baseline, n=100)[98],
        "during_max_ms": max(during),
        "during_p99_ms": q(during, n=100)[98],
        "scrape_ms_median": statistics.median(scrape_seconds) * 1000,
        "page_bytes": size,
        "probe_requests": len(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument(
        "--series", type=int, nargs="*", help="--metrics-job-series values (default: 1000, --jobs)"
    )
    args = parser.parse_args()
    scratch = servers.scratch()
    results: dict[str, list[dict]] = {}
    try:
        for series in args.series or (1000, args.jobs):
            for _ in range(args.rounds):
                http_port = servers.free_port()
                server = servers.jobmon(
                    None,
                    "--http-port", str(http_port), "--metrics-job-series", str(series),
                    log_dir=scratch,
                )  # fmt: skip
                try:
                    asyncio.run(fill(server.port, args.jobs, 4))
                    result = asyncio.run(measure(server.port, http_port, args.scrapes, 2.0))
                finally:
                    server.stop()
                results.setdefault(f"series={series}", []).append(result)
                print(f"series={series}", json.dumps({k: round(v, 2) for k, v in result.items()}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{args.jobs:,} jobs; medians of {args.rounds} rounds, {args.scrapes} scrapes each:")
    for name, rounds in results.items():
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(
            f"  {name}: worst probe latency during scrapes {med['during_max_ms']:.1f} ms "
            f"(p99 {med['during_p99_ms']:.2f} ms) vs {med['baseline_max_ms']:.1f} ms without "
            f"(p99 {med['baseline_p99_ms']:.2f} ms); scrape {med['scrape_ms_median']:.0f} ms, "
            f"{med['page_bytes'] / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
