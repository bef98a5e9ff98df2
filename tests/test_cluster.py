"""Several nodes over one real Redis, in this process: one monitor, whichever node is asked.

The module's tests share one redis-server; each test's nodes are a cluster of
their own (``--cluster-name``). Notifications: tests/test_cluster_notify.py;
node subprocesses killed, frozen and failed over: tests/test_cluster_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cluster_helpers import (
    HTTP_TIMEOUT,
    Where,
    ask,
    converged,
    leader_of,
    member,
    node_config,
    nodes,
    redis_client,
    roles,
    stream_id,
    until,
)
from helpers import SEED_SAMPLE_CASES, LineClient, free_port
from jobmon.cluster.tasks import cancel_and_wait
from jobmon.model import snapshot_default
from jobmon.server import Server, running
from redis_helpers import RedisServer, make_certificates, shared_redis_fixture, where_fixture  # noqa: F401


async def test_the_seed_replies_are_byte_for_byte_the_same_on_every_node(where: Where) -> None:
    async with nodes(where, 2) as servers:
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


def mixed_reports(worker: int) -> list[dict[str, Any]]:
    """300 events over 17 jobs, of every kind, in an order of this worker's own."""
    bodies: list[dict[str, Any]] = []
    for i in range(300):
        job_id = f"job-{i % 17}"
        kind = (i + worker) % 4
        if kind == 0:
            body = {"type": "update_status", "status": "running", "progress": i % 100}
        elif kind == 1:
            body = {"type": "job_completed", "duration_ms": i}
        elif kind == 2:
            body = {"type": "job_failed", "retries": i % 4, "error": f"w{worker}"}
        else:
            body = {"type": "heartbeat", "ttl_ms": 600_000}
        bodies.append({**body, "msg_id": i, "job_id": job_id})
    return bodies


async def test_events_through_different_nodes_end_in_one_state(where: Where) -> None:
    async with nodes(where, 3) as servers:

        async def report(server: Server, worker: int) -> LineClient:
            # Kept open until the end: a closed worker connection is a state change too.
            conn = await LineClient.connect(server.port)
            replies = await conn.pipeline(mixed_reports(worker))
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
    where: Where,
) -> None:
    async with nodes(where, 2) as (a, b):
        watcher = await LineClient.connect(b.port)
        subscribed = await watcher.request({"type": "subscribe", "topics": ["events"]})
        assert subscribed["type"] == "subscribed"
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
        event = await watcher.read(timeout=30)
        assert event["type"] == "event"
        assert event["event"]["job_id"] == "rw" and event["event"]["progress"] == 42
        (seen,) = await ask(b, {"type": "get_job", "job_id": "rw"})
        assert seen["job"]["progress"] == 42
        await watcher.close()


async def test_one_node_fires_a_deadline_and_every_subscriber_gets_the_alert_once(
    where: Where,
) -> None:
    async with nodes(where, 3) as servers:
        watchers = []
        for server in servers:
            conn = await LineClient.connect(server.port)
            await conn.request({"type": "subscribe", "topics": ["alerts"]})
            watchers.append(conn)
        follower = next(s for s in servers if not member(s).lease.held())
        (beat,) = await ask(
            follower, {"type": "heartbeat", "msg_id": 1, "job_id": "hb", "ttl_ms": 300}
        )
        assert beat["type"] == "heartbeat_ok"
        pushed = [await w.read(timeout=30) for w in watchers]
        ids = {p["alert"]["id"] for p in pushed}
        assert len(ids) == 1 and all(p["alert"]["kind"] == "missed_heartbeat" for p in pushed)
        await converged(servers)
        for server in servers:
            (alerts,) = await ask(server, {"type": "get_alerts"})
            assert [a["id"] for a in alerts["alerts"]] == list(ids)
        # Nothing more is pushed: send a marker event, which each subscriber sees next.
        await ask(servers[0], {"type": "job_failed", "job_id": "marker", "retries": 9})
        for w in watchers:
            nxt = await w.read(timeout=30)
            assert nxt["alert"]["job_id"] == "marker"
            await w.close()


async def test_an_event_sent_again_through_another_node_applies_once(where: Where) -> None:
    async with nodes(where, 2) as (a, b):
        event = {"type": "job_completed", "msg_id": 7, "job_id": "once", "duration_ms": 50}
        (first,) = await ask(a, {**event, "event_id": "evt-1"})
        (again,) = await ask(b, {**event, "event_id": "evt-1", "duration_ms": 70})
        assert first == again
        await converged([a, b])
        for server in (a, b):
            (job,) = await ask(server, {"type": "get_job", "job_id": "once"})
            assert job["job"]["runs"] == 1 and job["job"]["duration_ms"] == 50


