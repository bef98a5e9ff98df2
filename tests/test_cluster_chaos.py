"""Cluster nodes as real processes, over a real Redis (and Sentinel): kill -9 and
SIGSTOP of the leader with deadlines pending, a follower frozen past its lease
(judged gone: its workers keep their jobs, the log keeps what it has not read)
or for good (forgotten: it stops rather than diverge), a node killed under load,
a Redis primary failed over, Redis stopped and started. Every acknowledged
event is counted and looked for.

Tests that do not stop Redis share one (a cluster name each)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from cluster_helpers import HTTP_TIMEOUT, Where, eventually, posts, redis_client, stream_id
from helpers import LineClient, free_port
from redis_helpers import (  # noqa: F401 (the fixtures)
    LEASE_MS,
    NodeProcess,
    RedisServer,
    Sentinel,
    cluster,
    leader_among,
    request,
    shared_redis_fixture,
    where_fixture,
)


async def alerts_pushed(conn: LineClient, count: int) -> list[dict[str, Any]]:
    return [(await conn.read(timeout=30))["alert"] for _ in range(count)]


async def listed_alerts(node: NodeProcess, count: int) -> list[dict[str, Any]]:
    """The node's open alerts, once it lists ``count`` of them."""
    reply = await eventually(
        lambda: request(node, {"type": "get_alerts"}),
        lambda r: len(r["alerts"]) == count,
        f"node {node.name} to list {count} alerts",
    )
    return list(reply["alerts"])


async def test_leader_killed_with_deadlines_pending_a_new_leader_fires_them(where: Where) -> None:
    async with posts() as box:
        hooks = [["--webhook", box.target(f"n{i + 1}")] for i in range(3)]
        with cluster(3, *where.flags(), "--lost-grace-ms", "500", per_node=hooks) as nodes:
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
                    survivors[1], {"type": "heartbeat", "job_id": f"d{i}", "ttl_ms": 1000}
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
                path, payload = await box.next(f"webhooks for {sorted(set(ids) - delivered)}")
                assert path != f"/{leader.name}"
                delivered.add(payload["id"])
            info = await request(survivors[0], {"type": "get_cluster"})
            assert info["leader"] in {n.name for n in survivors}
            assert info["leader_changes_seen"] >= 1
            await watcher.close()
            with contextlib.suppress(Exception):
                await worker.close()


async def test_a_leader_frozen_past_its_lease_fires_and_sends_nothing_when_it_wakes(
    where: Where,
) -> None:
    async with posts() as box:
        hooks = [["--webhook", box.target(f"n{i + 1}")] for i in range(2)]
        with cluster(2, *where.flags(), per_node=hooks) as nodes:
            leader = await leader_among(nodes)
            (other,) = [n for n in nodes if n is not leader]
            beat = await request(other, {"type": "heartbeat", "job_id": "frozen", "ttl_ms": 1500})
            assert beat["type"] == "heartbeat_ok"
            leader.signal(signal.SIGSTOP)  # frozen with the deadline pending
            try:
                path, first = await box.next("the new leader's webhook")
                assert path == f"/{other.name}"
                assert first["job_id"] == "frozen" and first["kind"] == "missed_heartbeat"
                assert (await request(other, {"type": "get_cluster"}))["role"] == "leader"
            finally:
                leader.signal(signal.SIGCONT)
            # It wakes knowing its lease is gone: it steps down, fires and sends nothing.
            await eventually(
                lambda: request(leader, {"type": "get_cluster"}),
                lambda info: info["role"] == "follower",
                "the woken node to step down",
            )
            marker = await request(
                other, {"type": "job_failed", "job_id": "marker", "retries": 9, "error": "m"}
            )
            assert marker["type"] == "alert_sent"
            _, nxt = await box.next("the marker's webhook")
            assert nxt["job_id"] == "marker"  # nothing came in between: no second send
            for node in nodes:  # its view: the same two alerts, once each
                listed = await listed_alerts(node, 2)
                assert sorted(a["job_id"] for a in listed) == ["frozen", "marker"]
            await leader.logged("no longer leader")  # its lease task, once it runs again
            assert set(box.attempts) == {f"/{other.name}"}


def log_length(where: Where) -> int:
    with redis_client(where.url) as client:
        return int(client.xlen(where.log_key))


async def trimmed_as_far_as_it_goes(
    where: Where, leader: NodeProcess, snapshot: tuple[int, int]
) -> None:
    """Once the leader has stamped a position past the snapshot (its look then
    trims the log, as far as the other nodes allow), and stamped once more."""

    def stamp() -> tuple[int, tuple[int, int]]:
        with redis_client(where.url) as client:
            entries = client.hgetall("{" + where.cluster + "}:nodes").values()
        for value in entries:
            seen_ms, _, about = value.partition(b" ")
            said = orjson.loads(about)
            if said["node_id"] == leader.name:
                return int(seen_ms), stream_id(said["position"])
        raise AssertionError(f"{leader.name} is not in the nodes hash")

    seen_ms, _ = await eventually(
        stamp, lambda s: s[1] >= snapshot, f"the leader to stamp a position past {snapshot}"
    )
    await eventually(stamp, lambda s: s[0] > seen_ms, "the leader's next stamp")


