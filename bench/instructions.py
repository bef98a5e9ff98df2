"""Instructions per message on the in-process path, counted by callgrind.

bench/hotpath.py's loop (decode, apply, journal each turn of 2,600 messages,
publish) with the server's collector settings, run under
`valgrind --tool=callgrind`, counting only inside the loop (it runs inside
`functools.reduce`, and callgrind collects only there), after --warmup
messages (the 10,000 jobs of the mix created, as in a running server). Instructions, unlike
seconds, do not change with what else the machine is doing: two trees'
figures taken at different times compare. Slow: about a minute a figure.

`--reqrep N`: request/response instead, as bench/load.py's window 1 makes
it: turns of N connections with one line each, read by `Connection.data_received`
(a stub transport), answered by the engine's turn (execute per connection, the
journal's write, deliver, publish), so what a connection and a turn cost per
request is counted too.

    python bench/instructions.py [--framing envelope] [--event-ids] [--reqrep 50] [--against DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


class StubTransport:
    """What a Connection calls on its transport, doing nothing."""

    def write(self, data: bytes) -> None: ...
    def get_extra_info(self, name: str) -> None: ...
    def set_write_buffer_limits(self, high: int) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0


def reqrep_turn(engine: Any, writer: Any, conns: list[Any]) -> Callable[[None, bytes], None]:
    """One line to each connection, then the engine's turn (``Engine.run``'s steps)."""
    from jobmon.connection import TURN_OUTPUT_BUDGET

    clock = engine.clock

    def turn(_: None, data: bytes) -> None:
        for conn, line in zip(conns, data.splitlines(keepends=True), strict=False):
            conn.data_received(line)
        sinks, engine.queue = engine.queue, deque()
        now = clock.now()
        replies = [(s, engine.execute(s.inbox, now, TURN_OUTPUT_BUDGET, s)) for s in sinks]
        writer.write(now)
        for sink, reply in replies:
            sink.deliver(reply)
        engine.publish(now)
        engine.retarget()
        clock.advance(0.001)

    return turn


Turn = Callable[[None, bytes], None]


@contextlib.contextmanager
def pipeline(
    count: int, warmup: int, framing: str, event_ids: bool, reqrep: int = 0
) -> Iterator[tuple[list[bytes], list[bytes], Turn]]:
    """bench/hotpath.py's path set up as a server runs it: (warm-up reads, measured reads,
    the function that runs one turn, shaped for functools.reduce)."""
    sys.path.insert(0, str(BENCH))
    from hotpath import TURN, reader, with_event_ids
    from jobmon.clock import FakeClock
    from jobmon.connection import Connection
    from jobmon.engine import Engine
    from jobmon.node import Node
    from jobmon.persistence import DataDir
    from jobmon.store import Store
    from load import make_lines

    logging.getLogger("jobmon.alert").setLevel(logging.ERROR)
    lines = make_lines(warmup + count, 10_000, 1, framing)
    if event_ids:
        lines = with_event_ids(lines)
    turn_lines = reqrep or TURN
    turns = [b"".join(lines[at : at + turn_lines]) for at in range(0, len(lines), turn_lines)]
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

        if reqrep:
            conns = [Connection(engine, 1 << 20, set(), n + 1) for n in range(reqrep)]
            for conn in conns:
                conn.connection_made(StubTransport())  # type: ignore[arg-type]
            turn = reqrep_turn(engine, writer, conns)
        warm = warmup // turn_lines
        yield turns[:warm], turns[warm:], turn
        data_dir.close()


def child(count: int, warmup: int, framing: str, event_ids: bool, reqrep: int = 0) -> None:
    """Runs under callgrind: the measured loop inside functools.reduce."""
    with pipeline(count, warmup, framing, event_ids, reqrep) as (warm, measured, turn):
        for batch in warm:
            turn(None, batch)
        functools.reduce(turn, measured, None)


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
            *(["--event-ids"] if args.event_ids else []), "--reqrep", str(args.reqrep),
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
    parser.add_argument("--reqrep", type=int, default=0, metavar="N", help="turns of N requests")
    parser.add_argument("--against", default=None, help="another src/ to count too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.count, args.warmup, args.framing, args.event_ids, args.reqrep)
        return
    this = instructions(None, args)
    print(f"this tree: {this:,.0f} instructions/message")
    if args.against:
        other = instructions(args.against, args)
        print(f"{args.against}: {other:,.0f} instructions/message; this / other {this / other:.3f}")


if __name__ == "__main__":
    main()
