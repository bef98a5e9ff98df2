"""Issue 9's fuzz test: generated nested, oversized and odd JSON, over TCP and
HTTP, against a real `jobmon serve`. The server stays up; every reply is a
success or a client error (10, 12, 20, 22; HTTP 4xx), never a crash (13 / 5xx).

Hypothesis is pinned (pyproject) and derandomized, with no example database:
every run feeds the same cases."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Lines, WatchedServer, free_port, http_exchange, proc_status_mb
from jobmon.commands import HANDLERS

CLIENT_ERRORS = {10, 12, 20, 22}
TYPES = sorted(set(HANDLERS) - {"subscribe"}) + ["bogus"]  # TCP: nothing pushed back
FIELDS = [
    "job_id", "status", "progress", "duration_ms", "resource_usage", "error", "retries",
    "max_retries", "labels", "schedule", "arguments", "output", "until", "tz", "ttl_ms",
    "at", "msg_id", "limit", "cursor", "q", "state", "before", "top", "prices", "topics",
    "node_id", "node_ids", "command", "grace_ms", "memory_limit_mb", "exit_code",
    "for_run", "failure_threshold", "lost_grace_ms", "unknown",
]  # fmt: skip
PLAUSIBLE = [
    '"j1"', '"running"', '"completed"', "0", "1", "3", "42.5", "100", "60000", "-1", "null",
    "true", '"Europe/Berlin"', '"America"', '"2026-11-22T04:00:00Z"',
    '"0001-01-01T00:00:00+14:00"', '{"cpu_percent":75,"memory_mb":1024}',
    '{"cron":"0 2 * * *","tz":"UTC"}', '{"every_ms":60000}', '["--full"]', '{"team":"data"}',
    '["alerts","events"]', "9007199254740993", "18446744073709551616", "1e400", '"\\ud800"',
]  # fmt: skip

ADDRESSES = ['"w"', "null", "7", '"' + "s" * 300 + '"']
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
).map(lambda v: orjson.dumps(v).decode())


@st.composite
def nested(draw: Any) -> str:
    depth = draw(st.sampled_from([2, 64, 253, 254, 255, 300, 600, 1023, 1024, 1100]))
    if draw(st.booleans()):
        return "[" * depth + "1" + "]" * depth
    return '{"k":' * depth + '"v"' + "}" * depth


@st.composite
def oversized(draw: Any) -> str:
    size = draw(st.sampled_from([129, 257, 4097, 8193, 70_000, 600_000, 1_100_000]))
    char = draw(st.sampled_from(["x", "é", "\\u0001", "🙂"]))
    text = char * (size if char != "\\u0001" else size // 6)
    if draw(st.booleans()):
        return '"' + text + '"'
    count = draw(st.sampled_from([33, 257, 2000]))
    return "{" + ",".join(f'"k{i}":"{text[:200]}"' for i in range(count)) + "}"


fragment = st.sampled_from(PLAUSIBLE) | values | nested() | oversized()


@st.composite
def messages(draw: Any, types: list[str]) -> bytes:
    fields = [f'"type":"{draw(st.sampled_from(types))}"']
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        fields.append(f'"{name}":{draw(fragment)}')
    body = "{" + ",".join(fields) + "}"
    if draw(st.integers(0, 4)) == 0:  # a Maelstrom envelope, sometimes an odd one
        src = draw(st.sampled_from(ADDRESSES))
        body = '{"src":' + src + ',"dest":"m","body":' + body + "}"
    return body.encode()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WatchedServer]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    with WatchedServer(data, "--http-port", str(free_port()), "--log-level", "error") as server:
        yield server
        # The fuzz tests' last check, in the teardown of what they used: it runs after
        # whichever of them ran, and never without them.
        assert_still_well(server)


def check(reply: Any, line: bytes) -> None:
    body = reply.get("body", reply) if isinstance(reply, dict) and "dest" in reply else reply
    assert isinstance(body, dict), (line[:300], reply)
    if body.get("type") == "error":
        assert body["code"] in CLIENT_ERRORS, (line[:300], body)


def assert_still_well(target: WatchedServer) -> None:
    """Alive, answering on both ports, not bloated, stops cleanly, no bug logged."""
    assert target.proc is not None and target.proc.poll() is None
    tcp = Lines(target.port)
    assert tcp.ask(b'{"type":"get_stats","msg_id":1}')["in_reply_to"] == 1
    tcp.close()
    answer = http_exchange(
        target.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert proc_status_mb(target.proc.pid, "VmRSS") < 500
    assert target.terminate() == 0
    assert not [line for line in target.stderr_lines if '"level":"error"' in line]


@pytest.fixture(scope="module")
def tcp(target: WatchedServer) -> Iterator[Lines]:
    lines = Lines(target.port)
    yield lines
    lines.close()


# The same cases every run: derandomized, no database of earlier failures.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(FUZZ, max_examples=250)
@given(line=messages(TYPES))
def test_tcp_survives_what_hypothesis_sends(target: WatchedServer, tcp: Lines, line: bytes) -> None:
    check(tcp.ask(line), line)


@settings(FUZZ, max_examples=150)
@given(line=messages([*TYPES, "subscribe"]), batch=st.booleans())
def test_http_survives_what_hypothesis_sends(
    target: WatchedServer, line: bytes, batch: bool
) -> None:
    body = b"[" + line + b"," + line + b"]" if batch else line
    conn = http.client.HTTPConnection("127.0.0.1", target.http_port, timeout=60)
    try:
        conn.request("POST", "/api/events", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        status, payload = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, (line[:300], status, payload[:300])
    reply = orjson.loads(payload)
    if status == 200 and isinstance(reply, list):
        for one in reply:
            check(one, line)
    elif status >= 400:
        assert reply["error"]["code"] in CLIENT_ERRORS | {14}, (line[:300], reply)
