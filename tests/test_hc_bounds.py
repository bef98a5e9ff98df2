"""What a hostile client cannot do: grow the ping log, the bodies kept or the
live runs without bound, or slip in an over-long setting."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import LineClient
from jobmon.hc import model, registry
from jobmon.runs import MAX_LIVE_RUNS

UUID = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"


async def test_the_ping_log_and_the_bodies_are_bounded(
    client: LineClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "BODY_BUDGET", 1000)  # characters over all checks
    await client.request({"type": "create_check", "uuid": UUID, "name": "noisy"})
    other = "6bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    await client.request({"type": "create_check", "uuid": other, "name": "quiet"})
    await client.request({"type": "ping_check", "check": other, "body": "o" * 400})
    for n in range(model.PINGS_KEPT + 50):
        reply = await client.request(
            {"type": "ping_check", "check": UUID, "body": f"{n:04d}" * 100}
        )
        assert reply["n"] == n + 1
    pings = (await client.request({"type": "get_check_pings", "check": UUID}))["pings"]
    assert len(pings) == model.PINGS_KEPT and pings[0]["n"] == 150 and pings[-1]["n"] == 51
    # 400 characters each, 1000 over all: the two newest bodies are kept, the rest went
    # oldest first (the other check's too).
    assert [p["has_body"] for p in pings[:3]] == [True, True, False]
    body = await client.request({"type": "get_ping_body", "check": UUID, "n": 150})
    assert body["body"] == "0149" * 100
    gone = await client.request({"type": "get_ping_body", "check": other, "n": 1})
    assert gone["code"] == 20
    too_big = {"type": "ping_check", "check": UUID, "body": "x" * (model.PING_BODY_LIMIT + 1)}
    assert (await client.request(too_big))["code"] == 12


async def test_live_runs_are_capped(client: LineClient) -> None:
    start = {"type": "update_status", "job_id": "many", "status": "running"}
    for n in range(MAX_LIVE_RUNS + 6):
        await client.request({**start, "run_id": f"r{n}"})
    job = (await client.request({"type": "get_job", "job_id": "many"}))["job"]
    assert len(job["live_runs"]) == MAX_LIVE_RUNS
    assert job["live_runs"][0]["run_id"] == "r6"  # the oldest six were abandoned
    assert {r["status"] for r in job["recent_runs"]} == {"cancelled"}
    assert job["status"] == "running"


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("name", "n" * 101, "name must be a string of at most 100"),
        ("tags", "t" * 501, "tags must be a string of at most 500"),
        ("desc", "d" * 10_001, "desc must be a string of at most 10000"),
        ("slug", "Not A Slug", "slug must be at most 100 characters of a-z"),
        ("timeout", 59, "timeout must be a whole number of seconds between 60"),
        ("grace", True, "grace must be a whole number"),
        ("schedule", "*-*~1 12:00", "not a five-field cron expression"),
        ("tz", "Mars/Olympus", "is not an IANA time zone"),
        ("methods", "GET", 'methods must be "" (HEAD, GET and POST) or "POST"'),
        ("channels", ["x" * 65], "channels must be an array of at most 64 channel names"),
    ],
)
async def test_settings_are_checked(client: LineClient, field: str, value: Any, words: str) -> None:
    reply = await client.request({"type": "create_check", "uuid": UUID, field: value})
    assert reply["type"] == "error" and reply["code"] == 12
    assert words in reply["text"], reply["text"]
    assert (await client.request({"type": "get_check", "check": UUID}))["code"] == 20
