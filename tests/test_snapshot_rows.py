"""Snapshot rows of jobs (``jobrows``): this format, and the one before it (an
operator upgrading in place restarts from the snapshot they have), both give
back exactly the replies the state gave before the restart."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from helpers import LineClient, ServerProcess, compact_offline
from jobmon import jobrows
from jobmon.journal import write_snapshot

# The slots a Job had before row format 2, in that format's order (seq was not
# in a row: its place gave it).
V1_FIELDS = [
    "job_id",
    "status",
    "progress",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "runs",
    "duration_ms",
    "resource_usage",
    "error",
    "retries",
    "max_retries",
    "alerts",
    "monitor",
    "last_success_at",
    "recent_runs",
    "run_info",
]
ROW2_FIELDS = [
    "job_id",
    "status",
    "progress",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "runs",
    "duration_ms",
    "resource_usage",
    "last_success_at",
    "recent_runs",
    "more",
    "seq",
]
MORE_FIELDS = ["error", "retries", "max_retries", "alerts", "monitor", "run_info"]


def reports() -> list[dict[str, Any]]:
    """Jobs with and without what ``Job.more`` holds, one, two and many runs."""
    usage = {"cpu_percent": 12.5, "memory_mb": 300}
    out: list[dict[str, Any]] = [
        # Not running: a restart arms worker_lost for the runs whose worker was connected.
        {"type": "register_job", "job_id": "watched"},
        {"type": "update_status", "job_id": "watched", "status": "queued", "progress": 5},
        {"type": "update_status", "job_id": "plain", "status": "queued"},
        {"type": "update_status", "job_id": "capped", "status": "running", "max_retries": 7},
        {"type": "job_failed", "job_id": "broken", "error": "disk full", "retries": 3},
        {"type": "job_failed", "job_id": "retrying", "error": "timeout", "retries": 1},
        {"type": "job_completed", "job_id": "once", "duration_ms": 40, "resource_usage": usage},
        {"type": "job_failed", "job_id": "twice", "error": "disk full", "retries": 3},
        {"type": "update_status", "job_id": "twice", "status": "running"},
        {
            "type": "job_completed",
            "job_id": "twice",
            "duration_ms": 9,
            "arguments": ["--part", "1"],
        },
    ]
    for run in range(25):  # more than RECENT_RUNS, a success among them
        out.append({"type": "update_status", "job_id": "often", "status": "running"})
        if run % 3:
            out.append({"type": "job_failed", "job_id": "often", "error": f"e{run}", "retries": 3})
        else:
            out.append({"type": "job_completed", "job_id": "often", "duration_ms": run})
    return out


JOB_IDS = ("watched", "plain", "capped", "broken", "retrying", "once", "twice", "often")
QUESTIONS: list[dict[str, Any]] = [
    *({"type": "get_job", "job_id": job_id} for job_id in JOB_IDS),
    {"type": "get_stats"},
    {"type": "list_jobs", "limit": 100},
    *({"type": "list_jobs", "status": s} for s in ("failed", "running", "completed", "queued")),
    {"type": "get_alerts"},
]


async def answers(port: int) -> list[bytes]:
    """Every question's reply line, as bytes."""
    client = await LineClient.connect(port)
    await client.send(*QUESTIONS)
    lines = [await client.read_line() for _ in QUESTIONS]
    await client.close()
    return lines


def as_format_1(body: dict[str, Any]) -> dict[str, Any]:
    """A format-2 snapshot body as jobmon wrote it before format 2."""
    old = {k: v for k, v in body.items() if k not in ("job_rows", "status_blocks")}
    rows = []
    for row in body["jobs"]:
        job = dict(zip(ROW2_FIELDS, row, strict=True))
        slots = job.pop("more") or [None, 0, None, None, None, None]
        more = dict(zip(MORE_FIELDS, slots, strict=True))
        job.update(more)
        if job["resource_usage"] is not None:  # base64 of its JSON, then an object
            job["resource_usage"] = orjson.loads(base64.b64decode(job["resource_usage"]))
        runs = job["recent_runs"]
        if runs is not None and type(runs[0]) is not list:  # one run: a list of one, then
            job["recent_runs"] = [runs]
        rows.append([job[name] for name in V1_FIELDS])
    old["jobs"] = rows
    return old


async def test_restart_from_either_row_format_answers_the_same(data_dir: Path) -> None:
    with ServerProcess(data_dir) as server:
        client = await LineClient.connect(server.port)
        replies = await client.pipeline(reports())
        assert all(r["type"] != "error" for r in replies), replies
        await client.close()
        before = await answers(server.port)
        server.terminate()
    compact_offline(data_dir)
    (snapshot,) = data_dir.glob("snapshot-*.json")
    header, body = snapshot.read_bytes().split(b"\n", 1)
    state = orjson.loads(body)
    assert state["job_rows"] == 2 and body.startswith(jobrows.STATE_PREFIX)
    assert set(state) == set(jobrows.State.__struct_fields__)  # read in one pass, every part
    by_id = {row[0]: dict(zip(ROW2_FIELDS, row, strict=True)) for row in state["jobs"]}
    # Only jobs with an error, retries, alerts, a monitor... carry a `more`.
    assert by_id["plain"]["more"] is None and by_id["once"]["more"] is None
    # Its failure was resolved by the run after: what is left is that run's arguments.
    assert by_id["twice"]["more"] == [None, 0, None, None, None, {"arguments": ["--part", "1"]}]
    assert by_id["watched"]["more"][4] is not None  # the monitor
    assert by_id["capped"]["more"][2] == 7
    assert [by_id[j]["seq"] for j in JOB_IDS] == list(range(len(JOB_IDS)))
    assert (
        base64.b64decode(by_id["once"]["resource_usage"]) == b'{"cpu_percent":12.5,"memory_mb":300}'
    )

    with ServerProcess(data_dir) as restarted:
        assert await answers(restarted.port) == before
        restarted.terminate()
    generation = orjson.loads(header)["generation"]
    write_snapshot(snapshot, generation, as_format_1(state))
    with ServerProcess(data_dir) as upgraded:
        assert await answers(upgraded.port) == before
        upgraded.terminate()


async def test_a_cluster_snapshot_of_either_row_format_loads_the_same(start_server) -> None:  # type: ignore[no-untyped-def]
    """A cluster's snapshot (in Redis) is read back by orjson: rows as lists."""
    from jobmon.commands import get_job
    from jobmon.model import snapshot_default
    from jobmon.node import Node
    from jobmon.store import Store

    async with start_server() as server:
        client = await LineClient.connect(server.port)
        await client.pipeline(reports())
        await client.close()
        state = orjson.loads(
            orjson.dumps(server.node.store.to_snapshot(), default=snapshot_default)
        )
        expected = [
            orjson.dumps(get_job.record(server.node, job))
            for job in server.node.store.jobs.values()
        ]
        stats = server.node.store.stats()
    for body in (state, as_format_1(state)):
        node = Node(Store())
        node.store.load_snapshot(orjson.loads(orjson.dumps(body)))
        records = [orjson.dumps(get_job.record(node, job)) for job in node.store.jobs.values()]
        assert records == expected
        assert node.store.stats() == stats
        assert [job.seq for job in node.store.jobs.values()] == list(range(len(JOB_IDS)))
