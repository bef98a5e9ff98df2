"""Drives jobmon with the real healthchecks-io client (PyPI), every one of its
calls, unchanged. Run by tests/test_hc_client.py in the client's own venv
(.venv-hc: its version pins conflict with ours); prints one JSON document.

    hc_client_drive.py API_URL PING_URL API_KEY PING_KEY
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from healthchecks_io import (
    AsyncClient,
    BadAPIRequestError,
    CheckCreate,
    CheckNotFoundError,
    CheckTrap,
    CheckUpdate,
    Client,
    HCAPIAuthError,
)


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def raised(call: Any) -> str:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the class name is the result
        return type(exc).__name__
    return "nothing"


def sync_calls(api: str, ping: str, key: str, ping_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    v3 = Client(api_key=key, ping_key=ping_key, api_url=api, ping_url=ping, api_version=3)
    v1 = Client(api_key=key, ping_key=ping_key, api_url=api, ping_url=ping)  # its default: v1
    backup = v3.create_check(
        CheckCreate(name="Backups", tags="prod backup", timeout=3600, grace=120)
    )
    out["created"] = dump(backup)
    again = v3.create_check(
        CheckCreate(name="Backups", tags="prod backup", timeout=7200, grace=120, unique=["name"])
    )
    out["upserted"] = dump(again)
    nightly = v1.create_check(
        CheckCreate(name="Nightly Report", schedule="0 2 * * *", tz="Europe/Riga")
    )
    out["v1_created"] = dump(nightly)
    out["updated"] = dump(v3.update_check(backup.uuid, CheckUpdate(desc="db dump", grace=300)))
    out["start"] = v3.start_ping(uuid=backup.uuid)
    out["success"] = v3.success_ping(uuid=backup.uuid, data="dumped 3 tables\n")
    out["slug_success"] = v1.success_ping(slug="nightly-report", data="report sent")
    out["fail"] = v3.fail_ping(uuid=backup.uuid, data="disk full")
    out["exit_0"] = v3.exit_code_ping(0, uuid=backup.uuid)
    out["exit_3"] = v1.exit_code_ping(3, slug="nightly-report")
    with CheckTrap(v3, uuid=backup.uuid) as trap:
        trap.add_log("inside the trap")
    out["checks"] = [dump(c) for c in v3.get_checks()]
    out["tagged"] = [c.name for c in v3.get_checks(tags=["prod", "backup"])]
    out["untagged"] = [c.name for c in v3.get_checks(tags=["nope"])]
    out["check"] = dump(v3.get_check(backup.uuid))
    out["pings"] = [dump(p) for p in v3.get_check_pings(backup.uuid)]
    out["flips"] = [dump(f) for f in v3.get_check_flips(backup.uuid)]
    out["flips_recent"] = len(v3.get_check_flips(backup.uuid, seconds=3600))
    out["flips_future"] = len(v3.get_check_flips(backup.uuid, start=int(time.time()) + 3600))
    out["flips_past"] = len(v3.get_check_flips(backup.uuid, end=1))
    out["integrations"] = [dump(i) for i in v3.get_integrations()]
    out["badges"] = {tag: dump(b) for tag, b in v3.get_badges().items()}
    out["paused"] = dump(v3.pause_check(nightly.uuid))
    out["deleted"] = dump(v3.delete_check(nightly.uuid))
    missing = nightly.uuid
    out["errors"] = {
        "get_deleted": raised(lambda: v3.get_check(missing)),
        "ping_deleted": raised(lambda: v3.success_ping(uuid=missing)),
        "slug_deleted": raised(lambda: v1.success_ping(slug="nightly-report")),
        "bad_timeout": raised(lambda: v3.create_check(CheckCreate(name="x", timeout=10))),
        "wrong_key": raised(
            lambda: Client(api_key="wrong", api_url=api, ping_url=ping).get_checks()
        ),
    }
    v3._finalizer_method()
    v1._finalizer_method()
    return out


async def async_calls(api: str, ping: str, key: str, ping_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with AsyncClient(
        api_key=key, ping_key=ping_key, api_url=api, ping_url=ping, api_version=3
    ) as client:
        check = await client.create_check(CheckCreate(name="Async job", tags="async", timeout=600))
        out["created"] = dump(check)
        out["updated"] = dump(
            await client.update_check(check.uuid, CheckUpdate(name="Async job 2"))
        )
        async with CheckTrap(client, uuid=check.uuid) as trap:
            trap.add_log("async trap")
        out["start"] = await client.start_ping(uuid=check.uuid)
        out["fail"] = await client.fail_ping(uuid=check.uuid, data="it broke")
        out["exit"] = await client.exit_code_ping(0, uuid=check.uuid)
        out["success"] = await client.success_ping(uuid=check.uuid)
        out["checks"] = [c.name for c in await client.get_checks(tags=["async"])]
        out["check"] = dump(await client.get_check(check.uuid))
        out["pings"] = [dump(p) for p in await client.get_check_pings(check.uuid)]
        out["flips"] = [dump(f) for f in await client.get_check_flips(check.uuid)]
        out["integrations"] = [dump(i) for i in await client.get_integrations()]
        out["badges"] = sorted(await client.get_badges())
        out["paused"] = dump(await client.pause_check(check.uuid))
        out["deleted"] = dump(await client.delete_check(check.uuid))
        try:
            await client.get_check(check.uuid)
            out["get_deleted"] = "nothing"
        except CheckNotFoundError as exc:
            out["get_deleted"] = type(exc).__name__
    return out


def main() -> None:
    api, ping, key, ping_key = sys.argv[1:5]
    result = {
        "sync": sync_calls(api, ping, key, ping_key),
        "async": asyncio.run(async_calls(api, ping, key, ping_key)),
        "classes": [HCAPIAuthError.__name__, BadAPIRequestError.__name__],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
