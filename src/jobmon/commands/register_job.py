"""register_job: what a job promises (a schedule, limits, labels); again to update it."""

from __future__ import annotations

from typing import Any

from .. import channels, schedule
from ..clock import iso
from ..errors import malformed
from ..node import Node
from . import fields

NAME = "register_job"
MUTATES = True
MAX_LABELS = 32
MAX_LABEL_VALUE_CHARS = 256


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    job_id = fields.job_id(body)
    settings: dict[str, Any] = {}
    if "schedule" in body:
        given = body["schedule"]
        settings["schedule"] = None if given is None else schedule.validate(given)
    for name, low in (
        ("grace_ms", 0),
        ("max_runtime_ms", 1),
        ("stall_ms", 1),
        ("lost_grace_ms", 0),
    ):
        if name in body:
            settings[name] = fields.span_ms(body, name, low)
    if body.get("grace_ms", 0) is None:
        settings["grace_ms"] = 0
    for name in ("failure_threshold", "recovery_threshold"):
        if name in body:
            settings[name] = fields.integer(body, name, 1) or 1
    if "max_retries" in body:
        settings["max_retries"] = fields.integer(body, "max_retries")
    if "labels" in body:
        settings["labels"] = _labels(body["labels"])
    if "channels" in body:  # which --notify NAME=URL channels its alerts go to
        settings["channels"] = channels.names(body["channels"])
    return (job_id, settings)


def _labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if (
        type(labels) is not dict
        or len(labels) > MAX_LABELS
        or not all(
            type(k) is str
            and 0 < len(k) <= fields.MAX_NAME_CHARS
            and type(v) is str
            and len(v) <= MAX_LABEL_VALUE_CHARS
            for k, v in labels.items()
        )
    ):
        raise malformed(
            f"labels must be an object of at most {MAX_LABELS} string values (names of 1 to "
            f"{fields.MAX_NAME_CHARS} characters, values of at most {MAX_LABEL_VALUE_CHARS}), "
            f'such as {{"team": "data"}}, got {fields._show(labels)}'
        )
    return labels


def channels_of(args: Any) -> Any:
    return args[1].get("channels")


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    job_id, settings = args
    channels.known(node.channels, channels_of(args))
    job = node.store.register(now, job_id, settings)
    assert job.monitor is not None
    out = fields.reply("job_registered", msg_id)
    out["job_id"] = job_id
    out["next_expected_at"] = iso(job.monitor.next_expected_at)
    return out
