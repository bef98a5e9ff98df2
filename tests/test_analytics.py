"""Analytics on known data: failures by hour of day in a zone, duration
percentiles, the cost model, high-memory arguments, slow_run alerts, memory alerts."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from helpers import LineClient, jobmon_cmd
from jobmon.clock import FakeClock
from jobmon.server import Server

HOUR = 3600.0


async def analytics(client: LineClient, **query: Any) -> dict[str, Any]:
    reply = await client.request({"type": "get_analytics", **query})
    assert reply["type"] == "analytics", reply
    return reply


async def fail_at(client: LineClient, clock: FakeClock, job_id: str, epoch: float) -> None:
    clock.current = epoch
    await client.request({"type": "update_status", "job_id": job_id, "status": "running"})
    await client.request({"type": "job_failed", "job_id": job_id, "error": "x", "retries": 3})


async def test_failures_by_hour_of_day_in_a_zone(client: LineClient, clock: FakeClock) -> None:
    midnight_utc = 1_795_046_400.0  # 2026-11-18T00:00:00Z
    assert midnight_utc % 86400 == 0
    for hour, job_id in ((2, "a"), (2, "b"), (14, "a"), (26, "a")):  # 26: 02:00 the next day
        await fail_at(client, clock, job_id, midnight_utc + hour * HOUR + 600)
    utc = await analytics(client)
    assert utc["failures_by_hour_of_day"][2] == 3
    assert utc["failures_by_hour_of_day"][14] == 1
    assert sum(utc["failures_by_hour_of_day"]) == 4
    # Berlin is UTC+1 in November; Kolkata UTC+5:30 (each UTC hour's middle decides).
    berlin = await analytics(client, tz="Europe/Berlin", job_id="a")
    assert berlin["failures_by_hour_of_day"][3] == 3 and berlin["failures_by_hour_of_day"][15] == 1
    assert berlin["job"]["failures_by_hour_of_day"][3] == 2
    assert berlin["job"]["failures_by_hour_of_day"][15] == 1
    kolkata = await analytics(client, tz="Asia/Kolkata")
    assert kolkata["failures_by_hour_of_day"][8] == 3  # 02:30 UTC is 08:00 IST
    bad = await client.request({"type": "get_analytics", "tz": "Mars/Olympus"})
    assert (
        bad["text"]
        == "unknown time zone 'Mars/Olympus': expected an IANA name such as \"Europe/Berlin\""
    )


async def test_duration_percentiles_per_job_and_overall(client: LineClient) -> None:
    for n in range(1, 101):  # 1..100 seconds
        await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": n * 1000})
    await client.request({"type": "job_completed", "job_id": "once", "duration_ms": 7000})
    report = await analytics(client, job_id="etl")
    durations = report["job"]["durations"]
    assert durations["runs"] == 100
    # DDSketch at 2% relative accuracy: within 2% of the exact rank value.
    for name, exact in (("p50", 50_000), ("p90", 90_000), ("p99", 99_000)):
        assert durations[name] == pytest.approx(exact, rel=0.021), name
    assert report["durations"]["runs"] == 101
    once = await analytics(client, job_id="once")
    assert once["job"]["durations"] == {"runs": 1, "p50": 7000, "p90": 7000, "p99": 7000}


async def test_cost_per_run_and_per_job_and_the_top_jobs(client: LineClient) -> None:
    # memory 1300 MB: 2 started blocks of 256 MB above 1024 free -> $0.20;
    # 50% CPU -> $0.50; 10 s -> $0.50. One run: $1.20.
    for _ in range(3):
        await client.request(
            {
                "type": "job_completed",
                "job_id": "render",
                "duration_ms": 10_000,
                "resource_usage": {"cpu_percent": 50, "memory_mb": 1300},
            }
        )
    await client.request(
        {
            "type": "job_completed",
            "job_id": "tiny",
            "duration_ms": 1_000,
            "resource_usage": {"cpu_percent": 1, "memory_mb": 100},
        }
    )  # $0.01 + $0.05
    report = await analytics(client, job_id="render")
    assert report["job"]["cost"] == {"runs": 3, "total": 3.6, "average": 1.2}
    assert [(j["job_id"], j["total"], j["average"]) for j in report["top_jobs_by_cost"]] == [
        ("render", 3.6, 1.2),
        ("tiny", 0.06, 0.06),
    ]
    # Prices are the query's to change: CPU free, seconds at $0.10.
    repriced = await analytics(
        client, job_id="render", prices={"price_per_cpu_percent": 0, "price_per_second": 0.1}
    )
    assert repriced["job"]["cost"]["total"] == pytest.approx(3 * (0.2 + 1.0))
    assert repriced["cost_model"]["price_per_second"] == 0.1


async def test_argument_lists_over_their_memory_threshold_twice_are_listed(
    client: LineClient,
) -> None:
    runs = [
        ("resize", ["--width", "4000"], 900, 512),  # over its limit
        ("resize", ["--width", "4000"], 700, 512),  # over again: listed
        ("resize", ["--width", "800"], 300, 512),  # within
        ("thumbs", ["--width", "4000"], 2000, None),  # over the free 1024 MB: same list
        ("resize", ["--width", "9000"], 5000, 512),  # over once only: not listed
    ]
    for job_id, arguments, memory_mb, limit in runs:
        body: dict[str, Any] = {
            "type": "job_completed",
            "job_id": job_id,
            "duration_ms": 100,
            "resource_usage": {"memory_mb": memory_mb},
            "arguments": arguments,
        }
        if limit is not None:
            body["memory_limit_mb"] = limit
        assert (await client.request(body))["type"] == "job_completed"
    report = await analytics(client)
    assert report["high_memory_arguments"] == [
        {"arguments": ["--width", "4000"], "runs_over": 3, "jobs": ["resize", "thumbs"]}
    ]
    job = (await client.request({"type": "get_job", "job_id": "resize"}))["job"]
    assert job["recent_runs"][0]["arguments"] == ["--width", "9000"]
    assert job["recent_runs"][0]["memory_limit_mb"] == 512
    assert job["alerts"] == ["memory"]  # the last run went over its limit


async def test_slow_run_fires_after_twenty_runs_and_resolves(
    client: LineClient, server: Server
) -> None:
    for n in range(20):
        await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 1000 + n})
    # p95 of the 20 runs is about 1019 ms; 2x that is the limit.
    await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 2500})
    alerts = await client.request({"type": "get_alerts", "state": "firing"})
    (alert,) = alerts["alerts"]
    assert alert["kind"] == "slow_run"
    assert alert["text"].startswith("Job etl took 2.5 s, over 2 x its p95 of 1.0")
    await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 1000})
    assert (await client.request({"type": "get_alerts", "state": "firing"}))["alerts"] == []


async def test_a_run_before_twenty_is_never_slow(client: LineClient) -> None:
    for _ in range(19):
        await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 1000})
    await client.request({"type": "job_completed", "job_id": "etl", "duration_ms": 60_000})
    assert (await client.request({"type": "get_alerts"}))["alerts"] == []


async def test_analytics_survive_a_restart_and_a_compaction_with_the_servers_settings(
    start_server: Any, clock: FakeClock, tmp_path: Any
) -> None:
    """Replay depends on --slow-run-factor and --cost-model: they are journaled,
    so an offline `jobmon compact` replays with them, not with the defaults."""
    data_dir = tmp_path / "data"
    settings = {"slow_run_factor": 0, "cost_model": {"free_memory_mb": 4096}}
    async with start_server(data_dir=data_dir, **settings) as server:
        client = await LineClient.connect(server.port)
        for n in range(30):
            await client.request(
                {
                    "type": "job_completed",
                    "job_id": "etl",
                    "duration_ms": 1000 + n * (100 if n == 29 else 1),  # the last is slow
                    "resource_usage": {"cpu_percent": 10, "memory_mb": 2000},
                    "arguments": ["--all"],
                }
            )
        await client.request({"type": "job_failed", "job_id": "etl", "error": "x", "retries": 3})
        before = await analytics(client, job_id="etl")
        alerts_before = (await client.request({"type": "get_alerts"}))["alerts"]
        await client.close()
    assert [a["kind"] for a in alerts_before] == ["failed"]  # no slow_run: factor 0
    assert before["high_memory_arguments"] == []  # 2000 MB is under the 4096 MB allowance
    for compact in (False, True):  # replayed from the journal, then from a snapshot
        if compact:
            subprocess.run(jobmon_cmd("compact", "--data-dir", str(data_dir)), check=True)
        async with start_server(data_dir=data_dir, **settings) as server:
            client = await LineClient.connect(server.port)
            assert await analytics(client, job_id="etl") == before
            assert (await client.request({"type": "get_alerts"}))["alerts"] == alerts_before
            await client.close()


def test_the_inline_sketch_add_matches_ddsketch() -> None:
    """analytics._add is DDSketch.add done inline for speed: the same bins."""
    import random

    from jobmon import analytics as a

    rng = random.Random(3)
    for _ in range(100):
        library, inline = a._sketch(), a._sketch()
        for _ in range(rng.randint(1, 300)):
            value = rng.choice([0, 0.5, 3, rng.uniform(1, 1e5), rng.uniform(1e6, 1e8)])
            library.add(value)
            a._add(inline, value)
        assert a._sketch_row(inline) == a._sketch_row(library)