async def test_a_channel_the_node_lacks_is_refused_before_the_log_takes_it(where: Where) -> None:
    dead = f"json://127.0.0.1:{free_port()}/nobody"
    async with nodes(where, 2, notify=[f"ops={dead}"]) as (a, b):
        replies = await ask(
            a,
            {"type": "register_job", "msg_id": 1, "job_id": "j", "channels": ["ops"]},
            {"type": "register_job", "msg_id": 2, "job_id": "k", "channels": ["opps"]},
            {"type": "register_job", "msg_id": 3, "job_id": "l", "event_id": "e3",
             "channels": ["opps"]},
            {"type": "update_status", "msg_id": 4, "job_id": "m", "status": "running"},
        )  # fmt: skip
        assert [r["type"] for r in replies] == [
            "job_registered",
            "error",
            "error",
            "status_updated",
        ]
        assert replies[1]["text"] == (
            "unknown channel 'opps' in channels: this server's named channels are ops"
        )
        assert replies[2]["code"] == 12 and replies[2]["in_reply_to"] == 3
        await converged([a, b])
        for server in (a, b):  # neither node's state has what was refused
            assert sorted(server.node.store.jobs) == ["j", "m"]
            assert server.node.store.jobs["j"].monitor.channels == ["ops"]  # type: ignore[union-attr]


async def test_get_cluster_readyz_and_metrics(where: Where) -> None:
    ports = [free_port(), free_port()]
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(running(node_config(where, f"h{i}", http_port=p)))
            for i, p in enumerate(ports)
        ]
        await until(lambda: any(roles(servers).values()), "a leader", lambda: roles(servers))
        leader = leader_of(servers)
        # Each node learns of the others from their stamps (every third of the lease).
        await until(
            lambda: all(member(s).info()["nodes"] == ["h0", "h1"] for s in servers),
            "both nodes to list both",
            lambda: [member(s).info()["nodes"] for s in servers],
        )
        for server in servers:
            (info,) = await ask(server, {"type": "get_cluster", "msg_id": 3})
            assert info["type"] == "cluster" and info["in_reply_to"] == 3
            assert info["node_id"] == member(server).name
            assert info["leader"] == member(leader).name
            assert info["nodes"] == ["h0", "h1"]
            assert info["role"] == ("leader" if server is leader else "follower")
            assert info["caught_up"] is True and info["redis"] == "ok"
            assert info["position"].count("-") == 1
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
            for server, port in zip(servers, ports, strict=True):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == 200
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                role = 1 if server is leader else 0
                assert f'jobmon_cluster_leader{{node_id="{member(server).name}"}} {role}.0' in text
                assert "jobmon_cluster_lag_seconds" in text
                assert "jobmon_cluster_leader_changes_total" in text


async def test_worker_lost_when_its_node_connection_closes_unless_it_reports_through_another(
    where: Where,
) -> None:
    # A grace wide enough that a loaded machine's delay before "moved" reports is
    # no part of what is tested (it is wall-clock time on both nodes).
    async with nodes(where, 2, lost_grace_ms=3000) as (a, b):
        watcher = await LineClient.connect(a.port)
        await watcher.request({"type": "subscribe", "topics": ["alerts"]})
        for job_id in ("lost", "moved"):
            await ask(a, {"type": "register_job", "job_id": job_id, "max_runtime_ms": 600_000})
        worker = await LineClient.connect(b.port)
        for job_id in ("lost", "moved"):
            running_ = {"type": "update_status", "job_id": job_id, "status": "running"}
            assert (await worker.request(running_))["type"] == "status_updated"
        await worker.close()  # node b's connection closes: both jobs lose their worker
        monitors = [a.node.store.jobs[j].monitor for j in ("lost", "moved")]
        await until(
            lambda: all(m is not None and m.lost_at is not None for m in monitors),
            "node b's closed connection to arm worker_lost for both jobs on node a",
            lambda: [m.lost_at if m is not None else None for m in monitors],
        )
        # "moved" reports in through node a within the grace (3 s); "lost" never does.
        mover = await LineClient.connect(a.port)
        moved = await mover.request(
            {"type": "update_status", "job_id": "moved", "status": "running", "progress": 5}
        )
        assert moved["type"] == "status_updated"
        alert = (await watcher.read(timeout=30))["alert"]
        assert alert["kind"] == "worker_lost" and alert["job_id"] == "lost"
        await converged([a, b])
        for server in (a, b):
            (alerts,) = await ask(server, {"type": "get_alerts", "state": "firing"})
            assert [x["job_id"] for x in alerts["alerts"]] == ["lost"]
        await watcher.close()
        await mover.close()


