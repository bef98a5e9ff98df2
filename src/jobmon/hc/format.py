"""jobmon's check records in Healthchecks' JSON shapes (API v1, v2, v3)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ..channels import Channel

# Keyword filtering of pings is not something jobmon does: these stay off.
FILTER_FIELDS: dict[str, Any] = {
    "subject": "",
    "subject_fail": "",
    "start_kw": "",
    "success_kw": "",
    "failure_kw": "",
    "filter_subject": False,
    "filter_body": False,
    "filter_http_body": False,
    "filter_default_fail": False,
}


def hc_time(value: str | None, micro: bool = False) -> str | None:
    """jobmon's ``2026-11-22T02:05:00.000Z`` as Healthchecks writes times."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (moment if micro else moment.replace(microsecond=0)).isoformat()


def badge_key(secret: str | None) -> str:
    """The key in badge URLs: derived from the server's secret, so it stays the
    same across restarts, and tells nothing of the secret."""
    digest = hmac.new((secret or "").encode(), b"jobmon badges", hashlib.sha256).hexdigest()
    return digest[:24]


class Formatter:
    def __init__(
        self, base: Callable[[], str], channels: list[Channel], secret: str | None
    ) -> None:
        self._base = base  # read when used: the HTTP port may be chosen at start
        self.ids = {c.name: c.id for c in channels if c.name is not None}
        self.badge_key = badge_key(secret)

    @property
    def base(self) -> str:
        return self._base().rstrip("/")

    def check(self, rec: dict[str, Any], v: int) -> dict[str, Any]:
        status = rec["status"]
        if v == 1 and rec["started"] and status not in ("down", "paused"):
            status = "started"  # API v1 says so while a run is going
        out: dict[str, Any] = {
            "name": rec["name"],
            "slug": rec["slug"],
            "tags": rec["tags"],
            "desc": rec["desc"],
            "grace": rec["grace"],
            "n_pings": rec["n_pings"],
            "status": status,
            "started": rec["started"],
            "last_ping": hc_time(rec["last_ping"]),
            "next_ping": hc_time(rec["next_ping"]),
            "manual_resume": rec["manual_resume"],
            "methods": rec["methods"],
            **FILTER_FIELDS,
        }
        if rec["last_duration_ms"] is not None:
            out["last_duration"] = int(rec["last_duration_ms"] // 1000)
        uuid = rec["uuid"]
        update_url = f"{self.base}/api/v{v}/checks/{uuid}"
        out["uuid"] = uuid
        out["ping_url"] = f"{self.base}/ping/{uuid}"
        out["update_url"] = update_url
        out["pause_url"] = update_url + "/pause"
        out["resume_url"] = update_url + "/resume"
        out["channels"] = ",".join(sorted(self.ids[n] for n in rec["channels"] if n in self.ids))
        if rec["kind"] == "cron":
            out["schedule"] = rec["schedule"]
            out["tz"] = rec["tz"]
        else:
            out["timeout"] = rec["timeout"]
        return out

    def ping(self, rec: dict[str, Any], uuid: str, v: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": rec["type"],
            "date": hc_time(rec["at"], micro=True),
            "n": rec["n"],
            "scheme": rec["scheme"],
            "remote_addr": rec["remote_addr"],
            "method": rec["method"],
            "ua": rec["ua"],
            "rid": rec["rid"],
            "body_url": (
                f"{self.base}/api/v{v}/checks/{uuid}/pings/{rec['n']}/body"
                if rec["has_body"]
                else None
            ),
        }
        if rec["duration_s"] is not None:
            out["duration"] = round(rec["duration_s"], 2)
        return out

    def badge_urls(self, tag: str) -> dict[str, str]:
        name = "*" if tag == "*" else quote(tag, safe="")
        base = f"{self.base}/badge/{self.badge_key}/{name}"
        return {
            "svg": f"{base}.svg?states=2",
            "svg3": f"{base}.svg",
            "json": f"{base}.json?states=2",
            "json3": f"{base}.json",
            "shields": f"{base}.shields?states=2",
            "shields3": f"{base}.shields",
        }
