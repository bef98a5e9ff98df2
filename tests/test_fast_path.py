"""The msgspec fast path must agree with the general validators on every input it accepts."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from jobmon import protocol

MISSING = object()

# Per field: valid values, edge values and wrong ones (MISSING leaves the field out).
VARIANTS: dict[str, list[Any]] = {
    "msg_id": [MISSING, None, 0, 7, -1, 1.5, True, "3"],
    "job_id": [MISSING, "job-1", "", "x" * 256, "x" * 257, 5, None, "é-ü-🙂"],
    "status": [MISSING, "running", "completed", "sleeping", None, 3, ["running"]],
    "progress": [MISSING, None, 0, 42, 42.5, 100, 100.0, 101, -0.5, True, "50", 1e2],
    "max_retries": [MISSING, None, 0, 3, -1, 2.0, False],
    "duration_ms": [MISSING, None, 0, 60000, 1.25, -1, "10", True],
    "resource_usage": [
        MISSING,
        None,
        {},
        {"cpu_percent": 75, "memory_mb": 1024},
        {"cpu_percent": 250.5, "io": 3},
        {"cpu_percent": -1},
        {"memory_mb": "big"},
        {"note": "text"},
        [1],
    ],
    "error": [MISSING, None, "", "Connection timeout", 404],
    "retries": [MISSING, None, 0, 3, -2, 1.0, True],
    "ttl_ms": [MISSING, None, 0, 1, 60000, -5, 1.5, "60", True, 2**53 + 1],
}
FIELDS = {
    "update_status": ["msg_id", "job_id", "status", "progress", "max_retries"],
    "job_completed": ["msg_id", "job_id", "duration_ms", "resource_usage"],
    "job_failed": ["msg_id", "job_id", "error", "retries", "max_retries"],
    "get_stats": ["msg_id"],
    "heartbeat": ["msg_id", "job_id", "ttl_ms"],
}


# The optional fields a client (event_id, at) or Celery (run_id too) adds, over
# a few bodies of each type that the fast path takes.
EXTRAS: dict[str, list[Any]] = {
    "run_id": [MISSING, None, "r-1", "", "x" * 128, "x" * 129, "a\x00b", "é🙂\n", 5],
    "event_id": [MISSING, None, "e-1", "", "x" * 128, "x" * 129, 3],
    "at": [MISSING, None, 1.7e9, 0, -1, "1"],
}
BASES: dict[str, list[dict[str, Any]]] = {
    "update_status": [
        {"job_id": "j", "status": "running", "progress": 5},
        {"job_id": "j", "status": "completed", "max_retries": 2},
    ],
    "job_completed": [
        {"job_id": "j", "duration_ms": 5},
        {"job_id": "j", "resource_usage": {"cpu_percent": 1}},
    ],
    "job_failed": [{"job_id": "j", "error": "e", "retries": 3}, {"job_id": "j"}],
    "heartbeat": [{"job_id": "j", "ttl_ms": 10}, {"job_id": "j", "for_run": True}],
    "get_stats": [{}],
}


@pytest.mark.parametrize("type_", sorted(FIELDS))
def test_fast_path_agrees_with_run_ids_event_ids_and_at(type_: str) -> None:
    fast_taken = 0
    names = list(EXTRAS)
    for base in BASES[type_]:
        for values in itertools.product(*(EXTRAS[name] for name in names)):
            body = {"type": type_, "msg_id": 1, **base}
            body.update({n: v for n, v in zip(names, values, strict=True) if v is not MISSING})
            for line in (orjson.dumps(body), enveloped(ENVELOPES[0], body)):
                assert same(protocol.decode(line), protocol.decode_checked(line)), line
            fast_taken += _try_wire(orjson.dumps(body)) is not None
    assert fast_taken > 0


def bodies(type_: str) -> list[dict[str, Any]]:
    names = FIELDS[type_]
    out = []
    for values in itertools.product(*(VARIANTS[name] for name in names)):
        body = {"type": type_}
        body.update({n: v for n, v in zip(names, values, strict=True) if v is not MISSING})
        out.append(body)
    return out


def same(a: protocol.Request | None, b: protocol.Request | None) -> bool:
    if a is None or b is None:
        return a is b
    if a[2] is None or b[2] is None:  # errors: same framing, msg_id and code
        return (
            a[2] is b[2] is None
            and a[:2] == b[:2]
            and a[3].code == b[3].code
            and a[3].text == b[3].text
        )
    # Values and their types (42 must stay an int, 42.5 a float).
    return a[:3] == b[:3] and orjson.dumps(a[3]) == orjson.dumps(b[3])


@pytest.mark.parametrize("type_", sorted(FIELDS))
def test_fast_path_agrees_with_the_checked_path(type_: str) -> None:
    fast_taken = 0
    for body in bodies(type_):
        line = orjson.dumps(body)
        assert same(protocol.decode(line), protocol.decode_checked(line)), body
        fast_taken += protocol._WIRE_ROUTES.get(type(_try_wire(line))) is not None
    assert fast_taken > 0  # the fast path really was exercised


def _try_wire(line: bytes) -> Any:
    try:
        return protocol._wire_decode(line)
    except protocol._WIRE_ERRORS:
        return None


def _try_envelope(line: bytes) -> Any:
    try:
        return protocol._envelope_decode(line)
    except protocol._WIRE_ERRORS:
        return None


# Envelopes around the bodies: the keys in Maelstrom's order and in others, a
# missing or null address, addresses that are too long or not strings, and
# extra keys (each variant a list of (key, value) pairs in order; MISSING: left out).
ENVELOPES: list[list[tuple[str, Any]]] = [
    [("src", "worker"), ("dest", "monitor")],
    [("dest", "monitor"), ("src", "c1")],
    [("src", "c1")],
    [("src", None), ("dest", None)],
    [("src", "x" * 256), ("dest", "é🙂")],
    [("src", "x" * 257), ("dest", "monitor")],
    [("src", 3), ("dest", "monitor")],
    [("src", "c1"), ("dest", ["monitor"])],
    [("src", "c1"), ("dest", "monitor"), ("id", 7)],
    [("src", "c1"), ("dest", "monitor"), ("type", None)],
    [("src", "c1"), ("dest", "monitor"), ("type", "get_stats")],
]


def enveloped(pairs: list[tuple[str, Any]], body: Any, body_first: bool = False) -> bytes:
    out: dict[str, Any] = {"body": body} if body_first else {}
    out.update(pairs)
    out["body"] = body
    return orjson.dumps(out)


@pytest.mark.parametrize("type_", sorted(FIELDS))
def test_fast_path_agrees_with_the_checked_path_in_envelopes(type_: str) -> None:
    fast_taken = 0
    for n, body in enumerate(bodies(type_)):
        line = enveloped(ENVELOPES[0], body)
        assert same(protocol.decode(line), protocol.decode_checked(line)), line
        fast_taken += _try_envelope(line) is not None
        if n % 7 == 0:  # every odd envelope, around a sample of the bodies
            for pairs in ENVELOPES[1:]:
                for body_first in (False, True):
                    line = enveloped(pairs, body, body_first)
                    assert same(protocol.decode(line), protocol.decode_checked(line)), line
    assert fast_taken > 0


@pytest.mark.parametrize(
    "line",
    [
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats"},"body":{"type":"get_job"}}',
        b'{"src":"c1","dest":"n1","body":"get_stats"}',
        b'{"src":"c1","dest":"n1","body":null}',
        b'{"src":"c1","dest":"n1"}',
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats"}} x',
        b'{"src":"c1","src":"c2","dest":"n1","body":{"type":"get_stats","msg_id":2}}',
        b'{"src":"\\ud800","dest":"n1","body":{"type":"get_stats"}}',
        b'{"src":"c1","dest":"n1","body":{"type":"update_status","job_id":"\xff"}}',
        b'{"src":"c1","dest":"n1","body":{"type":"subscribe","msg_id":1}}',
        b'{"src":"c1","dest":"n1","body":{"body":{"type":"get_stats"}}}',
        b' {"src":"c1","dest":"n1","body":{"type":"get_stats"}}',
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats"}} ',
        b'{"src":"c1","dest":"n1","body": {"type":"get_stats"} }',
        b'{"src":"c\\"1","dest":"n1","body":{"type":"get_stats","msg_id":1}}',
        b'{"src":"c\\u0041","dest":"n1","body":{"type":"get_stats","msg_id":1}}',
        b'{"src":"c\t1","dest":"n1","body":{"type":"get_stats","msg_id":1}}',
        b'{"src":"\xc3\xa9","dest":"n1","body":{"type":"get_stats","msg_id":1}}',
        b'{"src":"\xff","dest":"n1","body":{"type":"get_stats","msg_id":1}}',
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats"},"dest":"n2"}',
        b'{"src":"c1","dest":"n1","src":"c2","body":{"type":"get_stats"}}',
        b'{"src":"c1","dest":null,"body":{"type":"get_stats"}}',
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats"}}}',
        b'{"src":"c1","dest":"n1","body":{"type":"get_stats","x":{"body":1}}}',
        b'{"src":"c1","dest":"n1","body":[1]}',
        b'{"src":"c1","dest":"n1","body":}',
        b'{"src":"c1","dest":"n1","body":{"type":"update_status","job_id":"a","status":"running"}}',
    ],
)
def test_odd_envelopes_get_the_same_answer_both_ways(line: bytes) -> None:
    assert same(protocol.decode(line), protocol.decode_checked(line))


def test_an_enveloped_reply_is_the_bytes_of_the_whole_envelope() -> None:
    body = {"type": "job_stats", "in_reply_to": 3, "total": 1, "avg_duration_ms": 2.5}
    for frame in (("monitor", "worker"), (None, "c1"), ("é🙂", None), ('a"b', "x" * 256)):
        src, dest = frame
        whole = {"src": "n1" if src is None else src, "dest": dest, "body": body}
        assert protocol.encode(frame, body, "n1") == orjson.dumps(whole) + b"\n"


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"update_status","job_id":"\xff","status":"running"}',
        b'{"type":"update_status","job_id":"a","status":"running","x":"\xff"}',
        b'{"type":"update_status","job_id":"a\\ud800","status":"running"}',
        b'{"type":"update_status","job_id":"a","status":"running","extra":{"deep":[1,2]}}',
        b'{"type":"update_status","job_id":"a","job_id":"b","status":"running"}',
        b'{"type":"get_stats","msg_id":1,"type":"get_job"}',
        b'  {"type":"get_stats"}  ',
        b'{"type":"get_stats"} trailing',
        b'{"type":"get_stats","msg_id":123456789012345678901234567890}',
        b'{"type":"update_status","job_id":"a","status":"running","progress":1e400}',
        b"",
        b"   ",
        b"x",  # shorter than the envelope test's third byte
        b"{}",
        b"\xef\xbb\xbf{}",
    ],
)
def test_odd_bytes_get_the_same_answer_both_ways(line: bytes) -> None:
    assert same(protocol.decode(line), protocol.decode_checked(line))
