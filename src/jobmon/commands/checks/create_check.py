"""create_check: a new check (201 in Healthchecks' terms), or with ``unique``
the matching one updated; its uuid comes in the request (the edge makes one)."""

from __future__ import annotations

from typing import Any

from ... import channels
from ...node import Node
from .. import fields
from . import spec

NAME = "create_check"
MUTATES = True


def parse(body: dict[str, Any]) -> tuple[Any, ...]:
    return (spec.check_uuid(body), spec.settings(body), spec.unique(body))


def channels_of(args: Any) -> Any:
    return args[1].get("channels")


def apply(node: Node, now: float, args: Any, msg_id: int | None) -> dict[str, Any]:
    uuid, settings, unique = args
    channels.known(node.channels, channels_of(args))
    check, created = node.store.checks.upsert(now, uuid, settings, unique)
    out = fields.reply("check", msg_id)
    out["check"] = spec.record(node, check)
    out["created"] = created
    return out
