"""What the store keeps so a question reads little (jobs by status, the cost
ranking) must answer exactly as reading every job does, on random histories."""

from __future__ import annotations

import contextlib
import random
from itertools import islice
from typing import Any

import orjson
import pytest

from jobmon.commands import list_jobs
from jobmon.errors import RequestError
from jobmon.model import STATUS_BY_NAME, snapshot_default
from jobmon.node import Node
from jobmon.protocol import decode
from jobmon.store import Store

STATUSES = list(STATUS_BY_NAME)


def send(node: Node, now: float, body: dict[str, Any]) -> None:
    request = decode(orjson.dumps(body))
    assert request is not None
    frame, msg_id, handler, args = request
    assert handler is not None, args
    with contextlib.suppress(RequestError):  # refused (done without a start): no change
        handler.apply(node, now, args, msg_id)


def reloaded(store: Store) -> Store:
    snap = orjson.loads(orjson.dumps(store.to_snapshot(), default=snapshot_default))
    again = Store()
    again.load_snapshot(snap)
    return again


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_list_jobs_by_status_is_the_scan_of_every_job(seed: int) -> None:
    rng = random.Random(seed)
    node = Node(Store())
    for step in range(6000):
        status = rng.choice([*STATUSES[:4], "completed", "completed", "failed"])
        if rng.random() < 0.01:
            status = "cancelled"
        send(
            node,
            1.7e9,
            {"type": "update_status", "job_id": f"j{rng.randrange(3000)}", "status": status},
        )
        if step == 3000:
            node.store = reloaded(node.store)
    jobs = node.store.jobs

    def every_job(status: str | None, limit: int, offset: int, q: str | None) -> Any:
        page, position = [], offset
        for job in islice(jobs.values(), offset, None):
            position += 1
            if (status is None or job.status.value == status) and (q is None or q in job.job_id):
                page.append(job.job_id)
                if len(page) == limit:
                    break
        return page, (str(position) if position < len(jobs) else None)

    for _ in range(1500):
        args = (
            rng.choice([*STATUSES, None]),
            rng.choice([1, 2, 5, 100, 1000]),
            rng.choice(
                [0, 1, 1023, 1024, 1025, 2047, len(jobs) - 1, len(jobs), rng.randrange(3100)]
            ),
            rng.choice([None, "1", "99"]),
        )
        reply = list_jobs.apply(node, 1.7e9, args, None)
        got = [orjson.loads(orjson.dumps(row))["job_id"] for row in reply["jobs"]]
        assert (got, reply["next_cursor"]) == every_job(*args), args


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_kept_cost_ranking_is_the_ranking_of_every_job(seed: int) -> None:
    rng = random.Random(seed)
    node = Node(Store())
    now = 1.7e9
    checked = 0
    for step in range(20_000):
        job_id = f"j{rng.randrange(400)}"
        roll = rng.random()
        if roll < 0.3:  # completed this way, a job's last duration changes
            status = rng.choice(["running", "queued", "completed"])
            send(node, now, {"type": "update_status", "job_id": job_id, "status": status})
        elif roll < 0.75:  # few distinct figures: many equal totals
            body: dict[str, Any] = {
                "type": "job_completed",
                "job_id": job_id,
                "duration_ms": rng.choice([1000, 2000, rng.randrange(1, 9000)]),
            }
            if rng.random() < 0.9:
                body["resource_usage"] = {
                    "cpu_percent": rng.choice([10, 20]),
                    "memory_mb": rng.choice([100, 2000]),
                }
            send(node, now, body)
        elif roll < 0.9:
            body = {"type": "job_failed", "job_id": job_id, "retries": rng.randrange(4)}
            if rng.random() < 0.5:
                body["resource_usage"] = {"cpu_percent": 5, "memory_mb": 300}
            send(node, now, body)
        else:
            now += 1
        if step % 500 == 0:
            store = node.store
            store.settle()
            analytics = store.analytics
            checked += analytics.ranking.valid
            for top in (1, 5, 50, 100):
                kept = analytics._ranked(analytics.cost_model, top, store.jobs)
                every = analytics._rank_all(analytics.cost_model, top, store.jobs)
                assert [(t, j, s[:5]) for t, j, s in kept] == [(t, j, s[:5]) for t, j, s in every]
        if step == 10_000:
            node.store = reloaded(node.store)
    assert checked > 30  # the kept ranking answered, not the full reading
