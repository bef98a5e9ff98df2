"""Failures by hour: a job's kept compactly, and hours of the day in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

FAILURE_DAYS_KEPT = 30

HOUR_SHIFT = 20
COUNT_MASK = (1 << HOUR_SHIFT) - 1


def _count_failure(hours: dict[int, int], hour: int) -> None:
    """One failure in ``hour``; hours past FAILURE_DAYS_KEPT leave."""
    if hour not in hours:
        oldest = hour - FAILURE_DAYS_KEPT * 24
        for old in [h for h in hours if h <= oldest]:
            del hours[old]
    hours[hour] = hours.get(hour, 0) + 1


def add_failure(failures: dict[str, dict[int, int] | int], job_id: str, hour: int) -> None:
    """One failure of the job in ``hour`` (epoch hours)."""
    kept = failures.get(job_id)
    if kept is None:
        failures[job_id] = hour << HOUR_SHIFT | 1
    elif type(kept) is int and kept >> HOUR_SHIFT == hour and kept & COUNT_MASK < COUNT_MASK:
        failures[job_id] = kept + 1
    else:
        hours = _hours(kept)
        _count_failure(hours, hour)
        failures[job_id] = _packed(hours)


def _hours(kept: dict[int, int] | int | None) -> dict[int, int]:
    """A job's failures by epoch hour, however kept."""
    if kept is None:
        return {}
    if type(kept) is int:
        return {kept >> HOUR_SHIFT: kept & COUNT_MASK}
    assert isinstance(kept, dict)
    return dict(kept)


def _packed(hours: dict[int, int]) -> dict[int, int] | int:
    if len(hours) == 1:
        ((hour, count),) = hours.items()
        if hour >= 0 and count <= COUNT_MASK:
            return hour << HOUR_SHIFT | count
    return hours


def _add_by_hour_of_day(buckets: list[int], hours: dict[int, int], tz: ZoneInfo) -> None:
    # The middle of each UTC hour, so zones offset by half an hour land in one bucket.
    for hour, count in hours.items():
        local = datetime.fromtimestamp(hour * 3600 + 1800, UTC).astimezone(tz)
        buckets[local.hour] += count
