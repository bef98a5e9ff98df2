"""Messages from inside the server (an HTTP request, a launched job's reports),
answered by the engine like a connection's inbox; see ``Engine.ask``."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from .errors import malformed
from .protocol import Request, decode

if TYPE_CHECKING:
    from .engine import Engine


class BatchSink:
    """Messages from inside the server (an HTTP request, a launched job's
    reports), in the engine like a connection's; already authenticated.

    ``max_reply_bytes``: once its replies pass this, the questions still waiting
    are answered with error 12 instead (the events among them still apply)."""

    conn_id: int | None = None
    authenticated = True
    persistent = False  # answered once: nothing is pushed to it later

    def __init__(
        self, requests: list[Request], engine: Engine, max_reply_bytes: int | None = None
    ) -> None:
        self.inbox: deque[Request] = deque(requests)
        self.engine = engine
        self.chunks: list[bytes] = []
        self.size = 0
        self.max_reply_bytes = max_reply_bytes
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def deliver(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.inbox:  # a turn answers up to its output budget: the rest next turn
            if self.max_reply_bytes is not None and self.size > self.max_reply_bytes:
                self._refuse_questions()
            self.engine.ready(self)
        elif not self.done.done():
            self.done.set_result(b"".join(self.chunks))

    def _refuse_questions(self) -> None:
        refused = malformed(
            f"not answered: the replies to this batch passed {self.max_reply_bytes} bytes; "
            "ask again in a smaller batch"
        )
        self.inbox = deque(
            r if r[2] is None or r[2].mutates else (r[0], r[1], None, refused) for r in self.inbox
        )

    def push(self, data: bytes) -> bool:
        return False


def request_of(body: dict[str, Any]) -> Request | None:
    try:
        line = orjson.dumps(body)
    except orjson.JSONEncodeError:  # orjson writes at most 254 levels of nesting
        return (
            None,
            None,
            None,
            malformed(
                "the message is nested more than 254 levels deep; no field jobmon takes nests "
                "that far (see Limits in the README)"
            ),
        )
    return decode(line)