async def test_a_follower_judged_gone_while_frozen_keeps_its_workers_and_misses_nothing(
    where: Where,
) -> None:
    grace = "2000"
    with cluster(
        2, *where.flags(), "--lost-grace-ms", grace, "--compact-min-bytes", "2000"
    ) as nodes:
        leader = await leader_among(nodes)
        (follower,) = [n for n in nodes if n is not leader]
        worker = await LineClient.connect(follower.port)
        await worker.request({"type": "register_job", "job_id": "w", "max_runtime_ms": 600_000})
        ran = await worker.request({"type": "update_status", "job_id": "w", "status": "running"})
        assert ran["type"] == "status_updated"
        follower.signal(signal.SIGSTOP)
        try:
            await leader.logged("node gone")
            # Meanwhile: enough events for a snapshot, which may not trim what it has not read.
            conn = await LineClient.connect(leader.port)
            for round_ in range(3):
                events = [
                    {"type": "job_completed", "job_id": f"j{round_}-{i}", "duration_ms": 1}
                    for i in range(100)
                ]
                assert all(r["type"] == "job_completed" for r in await conn.pipeline(events))
            written = orjson.loads(await leader.logged("snapshot written"))
            await trimmed_as_far_as_it_goes(where, leader, stream_id(written["position"]))
            gone_at = stream_id((await request(leader, {"type": "get_cluster"}))["position"])
        finally:
            follower.signal(signal.SIGCONT)
        # Awake, it reads on from where it was, its own _node_gone among the rest.
        await eventually(
            lambda: request(follower, {"type": "get_cluster"}),
            lambda info: stream_id(info["position"]) >= gone_at,
            f"the woken follower to apply the log up to {gone_at}",
        )
        # A heartbeat due after the worker_lost would have been: once it fires, that would have.
        watcher = await LineClient.connect(leader.port)
        await watcher.request({"type": "subscribe", "topics": ["alerts"]})
        await conn.request({"type": "heartbeat", "job_id": "after-grace", "ttl_ms": int(grace)})
        (alert,) = await alerts_pushed(watcher, 1)
        assert alert["job_id"] == "after-grace"
        listed = (await request(leader, {"type": "get_alerts"}))["alerts"]
        assert [a["job_id"] for a in listed] == ["after-grace"]  # no worker_lost for w
        assert "claim their jobs again" in follower.stderr
        for node in nodes:
            listed = await listed_alerts(node, 1)
            assert [a["job_id"] for a in listed] == ["after-grace"]
            stats = await eventually(
                lambda n=node: request(n, {"type": "get_stats"}),
                lambda s: s["total"] == 302,
                f"node {node.name} to have every job",
            )
            assert stats["total"] == 302
        job = await worker.request({"type": "get_job", "job_id": "w"})
        assert job["job"]["status"] == "running"
        for c in (worker, watcher, conn):
            await c.close()


async def test_a_node_forgotten_after_the_log_was_trimmed_past_it_stops_and_a_restart_rejoins(
    where: Where,
) -> None:
    lease = ["--lease-ms", "300"]  # forgotten after 10 leases: 3 s
    with cluster(2, *where.flags(), "--compact-min-bytes", "2000", per_node=[lease, lease]) as (
        a,
        b,
    ):
        leader = await leader_among([a, b])
        follower = b if leader is a else a
        follower.signal(signal.SIGSTOP)
        try:
            await leader.logged("node gone")
            conn = await LineClient.connect(leader.port)
            events = [
                {"type": "job_completed", "job_id": f"j{i}", "duration_ms": 1} for i in range(300)
            ]
            assert all(r["type"] == "job_completed" for r in await conn.pipeline(events))
            await leader.logged("snapshot written")
            await leader.logged("node forgotten")
            # Trimmed once it no longer holds the log back (the next look after forgetting).
            await eventually(
                lambda: log_length(where),
                lambda n: n < 10,
                "the log trimmed to the snapshot",
            )
            await conn.close()
        finally:
            follower.signal(signal.SIGCONT)
        assert follower.proc is not None
        code = await asyncio.to_thread(follower.proc.wait, 30)
        assert code == 1, follower.stderr
        assert "trimmed past what it had read" in follower.stderr
        again = NodeProcess("again", "--lease-ms", LEASE_MS, *where.flags()).start()
        try:
            stats = await request(again, {"type": "get_stats"})
            assert stats["total"] == 300  # from the snapshot and the log after it
        finally:
            again.stop()


