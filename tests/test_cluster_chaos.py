"""Cluster nodes as real processes, over a real Redis (and Sentinel): kill -9 and
SIGSTOP of the leader with deadlines pending, a node killed under load, a Redis
primary failed over. Every acknowledged event is counted and looked for."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from helpers import LineClient, free_port
from redis_helpers import NodeProcess, RedisServer, Sentinel
from test_notify import Receiver, serving

LEASE_MS = "1000"


@contextlib.contextmanager
def cluster(count: int, *args: str) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        for i in range(count):
            started.append(NodeProcess(f"n{i + 1}", "--lease-ms", LEASE_MS, *args).start())
        yield started
    finally:
        for node in started:
            node.stop()


async def request(node: NodeProcess, body: dict[str, Any]) -> dict[str, Any]:
    conn = await LineClient.connect(node.port)
    try:
        return await conn.request(body)
    finally:
        await conn.close()


async def leader_among(nodes: list[NodeProcess], timeout_s: float = 30) -> NodeProcess:
    """The node every live node names as leader (polled until they agree)."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = {(await request(n, {"type": "get_cluster"}))["leader"] for n in nodes}
        if len(names) == 1 and None not in names:
            (name,) = names
            return next(n for n in nodes if n.name == name)
        assert time.monotonic() < deadline, f"no agreed leader: {names}"
        await asyncio.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[Receiver]:
    async with serving(Receiver(), "/hook") as receiver:
        yield receiver


async def alerts_pushed(conn: LineClient, count: int) -> list[dict[str, Any]]:
    return [(await conn.read(timeout=30))["alert"] for _ in range(count)]


async def test_leader_killed_with_deadlines_pending_a_new_leader_fires_them(
    redis_server: RedisServer,
) -> None:
    async with webhook() as receiver:
        with cluster(
            3, "--redis", redis_server.url, "--webhook", receiver.url, "--lost-grace-ms", "500"
        ) as nodes:
            leader = await leader_among(nodes)
            survivors = [n for n in nodes if n is not leader]
            watcher = await LineClient.connect(survivors[0].port)
            await watcher.request({"type": "subscribe", "topics": ["alerts"]})
            # A worker on the leader reports a registered job running; heartbeats through a follower.
            worker = await LineClient.connect(leader.port)
            await worker.request({"type": "register_job", "job_id": "w", "max_runtime_ms": 600_000})
            assert (
                await worker.request({"type": "update_status", "job_id": "w", "status": "running"})
            )["type"] == "status_updated"
            for i in range(5):
                beat = await request(
                    survivors[1], {"type": "heartbeat", "job_id": f"d{i}", "ttl_ms": 2000}
                )
                assert beat["type"] == "heartbeat_ok"
            leader.kill9()  # before any deadline: only a new leader can fire them
            fired = await alerts_pushed(watcher, 6)
            kinds = sorted((a["job_id"], a["kind"]) for a in fired)
            assert kinds == [
                *((f"d{i}", "missed_heartbeat") for i in range(5)),
                ("w", "worker_lost"),
            ]
            ids = sorted(a["id"] for a in fired)
            assert len(set(ids)) == 6
            for node in survivors:
                listed = (await request(node, {"type": "get_alerts"}))["alerts"]
                assert sorted(a["id"] for a in listed) == ids
            delivered: set[int] = set()
            while delivered != set(ids):  # at least once each, from the new leader
                payload = await asyncio.wait_for(receiver.received.get(), 30)
                delivered.add(payload["id"])
            info = await request(survivors[0], {"type": "get_cluster"})
            assert info["leader"] in {n.name for n in survivors}
            assert info["leader_changes_seen"] >= 1
            await watcher.close()
            with contextlib.suppress(Exception):
                await worker.close()


