"""Instructions per message on the in-process path, counted by callgrind.

bench/hotpath.py's loop (decode, apply, journal each turn of 2,600 messages,
publish) with the server's collector settings, run under
`valgrind --tool=callgrind`, counting only inside the loop (it runs inside
`functools.reduce`, and callgrind collects only there), after --warmup
messages (the 10,000 jobs of the mix created, as in a running server). Instructions, unlike
seconds, do not change with what else the machine is doing: two trees'
figures taken at different times compare. Slow: about a minute a figure.

    python bench/instructions.py [--framing envelope] [--event-ids] [--against DIR]
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def child(count: int, warmup: int, framing: str, event_ids: bool) -> None:
    """Runs under callgrind: the measured loop inside functools.reduce."""
    sys.path.insert(0, str(BENCH))
    from hotpath import TURN, reader, turn_reads, with_event_ids
    from jobmon.clock import FakeClock
    from jobmon.engine import Engine
    from jobmon.node import Node
    from jobmon.persistence import DataDir
    from jobmon.store import Store
    from load import make_lines

    logging.getLogger("jobmon.alert").setLevel(logging.ERROR)
    lines = make_lines(warmup + count, 10_000, 1, framing)
    if event_ids:
        lines = with_event_ids(lines)
    turns = turn_reads(lines)
    read = reader()
    with tempfile.TemporaryDirectory() as work:
        clock = FakeClock()
        node = Node(Store())
        data_dir = DataDir(Path(work), 1 << 40)
        data_dir.recover(node, None)
        engine = Engine(node, clock, data_dir)
        writer = data_dir.writer
        assert writer is not None
        gc.freeze()  # as the server does after start-up
        gc.set_threshold(50_000, 20, 100)

        def turn(_: None, data: bytes) -> None:
            inbox = read(data)
            now = clock.now()
            engine.execute(inbox, now)
            writer.write(now)
            engine.publish(now)
            clock.advance(0.001)

        warm = warmup // TURN
        for batch in turns[:warm]:
            turn(None, batch)
        functools.reduce(turn, turns[warm:], None)
        data_dir.close()


def instructions(pythonpath: str | None, args: argparse.Namespace) -> float:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts each run: counts repeat
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        argv = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--toggle-collect=functools_reduce", "--collect-atstart=no",
            sys.executable, __file__, "--child", "--count", str(args.count),
            "--warmup", str(args.warmup), "--framing", args.framing,
            *(["--event-ids"] if args.event_ids else []),
        ]  # fmt: skip
        subprocess.run(argv, env=env, check=True, capture_output=True)
        match = re.search(rb"^(?:summary|totals): (\d+)", out.read_bytes(), re.MULTILINE)
        assert match, "no total in callgrind's output"
        return int(match.group(1)) / args.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=26_000)
    parser.add_argument("--warmup", type=int, default=52_000)
    parser.add_argument("--framing", choices=("bare", "envelope"), default="bare")
    parser.add_argument("--event-ids", action="store_true")
    parser.add_argument("--against", default=None, help="another src/ to count too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.count, args.warmup, args.framing, args.event_ids)
        return
    this = instructions(None, args)
    print(f"this tree: {this:,.0f} instructions/message")
    if args.against:
        other = instructions(args.against, args)
        print(f"{args.against}: {other:,.0f} instructions/message; this / other {this / other:.3f}")


if __name__ == "__main__":
    main()
