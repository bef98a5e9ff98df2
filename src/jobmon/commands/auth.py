"""auth: a connection proves it knows the server's --token before anything else."""

from __future__ import annotations

import hmac
from typing import Any

from ..errors import Code, RequestError, malformed
from ..node import Node
from . import fields

NAME = "auth"
MUTATES = False
MAX_FAILURES = 3  # then the connection is closed
WRONG = "the token is wrong"


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    token = body.get("token")
    if type(token) is not str or not token:
        raise malformed(f"token must be a non-empty string, got {fields._show(token)}")
    return (token,)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    sink = node.sink
    if node.token is not None:
        if not hmac.compare_digest(args[0].encode(), node.token.encode()):
            refuse(sink, WRONG)
        if sink is not None:
            sink.authenticated = True
    return fields.reply("auth_ok", msg_id)


def refuse(sink: Any, why: str) -> None:
    """Count a failure against the connection (closing it after MAX_FAILURES) and raise."""
    failures = getattr(sink, "auth_failures", 0) + 1
    if sink is not None:
        sink.auth_failures = failures
        if failures >= MAX_FAILURES and hasattr(sink, "stop_reading"):
            sink.stop_reading()  # answered, then closed
            sink.inbox.clear()  # what it pipelined after this goes unanswered
    # A connection that sent no auth yet is told what to send; one whose token
    # was wrong already knows.
    need = (
        ""
        if why == WRONG
        else ': this server requires {"type":"auth","token":"..."} as the first message'
    )
    raise RequestError(
        Code.UNAUTHORIZED,
        f"{why}{need} (failure {failures} of {MAX_FAILURES} before the connection is closed)",
    )
