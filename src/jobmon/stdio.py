"""``jobmon stdio``: the same handlers over stdin/stdout, in memory, as a Maelstrom node runs."""

from __future__ import annotations

import sys
from collections import deque
from typing import BinaryIO

from .clock import SystemClock
from .engine import Engine
from .node import Node
from .protocol import decode, line_too_long
from .store import Store


def run(
    stdin: BinaryIO,
    stdout: BinaryIO,
    node_id: str = "monitor",
    max_retries: int = 3,
    max_line_bytes: int = 1 << 20,
) -> int:
    engine = Engine(Node(Store(max_retries), node_id), SystemClock())
    clock = engine.clock
    for line in stdin:
        request = line_too_long(max_line_bytes) if len(line) > max_line_bytes + 1 else decode(line)
        if request is None:
            continue
        now = clock.now()
        stdout.write(engine.execute(deque((request,)), now))
        stdout.flush()
        engine.publish(now)
    return 0


def main(node_id: str, max_retries: int, max_line_bytes: int) -> int:
    return run(sys.stdin.buffer, sys.stdout.buffer, node_id, max_retries, max_line_bytes)
