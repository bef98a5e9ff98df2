"""What the client raises, and how a reply becomes one."""

from __future__ import annotations

from typing import Any


class JobmonError(Exception):
    """jobmon answered a request with an error."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"jobmon error {code}: {text}")
        self.code = code
        self.text = text


class JobmonUnavailable(ConnectionError):
    """A question (not an event) could not be asked: jobmon is unreachable."""


def checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("type") == "error":
        raise JobmonError(reply.get("code", 0), reply.get("text", ""))
    return reply