async def test_a_node_killed_under_load_loses_no_acknowledged_event(where: Where) -> None:
    with cluster(2, *where.flags()) as (survivor, victim):
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
        await eventually(lambda: len(acked), lambda n: n >= 2000, "2000 acknowledged events")
        victim.kill9()
        await asyncio.wait_for(asyncio.gather(*loaders), 60)
        assert len(acked) >= 2000 and sent[0] > len(acked), (sent[0], len(acked))
        assert len(set(acked)) == len(acked)  # each reply once
        # The survivor applies everything in the log, then has every acknowledged job.
        with redis_client(where.url) as client:
            ((last_id, _),) = client.xrevrange(where.log_key, count=1)
        await eventually(
            lambda: request(survivor, {"type": "get_cluster"}),
            lambda info: stream_id(info["position"]) >= stream_id(last_id.decode()),
            f"the survivor to apply the log up to {last_id.decode()}",
        )
        conn = await LineClient.connect(survivor.port)
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
        with redis_client(f"redis://127.0.0.1:{primary.port}/0") as check:
            await eventually(
                lambda: [check.info("replication").get(f"slave{i}", {}) for i in (0, 1)],
                lambda links: [link.get("state") for link in links] == ["online"] * 2,
                "both replicas online",
            )
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
                    deadline = time.monotonic() + 60
                    while True:  # a client's retry: the same event_id until acknowledged
                        reply = await conn.request(event)
                        if reply["type"] == "job_completed":
                            acked[event["job_id"]] = reply
                            break
                        assert reply["code"] == 11, reply
                        assert time.monotonic() < deadline, f"still refused after 60 s: {reply}"
                        await asyncio.sleep(0.05)
                await conn.close()

            await send_all(0, 50)
            primary.kill9()  # Sentinel promotes a replica; the nodes follow it
            await send_all(50, 100)
            assert len(acked) == 100
            for node in nodes:
                conn = await LineClient.connect(node.port)
                replies = await eventually(
                    lambda c=conn: c.pipeline([{"type": "get_job", "job_id": j} for j in acked]),
                    lambda rs: all(r["type"] == "job" for r in rs),
                    f"node {node.name} to have every acknowledged job",
                    every_s=0.05,
                )
                assert [r["job"]["runs"] for r in replies] == [1] * 100  # each once
                await conn.close()
            changed = await request(nodes[0], {"type": "get_cluster"})
            assert changed["redis"] == "ok"
            with redis_client(f"redis://127.0.0.1:{sentinels[0].port}/0") as ask:
                _, now_primary = ask.sentinel_get_master_addr_by_name("jm")
            assert now_primary in {r.port for r in replicas}  # the nodes followed the failover
    finally:
        for sentinel in sentinels:
            sentinel.stop()
        for server in (*replicas, primary):
            server.stop()


async def readyz(http_port: int) -> int:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{http_port}/readyz") as response,
    ):
        return response.status


async def test_redis_stopped_and_restarted_under_node_processes(tmp_path: Path) -> None:
    http_port = free_port()
    with RedisServer(tmp_path / "redis") as own, cluster(2, "--redis", own.url) as (a, b):
        b.stop()  # b's HTTP port is taken below by a fresh node
        c = NodeProcess("n3", "--lease-ms", LEASE_MS, "--redis", own.url,
                        "--http-port", str(http_port)).start()  # fmt: skip
        try:
            kept = await request(a, {"type": "job_completed", "job_id": "kept", "duration_ms": 5})
            assert kept["type"] == "job_completed"
            await eventually(lambda: readyz(http_port), lambda s: s == 200, "c ready")
            own.stop()
            # Not ready while Redis is away (a balancer sends writes elsewhere)...
            await eventually(lambda: readyz(http_port), lambda s: s == 503, "/readyz 503")
            for node in (a, c):
                refused = await request(
                    node, {"type": "update_status", "job_id": "x", "status": "running"}
                )
                assert refused["code"] == 11, refused
                job = await request(node, {"type": "get_job", "job_id": "kept"})
                assert job["job"]["duration_ms"] == 5  # reads answer from the node's state
            async with (
                aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
                session.post(f"http://127.0.0.1:{http_port}/api/jobs/x/start") as response,
            ):
                assert response.status == 503
            own.start()  # same port, same append-only file: no node restarts
            for node in (a, c):
                write = {"type": "update_status", "job_id": node.name, "status": "running"}
                await eventually(
                    lambda n=node, w=write: request(n, w),
                    lambda reply: reply["type"] != "error",
                    f"node {node.name} to take writes again",
                    every_s=0.1,
                )
            # ...and ready again once it is back, with no restart.
            await eventually(lambda: readyz(http_port), lambda s: s == 200, "/readyz 200")
            for node in (a, c):
                await eventually(
                    lambda n=node: request(n, {"type": "list_jobs"}),
                    lambda r: sorted(j["job_id"] for j in r["jobs"]) == ["kept", "n1", "n3"],
                    f"node {node.name} to list every job",
                )
        finally:
            c.stop()
