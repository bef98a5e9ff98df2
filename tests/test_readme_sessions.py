"""The README's netcat sessions, replayed against a real server: each reply,
byte for byte, is what the README shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from helpers import LineClient

README = Path(__file__).resolve().parent.parent / "README.md"


# The first request of each session replayed ("A netcat session", "Analytics"); the
# others show times of their own day.
FIRST_REQUESTS = (
    '{"type":"update_status","msg_id":1,',
    '{"type":"job_completed","msg_id":1,"job_id":"etl"',
)


def session(first_request: str) -> str:
    """The README's netcat session (a ```console block) that starts with ``first_request``."""
    blocks = re.findall(r"```console\n\$ nc 127\.0\.0\.1 7070\n(.*?)```", README.read_text(), re.S)
    found = [block for block in blocks if block.startswith(first_request)]
    assert len(found) == 1, f"{len(found)} netcat sessions in the README start {first_request!r}"
    return found[0]


@pytest.mark.parametrize("first_request", FIRST_REQUESTS, ids=["netcat", "analytics"])
async def test_a_readme_session_is_answered_as_shown(start_server: Any, first_request: str) -> None:
    lines = session(first_request).splitlines()
    requests, replies = lines[0::2], lines[1::2]
    assert len(requests) == len(replies)
    async with start_server() as server:
        client = await LineClient.connect(server.port)
        try:
            for request, reply in zip(requests, replies, strict=True):
                await client.send_raw(request.encode() + b"\n")
                assert (await client.read_line()).decode() == reply + "\n", request
        finally:
            await client.close()
