"""Several nodes over Redis beside the embedded node (`python bench/cluster.py`).

- Throughput, pipelined (bench/load.py's mix, window 64, 48 connections): the
  embedded node (`--fsync everysec`), one node on Redis, three nodes on Redis
  (one load generator per node, 16 connections each; their sum). Redis runs
  with `appendonly yes`, `appendfsync everysec` (the durability of the embedded
  node's everysec). Each round runs the three targets in turn; medians over
  rounds, with the CPU each process used (its share of one core) over the run.
- Replication lag: idle, a write through node A until its event reaches a
  subscriber on node B (end to end, p50/p99); under the three-node load, each
  node's lag from an entry's time to its apply, sampled every 50 ms.
- Failover: three nodes, default --lease-ms 5000; a heartbeat with ttl 1 s is
  sent through a follower, the leader is killed (-9) at once, and a subscriber
  on another follower waits for the missed_heartbeat alert the new leader fires.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

import servers

BENCH = Path(__file__).resolve().parent


class Redis:
    def __init__(self, work: Path) -> None:
        self.port = servers.free_port()
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--logfile", str(self.dir / "redis.log")],
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if out.stdout.strip() == "PONG":
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def node(redis: Redis, name: str, work: Path, *extra: str) -> servers.Spawned:
    log_dir = work / name
    log_dir.mkdir(parents=True, exist_ok=True)
    return servers.jobmon(None, "--redis", redis.url, "--node-id", name, *extra, log_dir=log_dir)


class CpuMeter:
    """CPU seconds each process used between start() and stop(), over the wall time."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _read(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            try:
                times = proc.cpu_times()
                out[name] = times.user + times.system
            except psutil.NoSuchProcess:
                out[name] = 0.0
        return out

    def start(self) -> None:
        self.started = time.perf_counter()
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        wall = time.perf_counter() - self.started
        return {name: round((after[name] - self.before[name]) / wall, 2) for name in after}


def load_argv(port: int, conns: int, duration: float) -> list[str]:
    return [sys.executable, str(BENCH / "load.py"), "--port", str(port), "--conns", str(conns),
            "--window", "64", "--duration", str(duration)]  # fmt: skip


def run_loads(
    ports: list[int], conns: int, duration: float, meter: CpuMeter
) -> tuple[float, dict[str, float]]:
    """One load generator per port at once; the sum of their msgs/s, and the CPU
    each process used over the measured part of the run."""
    procs = [
        subprocess.Popen(load_argv(port, conns, duration), stdout=subprocess.PIPE, text=True)
        for port in ports
    ]
    meter.procs.update({f"load{i}": psutil.Process(p.pid) for i, p in enumerate(procs)})
    time.sleep(1.2)  # load.py's warm-up
    meter.start()
    time.sleep(duration * 0.8)
    cpu = meter.stop()
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate()
        total += json.loads(out.strip().splitlines()[-1])["msgs_per_s"]
    return total, cpu


