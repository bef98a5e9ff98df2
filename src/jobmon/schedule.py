"""Schedules: when a job is next expected. Cron in the job's IANA time zone
(cronsim, which aims to match Debian cron, DST included) or a fixed interval."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .clock import MAX_SPAN_MS, MAX_TIME
from .errors import malformed

MAX_INTERVAL_MS = MAX_SPAN_MS
MAX_CRON_CHARS = 256
MAX_ZONE_CHARS = 64  # IANA names are at most about 30
# A run expected later than this could not have its deadline (plus a grace of
# up to MAX_SPAN_MS) written as ISO-8601: treat it as no run expected.
_LAST_EXPECTED = MAX_TIME - MAX_SPAN_MS / 1000


def validate(schedule: Any) -> dict[str, Any]:
    """A schedule as given on the wire, checked; raises error 12 with the reason."""
    if type(schedule) is not dict:
        raise malformed(
            'schedule must be an object: {"cron": "0 2 * * *", "tz": "Europe/Berlin"} '
            'or {"every_ms": 3600000}'
        )
    if "cron" in schedule:
        expr, tz = schedule["cron"], schedule.get("tz", "UTC")
        if type(expr) is not str or type(tz) is not str:
            raise malformed("schedule.cron and schedule.tz must be strings")
        if len(expr) > MAX_CRON_CHARS:
            raise malformed(
                f"schedule.cron is {len(expr)} characters long; at most {MAX_CRON_CHARS}"
            )
        zone = known_zone(tz)
        if zone is None:
            raise malformed(
                f"schedule.tz {tz[:MAX_ZONE_CHARS]!r} is not an IANA time zone "
                "(such as Europe/Berlin or UTC)"
            )
        try:
            CronSim(expr, datetime.now(zone))
        except CronSimError as exc:
            raise malformed(
                f"schedule.cron {expr!r} is not a valid cron expression: {exc}"
            ) from None
        return {"cron": expr, "tz": tz}
    every = schedule.get("every_ms")
    if type(every) is int and 1000 <= every <= MAX_INTERVAL_MS:
        return {"every_ms": every}
    raise malformed(
        "schedule needs cron (with an optional tz) or every_ms, an integer number of "
        f"milliseconds between 1000 and {MAX_INTERVAL_MS}"
    )


def next_after(schedule: dict[str, Any], after: float) -> float | None:
    """The first expected time strictly after ``after`` (epoch seconds); None when
    there is none before the end of the calendar (year 9999)."""
    if "every_ms" in schedule:
        every_ms: int = schedule["every_ms"]
        return after + every_ms / 1000
    zone = _zone(schedule["tz"])
    try:
        moment = next(CronSim(schedule["cron"], datetime.fromtimestamp(after, zone)))
    except (OverflowError, ValueError, StopIteration):
        return None
    expected = moment.timestamp()
    return expected if expected <= _LAST_EXPECTED else None


def describe(schedule: dict[str, Any]) -> str:
    if "every_ms" in schedule:
        return f"every {schedule['every_ms']} ms"
    return f"cron {schedule['cron']!r} in {schedule['tz']}"


def known_zone(name: str) -> ZoneInfo | None:
    """The IANA zone of that name; None for anything else, including names that
    are too long, paths, or directories of the zone database ("America")."""
    if not 0 < len(name) <= MAX_ZONE_CHARS:
        return None
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory
        return None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
