"""resume_job: end a pause; expectations start again from now."""

from __future__ import annotations

from typing import Any

from ..node import Node
from . import fields

NAME = "resume_job"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (fields.job_id(body),)


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    node.store.resume(now, args[0])
    out = fields.reply("job_resumed", msg_id)
    out["job_id"] = args[0]
    return out