async def test_a_joining_node_loads_the_snapshot_and_the_log_stays_bounded(
    where: Where,
) -> None:
    async with nodes(where, 2, compact_min_bytes=4000) as servers:
        for round_ in range(8):
            await ask(
                servers[round_ % 2],
                *(
                    {"type": "job_completed", "job_id": f"j{i}", "duration_ms": round_}
                    for i in range(200)
                ),
            )
        snapshots = member(leader_of(servers)).snapshots
        await until(lambda: snapshots.written >= 2, "two snapshots", lambda: snapshots.written)
        await converged(servers)
        # 8 rounds of 200 events: trimmed to the last snapshot once every node is past it.
        await until(
            lambda: snapshots.trim_goal is None and not snapshots.writing,
            "the log trimmed to the last snapshot",
            lambda: (snapshots.trim_goal, [member(s).position for s in servers]),
        )
        with redis_client(where.url) as client:
            snapshot = orjson.loads(client.get("{" + where.cluster + "}:snapshot"))
            ((first_id, _),) = client.xrange(where.log_key, count=1)
            info = client.xinfo_stream(where.log_key)
        # Nothing before the last snapshot is kept.
        assert stream_id(first_id.decode()) >= stream_id(snapshot["position"])
        assert info["length"] < info["entries-added"], info
        async with running(node_config(where, "late")) as late:
            assert member(late).caught_up
            assert member(late).snapshots.size > 0  # it started from the snapshot
            await converged([*servers, late])
            (stats,) = await ask(late, {"type": "get_stats"})
            (expected,) = await ask(servers[0], {"type": "get_stats"})
            assert stats == expected and stats["total"] == 200


async def test_writes_are_refused_while_redis_is_down_and_resume_when_it_is_back(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    own = RedisServer(tmp_path / "redis").start()  # stopped and started again: not shared
    try:
        where = Where(own.url, "jobmon")
        async with running(node_config(where, "solo", http_port=http_port)) as server:
            (before,) = await ask(
                server, {"type": "job_completed", "msg_id": 1, "job_id": "kept", "duration_ms": 5}
            )
            assert before["type"] == "job_completed"
            own.stop()
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
            kept = await conn.request({"type": "get_job", "msg_id": 3, "job_id": "kept"})
            assert kept["job"]["duration_ms"] == 5
            async with (
                aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
                session.post(f"http://127.0.0.1:{http_port}/api/jobs/x/start") as response,
            ):
                assert response.status == 503
                assert (await response.json())["error"]["code"] == 11
            own.start()  # the same port and append-only file
            write = {"type": "update_status", "msg_id": 4, "job_id": "x", "status": "running"}
            reply = await eventually_written(conn, write)
            assert reply["type"] == "status_updated"
            job = (await conn.request({"type": "get_job", "msg_id": 5, "job_id": "kept"}))["job"]
            assert job["duration_ms"] == 5
            (info,) = await ask(server, {"type": "get_cluster"})
            assert info["redis"] == "ok"
            await conn.close()
    finally:
        own.stop()


async def eventually_written(conn: LineClient, body: dict[str, Any]) -> dict[str, Any]:
    """Send until it is not refused with error 11 (Redis is coming back), 30 s at most."""
    deadline = time.monotonic() + 30
    while True:
        reply = await conn.request(body)
        if reply["type"] != "error":
            return reply
        assert reply["code"] == 11, reply
        assert time.monotonic() < deadline, f"still refused after 30 s: {reply}"
        await asyncio.sleep(0.1)


async def test_under_a_token_nothing_is_proposed_before_auth(where: Where) -> None:
    async with nodes(where, 2, token="s3cret") as (a, b):
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
        async with nodes(Where(secure.url, "tls"), 2) as (a, b):
            (wrote,) = await ask(a, {"type": "job_completed", "job_id": "tls", "duration_ms": 3})
            assert wrote["type"] == "job_completed"
            await converged([a, b])
            (seen,) = await ask(b, {"type": "get_job", "job_id": "tls"})
            assert seen["job"]["duration_ms"] == 3
        # A node that does not trust the server's certificate does not start.
        other_ca = make_certificates(tmp_path / "other")["ca"]
        wrong = secure.url.replace(str(tls["ca"]), str(other_ca))
        with pytest.raises(OSError, match="unreachable"):
            async with running(node_config(Where(wrong, "tls"), "untrusting")):
                pass


async def test_a_task_that_swallowed_its_cancellation_is_still_stopped() -> None:
    """On Python 3.11 a Redis call cancelled just as it writes returns normally
    (see cluster/tasks.py); a node that stops cancels again until its tasks end."""

    async def stubborn() -> None:
        swallowed = False
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed = True  # what redis-py's wait_for may do under 3.11

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancel_and_wait([task], 10), 20)
    assert task.cancelled()


async def test_a_node_that_can_no_longer_follow_the_log_stops_rather_than_answer_stale(
    where: Where,
) -> None:
    async with nodes(where, 1) as (server,):
        store_task = server._tasks[0]
        stamps = member(server).membership.stamps
        with redis_client(where.url) as client:
            # Another program's field in the nodes hash is no node: ignored.
            client.hset("{" + where.cluster + "}:nodes", "not-a-node", "x")
            await until(
                lambda: member(server).membership.stamps >= stamps + 2,
                "two more membership stamps",
                lambda: member(server).membership.stamps,
            )
            assert not store_task.done()
            # An entry this version cannot read: the reader ends, and the node with it.
            client.xadd(where.log_key, {"x": "y"})
        await until(store_task.done, "the store task to end", lambda: store_task)
        failure = store_task.exception()
        assert isinstance(failure, RuntimeError)
        assert "jobmon-cluster-reader ended" in str(failure)
        assert "cannot follow the cluster" in str(failure)
