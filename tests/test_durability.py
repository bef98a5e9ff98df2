"""Durability with real processes: kill -9, torn tails, damage, compaction, graceful stop."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from helpers import LineClient, ServerProcess, compact_offline, jobmon_cmd


async def report_many(port: int, count: int) -> list[dict[str, object]]:
    """Pipeline `count` events over 4 connections; returns every reply once acknowledged."""

    async def one(conn: int) -> list[dict[str, object]]:
        client = await LineClient.connect(port)
        bodies = []
        for i in range(conn, count, 4):
            if i % 3 == 2:
                bodies.append(
                    {
                        "type": "job_completed",
                        "msg_id": i,
                        "job_id": f"job-{i % 97}",
                        "duration_ms": i,
                    }
                )
            else:
                bodies.append(
                    {
                        "type": "update_status",
                        "msg_id": i,
                        "job_id": f"job-{i % 97}",
                        "status": "running",
                        "progress": i % 101,
                    }
                )
        await client.send(*bodies)
        replies = [await client.read() for _ in bodies]
        await client.close()
        return replies

    results = await asyncio.gather(*(one(c) for c in range(4)))
    return [reply for replies in results for reply in replies]


async def snapshot_of_state(port: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    client = await LineClient.connect(port)
    stats = await client.request({"type": "get_stats"})
    jobs = (await client.request({"type": "list_jobs", "limit": 1000}))["jobs"]
    await client.close()
    return stats, jobs


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_acknowledged_events_survive_kill_9(data_dir: Path, fsync: str) -> None:
    with ServerProcess(data_dir, "--fsync", fsync) as server:
        replies = await report_many(server.port, 4000)
        assert all(r["type"] in ("status_updated", "job_completed") for r in replies)
        before = await snapshot_of_state(server.port)
        server.kill9()
    with ServerProcess(data_dir, "--fsync", fsync) as restarted:
        after = await snapshot_of_state(restarted.port)
        restarted.terminate()
    assert after == before
    stats, jobs = after
    assert stats["total"] == 97
    timed = [i for i in range(4000) if i % 3 == 2]
    assert stats["avg_duration_ms"] == sum(timed) / len(timed)


async def test_torn_last_record_is_dropped_with_a_warning(data_dir: Path) -> None:
    with ServerProcess(data_dir, "--fsync", "always") as server:
        await report_many(server.port, 100)
        before = await snapshot_of_state(server.port)
        assert server.terminate() == 0
    (journal,) = sorted(data_dir.glob("journal-*.log"))
    good_size = journal.stat().st_size
    with open(journal, "ab") as f:  # a crash mid-write: half a frame, no newline
        f.write(b'1234abcd [1795000000.0,[["update_status",["job-1","fail')
    with ServerProcess(data_dir) as restarted:
        assert await snapshot_of_state(restarted.port) == before
        restarted.terminate()
    assert "dropped a torn last frame" in restarted.stderr
    assert f"offset {good_size}" in restarted.stderr
    assert journal.stat().st_size == good_size  # cut off, so new frames follow good ones


async def test_damage_before_the_tail_refuses_to_start(data_dir: Path) -> None:
    with ServerProcess(data_dir, "--fsync", "always") as server:
        for i in range(3):  # three separate frames
            client = await LineClient.connect(server.port)
            await client.request({"type": "update_status", "job_id": f"j{i}", "status": "running"})
            await client.close()
        server.terminate()
    (journal,) = sorted(data_dir.glob("journal-*.log"))
    data = bytearray(journal.read_bytes())
    first_end = data.index(b"\n")
    data[first_end + 20] ^= 0x01  # flip a bit inside the second frame
    journal.write_bytes(bytes(data))
    result = subprocess.run(
        jobmon_cmd("serve", "--port", "0", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{journal}: damaged at byte offset {first_end + 1}" in result.stderr
    assert "will not start" in result.stderr


async def test_sigterm_answers_flushes_and_exits_zero(data_dir: Path) -> None:
    with ServerProcess(data_dir, "--fsync", "no") as server:
        client = await LineClient.connect(server.port)
        reply = await client.request(
            {"type": "job_completed", "msg_id": 1, "job_id": "a", "duration_ms": 5}
        )
        assert reply["type"] == "job_completed"
        assert server.terminate() == 0
        assert await client.reader.read() == b""  # closed by the server
        await client.close()
    assert '"msg":"stopped"' in server.stderr
    stopped = next(orjson.loads(line) for line in server.stderr.splitlines() if '"stopped"' in line)
    assert stopped["requests_handled"] == 1 and stopped["connections_total"] == 1
    with ServerProcess(data_dir) as restarted:
        stats, _ = await snapshot_of_state(restarted.port)
        restarted.terminate()
    assert stats == {
        "type": "job_stats",
        "total": 1,
        "completed": 1,
        "failed": 0,
        "avg_duration_ms": 5,
    }


def test_sigterm_as_soon_as_listening_is_a_clean_stop(data_dir: Path) -> None:
    # Whoever waits for "listening" (a supervisor, a test) may signal at once.
    with ServerProcess(data_dir) as server:
        code = server.terminate()
    assert code == 0, server.stderr
    assert '"msg":"stopped"' in server.stderr


async def test_compaction_keeps_state_and_bounds_the_journal(start_server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, compact_min_bytes=20_000) as server:
        # Alerts too, before the snapshot: one still open, one resolved.
        client = await LineClient.connect(server.port)
        for job_id in ("alerting", "recovered"):
            await client.request(
                {"type": "job_failed", "job_id": job_id, "error": "disk full", "retries": 3}
            )
        await client.request({"type": "job_completed", "job_id": "recovered", "duration_ms": 7})
        await client.close()
        replies = await report_many(server.port, 3000)
        assert len(replies) == 3000
        await server.engine.wait_background()
        assert server.data_dir is not None and server.data_dir.compactions >= 1
        before = await snapshot_of_state(server.port)
        alerts_before = [a.to_row() for a in server.node.store.recent_alerts()]
    snapshots = sorted(data_dir.glob("snapshot-*.json"))
    journals = sorted(data_dir.glob("journal-*.log"))
    assert len(snapshots) == 1
    snapshot_body = orjson.loads(snapshots[0].read_bytes().split(b"\n")[1])
    assert [row[1:3] for row in snapshot_body["alerts"]] == [
        ["alerting", "failed"],
        ["recovered", "failed"],
    ]
    # Only journals from the snapshot's generation on are kept.
    assert [p.name[8:14] for p in journals] >= [snapshots[0].name[9:15]]
    assert sum(p.stat().st_size for p in journals) < 60_000
    async with start_server(data_dir=data_dir) as restarted:
        assert await snapshot_of_state(restarted.port) == before
        assert [a.to_row() for a in restarted.node.store.recent_alerts()] == alerts_before
        # The restored open alert is still the same incident: no second alert.
        client = await LineClient.connect(restarted.port)
        await client.request(
            {"type": "job_failed", "job_id": "alerting", "error": "disk full", "retries": 3}
        )
        await client.close()
        assert len(restarted.node.store.recent_alerts()) == len(alerts_before)


async def test_offline_compact_command(data_dir: Path) -> None:
    with ServerProcess(data_dir) as server:
        await report_many(server.port, 500)
        before = await snapshot_of_state(server.port)
        server.terminate()
    result = compact_offline(data_dir)
    assert "compacted 97 jobs" in result.stderr
    (journal,) = data_dir.glob("journal-*.log")
    assert journal.stat().st_size == 0
    with ServerProcess(data_dir) as restarted:
        assert await snapshot_of_state(restarted.port) == before
        restarted.terminate()


async def test_default_max_retries_change_does_not_rewrite_history(
    start_server, data_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, max_retries=2) as server:
        client = await LineClient.connect(server.port)
        reply = await client.request({"type": "job_failed", "job_id": "a", "retries": 2})
        assert reply["type"] == "alert_sent"
        await client.close()
    # Restarted with a higher default: the replayed failure must still be a failure.
    async with start_server(data_dir=data_dir, max_retries=5) as server:
        client = await LineClient.connect(server.port)
        job = (await client.request({"type": "get_job", "job_id": "a"}))["job"]
        assert job["status"] == "failed"
        reply = await client.request({"type": "job_failed", "job_id": "b", "retries": 2})
        assert reply["will_retry"] is True
        await client.close()
    async with start_server(data_dir=data_dir, max_retries=5) as server:
        assert server.node.store.jobs["a"].status.value == "failed"
        assert server.node.store.jobs["b"].status.value == "retrying"


async def test_in_memory_writes_nothing(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with start_server(in_memory=True, data_dir=tmp_path / "unused") as server:
        client = await LineClient.connect(server.port)
        reply = await client.request({"type": "update_status", "job_id": "a", "status": "running"})
        assert reply == {
            "type": "status_updated",
            "job_id": "a",
            "status": "running",
            "progress": 0,
        }
        job = (await client.request({"type": "get_job", "job_id": "a"}))["job"]
        assert job["status"] == "running"  # applied, in memory only
        await client.close()
        assert server.data_dir is None
    assert not (tmp_path / "unused").exists()


async def test_failed_compaction_loses_nothing_and_backs_off(start_server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    async with start_server(data_dir=data_dir, compact_min_bytes=20_000) as server:
        # The snapshot's temp file cannot be created: the compaction child fails.
        (data_dir / "snapshot-000001.tmp").mkdir()
        await report_many(server.port, 3000)
        await server.engine.wait_background()
        assert server.data_dir is not None
        assert server.data_dir.compactions == 0
        assert server.data_dir.retry_at_bytes > server.data_dir.writer.size  # no retry storm
        before = await snapshot_of_state(server.port)
    assert sorted(p.name for p in data_dir.glob("journal-*.log")) == [
        "journal-000000.log",
        "journal-000001.log",
    ]
    assert not list(data_dir.glob("snapshot-*.json"))
    (data_dir / "snapshot-000001.tmp").rmdir()
    async with start_server(data_dir=data_dir) as restarted:
        assert await snapshot_of_state(restarted.port) == before


async def test_restart_during_a_deadline_with_real_processes(data_dir: Path) -> None:
    with ServerProcess(data_dir) as server:
        client = await LineClient.connect(server.port)
        reply = await client.request({"type": "heartbeat", "job_id": "db-sync", "ttl_ms": 1500})
        await client.close()
        assert server.terminate() == 0
    assert '"jobmon.alert"' not in server.stderr  # stopped before the deadline
    deadline = datetime.fromisoformat(reply["deadline_at"]).timestamp()
    # The deadline passes while jobmon is down (wall-clock time is what is tested).
    await asyncio.sleep(max(0.0, deadline - time.time()) + 0.2)
    with ServerProcess(data_dir) as restarted:
        line = await asyncio.to_thread(restarted.wait_for_log, '"jobmon.alert"', 30)
        alert = orjson.loads(line)
        assert alert["job_id"] == "db-sync" and alert["kind"] == "missed_heartbeat"
        assert alert["text"].endswith("(detected after a restart)")
        restarted.terminate()
    with ServerProcess(data_dir) as again:
        client = await LineClient.connect(again.port)
        found = (await client.request({"type": "get_alerts"}))["alerts"]
        await client.close()
        again.terminate()
    assert [(a["id"], a["state"]) for a in found] == [(1, "firing")]
    assert '"jobmon.alert"' not in again.stderr  # not fired a second time
