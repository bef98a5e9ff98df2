"""Several nodes over one real Redis, in this process: one monitor, whichever node is asked.

Node subprocesses killed, frozen and failed over are in tests/test_cluster_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from helpers import SEED_SAMPLE_CASES, LineClient, free_port
from jobmon.config import Config
from jobmon.model import snapshot_default
from jobmon.server import Server, running
from redis_helpers import RedisServer, make_certificates
from test_notify import Receiver, serving

LEASE_MS = 1000


@pytest.fixture
def redis_server(tmp_path: Path) -> Any:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def node_config(redis_url: str, name: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "port": 0,
        "redis": redis_url,
        "node_id": name,
        "lease_ms": LEASE_MS,
        "lost_grace_ms": 300,
    }
    settings.update(overrides)
    return Config(**settings)


@contextlib.asynccontextmanager
async def nodes(redis_url: str, count: int, **overrides: Any) -> AsyncIterator[list[Server]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running(node_config(redis_url, f"n{i + 1}", **overrides))
            )
            for i in range(count)
        ]
        await until(lambda: any(s.cluster is not None and s.cluster.lease.held() for s in servers))
        yield servers


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Wait for a condition of the nodes' state (checked every 10 ms), or fail."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def converged(servers: list[Server]) -> None:
    """Every node has applied everything any node has."""

    def same() -> bool:
        positions = [s.cluster.position for s in servers if s.cluster is not None]
        return len(set(positions)) == 1 and all(not s.cluster.engine.entries for s in servers)  # type: ignore[union-attr]

    await until(same)


def leader_of(servers: list[Server]) -> Server:
    (leader,) = [s for s in servers if s.cluster is not None and s.cluster.lease.held()]
    return leader


async def ask(server: Server, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    conn = await LineClient.connect(server.port)
    try:
        return await conn.pipeline(list(bodies))
    finally:
        await conn.close()


async def test_the_seed_replies_are_byte_for_byte_the_same_on_every_node(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 2) as servers:
        for server in servers:
            conn = await LineClient.connect(server.port)
            for request, expected in SEED_SAMPLE_CASES:
                await conn.send(request)
                assert (
                    await conn.read_line()
                    == orjson.dumps({"src": "monitor", "dest": "worker", "body": expected}) + b"\n"
                )
                await conn.send(request["body"])
                assert await conn.read_line() == orjson.dumps(expected) + b"\n"
            await conn.close()


async def test_events_through_different_nodes_end_in_one_state(redis_server: RedisServer) -> None:
    async with nodes(redis_server.url, 3) as servers:

        async def report(server: Server, worker: int) -> LineClient:
            bodies: list[dict[str, Any]] = []
            for i in range(300):
                job_id = f"job-{i % 17}"
                kind = (i + worker) % 4
                if kind == 0:
                    bodies.append(
                        {
                            "type": "update_status",
                            "msg_id": i,
                            "job_id": job_id,
                            "status": "running",
                            "progress": i % 100,
                        }
                    )
                elif kind == 1:
                    bodies.append(
                        {"type": "job_completed", "msg_id": i, "job_id": job_id, "duration_ms": i}
                    )
                elif kind == 2:
                    bodies.append(
                        {
                            "type": "job_failed",
                            "msg_id": i,
                            "job_id": job_id,
                            "retries": i % 4,
                            "error": f"w{worker}",
                        }
                    )
                else:
                    bodies.append(
                        {"type": "heartbeat", "msg_id": i, "job_id": job_id, "ttl_ms": 600_000}
                    )
            # Kept open until the end: a closed worker connection is a state change too.
            conn = await LineClient.connect(server.port)
            replies = await conn.pipeline(bodies)
            assert [r["in_reply_to"] for r in replies] == list(range(300))
            assert not [r for r in replies if r["type"] == "error" and r["code"] != 22]
            return conn

        workers = await asyncio.gather(*(report(servers[w % 3], w) for w in range(6)))
        await converged(servers)
        views = []
        for server in servers:
            stats, jobs, alerts = await ask(
                server,
                {"type": "get_stats"},
                {"type": "list_jobs", "limit": 1000},
                {"type": "get_alerts", "state": "all", "limit": 1000},
            )
            views.append((stats, jobs, alerts))
        assert views[0][0]["total"] == 17
        assert views[0] == views[1] == views[2]
        snapshots = [
            orjson.dumps(s.node.store.to_snapshot(), default=snapshot_default) for s in servers
        ]
        assert snapshots[0] == snapshots[1] == snapshots[2]
        for conn in workers:
            await conn.close()


async def test_a_connection_reads_its_own_writes_and_other_nodes_see_them_soon(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 2) as (a, b):
        watcher = await LineClient.connect(b.port)
        assert (await watcher.request({"type": "subscribe", "topics": ["events"]}))[
            "type"
        ] == "subscribed"
        write, read = await ask(
            a,
            {
                "type": "update_status",
                "msg_id": 1,
                "job_id": "rw",
                "status": "running",
                "progress": 42,
            },
            {"type": "get_job", "msg_id": 2, "job_id": "rw"},
        )
        assert write["type"] == "status_updated"
        assert read["job"]["progress"] == 42  # pipelined behind its write: sees it
        event = await watcher.read()
        assert event["type"] == "event"
        assert event["event"]["job_id"] == "rw" and event["event"]["progress"] == 42
        (seen,) = await ask(b, {"type": "get_job", "job_id": "rw"})
        assert seen["job"]["progress"] == 42
        await watcher.close()


async def test_one_node_fires_a_deadline_and_every_subscriber_gets_the_alert_once(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 3) as servers:
        watchers = []
        for server in servers:
            conn = await LineClient.connect(server.port)
            await conn.request({"type": "subscribe", "topics": ["alerts"]})
            watchers.append(conn)
        follower = next(s for s in servers if not s.cluster.lease.held())  # type: ignore[union-attr]
        (beat,) = await ask(
            follower, {"type": "heartbeat", "msg_id": 1, "job_id": "hb", "ttl_ms": 300}
        )
        assert beat["type"] == "heartbeat_ok"
        pushed = [await w.read() for w in watchers]
        ids = {p["alert"]["id"] for p in pushed}
        assert len(ids) == 1 and all(p["alert"]["kind"] == "missed_heartbeat" for p in pushed)
        await converged(servers)
        for server in servers:
            (alerts,) = await ask(server, {"type": "get_alerts"})
            assert [a["id"] for a in alerts["alerts"]] == list(ids)
        # Nothing more is pushed: send a marker event, which each subscriber sees next.
        (marker,) = await ask(
            servers[0], {"type": "job_failed", "job_id": "marker", "retries": 9, "error": "m"}
        )
        for w in watchers:
            nxt = await w.read()
            assert nxt["alert"]["job_id"] == "marker"
            await w.close()


async def test_an_event_sent_again_through_another_node_applies_once(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 2) as (a, b):
        event = {
            "type": "job_completed",
            "msg_id": 7,
            "job_id": "once",
            "duration_ms": 50,
            "event_id": "evt-1",
        }
        (first,) = await ask(a, event)
        (again,) = await ask(b, {**event, "duration_ms": 70})
        assert first == again
        await converged([a, b])
        for server in (a, b):
            (job,) = await ask(server, {"type": "get_job", "job_id": "once"})
            assert job["job"]["runs"] == 1 and job["job"]["duration_ms"] == 50


async def test_get_cluster_readyz_and_metrics(redis_server: RedisServer) -> None:
    ports = [free_port(), free_port()]
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running(node_config(redis_server.url, f"h{i}", http_port=p))
            )
            for i, p in enumerate(ports)
        ]
        await until(lambda: any(s.cluster.lease.held() for s in servers))  # type: ignore[union-attr]
        leader = leader_of(servers)
        for server in servers:
            (info,) = await ask(server, {"type": "get_cluster", "msg_id": 3})
            assert info["type"] == "cluster" and info["in_reply_to"] == 3
            assert info["node_id"] == server.cluster.name  # type: ignore[union-attr]
            assert info["leader"] == leader.cluster.name  # type: ignore[union-attr]
            assert info["nodes"] == ["h0", "h1"]
            assert info["role"] == ("leader" if server is leader else "follower")
            assert info["caught_up"] is True and info["redis"] == "ok"
            assert info["position"].count("-") == 1
        async with aiohttp.ClientSession() as session:
            for server, port in zip(servers, ports, strict=True):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == 200
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                role = 1 if server is leader else 0
                assert f'jobmon_cluster_leader{{node_id="{server.cluster.name}"}} {role}.0' in text  # type: ignore[union-attr]
                assert (
                    "jobmon_cluster_lag_seconds" in text
                    and "jobmon_cluster_leader_changes_total" in text
                )


async def test_worker_lost_when_its_node_connection_closes_unless_it_reports_through_another(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 2) as (a, b):
        watcher = await LineClient.connect(a.port)
        await watcher.request({"type": "subscribe", "topics": ["alerts"]})
        for job_id in ("lost", "moved"):
            await ask(a, {"type": "register_job", "job_id": job_id, "max_runtime_ms": 600_000})
        worker = await LineClient.connect(b.port)
        for job_id in ("lost", "moved"):
            assert (
                await worker.request(
                    {"type": "update_status", "job_id": job_id, "status": "running"}
                )
            )["type"] == "status_updated"
        await worker.close()  # node b's connection closes: both jobs lose their worker
        # "moved" reports in through node a within the grace (300 ms); "lost" never does.
        mover = await LineClient.connect(a.port)
        moved = await mover.request(
            {"type": "update_status", "job_id": "moved", "status": "running", "progress": 5}
        )
        assert moved["type"] == "status_updated"
        alert = (await watcher.read())["alert"]
        assert alert["kind"] == "worker_lost" and alert["job_id"] == "lost"
        await converged([a, b])
        for server in (a, b):
            (alerts,) = await ask(server, {"type": "get_alerts", "state": "firing"})
            assert [x["job_id"] for x in alerts["alerts"]] == ["lost"]
        await watcher.close()
        await mover.close()


async def test_a_joining_node_loads_the_snapshot_and_the_log_stays_bounded(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server.url, 2, compact_min_bytes=4000) as servers:
        for round_ in range(8):
            await ask(
                servers[round_ % 2],
                *(
                    {"type": "job_completed", "job_id": f"j{i}", "duration_ms": round_}
                    for i in range(200)
                ),
            )
        leader = leader_of(servers)
        await until(lambda: leader.cluster.snapshots >= 2)  # type: ignore[union-attr]
        await converged(servers)
        client = redis.Redis.from_url(redis_server.url)
        # 8 rounds of 200 events: trimmed to the last snapshot once every node is past it.
        await until(lambda: leader.cluster.trim_goal is None)  # type: ignore[union-attr]
        assert client.xlen("{jobmon}:log") < 8
        assert client.get("{jobmon}:snapshot") is not None
        client.close()
        async with running(node_config(redis_server.url, "late")) as late:
            assert late.cluster is not None and late.cluster.caught_up
            assert late.cluster.snapshot_bytes > 0  # it started from the snapshot
            await converged([*servers, late])
            (stats,) = await ask(late, {"type": "get_stats"})
            (expected,) = await ask(servers[0], {"type": "get_stats"})
            assert stats == expected and stats["total"] == 200


async def test_writes_are_refused_while_redis_is_down_and_resume_when_it_is_back(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    http_port = free_port()
    async with running(node_config(redis_server.url, "solo", http_port=http_port)) as server:
        (before,) = await ask(
            server, {"type": "job_completed", "msg_id": 1, "job_id": "kept", "duration_ms": 5}
        )
        assert before["type"] == "job_completed"
        redis_server.stop()
        conn = await LineClient.connect(server.port)
        started = time.monotonic()
        refused = await conn.request(
            {"type": "update_status", "msg_id": 2, "job_id": "x", "status": "running"}
        )
        waited = time.monotonic() - started
        assert refused["type"] == "error" and refused["code"] == 11, refused
        assert "temporarily unavailable" in refused["text"]
        assert waited < 15  # answered, never hanging (the bar, ~2 s, is measured in bench/)
        # Reads answer from this node's state.
        assert (await conn.request({"type": "get_job", "msg_id": 3, "job_id": "kept"}))["job"][
            "duration_ms"
        ] == 5
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{http_port}/api/jobs/x/start") as response,
        ):
            assert response.status == 503
            assert (await response.json())["error"]["code"] == 11
        redis_server.start()  # the same port and append-only file
        deadline = time.monotonic() + 30
        while True:
            reply = await conn.request(
                {"type": "update_status", "msg_id": 4, "job_id": "x", "status": "running"}
            )
            if reply["type"] != "error":
                break
            assert reply["code"] == 11 and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        job = (await conn.request({"type": "get_job", "msg_id": 5, "job_id": "kept"}))["job"]
        assert job["duration_ms"] == 5
        (info,) = await ask(server, {"type": "get_cluster"})
        assert info["redis"] == "ok"
        await conn.close()


async def test_webhooks_are_sent_by_the_leader_once_with_the_alert_id(
    redis_server: RedisServer,
) -> None:
    async with (
        serving(Receiver(), "/hook") as receiver,
        nodes(redis_server.url, 3, webhooks=[receiver.url]) as servers,
    ):
        (fired,) = await ask(
            servers[1], {"type": "job_failed", "job_id": "w", "retries": 5, "error": "boom"}
        )
        assert fired["type"] == "alert_sent"
        payload = await asyncio.wait_for(receiver.received.get(), 30)
        assert payload["job_id"] == "w" and payload["state"] == "firing"
        await until(lambda: all(not s.cluster.outbox.pending for s in servers))  # type: ignore[union-attr]
        (alerts,) = await ask(servers[2], {"type": "get_alerts"})
        assert [a["id"] for a in alerts["alerts"]] == [payload["id"]]
        # Confirmed through the log on every node: nothing more is sent.
        (marker,) = await ask(
            servers[0], {"type": "job_failed", "job_id": "m", "retries": 5, "error": "x"}
        )
        nxt = await asyncio.wait_for(receiver.received.get(), 30)
        assert nxt["job_id"] == "m"
        assert receiver.received.empty()


async def test_a_new_leader_sends_what_the_old_one_had_not_confirmed(
    redis_server: RedisServer,
) -> None:
    async with serving(Receiver(fail_first=10**9), "/hook") as receiver:
        config = {"webhooks": [receiver.url], "notify_backoff_s": 0.05}
        first = running(node_config(redis_server.url, "old", **config))
        old = await first.__aenter__()
        try:
            async with running(node_config(redis_server.url, "new", **config)) as new:
                await until(lambda: old.cluster.lease.held())  # type: ignore[union-attr]
                (fired,) = await ask(new, {"type": "job_failed", "job_id": "u", "retries": 9})
                assert fired["type"] == "alert_sent"
                await until(lambda: receiver.posts >= 2)  # the leader tries, and is refused
                await first.__aexit__(None, None, None)  # it stops without having sent it
                first = None
                receiver.fail_first = 0
                payload = await asyncio.wait_for(receiver.received.get(), 30)
                assert payload["job_id"] == "u" and payload["state"] == "firing"
                assert new.cluster.lease.held()  # type: ignore[union-attr]
                await until(lambda: not new.cluster.outbox.pending)  # type: ignore[union-attr]
        finally:
            if first is not None:
                await first.__aexit__(None, None, None)


async def test_under_a_token_nothing_is_proposed_before_auth(redis_server: RedisServer) -> None:
    async with nodes(redis_server.url, 2, token="s3cret") as (a, b):
        conn = await LineClient.connect(a.port)
        refused, ok, applied = await conn.pipeline(
            [
                {"type": "update_status", "msg_id": 1, "job_id": "t", "status": "running"},
                {"type": "auth", "msg_id": 2, "token": "s3cret"},
                {"type": "update_status", "msg_id": 3, "job_id": "t2", "status": "running"},
            ]
        )
        assert refused["code"] == 14 and ok["type"] == "auth_ok"
        assert applied["type"] == "status_updated"
        await conn.close()
        await converged([a, b])
        assert sorted(b.node.store.jobs) == ["t2"]


async def test_nodes_reach_redis_over_tls(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "tls")
    with RedisServer(tmp_path / "redis-tls", tls=tls) as secure:
        assert secure.url.startswith("rediss://")
        async with nodes(secure.url, 2) as (a, b):
            (wrote,) = await ask(a, {"type": "job_completed", "job_id": "tls", "duration_ms": 3})
            assert wrote["type"] == "job_completed"
            await converged([a, b])
            (seen,) = await ask(b, {"type": "get_job", "job_id": "tls"})
            assert seen["job"]["duration_ms"] == 3
        # A node that does not trust the server's certificate does not start.
        other_ca = make_certificates(tmp_path / "other")["ca"]
        wrong = secure.url.replace(str(tls["ca"]), str(other_ca))
        with pytest.raises(OSError, match="unreachable"):
            async with running(node_config(wrong, "untrusting")):
                pass
