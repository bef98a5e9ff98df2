"""unregister_job: stop watching a job; its record stays, its open negative alerts resolve."""

from __future__ import annotations

from typing import Any

from ..node import Node
from . import fields

NAME = "unregister_job"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (fields.job_id(body),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    node.store.unregister(now, args[0])
    out = fields.reply("job_unregistered", msg_id)
    out["job_id"] = args[0]
    return out