async def test_a_leader_frozen_past_its_lease_fires_and_sends_nothing_when_it_wakes(
    redis_server: RedisServer,
) -> None:
    async with webhook() as receiver:
        with cluster(2, "--redis", redis_server.url, "--webhook", receiver.url) as nodes:
            leader = await leader_among(nodes)
            (other,) = [n for n in nodes if n is not leader]
            beat = await request(other, {"type": "heartbeat", "job_id": "frozen", "ttl_ms": 2500})
            assert beat["type"] == "heartbeat_ok"
            leader.signal(signal.SIGSTOP)  # frozen with the deadline pending
            try:
                first = await asyncio.wait_for(receiver.received.get(), 30)
                assert first["job_id"] == "frozen" and first["kind"] == "missed_heartbeat"
                assert (await request(other, {"type": "get_cluster"}))["role"] == "leader"
            finally:
                leader.signal(signal.SIGCONT)
            # It wakes knowing its lease is gone: it steps down, fires and sends nothing.
            deadline = time.monotonic() + 30
            while (await request(leader, {"type": "get_cluster"}))["role"] != "follower":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            marker = await request(
                other, {"type": "job_failed", "job_id": "marker", "retries": 9, "error": "m"}
            )
            assert marker["type"] == "alert_sent"
            nxt = await asyncio.wait_for(receiver.received.get(), 30)
            assert nxt["job_id"] == "marker"  # nothing came in between: no second send
            for node in nodes:
                conn = await LineClient.connect(node.port)
                for _ in range(300):  # its view: the same two alerts, once each
                    listed = (await conn.request({"type": "get_alerts"}))["alerts"]
                    if len(listed) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert sorted(a["job_id"] for a in listed) == ["frozen", "marker"]
                await conn.close()
            assert "no longer leader" in leader.stderr


async def test_a_node_killed_under_load_loses_no_acknowledged_event(
    redis_server: RedisServer,
) -> None:
    with cluster(2, "--redis", redis_server.url) as (survivor, victim):
        acked: list[str] = []

        sent = [0]

        async def load(conn_no: int) -> None:
            """Keep two windows of 200 events in flight until the node dies."""
            conn = await LineClient.connect(victim.port)
            next_id = 0

            async def window() -> None:
                nonlocal next_id
                bodies = [
                    {
                        "type": "job_completed",
                        "msg_id": i,
                        "job_id": f"c{conn_no}-{i}",
                        "duration_ms": i,
                    }
                    for i in range(next_id, next_id + 200)
                ]
                next_id += 200
                await conn.send(*bodies)
                sent[0] += len(bodies)

            with contextlib.suppress(Exception):
                await window()
                await window()
                while True:
                    for _ in range(200):
                        reply = await conn.read(timeout=30)
                        assert reply["type"] == "job_completed"
                        acked.append(reply["job_id"])
                    await window()
            with contextlib.suppress(Exception):
                await conn.close()

        loaders = [asyncio.ensure_future(load(c)) for c in range(4)]
        while len(acked) < 2000:
            await asyncio.sleep(0.005)
        victim.kill9()
        await asyncio.gather(*loaders)
        assert len(acked) >= 2000 and sent[0] > len(acked), (sent[0], len(acked))
        assert len(set(acked)) == len(acked)  # each reply once
        # The survivor applies everything in the log, then has every acknowledged job.
        client = redis.Redis.from_url(redis_server.url)
        ((last_id, _),) = client.xrevrange("{jobmon}:log", count=1)
        client.close()
        conn = await LineClient.connect(survivor.port)
        deadline = time.monotonic() + 30
        while (await conn.request({"type": "get_cluster"}))["position"] < last_id.decode():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        replies = await conn.pipeline([{"type": "get_job", "job_id": job_id} for job_id in acked])
        assert [r["job"]["status"] for r in replies] == ["completed"] * len(acked)
        await conn.close()


