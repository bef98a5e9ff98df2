"""get_analytics: failures by hour of day, duration percentiles, cost, high-memory arguments."""

from __future__ import annotations

from typing import Any

from .. import schedule
from ..errors import malformed
from ..node import Node
from . import fields

NAME = "get_analytics"
MUTATES = False
PRICES = ("price_per_block", "price_per_cpu_percent", "price_per_second")
MAX_TOP = 100


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    zone = body.get("tz", "UTC")
    if type(zone) is not str:
        raise malformed(
            f'tz must be an IANA time zone name such as "Europe/Berlin", got {fields._show(zone)}'
        )
    if schedule.known_zone(zone) is None:
        raise malformed(
            f"unknown time zone {zone[: schedule.MAX_ZONE_CHARS]!r}: "
            'expected an IANA name such as "Europe/Berlin"'
        )
    job_id = fields.job_id(body) if "job_id" in body else None
    top = fields.integer(body, "top", 0)  # 0: no ranking (a single job's figures)
    if top is not None and top > MAX_TOP:
        raise malformed(f"top must be between 0 and {MAX_TOP}, got {top}")
    prices = body.get("prices")
    if prices is None:
        prices = {}
    if type(prices) is not dict or not set(prices) <= set(PRICES):
        raise malformed(
            f"prices must be an object with any of {', '.join(PRICES)}, got {fields._show(prices)}"
        )
    for name in prices:
        fields.number(prices, name)
    return (zone, job_id, 10 if top is None else top, prices)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    zone, job_id, top, prices = args
    store = node.store
    if job_id is not None:
        store.get(job_id)  # 404 for a job never seen

    out = fields.reply("analytics", msg_id)
    report = store.analytics.report(zone, job_id, top, store.jobs, prices)
    fields.encoded(report, "the analytics report")  # a rare query: checked, then sent
    out.update(report)
    return out
