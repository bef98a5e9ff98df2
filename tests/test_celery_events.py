"""The translation of Celery's events (celery_events), on events shaped as
Celery 5.7 sends them, and applied by a real server: the orderings and
repeats a live cluster produces only now and then (test_celery.py runs a
real worker for the common paths)."""

from __future__ import annotations

from typing import Any

from helpers import LineClient
from jobmon.clock import FakeClock
from jobmon.integrations.celery_events import (
    UNNAMED_TASK,
    Translator,
    event_id,
    redact,
)
from jobmon.server import Server

T0 = 1_790_000_000.0 - 60  # a minute before the FakeClock's start
UUID = "f975baa4-0000-4000-8000-000000000001"


def task(kind: str, at: float, uuid: str = UUID, **fields: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "hostname": "w1@vm", "timestamp": at, **fields}


def worker(kind: str, at: float, pid: int = 9778, **fields: Any) -> dict[str, Any]:
    return {
        "type": f"worker-{kind}",
        "hostname": "w1@vm",
        "pid": pid,
        "timestamp": at,
        "local_received": at + 0.001,
        **fields,
    }


def short(bodies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (b["type"], b["job_id"], b.get("status") or b.get("retries"), b.get("max_retries"))
        for b in bodies
    ]


def translate_all(translator: Translator, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [body for event in events for body in translator.translate(event)]


async def apply(client: LineClient, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    replies = await client.pipeline(bodies)
    assert not [r for r in replies if r["type"] == "error"], replies
    return replies


async def test_a_retried_task_as_celery_orders_it(client: LineClient) -> None:
    # As captured: the next attempt's task-received comes before task-retried.
    events = [
        task("received", T0, name="tasks.flaky", retries=0),
        task("started", T0 + 0.01),
        task("received", T0 + 0.04, name="tasks.flaky", retries=1),
        task("retried", T0 + 0.041, exception="RuntimeError('still broken')"),
        task("started", T0 + 1.5),
        task("received", T0 + 1.51, name="tasks.flaky", retries=2),
        task("retried", T0 + 1.52, exception="RuntimeError('still broken')"),
        task("started", T0 + 1.7),
        task("failed", T0 + 1.71, exception="RuntimeError('still broken')", traceback="..."),
    ]
    bodies = translate_all(Translator(), events)
    assert short(bodies) == [
        ("update_status", "tasks.flaky", "queued", None),
        ("update_status", "tasks.flaky", "running", None),
        ("job_failed", "tasks.flaky", 0, 1),
        ("update_status", "tasks.flaky", "running", None),
        ("job_failed", "tasks.flaky", 1, 2),
        ("update_status", "tasks.flaky", "running", None),
        ("job_failed", "tasks.flaky", 2, 2),  # task-failed: always the last attempt
    ]
    assert {b["run_id"] for b in bodies} == {UUID}
    assert len({b["event_id"] for b in bodies}) == len(bodies)
    replies = await apply(client, bodies)
    assert replies[-1] == {
        "type": "alert_sent",
        "job_id": "tasks.flaky",
        "alert": "Job failed after 2 retries: RuntimeError('still broken')",
        "run_id": UUID,
    }
    assert [r.get("will_retry") for r in replies if r["type"] == "job_failed"] == [True, True]
    job = (await client.request({"type": "get_job", "job_id": "tasks.flaky"}))["job"]
    assert (job["status"], job["retries"], job["runs"]) == ("failed", 2, 1)
    # Celery's own timestamps: the run started with its first attempt.
    assert job["recent_runs"][0]["duration_ms"] == 1700


async def test_repeats_after_the_outcome_change_nothing(client: LineClient) -> None:
    translator = Translator()
    reject = "d48c455e-0000-4000-8000-000000000002"
    revoke = "4d8c1a75-0000-4000-8000-000000000003"
    events = [
        task("received", T0, reject, name="tasks.picky", retries=0),
        task("started", T0 + 0.1, reject),
        # Reject(requeue=False): task-failed, then task-rejected.
        task("failed", T0 + 0.2, reject, exception="reject requeue=False: no thanks"),
        task("rejected", T0 + 0.21, reject, requeue=False),
        task("received", T0, revoke, name="tasks.later", retries=0, eta="2026-12-01T20:45:43"),
        # Several workers may each announce a revoke.
        task("revoked", T0 + 1, revoke, terminated=False, signum=None, expired=False),
        task("revoked", T0 + 1.1, revoke, terminated=False, signum=None, expired=False),
    ]
    bodies = translate_all(translator, events)
    assert short(bodies) == [
        ("update_status", "tasks.picky", "queued", None),
        ("update_status", "tasks.picky", "running", None),
        ("job_failed", "tasks.picky", 0, 0),
        ("update_status", "tasks.later", "queued", None),
        ("update_status", "tasks.later", "cancelled", None),
    ]
    await apply(client, bodies)
    # A message redelivered after it ended (same task id) is a run of its own.
    again = translate_all(translator, [task("received", T0 + 5, revoke, name="tasks.later")])
    assert short(again) == [("update_status", "tasks.later", "queued", None)]
    await apply(client, again)
    job = (await client.request({"type": "get_job", "job_id": "tasks.later"}))["job"]
    assert (job["status"], job["runs"]) == ("queued", 2)


async def test_tasks_never_seen_received(client: LineClient) -> None:
    translator = Translator()
    events = [
        # Unregistered: the worker knows only the name, inside the exception.
        task(
            "failed",
            T0,
            "b815b257-0000-4000-8000-000000000004",
            exception="NotRegistered('tasks.nope')",
        ),
        # Events enabled while it ran: no name at all.
        task("succeeded", T0 + 1, "c0ffee00-0000-4000-8000-000000000005", runtime=0.25, result="1"),
        # A pool process killed: the exception says nothing, the traceback does.
        task(
            "failed",
            T0 + 2,
            "c42a041c-0000-4000-8000-000000000006",
            exception="ExceptionWithTraceback()",
            traceback="Traceback (most recent call last):\n  File ...\nbilliard.exceptions."
            "WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 0.\n",
        ),
    ]
    replies = await apply(client, translate_all(translator, events))
    assert replies[0]["alert"] == "Job failed after 0 retries: NotRegistered('tasks.nope')"
    assert replies[0]["job_id"] == "tasks.nope"
    assert replies[1]["job_id"] == UNNAMED_TASK and replies[1]["duration_ms"] == 250
    assert replies[2]["alert"] == (
        "Job failed after 0 retries: billiard.exceptions.WorkerLostError: "
        "Worker exited prematurely: signal 9 (SIGKILL) Job: 0."
    )
    assert translator.unnamed == 2


async def test_a_worker_as_a_heartbeat_job(
    client: LineClient, clock: FakeClock, server: Server
) -> None:
    translator = Translator()
    now = clock.now()
    online = translator.translate(worker("online", now, freq=1.0, active=0))
    assert short(online) == [
        ("update_status", "celery-worker:w1@vm", "running", None),
        ("heartbeat", "celery-worker:w1@vm", None, None),
    ]
    assert online[1]["ttl_ms"] == 2000 and online[1]["for_run"] is True
    # The heartbeat a control command asks for says freq=5 and has no `active`.
    asked = translator.translate(worker("heartbeat", now + 0.5, freq=5))
    assert [(b["type"], b["ttl_ms"]) for b in asked] == [("heartbeat", 2000)]
    await apply(client, online + asked)
    other = translator.translate(
        {**worker("online", now, pid=7, freq=1.0, active=0), "hostname": "w2@vm"}
    )
    await apply(client, other)  # a worker that stops without a word
    offline = translator.translate(worker("offline", now + 1, freq=1.0, active=0))
    assert short(offline) == [("update_status", "celery-worker:w1@vm", "completed", None)]
    await apply(client, offline)
    clock.advance(10)  # far past the ttl: nothing is expected of a stopped worker
    server.engine.wake()
    alerts = await client.request({"type": "get_alerts"})
    assert [(a["job_id"], a["kind"]) for a in alerts["alerts"]] == [
        ("celery-worker:w2@vm", "missed_heartbeat")
    ]
    job = (await client.request({"type": "get_job", "job_id": "celery-worker:w1@vm"}))["job"]
    assert (job["status"], job["monitor"]["deadlines"]) == ("completed", {})
    # Restarted under the same name, heard first by a heartbeat: running again.
    back = translator.translate(worker("heartbeat", now + 10, pid=1, freq=2.0, active=0))
    assert short(back)[0] == ("update_status", "celery-worker:w1@vm", "running", None)
    assert back[1]["ttl_ms"] == 4000


async def test_a_worker_restarted_without_a_clean_stop_starts_a_new_run(
    client: LineClient, clock: FakeClock, server: Server
) -> None:
    """kill -9, then the worker comes back under its name: its run is its uptime,
    so the old run ends (cancelled: it never said how) and a new one starts."""
    job_id = "celery-worker:w1@vm"
    translator = Translator()
    now = clock.now()
    await apply(client, translator.translate(worker("online", now, pid=100, freq=2.0)))
    clock.advance(2)  # within its 4 s ttl: this test is about the restart alone
    back = translator.translate(worker("online", now + 1.5, pid=200, freq=2.0))
    assert short(back) == [
        ("update_status", job_id, "cancelled", None),
        ("update_status", job_id, "running", None),
        ("heartbeat", job_id, None, None),
    ]
    # Its own event_ids: a node that did not know the worker was up sends only
    # the start and the beat of this event, and each is still applied once.
    plain = Translator().translate(worker("online", now + 1.5, pid=200, freq=2.0))
    assert len({b["event_id"] for b in back + plain}) == 4
    await apply(client, back)
    job = (await client.request({"type": "get_job", "job_id": job_id}))["job"]
    assert (job["status"], job["runs"]) == ("running", 2)
    assert job["started_at"] == "2026-09-21T14:13:21.501Z"  # the second start (local_received)
    old = job["recent_runs"][0]
    assert (old["status"], old["started_at"], old["finished_at"]) == (
        "cancelled",
        "2026-09-21T14:13:20.000Z",
        "2026-09-21T14:13:21.501Z",
    )
    # Restarted again, heard first by a heartbeat under yet another pid.
    again = translator.translate(worker("heartbeat", now + 1.8, pid=300, freq=2.0, active=0))
    assert [b.get("status", b["type"]) for b in again] == ["cancelled", "running", "heartbeat"]
    await apply(client, again)
    job = (await client.request({"type": "get_job", "job_id": job_id}))["job"]
    assert (job["status"], job["runs"]) == ("running", 3)
    # The same worker beating on is not a restart.
    beat = translator.translate(worker("heartbeat", now + 1.9, pid=300, freq=2.0, active=0))
    assert short(beat) == [("heartbeat", job_id, None, None)]
    await apply(client, beat)
    server.engine.wake()
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []  # nothing spurious
    assert "missed_heartbeat" in job["monitor"]["deadlines"]  # its heartbeats are expected


async def test_after_a_jobmon_restart_a_worker_online_again_ends_its_old_run(
    client: LineClient, clock: FakeClock
) -> None:
    job_id = "celery-worker:w1@vm"
    now = clock.now()
    await apply(client, Translator().translate(worker("online", now, pid=100, freq=2.0)))
    # A new translator (jobmon restarted): the store says the worker's run is going.
    running = {job_id}
    seeded = Translator(worker_live=running.__contains__)
    # The worker that lived on beats: its run goes on.
    beat = seeded.translate(worker("heartbeat", now + 1, pid=100, freq=2.0, active=0))
    assert short(beat) == [
        ("update_status", job_id, "running", None),
        ("heartbeat", job_id, None, None),
    ]
    await apply(client, beat)
    # A worker of that name coming online is a new one: the old run ends.
    fresh = Translator(worker_live=running.__contains__)
    back = fresh.translate(worker("online", now + 2, pid=200, freq=2.0))
    assert [b.get("status", b["type"]) for b in back] == ["cancelled", "running", "heartbeat"]
    await apply(client, back)
    job = (await client.request({"type": "get_job", "job_id": job_id}))["job"]
    assert (job["status"], job["runs"]) == ("running", 2)


def test_event_ids_are_the_celery_events_own() -> None:
    started = task("started", 1796157943.4548671)
    assert (
        event_id(started) == event_id(dict(started)) == f"celery:{UUID}:started:1796157943.4548671"
    )
    assert event_id(task("started", 1796157945.003)) != event_id(started)  # the next attempt
    beat = worker("heartbeat", 1796157939.103)
    assert event_id(beat, 1) == "celery:w1@vm:heartbeat:1796157939.103:1"
    long = {**beat, "hostname": "w" * 200 + "@vm"}
    assert len(event_id(long)) <= 128 and event_id(long) == event_id(dict(long))


def test_the_name_map_is_bounded() -> None:
    translator = Translator(max_tasks=2)
    for n in range(3):
        translator.translate(task("received", T0, f"id-{n}", name="tasks.ok", retries=0))
    assert list(translator.tasks) == ["id-1", "id-2"]
    forgotten = translator.translate(task("succeeded", T0, "id-0", runtime=1.0))
    assert forgotten[0]["job_id"] == UNNAMED_TASK


def test_broker_urls_lose_their_password() -> None:
    assert redact("redis://:s3cret@10.0.0.5:6379/2") == "redis://10.0.0.5:6379/2"
    assert redact("rediss://app:s3cret@cache:6380/0") == "rediss://app@cache:6380/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
