"""Issue 9, what a request may carry: nothing accepted can fail to journal, to
snapshot or to be written back; kept strings are capped; bad zones, header
bytes and times are error 12 / 4xx, never a crash."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import LineClient, Lines, WatchedServer, free_port, http_exchange, proc_status_mb
from jobmon.commands import fields
from jobmon.server import Server

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEPT_ERROR_CHARS = 4096  # KEPT_ERROR_CHARS, spelled out: the README promises it


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nested_values_are_refused_and_the_server_keeps_serving(tmp_path: Path) -> None:
    """Item 1: orjson reads 1,024 levels and writes 254; before, such a value in
    resource_usage killed the store task when it was journaled (exit 1)."""
    data = tmp_path / "data"
    with WatchedServer(data) as server:
        tcp = Lines(server.port)
        for depth in (1, 100, 253, 254, 255, 300, 1000):
            value = nested(depth)
            for head in (
                '{"type":"job_completed","msg_id":1,"job_id":"deep","duration_ms":5,',
                '{"type":"job_failed","msg_id":1,"job_id":"deep","retries":3,',
                '{"type":"update_status","msg_id":1,"job_id":"deep","status":"running",',
            ):
                reply = tcp.ask((head + '"resource_usage":{"x":' + value + "}}").encode())
                assert reply["code"] == 12, (depth, reply)
                assert (
                    "resource_usage.x must be a number, a string, true, false or null"
                    in (reply["text"])
                )
            for line in (
                '{"type":"register_job","msg_id":2,"job_id":"deep","labels":{"a":' + value + "}}",
                '{"type":"job_failed","msg_id":2,"job_id":"deep","arguments":[' + value + "]}",
                '{"type":"register_job","msg_id":2,"job_id":"deep","schedule":' + value + "}",
            ):
                reply = tcp.ask(line.encode())
                assert reply["code"] == 12 and reply["in_reply_to"] == 2, (depth, reply)
        assert tcp.ask(b'{"type":"get_job","msg_id":3,"job_id":"deep"}')["code"] == 20
        # Flat and within the caps: kept and written back as sent.
        usage = {"cpu_percent": 75, "host": "w" * 128, "spot": True, "zone": None}
        reply = tcp.ask(
            orjson.dumps(
                {
                    "type": "job_completed",
                    "job_id": "flat",
                    "duration_ms": 5,
                    "resource_usage": usage,
                }
            )
        )
        assert reply["resource_usage"] == usage
        for bad in (
            {f"k{i}": i for i in range(33)},
            {"k" * 65: 1},
            {"note": "n" * 129},
            {"memory_mb": "big"},
        ):
            line = orjson.dumps({"type": "job_completed", "job_id": "f", "resource_usage": bad})
            assert tcp.ask(line)["code"] == 12, bad
        stats = tcp.ask(b'{"type":"get_stats"}')
        tcp.close()
        assert server.terminate() == 0
    with WatchedServer(data) as restarted:  # the journal replays
        tcp = Lines(restarted.port)
        assert tcp.ask(b'{"type":"get_stats"}') == stats
        assert tcp.ask(b'{"type":"get_job","job_id":"flat"}')["job"]["resource_usage"] == usage
        tcp.close()


async def test_a_record_that_cannot_be_journaled_does_not_stop_the_store(
    start_server: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: should a bad record ever get past validation, it is logged and
    left out of the journal; before, the exception ended the store task."""
    real_usage = fields.usage

    def let_a_set_through(body: dict[str, Any]) -> dict[str, Any]:
        real_usage(body)
        return {"tags": {1, 2}}  # orjson cannot write a set

    async with start_server(data_dir=data_dir) as server:
        client = await LineClient.connect(server.port)
        monkeypatch.setattr(fields, "usage", let_a_set_through)
        reply = await client.request(
            {
                "type": "job_completed",
                "msg_id": 1,
                "job_id": "bad",
                "duration_ms": 5,
                "resource_usage": {"n": "x"},
            }
        )
        assert reply["code"] == 13  # its reply could not be written either
        monkeypatch.setattr(fields, "usage", real_usage)
        after = await client.request(
            {"type": "update_status", "job_id": "good", "status": "running"}
        )
        assert after["type"] == "status_updated"
        await client.close()
    async with start_server(data_dir=data_dir) as restarted:
        assert list(restarted.node.store.jobs) == ["good"]


