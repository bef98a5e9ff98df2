"""The real healthchecks-io client (PyPI, in its own venv .venv-hc made by
`make install`: its pins conflict with ours) drives jobmon's management and
pinging APIs, every one of its calls, unchanged."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from helpers import LineClient, communicate, free_port
from jobmon.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent
HC_PYTHON = ROOT / ".venv-hc" / "bin" / "python"
DRIVER = Path(__file__).parent / "hc_client_drive.py"
TOKEN = "api-key-for-tests"
PING_KEY = "fqOOd6-F4MMNuCEnzTU01w"


async def drive(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    assert HC_PYTHON.exists(), "run `make install`: it makes .venv-hc with healthchecks-io"
    proc = await asyncio.create_subprocess_exec(
        str(HC_PYTHON),
        str(DRIVER),
        base + "/api/",
        base + "/ping/",
        TOKEN,
        PING_KEY,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(proc, 120)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_every_call_of_the_healthchecks_io_client(
    start_server: Any, clock: FakeClock
) -> None:
    clock.current = time.time()  # the client compares flip times with its own clock
    async with start_server(
        http_port=free_port(),
        token=TOKEN,
        ping_key=PING_KEY,
        notify=["ops=json://127.0.0.1:9/unused", "json://127.0.0.1:9/all"],
    ) as server:
        assert server.http is not None
        result = await drive(server.http.port)
        tcp = await LineClient.connect(server.port)
        await tcp.request({"type": "auth", "token": TOKEN})
        base = f"http://127.0.0.1:{server.http.port}"
        s = result["sync"]

        created, upserted = s["created"], s["upserted"]
        assert created["name"] == "Backups" and created["tags"] == "prod backup"
        assert (created["timeout"], created["grace"], created["status"]) == (3600, 120, "new")
        assert created["ping_url"] == f"{base}/ping/{created['uuid']}"
        assert created["update_url"] == f"{base}/api/v3/checks/{created['uuid']}"
        assert upserted["uuid"] == created["uuid"] and upserted["timeout"] == 7200
        assert s["v1_created"]["slug"] == "nightly-report"  # v1 makes it from the name
        assert s["v1_created"]["update_url"].startswith(f"{base}/api/v1/")
        assert s["updated"]["desc"] == "db dump" and s["updated"]["grace"] == 300
        for ping in ("start", "success", "slug_success", "fail", "exit_0", "exit_3"):
            assert s[ping] == [True, "OK"], ping
        uuid = created["uuid"]
        assert s["check"]["uuid"] == uuid and s["check"]["status"] == "up"
        assert s["check"]["n_pings"] == 6  # start, success, fail, 0, and the trap's two
        assert [c["name"] for c in s["checks"]] == ["Backups", "Nightly Report"]
        assert s["tagged"] == ["Backups"] and s["untagged"] == []
        kinds = [p["type"] for p in s["pings"]]
        assert kinds == ["success", "start", "success", "fail", "success", "start"]
        assert [p["number_of_pings"] for p in s["pings"]] == [6, 5, 4, 3, 2, 1]
        assert s["pings"][2]["duration"] is None  # exit 0 after a fail: no start
        assert s["pings"][4]["duration"] is not None and s["pings"][4]["duration"] >= 0
        assert s["pings"][0]["user_agent"].startswith("py-healthchecks.io/")
        assert s["pings"][0]["method"] == "POST" and s["pings"][0]["remote_addr"] == "127.0.0.1"
        assert [f["up"] for f in s["flips"]] == [1, 0, 1]  # newest first: up, down, up
        assert s["flips_recent"] == 3 and s["flips_future"] == 0 and s["flips_past"] == 0
        (ops,) = s["integrations"]
        assert (ops["name"], ops["kind"]) == ("ops", "json")
        assert set(s["badges"]) == {"*", "prod", "backup"}
        assert s["badges"]["prod"]["svg3"].endswith("/prod.svg")
        assert s["paused"]["status"] == "paused" and s["deleted"]["name"] == "Nightly Report"
        assert s["errors"] == {
            "get_deleted": "CheckNotFoundError",
            "ping_deleted": "CheckNotFoundError",
            "slug_deleted": "CheckNotFoundError",
            "bad_timeout": "BadAPIRequestError",
            "wrong_key": "HCAPIAuthError",
        }

        a = result["async"]
        assert a["updated"]["name"] == "Async job 2" and a["checks"] == ["Async job 2"]
        assert [a[k] for k in ("start", "fail", "exit", "success")] == [[True, "OK"]] * 4
        assert [p["type"] for p in a["pings"]] == [
            "success",
            "success",
            "fail",
            "start",
            "success",
            "start",
        ]
        assert a["check"]["status"] == "up" and a["flips"][0]["up"] == 1
        assert a["paused"]["status"] == "paused" and a["get_deleted"] == "CheckNotFoundError"
        assert "async" in a["badges"]

        # A check is a job: the same one over TCP, with the body as the run's output.
        reply = await tcp.request({"type": "get_job", "job_id": uuid})
        job = reply["job"]
        assert job["status"] == "completed" and job["max_retries"] == 0
        assert job["monitor"]["schedule"] == {"every_ms": 7_200_000}
        assert job["monitor"]["grace_ms"] == 300_000 and job["monitor"]["max_runtime_ms"] == 300_000
        outputs = [r.get("output") for r in job["recent_runs"]]
        assert "inside the trap" in outputs[0] and "disk full" in outputs
        assert "dumped 3 tables\n" in outputs
        nightly = await tcp.request({"type": "get_job", "job_id": "nightly-report"})
        assert nightly["job"]["status"] == "failed"  # exit status 3; its check is deleted
        assert "monitor" not in nightly["job"]
        await tcp.close()
