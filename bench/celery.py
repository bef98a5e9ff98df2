"""Celery events (--celery) that jobmon consumes while it serves its normal load.

Each round starts redis-server and a fresh `jobmon serve --celery` (journal,
fsync everysec), then measures, 5 s each:

- ``load``: bench/load.py's mix alone (pipelined, window 64), the baseline;
- ``celery xN``: a publisher process sends task lifecycles as fast as it can
  (task-received, -started, -succeeded per task id, 200 task names) with
  Celery's own event Dispatcher, N events per message (1: one event a
  message; 24: the lists a prefork worker's buffer sends); ``@R``: R events/s
  (2,000 is about what one busy prefork worker sends);
- ``load + celery xN``: both at once; ``load + unwatched xN``: the same
  publisher on a database jobmon does not watch, so the baseline pays for the
  publisher's and Redis's CPU too (they share this machine's two cores).

Events/s is what jobmon applied to its store (``jobmon_celery_events_total``,
outcome applied, read from /metrics at both ends of the window); dropped are
the events its bounded queue let go. `python bench/celery.py publish URL S N`
is the publisher by itself.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import servers

# This file is bench/celery.py: with bench/ first on sys.path, `import celery`
# would find it instead of Celery.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != servers.BENCH]

NAMES = [f"reports.task_{n}" for n in range(200)]


def publish(url: str, seconds: float, per_message: int, rate: float = 0) -> int:
    from celery import Celery

    app = Celery(broker=url, set_as_current=False)
    sent = 0
    with app.connection_for_write() as conn:
        buffered = (
            {"buffer_group": ["task"], "buffer_limit": per_message} if per_message > 1 else {}
        )
        dispatcher = app.events.Dispatcher(conn, hostname="bench@publisher", **buffered)
        began = time.monotonic()
        end = began + seconds
        n = 0
        while time.monotonic() < end:
            if rate and sent > rate * (time.monotonic() - began):
                time.sleep(0.01)  # ahead of --rate events/s
                continue
            for _ in range(100):
                task_id = str(uuid.uuid4())
                name = NAMES[n % len(NAMES)]
                n += 1
                dispatcher.send("task-received", uuid=task_id, name=name, retries=0, args="()")
                dispatcher.send("task-started", uuid=task_id)
                dispatcher.send("task-succeeded", uuid=task_id, runtime=0.01, result="None")
            sent += 300
        dispatcher.flush()
    return sent


def in_process(tasks: int = 30_000) -> dict[str, float]:
    """Microseconds per event in one process, no sockets: reading the child's
    JSON line, translating, decoding the messages, the engine applying them
    in batches of 700 events, as the watcher does."""
    from collections import deque

    import orjson

    from jobmon.clock import FakeClock
    from jobmon.engine import Engine
    from jobmon.integrations.celery_events import Translator
    from jobmon.node import Node
    from jobmon.protocol import decode
    from jobmon.store import Store

    start = 1_790_000_000.0 - 60
    lines = []
    for n in range(tasks):
        task_id, name = str(uuid.uuid4()), NAMES[n % len(NAMES)]
        common = {"hostname": "bench@publisher", "pid": 1, "utcoffset": 0, "clock": n}
        common["timestamp"] = common["local_received"] = start + n * 1e-4
        for event in (
            {"type": "task-received", "name": name, "retries": 0, "args": "()", "kwargs": "{}"},
            {"type": "task-started"},
            {"type": "task-succeeded", "runtime": 0.01, "result": "None"},
        ):
            lines.append(orjson.dumps({**common, **event, "uuid": task_id}))
    node = Node(Store())
    engine, translator = Engine(node, FakeClock()), Translator()
    spent = dict.fromkeys(("read", "translate", "decode", "apply"), 0.0)
    clock = time.perf_counter
    for at in range(0, len(lines), 700):
        t0 = clock()
        events = [orjson.loads(line) for line in lines[at : at + 700]]
        t1 = clock()
        bodies = [body for event in events for body in translator.translate(event)]
        t2 = clock()
        inbox = deque(decode(orjson.dumps(body)) for body in bodies)
        t3 = clock()
        assert b'"type":"error"' not in engine.execute(inbox, start + 60)
        t4 = clock()
        for key, took in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[key] += took
    return {key: round(took / len(lines) * 1e6, 2) for key, took in spent.items()}


def counters(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as page:
        text = page.read().decode()
    found = re.findall(r'jobmon_celery_events_total\{cluster="[^"]*",outcome="(\w+)"\} (\S+)', text)
    return {outcome: float(value) for outcome, value in found}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def measure(
    server: servers.Spawned, http_port: int, url: str, args: argparse.Namespace, mode: str
) -> dict[str, float]:
    per_message, rate = 0, "0"
    if "x" in mode:  # "... x24" or "... x24 @2000"
        spec = mode.rsplit("x", 1)[1].split(" @")
        per_message, rate = int(spec[0]), (spec[1] if len(spec) > 1 else "0")
    publisher = None
    if per_message:
        # "unwatched": the same publisher on another database, which jobmon does
        # not watch: what the publisher and Redis cost the load by themselves.
        target = url[:-1] + "1" if "unwatched" in mode else url
        argv = [sys.executable, __file__, "publish", target, str(args.duration + 2)]
        argv += [str(per_message), rate]
        publisher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    load: dict[str, float] = {}
    loader = None
    if mode.startswith("load"):
        loader = threading.Thread(
            target=lambda: load.update(
                servers.run_load(server.port, 64, args.duration, args.conns, server.pid)
            )
        )
        loader.start()
    time.sleep(1.0)  # load.py's warmup; the publisher is up to speed
    before, cpu_before, started = counters(http_port), cpu_s(server.pid), time.perf_counter()
    time.sleep(args.duration)
    after, cpu_after = counters(http_port), cpu_s(server.pid)
    elapsed = time.perf_counter() - started
    if loader is not None:
        loader.join()
    out = {
        "load_msgs_per_s": load.get("msgs_per_s", 0.0),
        "load_p99_ms": load.get("p99_ms", 0.0),
        "celery_events_per_s": (after["applied"] - before["applied"]) / elapsed,
        "dropped": after["dropped"] - before["dropped"],
        "jobmon_cpu": (cpu_after - cpu_before) / elapsed,
    }
    if publisher is not None:
        stdout, _ = publisher.communicate(timeout=120)
        out["published_per_s"] = int(stdout.split()[-1]) / (args.duration + 2)
        catch_up(http_port)
    return out


def catch_up(http_port: int) -> None:
    """Before the next measurement: everything received is applied, and nothing
    more comes (the receiver reports what it received once a second)."""
    last = -1.0
    while True:
        now = counters(http_port)
        if now["applied"] + now["dropped"] >= now["received"] and now["applied"] == last:
            return
        last = now["applied"]
        time.sleep(1.5)


def one_round(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    port = servers.free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    data_dir = work / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    http_port = servers.free_port()
    time.sleep(0.5)  # redis-server is up in ~0.3 s; jobmon reconnects if not
    server = servers.jobmon(data_dir, "--celery", url, "--http-port", str(http_port), log_dir=work)
    try:
        while not counters(http_port) or "1.0" not in _connected(http_port):
            time.sleep(0.1)
        return {mode: measure(server, http_port, url, args, mode) for mode in args.modes}
    finally:
        server.stop()
        redis.terminate()
        redis.wait(30)


def _connected(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as page:
        text = page.read().decode()
    match = re.search(r"jobmon_celery_connected\{[^}]*\} (\S+)", text)
    return match.group(1) if match else ""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        print(publish(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=[
            "load",
            "load + unwatched x24 @2000",
            "load + celery x24 @2000",
            "celery x1",
            "celery x24",
            "load + unwatched x24",
            "load + celery x24",
        ],
    )
    parser.add_argument("--out", type=Path, default=servers.BENCH / "results" / "celery.json")
    args = parser.parse_args()
    work = servers.scratch()
    costs = [in_process() for _ in range(5)]
    per_event = {key: statistics.median(c[key] for c in costs) for key in costs[0]}
    total = sum(per_event.values())
    print(f"in-process, us per event (median of 5): {per_event}, total {total:.1f}", flush=True)
    runs: list[dict[str, dict[str, float]]] = []
    for round_no in range(args.rounds):
        result = one_round(args, work)
        runs.append(result)
        for mode, r in result.items():
            print(
                f"round {round_no + 1} {mode:26} load {r['load_msgs_per_s']:>8,.0f} msgs/s "
                f"(p99 {r['load_p99_ms']:.1f} ms)  celery {r['celery_events_per_s']:>7,.0f} ev/s "
                f"applied, {r['dropped']:,.0f} dropped, {r.get('published_per_s', 0):,.0f} sent  "
                f"jobmon cpu {r['jobmon_cpu']:.2f}",
                flush=True,
            )
    medians = {
        mode: {key: statistics.median(r[mode][key] for r in runs) for key in runs[0][mode]}
        for mode in args.modes
    }
    print("\nmedians:")
    for mode, m in medians.items():
        # The cost of watching: against the same publisher, unwatched.
        base = medians.get(mode.replace("celery", "unwatched"), {}).get("load_msgs_per_s")
        ratio = ""
        if "load + celery" in mode and base:
            ratio = f"  load x{m['load_msgs_per_s'] / base:.2f} of unwatched"
        print(
            f"{mode:26} load {m['load_msgs_per_s']:>8,.0f} msgs/s (p99 {m['load_p99_ms']:.1f} ms)"
            f"  celery {m['celery_events_per_s']:>7,.0f} ev/s  dropped {m['dropped']:,.0f}{ratio}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {"in_process_us_per_event": per_event, "runs": runs, "medians": medians}
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