def test_kept_strings_are_capped(tmp_path: Path) -> None:
    """Item 4: a 500 KB error was kept twice (the job and the alert text)."""
    count, size = 200, 500_000
    with WatchedServer(tmp_path / "data", "--log-level", "error") as server:
        assert server.proc is not None
        tcp = Lines(server.port)
        tcp.ask(b'{"type":"get_stats"}')
        before = proc_status_mb(server.proc.pid, "VmRSS")
        for i in range(count):
            error = f"{i:06d}" + "e" * size
            tcp.send(
                orjson.dumps(
                    {"type": "job_failed", "job_id": f"j{i}", "error": error, "retries": 3}
                )
            )
            reply = tcp.read()
            assert reply["type"] == "alert_sent"
            assert reply["alert"] == "Job failed after 3 retries: " + error[:KEPT_ERROR_CHARS]
        grown = proc_status_mb(server.proc.pid, "VmRSS") - before
        assert grown < 64, f"RSS grew {grown:.0f} MB for {count} failures"
        job = tcp.ask(b'{"type":"get_job","job_id":"j7"}')["job"]
        assert job["error"] == "000007" + "e" * (KEPT_ERROR_CHARS - 6)
        alert = tcp.ask(b'{"type":"get_alerts","limit":1}')["alerts"][0]
        assert len(alert["text"]) == len("Job failed after 3 retries: ") + KEPT_ERROR_CHARS
        # 800 KB of arguments is refused, whole (256 of 4,096 characters were allowed).
        arguments = ["a" * 4096] * 200
        line = orjson.dumps({"type": "job_completed", "job_id": "a", "arguments": arguments})
        reply = tcp.ask(line)
        assert reply["code"] == 12 and "(8192 in all)" in reply["text"]
        tcp.close()


async def test_bad_zones_are_error_12(client: LineClient) -> None:
    """Item 7: a directory of the zone database, a long name or a path was error 13."""
    for zone in ("America", "Etc", "A" * 3000, "/etc/passwd", "../../etc/passwd", "", "Europe/"):
        reply = await client.request(
            {
                "type": "register_job",
                "msg_id": 1,
                "job_id": "z",
                "schedule": {"cron": "0 2 * * *", "tz": zone},
            }
        )
        assert reply["code"] == 12 and "is not an IANA time zone" in reply["text"], zone
        reply = await client.request({"type": "get_analytics", "msg_id": 2, "tz": zone})
        assert reply["code"] == 12 and reply["text"].startswith("unknown time zone"), zone
    reply = await client.request(
        {
            "type": "register_job",
            "msg_id": 1,
            "job_id": "z",
            "schedule": {"cron": "0 " * 200, "tz": "UTC"},
        }
    )
    assert reply["code"] == 12 and "at most 256" in reply["text"]
    assert (await client.request({"type": "get_stats"}))["total"] == 0


