"""The per-message path in-process, without sockets: decode each line of
bench/load.py's mix and apply it in turns of 2,600 messages (what a 256 KiB
reply budget holds), journaling each turn to a file as the engine does.

Prints microseconds per message, the best of --repeat passes (the least
disturbed by other work on this shared machine). `--pythonpath DIR` measures
another source tree (main's `src/`) in a child process, and `--against DIR`
alternates the two, several times, and prints both and their ratio, each with
where a message's time goes (decode, apply, settle, journal, publish).
`--event-ids`: every event carries an event_id, as jobmon.client stamps them;
`--framing envelope`: every line is a Maelstrom envelope.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

TURN = 2600
# Where a message's time goes: decoding (protocol.decode), applying (engine.execute,
# without settle), settling once a turn (Store.settle, issue 11), the journal's
# write of the turn's frame, publishing to subscribers.
PHASES = ("decode", "execute", "settle", "journal", "publish")


def with_event_ids(lines: list[bytes]) -> list[bytes]:
    import orjson

    def stamped(i: int, body: dict) -> dict:
        if "body" in body:
            return {**body, "body": stamped(i, body["body"])}
        return body if body["type"] == "get_stats" else {**body, "event_id": f"{i:032x}"}

    return [
        orjson.dumps(stamped(i, orjson.loads(line)), option=orjson.OPT_APPEND_NEWLINE)
        for i, line in enumerate(lines)
    ]


def reader() -> Callable[[bytes], deque[Any]]:
    """What ``Connection.data_received`` makes of one read holding a turn's lines:
    a Maelstrom client's envelopes cut in one pass (``protocol.decode_framed``,
    where the tree has it), any other lines decoded one by one."""
    from jobmon import protocol

    decode, decode_framed = protocol.decode, getattr(protocol, "decode_framed", None)

    def read(data: bytes) -> deque[Any]:
        framed = None
        if decode_framed is not None and data[:7] == b'{"src":':
            framed = decode_framed(data)
        if framed is not None:
            return deque(framed[0])
        lines = data.split(b"\n")
        lines.pop()
        return deque(filter(None, map(decode, lines)))

    return read


def turn_reads(lines: list[bytes]) -> list[bytes]:
    """The lines as reads of one turn each (each read ends with its last newline)."""
    return [b"".join(lines[start : start + TURN]) for start in range(0, len(lines), TURN)]


def measure(
    count: int, repeat: int, event_ids: bool = False, framing: str = "bare"
) -> dict[str, float]:
    """Microseconds per message: the total and each phase of the fastest pass."""
    import asyncio

    from jobmon.clock import FakeClock
    from jobmon.engine import Engine
    from jobmon.node import Node
    from jobmon.persistence import DataDir
    from jobmon.store import Store
    from load import make_lines

    lines = make_lines(count, 10_000, 1, framing)
    if event_ids:
        lines = with_event_ids(lines)
    reads = turn_reads(lines)
    read = reader()

    async def one_pass(data: Path) -> dict[str, float]:
        clock = FakeClock()
        node = Node(Store())
        data_dir = DataDir(data, 1 << 40)
        data_dir.recover(node, None)
        engine = Engine(node, clock, data_dir)
        writer = data_dir.writer
        assert writer is not None
        phases = dict.fromkeys(PHASES, 0.0)
        store = node.store
        settle = getattr(store, "settle", None)  # main before issue 11 has none
        if settle is not None:

            def timed_settle() -> None:
                began = perf()
                settle()
                phases["settle"] += perf() - began

            store.settle = timed_settle  # type: ignore[method-assign]
        perf = time.perf_counter
        started = perf()
        for data in reads:
            t0 = perf()
            inbox = read(data)
            t1 = perf()
            now = clock.now()
            engine.execute(inbox, now)
            t2 = perf()
            writer.write(now)
            t3 = perf()
            engine.publish(now)
            t4 = perf()
            phases["decode"] += t1 - t0
            phases["execute"] += t2 - t1
            phases["journal"] += t3 - t2
            phases["publish"] += t4 - t3
            clock.advance(0.001)
        elapsed = perf() - started
        data_dir.close()
        phases["execute"] -= phases["settle"]  # settle runs inside execute
        phases["total"] = elapsed
        return {name: seconds / len(lines) * 1e6 for name, seconds in phases.items()}

    logging.getLogger("jobmon.alert").setLevel(logging.ERROR)  # no alert lines on stderr
    best = []
    with tempfile.TemporaryDirectory() as work:
        for n in range(repeat):
            best.append(asyncio.run(one_pass(Path(work) / str(n))))
    return min(best, key=lambda phases: phases["total"])


def child(
    pythonpath: str | None, count: int, repeat: int, event_ids: bool = False, framing: str = "bare"
) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    flags = ["--event-ids"] if event_ids else []
    flags += ["--framing", framing]
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--count",
            str(count),
            "--repeat",
            str(repeat),
            "--json",
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    phases: dict[str, float] = json.loads(out.stdout)
    return phases


def breakdown(passes: list[dict[str, float]]) -> str:
    """The median of each phase over ``passes``, in microseconds per message."""
    return ", ".join(f"{name} {statistics.median(p[name] for p in passes):.2f}" for name in PHASES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pythonpath", default=None)
    parser.add_argument("--against", default=None, help="another src/ to alternate with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--event-ids", action="store_true", help="every event carries an event_id, as the client's"
    )
    parser.add_argument("--framing", choices=("bare", "envelope"), default="bare")
    args = parser.parse_args()
    how = (args.event_ids, args.framing)
    if args.against:
        this, other = [], []
        for _ in range(args.rounds):
            other.append(child(args.against, args.count, args.repeat, *how))
            this.append(child(args.pythonpath, args.count, args.repeat, *how))
        for name, passes in (("this tree", this), (args.against, other)):
            totals = [round(p["total"], 2) for p in passes]
            print(f"{name}: {statistics.median(totals):.2f} us/message, rounds {totals}")
            print(f"  per message (medians): {breakdown(passes)}")
        ratio = statistics.median(p["total"] for p in this) / statistics.median(
            p["total"] for p in other
        )
        print(f"ratio this / other: {ratio:.3f}")
        return
    if args.pythonpath:
        phases = child(args.pythonpath, args.count, args.repeat, *how)
    else:
        phases = measure(args.count, args.repeat, *how)
    if args.json:
        print(json.dumps(phases))
        return
    print(f"{phases['total']:.2f} us/message ({breakdown([phases])})")


if __name__ == "__main__":
    main()
