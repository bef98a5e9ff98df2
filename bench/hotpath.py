"""The per-message cost in process, no sockets: decode (protocol.decode) and apply
(Engine.execute) bench/load.py's mix, in turns of 64 requests. Prints one JSON line,
microseconds per message (the best of --repeat passes: the least disturbed by
other work on this shared machine). Runs against any tree on PYTHONPATH, so the
code before a change can be measured beside it."""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import deque

import orjson

import load
from jobmon.clock import FakeClock
from jobmon.engine import Engine
from jobmon.node import Node
from jobmon.protocol import decode
from jobmon.store import Store


def one_pass(lines: list[bytes]) -> float:
    engine = Engine(Node(Store()), FakeClock())
    clock = engine.clock
    started = time.perf_counter()
    for start in range(0, len(lines), 64):
        inbox = deque(r for r in map(decode, lines[start : start + 64]) if r is not None)
        engine.execute(inbox, clock.now())
        engine.node.store.drain_alerts()
    return (time.perf_counter() - started) / len(lines) * 1e6


def main() -> None:
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as Server.start sets it
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--event-ids", action="store_true", help="every event carries an event_id, as the client's"
    )
    args = parser.parse_args()
    lines = load.make_lines(args.messages, 10_000, 1)
    if args.event_ids:
        bodies = [orjson.loads(line) for line in lines]
        lines = [
            orjson.dumps(body if body["type"] == "get_stats" else {**body, "event_id": f"{i:032x}"})
            + b"\n"
            for i, body in enumerate(bodies)
        ]
    best = min(one_pass(lines) for _ in range(args.repeat))
    print(json.dumps({"us_per_message": round(best, 3)}))


if __name__ == "__main__":
    main()
