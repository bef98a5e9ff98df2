"""The per-message cost in-process, without sockets: bench/load.py's mix decoded
and applied by Engine.execute, in turns of 1,000. Prints microseconds per
message (median and minimum over --runs). To compare two trees, run it under
each (PYTHONPATH=OTHER/src) in alternation: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

from jobmon.clock import FakeClock
from jobmon.engine import Engine
from jobmon.node import Node
from jobmon.protocol import decode
from jobmon.store import Store
from load import make_lines


def one_run(lines: list[bytes]) -> float:
    node = Node(Store())
    engine = Engine(node, FakeClock())
    started = time.perf_counter()
    for at in range(0, len(lines), 1000):
        inbox = deque(r for r in map(decode, lines[at : at + 1000]) if r is not None)
        engine.execute(inbox, 1_790_000_000.0 + at / 1000)
    return (time.perf_counter() - started) / len(lines) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    lines = make_lines(args.messages, 10_000, 7)
    runs = [one_run(lines) for _ in range(args.runs)]
    print(
        f"{statistics.median(runs):.3f} us/msg median, {min(runs):.3f} min, "
        f"runs {[round(r, 3) for r in runs]}"
    )


if __name__ == "__main__":
    main()
