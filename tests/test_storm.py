"""Issue 9, item 10: a storm of deadlines due at once fires in slices across
turns, in the order and with the alerts one turn would have, and replays the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from helpers import LineClient
from jobmon.clock import FakeClock
from jobmon.engine import EXPIRE_SLICE
from jobmon.journal import encode_frame, read_records
from jobmon.persistence import TICK_RECORD

STORM = 10 * EXPIRE_SLICE


async def beat_all(port: int, count: int, ttl_ms: int = 60_000) -> None:
    client = await LineClient.connect(port)
    await client.send(
        *({"type": "heartbeat", "job_id": f"storm-{i:05d}", "ttl_ms": ttl_ms} for i in range(count))
    )
    for _ in range(count):
        assert (await client.read())["type"] == "heartbeat_ok"
    await client.close()


async def test_a_storm_fires_in_slices_and_a_probe_gets_in_between(
    start_server: Any, clock: FakeClock, data_dir: Path
) -> None:
    async with start_server(data_dir=data_dir) as server:
        await beat_all(server.port, STORM)
        subscriber = await LineClient.connect(server.port)
        await subscriber.request({"type": "subscribe", "topics": ["alerts"]})
        probe = await LineClient.connect(server.port)
        clock.advance(61)
        server.engine.wake()
        assert (await probe.request({"type": "get_stats"}))["total"] == STORM
        fired_before_the_probe_was_answered = server.node.store.next_alert_id - 1
        # The probe was answered between two slices, not after the whole storm.
        assert 0 < fired_before_the_probe_was_answered < STORM
        alerts = [(await subscriber.read())["alert"] for _ in range(STORM)]
        # The order of one big turn: by deadline, then job id; ids in that order.
        assert [a["job_id"] for a in alerts] == [f"storm-{i:05d}" for i in range(STORM)]
        assert [a["id"] for a in alerts] == list(range(1, STORM + 1))
        assert {a["kind"] for a in alerts} == {"missed_heartbeat"}
        live = await probe.request({"type": "get_alerts", "limit": 1000})
        await subscriber.close()
        await probe.close()
    ticks = [
        args
        for _, name, args in read_records(data_dir / "journal-000000.log", False)
        if name == TICK_RECORD
    ]
    # Each tick says how many it fired: at most a slice, all of them in all.
    assert len(ticks) >= STORM // EXPIRE_SLICE
    assert all(len(t) == 2 and 0 < t[1] <= EXPIRE_SLICE for t in ticks)
    assert sum(t[1] for t in ticks) == STORM
    async with start_server(data_dir=data_dir) as restarted:
        client = await LineClient.connect(restarted.port)
        assert await client.request({"type": "get_alerts", "limit": 1000}) == live
        assert restarted.node.store.next_alert_id == STORM + 1
        await client.close()


async def test_a_tick_recorded_before_slices_still_replays_everything_due(
    start_server: Any, clock: FakeClock, data_dir: Path
) -> None:
    """Old journals carry ``_tick`` as ``[restarted_at]``: all that was due fired."""
    async with start_server(data_dir=data_dir) as server:
        await beat_all(server.port, 3 * EXPIRE_SLICE)
    journal = data_dir / "journal-000000.log"
    with open(journal, "ab") as f:
        f.write(encode_frame(clock.now() + 61, [(TICK_RECORD, [None])]))
    async with start_server(data_dir=data_dir) as restarted:
        store = restarted.node.store
        assert store.next_alert_id == 3 * EXPIRE_SLICE + 1
        texts = [a.text for a in store.recent_alerts()]
        assert all(t.startswith("Job storm-") and "missed its heartbeat" in t for t in texts)
        assert [a.job_id for a in store.recent_alerts()] == sorted(store.jobs)


async def test_reminders_are_sliced_too(start_server: Any, clock: FakeClock) -> None:
    """--realert-ms: the reminders of a storm go out a slice a turn as well."""
    async with start_server(realert_ms=60_000) as server:
        await beat_all(server.port, STORM)
        subscriber = await LineClient.connect(server.port)
        await subscriber.request({"type": "subscribe", "topics": ["alerts"]})
        clock.advance(61)
        server.engine.wake()
        first = [(await subscriber.read())["alert"]["id"] for _ in range(STORM)]
        probe = await LineClient.connect(server.port)
        pushed = server.engine.publisher.pushed
        clock.advance(60)
        server.engine.wake()
        await probe.request({"type": "get_stats"})
        assert server.engine.publisher.pushed - pushed < len(first)  # answered mid-reminders
        again = [orjson.loads(await subscriber.read_line())["alert"]["id"] for _ in first]
        assert again == first
        await subscriber.close()
        await probe.close()
