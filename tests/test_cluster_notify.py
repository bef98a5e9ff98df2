"""Notifications from a cluster: only the leader sends (webhooks, Apprise), each
alert once in the steady state, carrying its id; a new leader sends what the old
one had not confirmed; a lease lost and won back with deliveries in flight
confirms an alert only once every target has delivered its latest submission.

Every node posts to a path of its own on one local receiver (``Posts``), so the
receiver knows which node sent each post. The module's tests share one Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from cluster_helpers import (
    Where,
    apprise_alert_id,
    ask,
    eventually,
    leader_of,
    member,
    node_config,
    nodes,
    posts,
    redis_client,
    until,
)
from helpers import LineClient
from jobmon.server import running
from redis_helpers import (  # noqa: F401 (the fixtures)
    LEASE_MS,
    NodeProcess,
    cluster,
    leader_among,
    request,
    shared_redis_fixture,
    where_fixture,
)


async def test_webhooks_are_sent_by_the_leader_once_with_the_alert_id(where: Where) -> None:
    async with (
        posts() as box,
        nodes(where, 3, each=lambda name: {"webhooks": [box.target(name)]}) as servers,
    ):
        leader = member(leader_of(servers)).name
        (fired,) = await ask(
            servers[1], {"type": "job_failed", "job_id": "w", "retries": 5, "error": "boom"}
        )
        assert fired["type"] == "alert_sent"
        path, payload = await box.next("the webhook of the failure")
        assert path == f"/{leader}"
        assert payload["job_id"] == "w" and payload["state"] == "firing"
        await until(
            lambda: all(not member(s).outbox.pending for s in servers),
            "the delivery confirmed on every node",
            lambda: {member(s).name: list(member(s).outbox.pending) for s in servers},
        )
        (alerts,) = await ask(servers[2], {"type": "get_alerts"})
        assert [a["id"] for a in alerts["alerts"]] == [payload["id"]]
        # Confirmed through the log on every node: nothing more is sent.
        await ask(servers[0], {"type": "job_failed", "job_id": "m", "retries": 5, "error": "x"})
        _, nxt = await box.next("the marker's webhook")
        assert nxt["job_id"] == "m"
        assert box.received.empty() and box.attempts == [f"/{leader}"] * 2


async def test_a_new_leader_sends_the_webhooks_the_old_one_had_not_confirmed(
    where: Where,
) -> None:
    async with posts() as box:
        box.refuse = True
        config = {"webhooks": [box.target("hook")], "notify_backoff_s": 0.05}
        first = running(node_config(where, "old", **config))
        old = await first.__aenter__()
        try:
            async with running(node_config(where, "new", **config)) as new:
                await until(lambda: member(old).lease.held(), "the first node to lead")
                (fired,) = await ask(new, {"type": "job_failed", "job_id": "u", "retries": 9})
                assert fired["type"] == "alert_sent"
                # The leader tries, and is refused, twice.
                await eventually(lambda: len(box.attempts), lambda n: n >= 2, "two refusals")
                await first.__aexit__(None, None, None)  # it stops without having sent it
                first = None
                box.refuse = False
                _, payload = await box.next("the new leader's webhook")
                assert payload["job_id"] == "u" and payload["state"] == "firing"
                assert member(new).lease.held()
                await until(
                    lambda: not member(new).outbox.pending,
                    "the new leader to confirm it",
                    lambda: list(member(new).outbox.pending),
                )
        finally:
            if first is not None:
                await first.__aexit__(None, None, None)


async def test_apprise_is_sent_by_the_leader_only_once_per_alert_with_its_id(
    where: Where,
) -> None:
    async with (
        posts() as box,
        nodes(
            where,
            3,
            each=lambda name: {"notify": [box.target(name, "json")]},
            notify_backoff_s=0.05,
        ) as servers,
    ):
        leader = member(leader_of(servers)).name
        # Fired through a follower, fired by the leader's clock, resolved through another.
        await ask(servers[1], {"type": "job_failed", "job_id": "f", "retries": 9, "error": "boom"})
        await ask(servers[2], {"type": "heartbeat", "job_id": "hb", "ttl_ms": 300})
        titles = {(await box.next("two alerts firing"))[1]["title"] for _ in range(2)}
        assert titles == {"[jobmon] f: failed firing", "[jobmon] hb: missed_heartbeat firing"}
        await ask(servers[2], {"type": "job_completed", "job_id": "f", "duration_ms": 1})
        _, resolved = await box.next("the failure resolved")
        assert resolved["title"] == "[jobmon] f: failed resolved"
        await until(
            lambda: all(not member(s).outbox.pending for s in servers),
            "the deliveries confirmed on every node",
            lambda: {member(s).name: list(member(s).outbox.pending) for s in servers},
        )
        # Confirmed everywhere: nothing is sent again; a marker's post comes next.
        await ask(servers[0], {"type": "job_failed", "job_id": "marker", "retries": 9})
        _, marker = await box.next("the marker")
        assert marker["title"] == "[jobmon] marker: failed firing"
        assert box.received.empty()
        assert set(box.attempts) == {f"/{leader}"}  # only the leader, which never failed
        (alerts,) = await ask(servers[1], {"type": "get_alerts", "state": "all"})
        ids = {a["job_id"]: a["id"] for a in alerts["alerts"]}
        sent = sorted((apprise_alert_id(body), body["type"]) for _, body in box.log)
        assert sent == sorted(
            [
                (ids["f"], "failure"),
                (ids["hb"], "failure"),
                (ids["f"], "success"),
                (ids["marker"], "failure"),
            ]
        )


async def test_a_leader_killed_before_apprise_confirmed_is_followed_by_one_that_sends_it(
    where: Where,
) -> None:
    async with posts() as box:
        box.refuse = True
        notified = [["--notify", box.target(f"n{i + 1}", "json")] for i in range(2)]
        with cluster(2, *where.flags(), per_node=notified) as nodes_:
            leader = await leader_among(nodes_)
            (other,) = [n for n in nodes_ if n is not leader]
            fired = await request(
                other, {"type": "job_failed", "job_id": "k", "retries": 9, "error": "disk"}
            )
            assert fired["type"] == "alert_sent"
            await eventually(
                lambda: list(box.attempts),
                lambda tried: f"/{leader.name}" in tried,
                "the leader to try, and be refused",
            )
            leader.kill9()  # before it could confirm anything
            box.refuse = False
            path, body = await box.next("the new leader's post")
            assert path == f"/{other.name}"
            assert body["title"] == "[jobmon] k: failed firing"
            (alert,) = (await request(other, {"type": "get_alerts"}))["alerts"]
            # The same id as the dead leader's attempts: a receiver can drop a repeat by it.
            tried = {apprise_alert_id(b) for p, b in box.refused if p == f"/{leader.name}"}
            assert tried == {apprise_alert_id(body)} == {alert["id"]}
            await eventually(
                lambda: request(other, {"type": "get_cluster"}),
                lambda info: info["outbox"] == 0 and info["role"] == "leader",
                "the new leader to confirm its delivery",
            )
            assert [p for p, _ in box.log] == [f"/{other.name}"]


async def test_a_lease_lost_and_won_back_with_deliveries_in_flight_confirms_only_when_all_are_done(
    where: Where,
) -> None:
    async with posts() as box:
        box.holds = {"/hook": asyncio.Event(), "/apprise": asyncio.Event()}
        config = {"webhooks": [box.target("hook")], "notify": [box.target("apprise", "json")]}
        async with nodes(where, 1, **config) as (server,):
            node = member(server)
            await ask(server, {"type": "job_failed", "job_id": "k", "retries": 9})
            await eventually(
                lambda: sorted(set(box.attempts)),
                lambda seen: seen == ["/apprise", "/hook"],
                "both deliveries in flight",
            )
            (key,) = node.outbox.pending
            # The lease expires under it (as if it had paused); it takes it again at once.
            with redis_client(where.url) as client:
                client.delete("{" + where.cluster + "}:lease")
            await until(
                lambda: node.lease.gained_count == 2 and node.lease.held(),
                "the lease lost and won back",
                lambda: (node.lease.gained_count, node.lease.held()),
            )
            # Won back: the unconfirmed alert is submitted again, behind the deliveries in
            # flight. Apprise finishes both (the first counts no more); the webhook neither.
            box.holds["/apprise"].set()
            (apprise_outbox,) = server.apprise.outboxes  # type: ignore[union-attr]
            await until(
                lambda: apprise_outbox.counts["delivered"] == 2,
                "both Apprise deliveries to finish",
                lambda: apprise_outbox.counts,
            )
            assert key in node.outbox.pending and not node.engine.leading.confirmations
            assert server.notifiers.countdown.left[key][1] == 1  # the webhook's, still due
            box.holds["/hook"].set()
            await until(
                lambda: not node.outbox.pending,
                "the alert confirmed once the webhook delivered it too",
                lambda: (list(node.outbox.pending), server.notifiers.countdown.left),
            )
            paths = sorted(path for path, _ in box.log)
            assert paths == ["/apprise", "/apprise", "/hook", "/hook"]
            ids = {
                body["id"] if path == "/hook" else apprise_alert_id(body) for path, body in box.log
            }
            assert len(ids) == 1  # one incident, one id, in every resend


def alerts_logged(node: NodeProcess) -> list[tuple[str, str]]:
    """(job_id, state) of each alert line the node wrote to stderr."""
    lines = [orjson.loads(line) for line in node.lines if '"jobmon.alert"' in line]
    return [(line["job_id"], line["state"]) for line in lines]


async def outbox_empty(node: NodeProcess) -> None:
    await eventually(
        lambda: request(node, {"type": "get_cluster"}),
        lambda info: info["outbox"] == 0,
        f"node {node.name} to see every delivery confirmed",
    )


async def test_a_node_joining_or_restarting_replays_old_alerts_without_logging_or_sending_them(
    where: Where,
) -> None:
    """The log a node reads while joining holds alerts that fired before it
    started: they were logged and sent then. It logs (stderr) and sends only
    what fires from its join on; a marker alert proves it is logging by then."""
    async with posts() as box:

        def node(name: str) -> NodeProcess:
            flags = ["--lease-ms", LEASE_MS, *where.flags(), "--notify", box.target(name, "json")]
            return NodeProcess(name, *flags).start()

        async def marker(through: NodeProcess, job_id: str, *logging: NodeProcess) -> None:
            await request(through, {"type": "job_failed", "job_id": job_id, "retries": 9})
            for n in logging:
                await n.logged(f'"job_id":"{job_id}"')

        n1 = node("n1")
        started = [n1]
        try:
            await request(n1, {"type": "job_failed", "job_id": "old", "retries": 9})
            await request(n1, {"type": "heartbeat", "job_id": "beat", "ttl_ms": 200})
            await n1.logged('"job_id":"beat"')  # fired by the leader's clock
            await request(n1, {"type": "job_completed", "job_id": "old", "duration_ms": 1})
            await n1.logged('"state":"resolved"')
            await outbox_empty(n1)
            n2 = node("n2")  # joins: the three alerts above are in the log it reads
            started.append(n2)
            await marker(n1, "m1", n1, n2)
            assert alerts_logged(n2) == [("m1", "firing")]
            await outbox_empty(n2)
            n1.kill9()
            await eventually(
                lambda: request(n2, {"type": "get_cluster"}),
                lambda info: info["role"] == "leader",
                "n2 to lead once n1's lease ran out",
            )
            await marker(n2, "m2", n2)
            await outbox_empty(n2)
            n2.kill9()  # restarts alone: it replays everything and takes the lease
            again = node("n2")
            started.append(again)
            await marker(again, "m3", again)
            assert alerts_logged(again) == [("m3", "firing")]
            # Sent once the old n2's lease ran out; with it, what this one's lease
            # gain would have resent, had the log not confirmed the rest.
            await outbox_empty(again)
            sent: list[tuple[str, Any]] = [(p, b["title"]) for p, b in box.log]
            assert sent == [
                ("/n1", "[jobmon] old: failed firing"),
                ("/n1", "[jobmon] beat: missed_heartbeat firing"),
                ("/n1", "[jobmon] old: failed resolved"),
                ("/n1", "[jobmon] m1: failed firing"),
                ("/n2", "[jobmon] m2: failed firing"),
                ("/n2", "[jobmon] m3: failed firing"),
            ], "each alert sent once, by the leader of the moment"
        finally:
            for n in started:
                n.stop()


async def test_a_joining_node_reminds_its_subscribers_of_what_still_fires(where: Where) -> None:
    """--realert-ms: what a joining node replays is not news to log or push, but
    the alerts still firing are reminded to its subscribers from its join on, as
    after an embedded node's restart."""
    async with nodes(where, 1, realert_ms=300) as (first,):
        await ask(first, {"type": "job_failed", "job_id": "old", "retries": 9})
        async with running(node_config(where, "n2", realert_ms=300)) as joined:
            watcher = await LineClient.connect(joined.port)
            try:
                await watcher.request({"type": "subscribe", "topics": ["alerts"]})
                reminded = (await watcher.read(timeout=30))["alert"]
            finally:
                await watcher.close()
            (alerts,) = await ask(joined, {"type": "get_alerts"})
            (old,) = alerts["alerts"]
            assert (reminded["id"], reminded["job_id"], reminded["state"]) == (
                old["id"],
                "old",
                "firing",
            )