def test_odd_header_bytes_and_deep_bodies_are_4xx(tmp_path: Path) -> None:
    """Item 7: Bearer \\xff and a Cookie with invalid bytes were 500 (no token
    check); an unknown field nested 300 deep was 500 over HTTP (TCP answered)."""
    port = free_port()
    with WatchedServer(tmp_path / "data", "--http-port", str(port), "--token", "t") as server:
        for header in (
            b"Authorization: Bearer \xff",
            b"Authorization: Bearer t\xc3",
            b'Cookie: jobmon_session=\xff\xfe; x="\xc0',
        ):
            answer = http_exchange(
                port,
                b"GET /api/stats HTTP/1.1\r\nHost: x\r\n"
                + header
                + b"\r\nConnection: close\r\n\r\n",
            )
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        deep = b'{"type":"get_stats","x":' + nested(300).encode() + b"}"
        for body in (deep, b"[" + deep + b"]"):
            answer = http_exchange(
                port,
                b"POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            )
            head, _, reply = answer.partition(b"\r\n\r\n")
            assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 200 ")), head
            assert b'"code":12' in reply and b"nested more than 254 levels" in reply, reply
        tcp = Lines(server.port)
        assert tcp.ask(b'{"type":"auth","token":"t"}')["type"] == "auth_ok"
        assert tcp.ask(deep)["type"] == "job_stats"
        tcp.close()
        server.terminate()
        assert '"logger":"jobmon.http"' not in server.stderr  # no bug was logged


async def test_times_outside_iso_8601_are_refused(client: LineClient) -> None:
    """Item 9: ttl_ms 2**53 gave deadline_at "287453-09-13T..."; a pause until
    "0001-01-01T00:00:00+14:00" gave "0-12-31T..."."""
    huge = 2**53
    for body in (
        {"type": "heartbeat", "job_id": "t", "ttl_ms": huge},
        {"type": "heartbeat", "job_id": "t", "ttl_ms": 316_224_000_001},
        {"type": "register_job", "job_id": "t", "grace_ms": huge},
        {"type": "register_job", "job_id": "t", "max_runtime_ms": huge},
        {"type": "register_job", "job_id": "t", "stall_ms": huge},
        {"type": "register_job", "job_id": "t", "lost_grace_ms": huge},
    ):
        reply = await client.request({**body, "msg_id": 1})
        assert (
            reply["code"] == 12 and "between" in reply["text"] and "316224000000" in reply["text"]
        )
    beat = await client.request({"type": "heartbeat", "job_id": "t", "ttl_ms": 316_224_000_000})
    assert ISO.match(beat["deadline_at"]), beat
    for until in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-01:00"):
        reply = await client.request(
            {"type": "pause_job", "msg_id": 2, "job_id": "t", "until": until}
        )
        assert reply["code"] == 12 and "between 0001-01-01T00:00:00Z and" in reply["text"], until
    for until, shown in (
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999+00:00", "9999-12-31T23:59:59.999Z"),
    ):
        reply = await client.request({"type": "pause_job", "job_id": "t", "until": until})
        assert reply["until"] == shown
    record = (await client.request({"type": "get_job", "job_id": "t"}))["job"]
    times = [
        record["created_at"],
        record["monitor"]["paused_until"],
        *record["monitor"]["deadlines"].values(),
    ]
    assert all(ISO.match(t) for t in times), times


async def test_short_fields_that_are_echoed_are_capped(client: LineClient, server: Server) -> None:
    """node_id is the src of every enveloped reply, addresses are echoed, q is a search."""
    for body, text in (
        ({"type": "init", "node_id": "n" * 257}, "at most 256 characters"),
        ({"type": "init", "node_id": "n1", "node_ids": ["n"] * 1025}, "at most 1024 strings"),
        ({"type": "list_jobs", "q": "q" * 257}, "at most 256 characters"),
    ):
        reply = await client.request(body)
        assert reply["code"] == 12 and text in reply["text"], reply
    reply = await client.request({"src": "s" * 257, "dest": "m", "body": {"type": "get_stats"}})
    assert reply == {
        "type": "error",
        "code": 12,
        "text": "the envelope's src and dest must be at most 256 characters",
    }
    assert server.node.node_id == "monitor"


async def test_deep_values_msgspec_cannot_skip_keep_the_connection(client: LineClient) -> None:
    """Found by the fuzz test: msgspec raised RecursionError (not one of its
    errors) skipping a deep value ahead of ``type``, and the connection died."""
    deep = '{"k":' * 1000 + "1" + "}" * 1000
    for line in (
        '{"src":"w","dest":"m","body":{"type":"get_stats","x":' + deep + "}}",
        '{"x":' + deep + ',"type":"get_stats","msg_id":4}',
    ):
        await client.send_raw(line.encode() + b"\n")
        reply = await client.read()
        assert reply.get("body", reply)["type"] == "job_stats", reply
    assert (await client.request({"type": "get_stats", "msg_id": 5}))["in_reply_to"] == 5
