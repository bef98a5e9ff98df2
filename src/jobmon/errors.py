"""Error codes (Maelstrom's numbering) and the exception that carries one to a reply."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    NOT_SUPPORTED = 10
    TEMPORARILY_UNAVAILABLE = 11  # try again later: the shared log is unreachable (--redis), or
    # the server is past --max-connections; nothing changed
    MALFORMED = 12
    CRASH = 13
    UNAUTHORIZED = 14  # no or a wrong --token (Maelstrom's "abort")
    NOT_FOUND = 20
    PRECONDITION_FAILED = 22


class RequestError(Exception):
    """Raised by parsing or by a command before it changes anything."""

    def __init__(self, code: Code, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def malformed(text: str) -> RequestError:
    return RequestError(Code.MALFORMED, text)