async def request(port: int, body: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(orjson.dumps(body) + b"\n")
    reply: dict[str, Any] = orjson.loads(await reader.readline())
    writer.close()
    return reply


async def idle_lag(a: int, b: int, probes: int) -> list[float]:
    """Write through a; the ms until b's subscriber sees the event."""
    sub_r, sub_w = await asyncio.open_connection("127.0.0.1", b)
    sub_w.write(b'{"type":"subscribe","topics":["events"]}\n')
    await sub_r.readline()
    reader, writer = await asyncio.open_connection("127.0.0.1", a)
    lags = []
    for i in range(probes):
        started = time.perf_counter()
        writer.write(orjson.dumps({"type": "update_status", "job_id": f"lag-{i}",
                                   "status": "running"}) + b"\n")  # fmt: skip
        while True:
            event = orjson.loads(await sub_r.readline())
            if event.get("event", {}).get("job_id") == f"lag-{i}":
                break
        lags.append((time.perf_counter() - started) * 1000)
        await reader.readline()
        await asyncio.sleep(0.002)
    writer.close()
    sub_w.close()
    return lags


async def sample_lag(ports: list[int], seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for port in ports:
            samples.append((await request(port, {"type": "get_cluster"}))["lag_ms"])
        await asyncio.sleep(0.05)
    return samples


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


def throughput_round(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shutil.rmtree(work / "data", ignore_errors=True)
    embedded = servers.jobmon(work / "data", "--fsync", "everysec", log_dir=work)
    meter = CpuMeter({"jobmon": embedded.pid})
    msgs, cpu = run_loads([embedded.port], args.conns, args.duration, meter)
    out["embedded"] = {"msgs_per_s": msgs, "cpu": cpu}
    embedded.stop()

    redis = Redis(work / "r1")
    one = node(redis, "solo", work)
    meter = CpuMeter({"jobmon": one.pid, "redis": redis.proc.pid})
    msgs, cpu = run_loads([one.port], args.conns, args.duration, meter)
    out["one node on Redis"] = {"msgs_per_s": msgs, "cpu": cpu}
    one.stop()
    redis.stop()

    redis = Redis(work / "r3")
    three = [node(redis, f"n{i}", work) for i in range(3)]
    meter = CpuMeter(
        {**{f"jobmon{i}": n.pid for i, n in enumerate(three)}, "redis": redis.proc.pid}
    )
    ports = [n.port for n in three]
    lag_task: list[list[float]] = []

    async def under_load() -> None:
        lag_task.append(await sample_lag(ports, args.duration))

    loads = asyncio.new_event_loop()
    sampler = threading.Thread(target=lambda: loads.run_until_complete(under_load()))
    sampler.start()
    msgs, cpu = run_loads(ports, args.conns // 3, args.duration, meter)
    out["three nodes on Redis"] = {"msgs_per_s": msgs, "cpu": cpu}
    sampler.join()
    out["lag_under_load_ms"] = quantiles(lag_task[0])
    out["lag_idle_ms"] = quantiles(asyncio.run(idle_lag(ports[0], ports[1], args.probes)))
    for n in three:
        n.stop()
    redis.stop()
    return out


async def failover_round(redis: Redis, work: Path, round_no: int) -> dict[str, float]:
    name = f"fo{round_no}"
    nodes = [node(redis, f"{name}-{i}", work, "--cluster-name", name) for i in range(3)]
    try:
        while True:
            info = await request(nodes[0].port, {"type": "get_cluster"})
            if info["leader"] is not None:
                break
            await asyncio.sleep(0.05)
        leader = next(n for i, n in enumerate(nodes) if f"{name}-{i}" == info["leader"])
        followers = [n for n in nodes if n is not leader]
        sub_r, sub_w = await asyncio.open_connection("127.0.0.1", followers[0].port)
        sub_w.write(b'{"type":"subscribe","topics":["alerts"]}\n')
        await sub_r.readline()
        await request(followers[1].port, {"type": "heartbeat", "job_id": "fo", "ttl_ms": 1000})
        deadline_at = time.perf_counter() + 1.0
        killed_at = time.perf_counter()
        leader.proc.kill()
        leader.proc.wait()
        alert = orjson.loads(await sub_r.readline())
        fired_at = time.perf_counter()
        assert alert["alert"]["kind"] == "missed_heartbeat"
        sub_w.close()
        return {
            "kill_to_alert_s": round(fired_at - killed_at, 2),
            "deadline_to_alert_s": round(fired_at - deadline_at, 2),
        }
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.stop()


async def unavailable(redis: Redis, work: Path) -> dict[str, float]:
    """How long a write waits for its error 11: Redis frozen (SIGSTOP: the
    connection hangs), then Redis gone (connection refused)."""
    solo = node(redis, "unavailable", work, "--cluster-name", "unavailable")
    out = {}
    try:
        body = {"type": "update_status", "job_id": "u", "status": "running"}
        assert (await request(solo.port, body))["type"] == "status_updated"
        for case, signum in (("frozen", signal.SIGSTOP), ("stopped", signal.SIGTERM)):
            redis.proc.send_signal(signum)
            if signum == signal.SIGTERM:
                redis.proc.wait(30)  # gone: connections are refused
            started = time.perf_counter()
            reply = await request(solo.port, body)
            out[f"redis_{case}_s"] = round(time.perf_counter() - started, 2)
            assert reply.get("code") == 11, (case, reply)
            if signum == signal.SIGSTOP:
                redis.proc.send_signal(signal.SIGCONT)
                while (await request(solo.port, body))["type"] == "error":
                    await asyncio.sleep(0.05)
    finally:
        solo.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=48)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "cluster.json")
    args = parser.parse_args()
    work = servers.scratch()
    rounds = []
    for round_no in range(args.rounds):
        result = throughput_round(args, work)
        rounds.append(result)
        print(f"round {round_no + 1}: " + json.dumps(result), flush=True)
    targets = ["embedded", "one node on Redis", "three nodes on Redis"]
    summary: dict[str, Any] = {}
    print(
        f"\nmedians of {args.rounds} rounds, {args.conns} connections, {time.strftime('%Y-%m-%d')}"
    )
    print("| target | pipelined msgs/s | x embedded (median of rounds) | CPU (cores) per process |")
    print("|---|---|---|---|")
    for target in targets:
        msgs = statistics.median(r[target]["msgs_per_s"] for r in rounds)
        # The ratio to the embedded node measured minutes before, in the same round.
        ratio = statistics.median(
            r[target]["msgs_per_s"] / r["embedded"]["msgs_per_s"] for r in rounds
        )
        cpu = {
            k: statistics.median(r[target]["cpu"][k] for r in rounds)
            for k in rounds[0][target]["cpu"]
        }
        summary[target] = {"msgs_per_s": msgs, "x_embedded": ratio, "cpu": cpu}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        print(f"| {target} | {msgs:,.0f} | {ratio:.2f} | {shown} |")
    for key in ("lag_idle_ms", "lag_under_load_ms"):
        summary[key] = {q: statistics.median(r[key][q] for r in rounds) for q in ("p50", "p99")}
        print(f"{key}: p50 {summary[key]['p50']} ms, p99 {summary[key]['p99']} ms")
    redis = Redis(work / "failover")
    failovers = [asyncio.run(failover_round(redis, work, i)) for i in range(args.failovers)]
    refused = asyncio.run(unavailable(redis, work))
    summary["error_11_after_s"] = refused
    print(f"a write's error 11: Redis frozen {refused['redis_frozen_s']} s, "
          f"Redis stopped {refused['redis_stopped_s']} s")  # fmt: skip
    summary["failovers"] = failovers
    kill = statistics.median(f["kill_to_alert_s"] for f in failovers)
    late = statistics.median(f["deadline_to_alert_s"] for f in failovers)
    print(f"failover (lease 5 s): kill -9 to the new leader's alert, median {kill:.2f} s; "
          f"deadline to alert {late:.2f} s (bar: lease + 1 s = 6 s); runs {failovers}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
