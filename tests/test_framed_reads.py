"""A read of envelopes with one head is cut in one pass (protocol.decode_framed):
it must answer exactly what decoding each line answers, whatever the read holds."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import orjson
import pytest

from helpers import LineClient
from jobmon import protocol
from jobmon.server import Server
from test_fast_path import same

HEAD = b'{"src":"worker","dest":"monitor","body":'
GOOD = [
    HEAD + b'{"type":"update_status","msg_id":1,"job_id":"a","status":"running","progress":5}}',
    HEAD + b'{"type":"job_completed","msg_id":2,"job_id":"a","duration_ms":7,'
    b'"resource_usage":{"cpu_percent":5}}}',
    HEAD + b'{"type":"job_failed","msg_id":3,"job_id":"b","error":"x","retries":0}}',
    HEAD + b'{"type":"get_stats","msg_id":4}}',
    HEAD + b'{"type":"update_status","job_id":"c","status":"queued","event_id":"e1"}}',
]
# Lines with the same head that the fast path must not take as they stand.
ODD_SAME_HEAD = [
    HEAD + b'{"type":"update_status","msg_id":5,"job_id":"a","status":"bogus"}}',
    HEAD + b'{"type":"get_stats","msg_id":6},"x":1}',
    HEAD + b"}",
    HEAD + b'{"type":"get_stats","msg_id":7}}}',
    HEAD + b'{"type":"list_jobs","msg_id":8}}',
    HEAD + b'{"type":"get_stats","msg_id":9,"x":"\xff"}}',
    HEAD + b'{"type":"subscribe","msg_id":10}}',
]
# Lines that break a read's single head: it is decoded line by line.
OTHERS = [
    b'{"src":"c2","dest":"monitor","body":{"type":"get_stats","msg_id":11}}',
    b'{"type":"get_stats","msg_id":12}',
    b"",
    b"  ",
    HEAD + b'{"type":"get_stats","msg_id":13}} ',
    b'{"dest":"monitor","src":"worker","body":{"type":"get_stats","msg_id":14}}',
    b"}",
]


def per_line(data: bytes) -> tuple[list[protocol.Request], bytes]:
    lines = data.split(b"\n")
    rest = lines.pop()
    return [r for r in map(protocol.decode, lines) if r is not None], rest


def check(data: bytes) -> bool:
    """decode_framed agrees with decoding each line; True when it took the read."""
    framed = protocol.decode_framed(data)
    if framed is None:
        return False
    requests, rest = framed
    expected, expected_rest = per_line(data)
    got = list(requests)
    assert rest == expected_rest, data
    assert len(got) == len(expected), data
    for a, b in zip(got, expected, strict=True):
        assert same(a, b), (data, a, b)
    return True


def test_a_read_of_one_head_is_decoded_as_its_lines_are() -> None:
    taken = 0
    lines = GOOD + ODD_SAME_HEAD
    for n in range(1, 4):
        for chosen in itertools.permutations(lines, n):
            for tail in (b"", HEAD[:10], HEAD + b'{"type":"get_st'):
                taken += check(b"\n".join(chosen) + b"\n" + tail)
    assert taken > 1000  # the one-pass cut really ran


def test_a_read_with_any_other_line_is_decoded_line_by_line() -> None:
    for other in OTHERS:
        for good in GOOD:
            for data in (
                good + b"\n" + other + b"\n",
                other + b"\n" + good + b"\n",
                good + b"\n" + other + b"\n" + good + b"\n",
            ):
                assert protocol.decode_framed(data) is None, data
    assert protocol.decode_framed(b"") is None
    assert protocol.decode_framed(HEAD + b'{"type":"get_stats"}}') is None  # no newline yet


async def _replies(port: int, chunks: list[bytes], count: int) -> bytes:
    client = await LineClient.connect(port)
    try:
        for chunk in chunks:
            await client.send_raw(chunk)
        return b"".join([await client.read_line() for _ in range(count)])
    finally:
        await client.close()


MIXED = [
    GOOD[0],
    OTHERS[1],  # bare
    GOOD[1],
    OTHERS[0],  # another head
    GOOD[3],
    b'{"src":"worker","body":{"type":"get_stats","msg_id":15}}',  # no dest
    b'{"dest":"monitor","body":{"type":"get_stats","msg_id":16}}',  # no src: ours is the node id
    GOOD[2],
    ODD_SAME_HEAD[0],
    OTHERS[4],  # trailing space
    GOOD[4],
]


@pytest.mark.parametrize("lines", [GOOD + ODD_SAME_HEAD[:-1], MIXED], ids=["one head", "mixed"])
async def test_one_read_of_many_lines_answers_what_lines_one_at_a_time_do(
    start_server: Callable[..., AbstractAsyncContextManager[Server]], lines: list[bytes]
) -> None:
    lines = lines * 3
    data = b"\n".join(lines) + b"\n"
    async with start_server() as one_read:
        # All at once (the next line cut in two), then line by line.
        cut = len(data) - len(lines[-1]) // 2
        together = await _replies(one_read.port, [data[:cut], data[cut:]], len(lines))
    async with start_server() as singly:
        client = await LineClient.connect(singly.port)
        try:
            alone = b""
            for line in lines:
                await client.send_raw(line + b"\n")
                alone += await client.read_line()
        finally:
            await client.close()
    assert together == alone
    assert together.count(b"\n") == len(lines)
    first = orjson.loads(together.split(b"\n")[0])
    assert first == {
        "src": "monitor",
        "dest": "worker",
        "body": {
            "type": "status_updated",
            "in_reply_to": 1,
            "job_id": "a",
            "status": "running",
            "progress": 5,
        },
    }