async def test_a_sentinel_failover_loses_no_acknowledged_event(tmp_path: Path) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replicas = [
        RedisServer(
            tmp_path / f"replica{i}", None, "--replicaof", "127.0.0.1", str(primary.port)
        ).start()
        for i in range(2)
    ]
    sentinels: list[Sentinel] = []
    try:
        check = redis.Redis(port=primary.port)
        deadline = time.monotonic() + 30
        while [check.info("replication").get(f"slave{i}", {}).get("state") for i in (0, 1)] != [
            "online"
        ] * 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        check.close()
        sentinels = [Sentinel(tmp_path / f"sentinel{i}", primary.port).start() for i in range(3)]
        where = ",".join(f"127.0.0.1:{s.port}" for s in sentinels)
        with cluster(
            2, "--redis-sentinel", where, "--redis-master", "jm", "--redis-min-replicas", "1"
        ) as nodes:
            acked: dict[str, dict[str, Any]] = {}

            async def send_all(first: int, last: int) -> None:
                conn = await LineClient.connect(nodes[first % 2].port)
                for i in range(first, last):
                    event = {
                        "type": "job_completed",
                        "msg_id": i,
                        "job_id": f"s{i}",
                        "duration_ms": i,
                        "event_id": f"ev-{i}",
                    }
                    while True:  # a client's retry: the same event_id until acknowledged
                        reply = await conn.request(event)
                        if reply["type"] == "job_completed":
                            acked[event["job_id"]] = reply
                            break
                        assert reply["code"] == 11, reply
                        await asyncio.sleep(0.05)
                await conn.close()

            await send_all(0, 50)
            primary.kill9()  # Sentinel promotes a replica; the nodes follow it
            await send_all(50, 100)
            assert len(acked) == 100
            for node in nodes:
                conn = await LineClient.connect(node.port)
                deadline = time.monotonic() + 30
                while True:
                    replies = await conn.pipeline([{"type": "get_job", "job_id": j} for j in acked])
                    if all(r["type"] == "job" for r in replies):
                        break
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                assert [r["job"]["runs"] for r in replies] == [1] * 100  # each once
                await conn.close()
            changed = await request(nodes[0], {"type": "get_cluster"})
            assert changed["redis"] == "ok"
            ask = redis.Redis(port=sentinels[0].port)
            _, now_primary = ask.sentinel_get_master_addr_by_name("jm")
            ask.close()
            assert now_primary in {r.port for r in replicas}  # the nodes followed the failover
    finally:
        for sentinel in sentinels:
            sentinel.stop()
        for server in (*replicas, primary):
            server.stop()


async def test_redis_stopped_and_restarted_under_node_processes(redis_server: RedisServer) -> None:
    http_port = free_port()
    with cluster(2, "--redis", redis_server.url) as (a, b):
        b.stop()  # b's HTTP port is taken below by a fresh node
        c = NodeProcess("n3", "--lease-ms", LEASE_MS, "--redis", redis_server.url,
                        "--http-port", str(http_port)).start()  # fmt: skip
        try:
            kept = await request(a, {"type": "job_completed", "job_id": "kept", "duration_ms": 5})
            assert kept["type"] == "job_completed"
            redis_server.stop()
            for node in (a, c):
                refused = await request(
                    node, {"type": "update_status", "job_id": "x", "status": "running"}
                )
                assert refused["code"] == 11, refused
                job = await request(node, {"type": "get_job", "job_id": "kept"})
                assert job["job"]["duration_ms"] == 5  # reads answer from the node's state
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{http_port}/api/jobs/x/start") as response,
            ):
                assert response.status == 503
            redis_server.start()  # same port, same append-only file: no node restarts
            for node in (a, c):
                deadline = time.monotonic() + 30
                while (
                    await request(
                        node, {"type": "update_status", "job_id": node.name, "status": "running"}
                    )
                )["type"] == "error":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            for node in (a, c):
                deadline = time.monotonic() + 30
                while True:
                    jobs = (await request(node, {"type": "list_jobs"}))["jobs"]
                    if sorted(j["job_id"] for j in jobs) == ["kept", "n1", "n3"]:
                        break
                    assert time.monotonic() < deadline, jobs
                    await asyncio.sleep(0.05)
        finally:
            c.stop()
